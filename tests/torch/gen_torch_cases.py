#!/usr/bin/env python3
"""Generate tests/fixtures/torch-extra.jsonl: extra conformance cases for lossd.

Run with the PyTorch 2.15 venv:  python tests/torch/gen_torch_cases.py

Every case has the format of tests/fixtures/pytorch-cases.jsonl:
    {"id", "loss", "body", "expect": {"status", "loss", "shape", "grad"} | {"status", "code"},
     "rtol", "atol"[, "note"]}
Expected values are PyTorch 2.15 (CPU) results on the very inputs of the body, computed in the
request's dtype (float64 unless "dtype": "float32").  The only exceptions are the places where
lossd deliberately differs from PyTorch (docs/differences.md); those cases carry a "note".

The output is deterministic: one seeded generator, fixed case order, and no timestamps.

Left out on purpose (behaviour docs/ leaves undefined, or a request form it does not pin down): NaN
inputs to multi_margin_loss / multilabel_margin_loss (PyTorch skips NaN terms via `z > 0`); the
gradient of nll_loss / cross_entropy with a (1,) target for a (C,) input (PyTorch's backward raises;
the forward is kept); negative label_smoothing for linear_cross_entropy (the functional ignores it,
the module rejects it); regression weights when the input is smaller than the broadcast shape; a 0-d
var given as a {shape: [], ...} object; CTC padding entries that are not valid labels; CTC
target_length > padded width / wrong concatenated length (code ambiguous); empty CTC inputs;
gradients through hinges that are inactive at a non-finite input (PyTorch returns 0 * inf).
"""

import base64
import json
import math
import os
import struct
import sys
import warnings

import torch
import torch.nn.functional as F

warnings.simplefilter("ignore")
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "torch-extra.jsonl")
SHARED = os.path.join(HERE, "..", "fixtures", "pytorch-cases.jsonl")

F64_TOL = (1e-7, 1e-10)
F32_TOL = (1e-4, 1e-5)
INF = float("inf")
NAN = float("nan")

G = torch.Generator().manual_seed(20150)

# Differentiable tensor arguments for which lossd returns a gradient (docs/differences.md, Gradients).
DIFF = {
    "l1_loss": ["input", "target", "weight"],
    "mse_loss": ["input", "target", "weight"],
    "huber_loss": ["input", "target", "weight"],
    "smooth_l1_loss": ["input", "target"],
    "cross_entropy": ["input", "target", "weight"],  # target/weight only with probability targets
    "nll_loss": ["input"],
    "binary_cross_entropy": ["input", "target"],
    "binary_cross_entropy_with_logits": ["input", "target"],
    "multi_margin_loss": ["input"],
    "multilabel_margin_loss": ["input"],
    "multilabel_soft_margin_loss": ["input", "target", "weight"],
    "soft_margin_loss": ["input"],
    "linear_cross_entropy": ["input", "linear_weight", "linear_bias"],
    "kl_div": ["input", "target"],
    "poisson_nll_loss": ["input"],  # section 4 item 11: no target gradient
    "gaussian_nll_loss": ["input", "target", "var"],
    "ctc_loss": ["log_probs"],
    "margin_ranking_loss": ["input1", "input2", "target"],
    "hinge_embedding_loss": ["input"],
    "cosine_embedding_loss": ["input1", "input2"],
    "triplet_margin_loss": ["anchor", "positive", "negative"],
    "triplet_margin_with_distance_loss": ["anchor", "positive", "negative"],
}

CASES = []

# ----------------------------------------------------------------------------------------------
# random data (rounded to 4 decimals so the bodies stay short; the rounded value is the input)


def _r4(t):
    return torch.round(t * 1e4) / 1e4


def rn(*shape, s=1.0, m=0.0):
    return _r4(torch.randn(tuple(shape), generator=G, dtype=torch.float64) * s + m)


def ru(*shape, lo=0.0, hi=1.0):
    return _r4(torch.rand(tuple(shape), generator=G, dtype=torch.float64) * (hi - lo) + lo)


def ri(lo, hi, *shape):
    return torch.randint(lo, hi, shape, generator=G, dtype=torch.long)


def probs(*shape, dim=-1):
    return _r4(torch.softmax(torch.randn(tuple(shape), generator=G, dtype=torch.float64) * 1.5, dim=dim))


def logsm(*shape, dim=-1):
    return _r4(torch.log_softmax(torch.randn(tuple(shape), generator=G, dtype=torch.float64) * 1.5, dim=dim))


def sgn(*shape):
    return (torch.randint(0, 2, shape, generator=G) * 2 - 1).to(torch.float64)


def T(v, dt=torch.float64):
    return torch.tensor(v, dtype=dt)


def L(v):
    return torch.tensor(v, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# JSON encoding


def _fnum(x):
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
    return x


def _walk(v):
    if isinstance(v, list):
        return [_walk(e) for e in v]
    return _fnum(v)


def _flat(t):
    return t.reshape(-1).tolist()


def enc_tensor(t, how="json"):
    if how == "json":
        return _walk(t.tolist())
    if how == "flat":
        return {"shape": list(t.shape), "data": _walk(_flat(t))}
    if how == "int":
        # float data written as JSON integers (a JSON integer is a number; the value is exact)
        assert t.is_floating_point() and bool(torch.all(t == torch.round(t)))
        return _walk(t.to(torch.long).tolist())
    if how.startswith("b64"):
        # "b64" = bytes in the tensor's own dtype; "b64f32" = float32 bytes
        flat = _flat(t)
        if t.is_floating_point():
            if how == "b64f32" or t.dtype == torch.float32:
                fmt, dname = "f", "float32"
            else:
                fmt, dname = "d", "float64"
        else:
            fmt, dname = "q", "int64"
        raw = struct.pack("<%d%s" % (len(flat), fmt), *flat)
        return {"shape": list(t.shape), "dtype": dname, "base64": base64.b64encode(raw).decode()}
    raise ValueError(how)


def to_json_value(t):
    """A result tensor as the response would carry it."""
    return _walk(t.detach().tolist())


# ----------------------------------------------------------------------------------------------
# torch invocation


def _dist(name):
    if name == "pairwise_distance":
        return lambda x, y: F.pairwise_distance(x, y)
    if name == "cosine_distance":
        return lambda x, y: 1.0 - F.cosine_similarity(x, y, dim=-1)
    raise ValueError(name)


def call_torch(loss, targs, opts):
    kw = dict(targs)
    kw.update(opts)
    if loss == "triplet_margin_with_distance_loss" and "distance_function" in kw:
        kw["distance_function"] = _dist(kw["distance_function"])
    if loss == "triplet_margin_loss" and kw.get("p") == "Infinity":
        kw["p"] = INF
    return getattr(F, loss)(**kw)


def grad_names(loss, targs):
    names = []
    for n in DIFF[loss]:
        t = targs.get(n)
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        if loss == "cross_entropy" and n in ("target", "weight"):
            if not targs["target"].is_floating_point():
                continue
        names.append(n)
    return names


def prepare(args, dtype):
    dt = torch.float32 if dtype == "float32" else torch.float64
    targs = {}
    for k, v in args.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            targs[k] = v.to(dt)
        else:
            targs[k] = v
    return targs


def run_torch(loss, targs, opts, want_grad, forward=None):
    gnames = grad_names(loss, targs) if want_grad else []
    leaves = {}
    kw = {}
    for k, v in targs.items():
        if k in gnames:
            leaves[k] = v.detach().clone().requires_grad_(True)
            kw[k] = leaves[k]
        elif isinstance(v, torch.Tensor):
            kw[k] = v.clone()
        elif loss == "gaussian_nll_loss" and k == "var":
            kw[k] = float(v)
        else:
            kw[k] = v
    out = forward(kw, opts) if forward else call_torch(loss, kw, opts)
    grads = {}
    if gnames:
        if out.requires_grad:
            out.sum().backward()
        for n in gnames:
            g = leaves[n].grad
            grads[n] = torch.zeros_like(leaves[n]) if g is None else g
    return out.detach(), grads


def body_of(args, opts, dtype, grad, enc, explicit_dtype=False):
    body = {}
    enc = enc or {}
    for k, v in args.items():
        if isinstance(v, torch.Tensor):
            body[k] = enc_tensor(v, enc.get(k, "json"))
        else:
            body[k] = v
    body.update(opts)
    if dtype == "float32" or explicit_dtype:
        body["dtype"] = dtype
    if grad:
        body["grad"] = True
    return body


def C(cid, loss, args, opts=None, dtype="float64", grad=True, enc=None, note=None, forward=None,
      explicit_dtype=False, tol=None):
    """A 200 case whose expectation is PyTorch's value (or forward(...)'s for section-4 cases)."""
    opts = dict(opts or {})
    targs = prepare(args, dtype)
    out, grads = run_torch(loss, targs, opts, grad, forward)
    body = body_of(targs, opts, dtype, grad, enc, explicit_dtype)
    expect = {"status": 200, "loss": to_json_value(out), "shape": list(out.shape)}
    if grad:
        expect["grad"] = {k: to_json_value(v) for k, v in grads.items()}
    rtol, atol = tol or (F32_TOL if dtype == "float32" else F64_TOL)
    case = {"id": cid, "loss": loss, "body": body, "expect": expect, "rtol": rtol, "atol": atol}
    if note:
        case["note"] = note
    CASES.append(case)
    return out, grads


def CX(cid, loss, args, opts, expect_loss, expect_shape, expect_grad, dtype="float64", grad=True,
       enc=None, note=None):
    """A 200 case with a hand-given expectation (section-4 behaviour PyTorch cannot produce)."""
    targs = prepare(args, dtype)
    body = body_of(targs, dict(opts or {}), dtype, grad, enc)
    expect = {"status": 200, "loss": expect_loss, "shape": expect_shape}
    if grad:
        expect["grad"] = expect_grad
    rtol, atol = F32_TOL if dtype == "float32" else F64_TOL
    case = {"id": cid, "loss": loss, "body": body, "expect": expect, "rtol": rtol, "atol": atol}
    if note:
        case["note"] = note
    CASES.append(case)


def E(cid, loss, args, opts, code, torch_raises=True, note=None, dtype="float64", enc=None):
    """A 422 case.  torch_raises=True: PyTorch must raise on the same call (checked here);
    False: PyTorch accepts it but lossd rejects (docs/differences.md, needs a note)."""
    opts = dict(opts or {})
    targs = prepare(args, dtype)
    raised = None
    try:
        run_torch(loss, targs, opts, False)
    except Exception as e:  # noqa: BLE001
        raised = e
    if torch_raises and raised is None:
        raise SystemExit(f"{cid}: expected PyTorch to raise, it did not")
    if not torch_raises and raised is not None:
        raise SystemExit(f"{cid}: PyTorch raised {raised!r} but the case says it accepts")
    body = body_of(targs, opts, dtype, False, enc)
    case = {"id": cid, "loss": loss, "body": body, "expect": {"status": 422, "code": code}}
    if note:
        case["note"] = note
    CASES.append(case)


def ERAW(cid, loss, body, code, status=422, note=None):
    """An error case that is about the request itself (PyTorch cannot be asked)."""
    case = {"id": cid, "loss": loss, "body": body, "expect": {"status": status, "code": code}}
    if note:
        case["note"] = note
    CASES.append(case)


# ----------------------------------------------------------------------------------------------
# regression: l1_loss, mse_loss, smooth_l1_loss, huber_loss


def regression(loss):
    opt = {"smooth_l1_loss": "beta", "huber_loss": "delta"}.get(loss)
    has_w = loss in ("l1_loss", "mse_loss", "huber_loss")
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": rn(3, 4), "target": rn(3, 4)}, {"reduction": red})
    if opt:
        vals = [0.5, 2.0, 0.0] if opt == "beta" else [0.5, 2.0, 0.1]
        for v in vals:
            for red in ("mean", "none"):
                C(p + f"{opt}-{v}-{red}", loss, {"input": rn(3, 4), "target": rn(3, 4)},
                  {opt: v, "reduction": red})
        C(p + f"{opt}-integer-json", loss, {"input": rn(3, 4, s=2), "target": rn(3, 4)},
          {opt: 2, "reduction": "sum"})
        C(p + f"{opt}-large", loss, {"input": rn(3, 4), "target": rn(3, 4)}, {opt: 100.0})
        # kinks: |d| == opt exactly (both signs), d == 0
        x = T([[1.5, 0.5, 2.0, -1.0], [0.25, 3.0, -2.0, 0.0]])
        y = T([[1.0, 1.0, 2.0, -0.5], [0.75, 2.5, -2.0, 0.5]])
        for red in ("sum", "none"):
            C(p + f"kink-abs-d-eq-{opt}-{red}", loss, {"input": x, "target": y},
              {opt: 0.5, "reduction": red})
        C(p + f"kink-abs-d-eq-default-{opt}", loss,
          {"input": T([2.0, -1.0, 0.5, 3.0]), "target": T([1.0, 0.0, 0.5, 1.0])}, {"reduction": "none"})
        if opt == "beta":
            C(p + "beta-0-ties", loss,
              {"input": T([[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]]), "target": T([[1.0, 2.5, 3.0], [0.5, -1.0, 0.0]])},
              {"beta": 0.0, "reduction": "sum"})
    C(p + "3d-mean", loss, {"input": rn(2, 3, 4), "target": rn(2, 3, 4)})
    C(p + "4d-sum", loss, {"input": rn(2, 2, 2, 3), "target": rn(2, 2, 2, 3)}, {"reduction": "sum"})
    for red in ("mean", "none"):
        C(p + f"0d-{red}", loss, {"input": rn(), "target": rn()}, {"reduction": red})
    C(p + "1d-sum", loss, {"input": rn(5), "target": rn(5)}, {"reduction": "sum"})
    for red in ("mean", "none"):
        C(p + f"bcast-target-row-{red}", loss, {"input": rn(3, 4), "target": rn(4)}, {"reduction": red})
    for red in ("mean", "none"):
        C(p + f"bcast-both-{red}", loss, {"input": rn(3, 1), "target": rn(1, 4)}, {"reduction": red})
    C(p + "bcast-0d-target-sum", loss, {"input": rn(3, 4), "target": rn()}, {"reduction": "sum"})
    C(p + "bcast-0d-input-mean", loss, {"input": rn(), "target": rn(5)})
    C(p + "bcast-3d-none", loss, {"input": rn(2, 1, 3), "target": rn(4, 1)}, {"reduction": "none"})
    if has_w:
        for red in ("mean", "sum", "none"):
            C(p + f"weight-full-{red}", loss, {"input": rn(3, 4), "target": rn(3, 4), "weight": ru(3, 4, lo=0.1, hi=2)},
              {"reduction": red})
        w = ru(3, 4, lo=0.1, hi=2)
        w[0, :] = 0.0
        w[2, 1] = 0.0
        C(p + "weight-some-zero-mean", loss, {"input": rn(3, 4), "target": rn(3, 4), "weight": w})
        C(p + "weight-all-zero-mean", loss, {"input": rn(2, 3), "target": rn(2, 3), "weight": torch.zeros(2, 3, dtype=torch.float64)})
        C(p + "weight-negative-mean", loss, {"input": rn(2, 3), "target": rn(2, 3),
                                            "weight": T([[1.0, -0.5, 2.0], [0.5, 1.5, -1.0]])})
        C(p + "weight-bcast-target-mean", loss, {"input": rn(3, 4), "target": rn(4), "weight": ru(3, 4, lo=0.1, hi=2)})
        C(p + "weight-0d-none", loss, {"input": rn(), "target": rn(), "weight": T(2.5)}, {"reduction": "none"})
        C(p + "weight-f32-mean", loss, {"input": rn(3, 4), "target": rn(3, 4), "weight": ru(3, 4, lo=0.1, hi=2)},
          dtype="float32")
        C(p + "weight-empty-mean", loss, {"input": rn(0), "target": rn(0), "weight": rn(0)})
        E(p + "weight-wrong-size", loss, {"input": rn(3, 4), "target": rn(3, 4), "weight": ru(4)}, {}, "shape_mismatch")
    # ties: input == target in places
    x = rn(3, 4)
    y = x.clone()
    y[0, 1] += 0.5
    y[2, 3] -= 1.5
    y[1, 0] += 0.25
    C(p + "ties-equal-mean", loss, {"input": x, "target": y})
    # non-finite values
    x = rn(2, 4)
    x[0, 1] = NAN
    x[1, 2] = INF
    x[1, 3] = -INF
    C(p + "nonfinite-input-none", loss, {"input": x, "target": rn(2, 4)}, {"reduction": "none"})
    C(p + "nonfinite-input-mean", loss, {"input": x, "target": rn(2, 4)})
    C(p + "inf-minus-inf-none", loss, {"input": T([INF, -INF, INF, 1.0]), "target": T([INF, -INF, -INF, INF])},
      {"reduction": "none"})
    C(p + "nan-target-sum", loss, {"input": rn(4), "target": T([0.5, NAN, -1.0, 2.0])}, {"reduction": "sum"})
    C(p + "inf-input-f32-none", loss, {"input": T([INF, -2.0, 1.0]), "target": T([0.0, -INF, 1.0])},
      {"reduction": "none"}, dtype="float32")
    # large magnitudes
    C(p + "large-1e4-f64-sum", loss, {"input": rn(3, 4, s=1e4), "target": rn(3, 4, s=1e4)}, {"reduction": "sum"})
    C(p + "large-1e4-f32-mean", loss, {"input": rn(3, 4, s=1e4), "target": rn(3, 4, s=1e4)}, dtype="float32")
    # float32
    for red in ("mean", "sum", "none"):
        o = {"reduction": red}
        if opt:
            o[opt] = 0.5
        C(p + f"f32-{red}", loss, {"input": rn(3, 5), "target": rn(3, 5)}, o, dtype="float32")
    C(p + "f32-bcast-none", loss, {"input": rn(3, 1), "target": rn(4)}, {"reduction": "none"}, dtype="float32")
    # empty tensors
    for red in ("mean", "sum", "none"):
        C(p + f"empty-1d-{red}", loss, {"input": rn(0), "target": rn(0)}, {"reduction": red})
    C(p + "empty-2d-none-flat", loss, {"input": rn(0, 3), "target": rn(0, 3)}, {"reduction": "none"},
      enc={"input": "flat", "target": "flat"})
    C(p + "empty-bcast-mean-flat", loss, {"input": rn(2, 0), "target": rn(0)}, enc={"input": "flat"})
    # encodings
    C(p + "enc-flat-mean", loss, {"input": rn(2, 3), "target": rn(2, 3)}, enc={"input": "flat", "target": "flat"})
    C(p + "enc-b64-f64-none", loss, {"input": rn(2, 3), "target": rn(2, 3)}, {"reduction": "none"},
      enc={"input": "b64", "target": "b64"})
    C(p + "enc-b64-f32-sum", loss, {"input": rn(2, 3), "target": rn(2, 3)}, {"reduction": "sum"},
      dtype="float32", enc={"input": "b64", "target": "b64"})
    C(p + "enc-mixed-b64-json-mean", loss, {"input": rn(2, 2, 2), "target": rn(2, 2, 2)},
      enc={"input": "b64", "target": "json"})
    C(p + "enc-b64-nonfinite-none", loss, {"input": T([NAN, INF, 1.0]), "target": T([0.0, 0.0, -INF])},
      {"reduction": "none"}, enc={"input": "b64", "target": "flat"})
    xi = rn(4).to(torch.float32).to(torch.float64)
    C(p + "enc-b64-float32-bytes-float64-request", loss, {"input": xi, "target": rn(4)}, {"reduction": "sum"},
      enc={"input": "b64f32"})
    C(p + "json-integers-as-floats", loss, {"input": T([1.0, 2.0, 3.0, -4.0]), "target": T([0.0, 2.0, 5.0, -1.0])},
      {"reduction": "none"}, enc={"input": "int", "target": "int"})
    C(p + "explicit-float64", loss, {"input": rn(3), "target": rn(3)}, explicit_dtype=True)
    C(p + "no-grad-field", loss, {"input": rn(3), "target": rn(3)}, grad=False)
    # errors
    E(p + "shape-mismatch-3x4-vs-3", loss, {"input": rn(3, 4), "target": rn(3)}, {}, "shape_mismatch")
    E(p + "shape-mismatch-2x3-vs-3x2", loss, {"input": rn(2, 3), "target": rn(3, 2)}, {}, "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input": rn(3), "target": rn(3)}, {"reduction": "batchmean"}, "invalid_option")
    E(p + "reduction-capitalized", loss, {"input": rn(3), "target": rn(3)}, {"reduction": "Mean"},
      "invalid_option")
    if opt == "beta":
        E(p + "beta-negative", loss, {"input": rn(3), "target": rn(3)}, {"beta": -0.5}, "invalid_option")
        ERAW(p + "weight-unknown-field", loss, {"input": [1.0, 2.0], "target": [0.0, 0.0], "weight": [1.0, 1.0]},
             "invalid_option")
    if opt == "delta":
        E(p + "delta-zero", loss, {"input": rn(3), "target": rn(3)}, {"delta": 0.0}, "invalid_option")
        E(p + "delta-negative", loss, {"input": rn(3), "target": rn(3)}, {"delta": -1.0}, "invalid_option")
    ERAW(p + "unknown-option-log-target", loss, {"input": [1.0], "target": [1.0], "log_target": True}, "invalid_option")
    ERAW(p + "dtype-int64", loss, {"input": [1.0], "target": [1.0], "dtype": "int64"}, "invalid_option")
    ERAW(p + "encoding-bad", loss, {"input": [1.0], "target": [1.0], "encoding": "hex"}, "invalid_option")
    ERAW(p + "missing-input", loss, {"target": [1.0, 2.0]}, "invalid_option")
    ERAW(p + "string-lowercase-nan", loss, {"input": [1.0, "nan"], "target": [1.0, 2.0]}, "invalid_tensor")
    ERAW(p + "string-inf", loss, {"input": [1.0, 2.0], "target": ["inf", 2.0]}, "invalid_tensor")
    ERAW(p + "b64-wrong-length", loss,
         {"input": {"shape": [3], "dtype": "float64", "base64": base64.b64encode(struct.pack("<2d", 1.0, 2.0)).decode()},
          "target": [1.0, 2.0, 3.0]}, "invalid_tensor")
    ERAW(p + "flat-data-too-long", loss, {"input": {"shape": [2], "data": [1.0, 2.0, 3.0]}, "target": [1.0, 2.0]},
         "invalid_tensor")
    ERAW(p + "ragged-3d", loss, {"input": [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0]]],
                                 "target": [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]}, "invalid_tensor")
    ERAW(p + "boolean-element", loss, {"input": [1.0, True], "target": [1.0, 2.0]}, "invalid_tensor")


# ----------------------------------------------------------------------------------------------
# cross_entropy and nll_loss


def cross_entropy():
    loss = "cross_entropy"
    p = loss + "/"
    N, Cc = 4, 5
    for red in ("mean", "sum", "none"):
        C(p + f"idx-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"idx-weight-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.2, hi=2)},
          {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"idx-ignore-inside-{red}", loss, {"input": rn(N, Cc), "target": L([2, 0, 2, 4])},
          {"ignore_index": 2, "reduction": red})
    C(p + "idx-ignore-outside-255-mean", loss, {"input": rn(N, Cc), "target": L([255, 1, 3, 255])}, {"ignore_index": 255})
    C(p + "idx-ignore-negative-1-sum", loss, {"input": rn(N, Cc), "target": L([-1, 1, 3, 0])},
      {"ignore_index": -1, "reduction": "sum"})
    C(p + "idx-default-ignore-minus100-mean", loss, {"input": rn(N, Cc), "target": L([-100, 1, -100, 0])})
    for red in ("mean", "sum", "none"):
        C(p + f"idx-all-ignored-{red}", loss, {"input": rn(3, Cc), "target": L([1, 1, 1])},
          {"ignore_index": 1, "reduction": red})
    C(p + "idx-weight-ignore-outside-mean", loss,
      {"input": rn(N, Cc), "target": L([3, 7, 0, 7]), "weight": ru(Cc, lo=0.2, hi=2)}, {"ignore_index": 7})
    w = ru(Cc, lo=0.5, hi=2)
    w[1] = 0.0
    w[3] = 0.0
    C(p + "idx-zero-weight-targets-mean", loss, {"input": rn(3, Cc), "target": L([1, 3, 1]), "weight": w})
    C(p + "idx-some-zero-weight-mean", loss, {"input": rn(3, Cc), "target": L([1, 3, 0]), "weight": w})
    C(p + "idx-weight-all-zero-sum", loss, {"input": rn(3, Cc), "target": L([1, 3, 0]),
                                           "weight": torch.zeros(Cc, dtype=torch.float64)}, {"reduction": "sum"})
    C(p + "idx-negative-weight-mean", loss, {"input": rn(3, Cc), "target": L([1, 3, 0]),
                                            "weight": T([1.0, -0.5, 2.0, 1.5, -1.0])})
    for red in ("mean", "sum", "none"):
        C(p + f"smooth-0.1-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)},
          {"label_smoothing": 0.1, "reduction": red})
    C(p + "smooth-1.0-mean", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"label_smoothing": 1.0})
    C(p + "smooth-0.0-explicit-mean", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"label_smoothing": 0.0})
    for red in ("mean", "sum", "none"):
        C(p + f"smooth-weight-ignore-{red}", loss,
          {"input": rn(N, Cc), "target": L([2, 4, 2, 0]), "weight": ru(Cc, lo=0.2, hi=2)},
          {"label_smoothing": 0.25, "ignore_index": 2, "reduction": red})
    C(p + "smooth-weight-ignore-outside-mean", loss,
      {"input": rn(N, Cc), "target": L([255, 4, 1, 255]), "weight": ru(Cc, lo=0.2, hi=2)},
      {"label_smoothing": 0.3, "ignore_index": 255})
    C(p + "smooth-all-ignored-mean", loss, {"input": rn(3, Cc), "target": L([-100, -100, -100])},
      {"label_smoothing": 0.2})
    # forward only: PyTorch's gradient here is all NaN, the closed-form gradient gives +-inf
    C(p + "smooth-zero-weight-targets-mean", loss, {"input": rn(3, Cc), "target": L([1, 3, 1]), "weight": w},
      {"label_smoothing": 0.2}, grad=False)
    # K-dim
    C(p + "kdim3-mean", loss, {"input": rn(2, 4, 3), "target": ri(0, 4, 2, 3)})
    C(p + "kdim3-none", loss, {"input": rn(2, 4, 3), "target": ri(0, 4, 2, 3)}, {"reduction": "none"})
    t = ri(0, 3, 2, 2, 2)
    t[0, 0, 1] = 1
    t[1, 1, 0] = 1
    for red in ("mean", "none"):
        C(p + f"kdim4-weight-ignore-smooth-{red}", loss,
          {"input": rn(2, 3, 2, 2), "target": t, "weight": ru(3, lo=0.2, hi=2)},
          {"ignore_index": 1, "label_smoothing": 0.15, "reduction": red})
    C(p + "kdim5-sum", loss, {"input": rn(2, 3, 2, 2, 2), "target": ri(0, 3, 2, 2, 2, 2)}, {"reduction": "sum"})
    # unbatched
    C(p + "unbatched-mean", loss, {"input": rn(Cc), "target": L(3)})
    C(p + "unbatched-none", loss, {"input": rn(Cc), "target": L(0)}, {"reduction": "none"})
    C(p + "unbatched-smooth-weight", loss, {"input": rn(Cc), "target": L(4), "weight": ru(Cc, lo=0.2, hi=2)},
      {"label_smoothing": 0.2})
    C(p + "unbatched-ignored-mean", loss, {"input": rn(Cc), "target": L(2)}, {"ignore_index": 2})
    C(p + "single-class", loss, {"input": rn(3, 1), "target": L([0, 0, 0])}, {"reduction": "none"})
    # empty
    for red in ("mean", "sum", "none"):
        C(p + f"idx-empty-{red}", loss, {"input": rn(0, Cc), "target": ri(0, Cc, 0)}, {"reduction": red},
          enc={"input": "flat"})
    C(p + "idx-empty-kdim-mean", loss, {"input": rn(2, Cc, 0), "target": ri(0, Cc, 2, 0)},
      enc={"input": "flat", "target": "flat"})
    # large and non-finite logits
    C(p + "large-1e4-f64-mean", loss, {"input": rn(N, Cc, s=1e4), "target": ri(0, Cc, N)})
    C(p + "large-1e4-f32-mean", loss, {"input": rn(N, Cc, s=1e4), "target": ri(0, Cc, N)}, dtype="float32")
    C(p + "large-1e4-smooth-weight-f64-sum", loss,
      {"input": rn(N, Cc, s=1e4), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.2, hi=2)},
      {"label_smoothing": 0.1, "reduction": "sum"})
    C(p + "large-1e4-probs-f32-none", loss, {"input": rn(N, Cc, s=1e4), "target": probs(N, Cc)},
      {"reduction": "none"}, dtype="float32")
    x = rn(3, Cc)
    x[0, 2] = -INF
    x[1, 0] = -INF
    x[1, 4] = -INF
    C(p + "neg-inf-logit-masked-mean", loss, {"input": x, "target": L([1, 3, 0])})
    C(p + "neg-inf-logit-at-target-none", loss, {"input": x, "target": L([2, 3, 1])}, {"reduction": "none"})
    x = rn(3, Cc)
    x[1, 3] = NAN
    C(p + "nan-logit-row-none", loss, {"input": x, "target": L([1, 3, 0])}, {"reduction": "none"})
    C(p + "nan-logit-row-mean", loss, {"input": x, "target": L([1, 3, 0])})
    # probability targets
    for red in ("mean", "sum", "none"):
        C(p + f"prob-{red}", loss, {"input": rn(N, Cc), "target": probs(N, Cc)}, {"reduction": red})
    for red in ("mean", "none"):
        C(p + f"prob-weight-{red}", loss, {"input": rn(N, Cc), "target": probs(N, Cc), "weight": ru(Cc, lo=0.2, hi=2)},
          {"reduction": red})
    C(p + "prob-smooth-mean", loss, {"input": rn(N, Cc), "target": probs(N, Cc)}, {"label_smoothing": 0.2})
    C(p + "prob-smooth-weight-sum", loss, {"input": rn(N, Cc), "target": probs(N, Cc), "weight": ru(Cc, lo=0.2, hi=2)},
      {"label_smoothing": 0.3, "reduction": "sum"})
    C(p + "prob-smooth-1.0-none", loss, {"input": rn(3, Cc), "target": probs(3, Cc)},
      {"label_smoothing": 1.0, "reduction": "none"})
    C(p + "prob-kdim-mean", loss, {"input": rn(2, 3, 4), "target": probs(2, 3, 4, dim=1)})
    C(p + "prob-kdim-weight-none", loss, {"input": rn(2, 3, 2, 2), "target": probs(2, 3, 2, 2, dim=1),
                                          "weight": ru(3, lo=0.2, hi=2)}, {"reduction": "none"})
    C(p + "prob-unbatched-mean", loss, {"input": rn(Cc), "target": probs(Cc)})
    C(p + "prob-unbatched-weight-smooth-none", loss, {"input": rn(Cc), "target": probs(Cc), "weight": ru(Cc, lo=0.2, hi=2)},
      {"reduction": "none", "label_smoothing": 0.1})
    C(p + "prob-unnormalized-negative-mean", loss, {"input": rn(3, Cc), "target": rn(3, Cc)})
    C(p + "prob-ignore-minus1-mean", loss, {"input": rn(3, Cc), "target": probs(3, Cc)}, {"ignore_index": -1})
    C(p + "prob-onehot-vs-index-weight-mean", loss,
      {"input": rn(3, Cc), "target": T([[0, 1.0, 0, 0, 0], [0, 0, 0, 1.0, 0], [1.0, 0, 0, 0, 0]]),
       "weight": T([1.0, 2.0, 0.5, 3.0, 1.0])})
    x = rn(2, Cc)
    x[0, 1] = -INF
    tp = probs(2, Cc)
    tp[0, 1] = 0.0
    C(p + "prob-zero-at-neg-inf-logit-none", loss, {"input": x, "target": tp}, {"reduction": "none"})
    C(p + "prob-empty-sum", loss, {"input": rn(0, Cc), "target": rn(0, Cc)}, {"reduction": "sum"},
      enc={"input": "flat", "target": "flat"})
    C(p + "prob-empty-mean", loss, {"input": rn(0, Cc), "target": rn(0, Cc)},
      enc={"input": "flat", "target": "flat"})
    C(p + "prob-single-class", loss, {"input": rn(3, 1), "target": ru(3, 1)})
    # float32
    C(p + "f32-idx-mean", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, dtype="float32")
    C(p + "f32-prob-weight-mean", loss, {"input": rn(N, Cc), "target": probs(N, Cc), "weight": ru(Cc, lo=0.2, hi=2)},
      dtype="float32")
    C(p + "f32-smooth-weight-ignore-none", loss,
      {"input": rn(N, Cc), "target": L([2, 4, 2, 0]), "weight": ru(Cc, lo=0.2, hi=2)},
      {"label_smoothing": 0.25, "ignore_index": 2, "reduction": "none"}, dtype="float32")
    C(p + "f32-kdim-mean", loss, {"input": rn(2, 4, 3), "target": ri(0, 4, 2, 3)}, dtype="float32")
    # encodings
    C(p + "enc-b64-int64-target-sum", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"reduction": "sum"},
      enc={"target": "b64"})
    C(p + "enc-flat-all-mean", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.2, hi=2)},
      enc={"input": "flat", "target": "flat", "weight": "flat"})
    C(p + "enc-b64-f32-prob-none", loss, {"input": rn(2, Cc), "target": probs(2, Cc)}, {"reduction": "none"},
      dtype="float32", enc={"input": "b64", "target": "b64"})
    # errors
    E(p + "target-eq-C", loss, {"input": rn(2, Cc), "target": L([0, Cc])}, {}, "invalid_value")
    E(p + "target-negative-not-ignored", loss, {"input": rn(2, Cc), "target": L([-1, 0])}, {}, "invalid_value")
    E(p + "target-out-of-range-none", loss, {"input": rn(2, Cc), "target": L([1, 9])}, {"reduction": "none"},
      "invalid_value")
    E(p + "kdim-target-out-of-range", loss, {"input": rn(2, 3, 2), "target": L([[0, 1], [3, 2]])}, {}, "invalid_value")
    E(p + "unbatched-target-out-of-range", loss, {"input": rn(3), "target": L(3)}, {}, "invalid_value")
    E(p + "target-out-of-range-with-other-ignore", loss, {"input": rn(2, Cc), "target": L([2, 6])},
      {"ignore_index": 2}, "invalid_value")
    E(p + "batch-mismatch", loss, {"input": rn(3, Cc), "target": ri(0, Cc, 2)}, {}, "shape_mismatch")
    E(p + "kdim-target-shape", loss, {"input": rn(2, 3, 4), "target": ri(0, 3, 2, 5)}, {}, "shape_mismatch")
    E(p + "weight-size-6-for-5", loss, {"input": rn(2, Cc), "target": ri(0, Cc, 2), "weight": ru(Cc + 1)}, {}, "shape_mismatch")
    E(p + "weight-2d", loss, {"input": rn(2, Cc), "target": ri(0, Cc, 2), "weight": ru(1, Cc)}, {}, "shape_mismatch")
    E(p + "prob-weight-size", loss, {"input": rn(2, Cc), "target": probs(2, Cc), "weight": ru(3)}, {}, "shape_mismatch")
    E(p + "smoothing-1.5", loss, {"input": rn(2, Cc), "target": ri(0, Cc, 2)}, {"label_smoothing": 1.5}, "invalid_option")
    E(p + "smoothing-1.5-prob", loss, {"input": rn(2, Cc), "target": probs(2, Cc)}, {"label_smoothing": 1.5},
      "invalid_option")
    E(p + "smoothing-negative", loss, {"input": rn(2, Cc), "target": ri(0, Cc, 2)}, {"label_smoothing": -0.1},
      "invalid_option", torch_raises=False,
      note="docs/differences.md item 4: PyTorch silently ignores label_smoothing < 0; lossd rejects it")
    E(p + "smoothing-negative-prob", loss, {"input": rn(2, Cc), "target": probs(2, Cc)}, {"label_smoothing": -0.5},
      "invalid_option", torch_raises=False,
      note="docs/differences.md item 4: PyTorch silently ignores label_smoothing < 0; lossd rejects it")
    E(p + "prob-ignore-index-1", loss, {"input": rn(2, Cc), "target": probs(2, Cc)}, {"ignore_index": 1},
      "invalid_option")
    ERAW(p + "fractional-index-target", loss, {"input": [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], "target": [1, 0.5]},
         "invalid_tensor")
    ERAW(p + "unknown-option-pos-weight", loss, {"input": [[0.1, 0.2, 0.3]], "target": [1], "pos_weight": [1.0]},
         "invalid_option")
    ERAW(p + "reduction-batchmean", loss, {"input": [[0.1, 0.2, 0.3]], "target": [1], "reduction": "batchmean"},
         "invalid_option")


def nll_loss():
    loss = "nll_loss"
    p = loss + "/"
    N, Cc = 4, 5
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": logsm(N, Cc), "target": ri(0, Cc, N)}, {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"weight-{red}", loss, {"input": logsm(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.2, hi=2)},
          {"reduction": red})
    for red in ("mean", "none"):
        C(p + f"ignore-inside-{red}", loss, {"input": logsm(N, Cc), "target": L([3, 1, 3, 0])},
          {"ignore_index": 3, "reduction": red})
    C(p + "ignore-outside-255-weight-mean", loss,
      {"input": logsm(N, Cc), "target": L([255, 2, 4, 255]), "weight": ru(Cc, lo=0.2, hi=2)}, {"ignore_index": 255})
    C(p + "ignore-negative-1-mean", loss, {"input": logsm(N, Cc), "target": L([-1, 2, -1, 0])}, {"ignore_index": -1})
    C(p + "default-ignore-minus100-sum", loss, {"input": logsm(N, Cc), "target": L([-100, 2, 4, -100])},
      {"reduction": "sum"})
    for red in ("mean", "sum", "none"):
        C(p + f"all-ignored-{red}", loss, {"input": logsm(3, Cc), "target": L([-100, -100, -100])}, {"reduction": red})
    w = ru(Cc, lo=0.5, hi=2)
    w[2] = 0.0
    C(p + "zero-total-weight-mean", loss, {"input": logsm(3, Cc), "target": L([2, 2, 2]), "weight": w})
    C(p + "zero-total-weight-sum", loss, {"input": logsm(3, Cc), "target": L([2, 2, 2]), "weight": w},
      {"reduction": "sum"})
    C(p + "negative-weights-sum-to-zero-mean", loss,
      {"input": logsm(2, 3), "target": L([0, 1]), "weight": T([1.0, -1.0, 0.5])})
    C(p + "negative-weights-mean", loss, {"input": logsm(3, 3), "target": L([0, 1, 2]), "weight": T([1.0, -0.5, 2.0])})
    C(p + "positive-input-values", loss, {"input": rn(N, Cc, s=3), "target": ri(0, Cc, N)})
    x = logsm(3, 4)
    x[0, 0] = NAN
    x[1, 3] = INF
    x[2, 2] = -INF
    C(p + "nonfinite-off-target-mean", loss, {"input": x, "target": L([1, 2, 3])})
    C(p + "nonfinite-at-target-none", loss, {"input": x, "target": L([0, 3, 2])}, {"reduction": "none"})
    C(p + "kdim3-mean", loss, {"input": logsm(2, 4, 3, dim=1), "target": ri(0, 4, 2, 3)})
    C(p + "kdim4-weight-ignore-none", loss,
      {"input": logsm(2, 3, 2, 3, dim=1), "target": ri(0, 3, 2, 2, 3), "weight": ru(3, lo=0.2, hi=2)},
      {"ignore_index": 0, "reduction": "none"})
    C(p + "kdim4-weight-ignore-mean", loss,
      {"input": logsm(2, 3, 2, 3, dim=1), "target": ri(0, 3, 2, 2, 3), "weight": ru(3, lo=0.2, hi=2)},
      {"ignore_index": 0})
    C(p + "kdim5-sum", loss, {"input": logsm(2, 3, 2, 2, 2, dim=1), "target": ri(0, 3, 2, 2, 2, 2)}, {"reduction": "sum"})
    C(p + "unbatched-0d-target-none", loss, {"input": logsm(Cc), "target": L(4)}, {"reduction": "none"})
    C(p + "unbatched-0d-target-weight-mean", loss, {"input": logsm(Cc), "target": L(1), "weight": ru(Cc, lo=0.2, hi=2)})
    # section 4 item 17: accepted; forward only, because PyTorch's backward raises for this form
    C(p + "unbatched-1-element-target-none", loss, {"input": logsm(Cc), "target": L([2])}, {"reduction": "none"},
      grad=False)
    C(p + "unbatched-1-element-target-mean", loss, {"input": logsm(Cc), "target": L([3])}, grad=False)
    C(p + "unbatched-ignored-mean", loss, {"input": logsm(Cc), "target": L(2)}, {"ignore_index": 2})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-batch-{red}", loss, {"input": rn(0, Cc), "target": ri(0, Cc, 0)}, {"reduction": red},
          enc={"input": "flat"})
    C(p + "empty-spatial-mean", loss, {"input": rn(2, Cc, 0), "target": ri(0, Cc, 2, 0)},
      enc={"input": "flat", "target": "flat"})
    C(p + "large-1e4-f64-sum", loss, {"input": rn(N, Cc, s=1e4), "target": ri(0, Cc, N)}, {"reduction": "sum"})
    C(p + "f32-weight-mean", loss, {"input": logsm(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.2, hi=2)},
      dtype="float32")
    C(p + "f32-kdim-ignore-none", loss, {"input": logsm(2, 4, 3, dim=1), "target": L([[0, 1, 2], [3, 1, 1]])},
      {"ignore_index": 1, "reduction": "none"}, dtype="float32")
    C(p + "enc-b64-all-mean", loss, {"input": logsm(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.2, hi=2)},
      enc={"input": "b64", "target": "b64", "weight": "b64"})
    E(p + "target-eq-C", loss, {"input": logsm(2, Cc), "target": L([Cc, 0])}, {}, "invalid_value")
    E(p + "target-negative", loss, {"input": logsm(2, Cc), "target": L([0, -3])}, {"reduction": "sum"}, "invalid_value")
    E(p + "kdim-target-out-of-range", loss, {"input": logsm(2, 3, 2, dim=1), "target": L([[0, 4], [1, 2]])},
      {"reduction": "none"}, "invalid_value")
    E(p + "batch-mismatch", loss, {"input": logsm(4, Cc), "target": ri(0, Cc, 3)}, {}, "shape_mismatch")
    E(p + "unbatched-target-size-2", loss, {"input": logsm(Cc), "target": L([1, 2])}, {}, "shape_mismatch")
    E(p + "kdim-target-shape", loss, {"input": logsm(2, 3, 4, dim=1), "target": ri(0, 3, 2, 5)}, {}, "shape_mismatch")
    E(p + "kdim4-target-shape", loss, {"input": logsm(2, 3, 2, 2, dim=1), "target": ri(0, 3, 2, 2, 3)}, {},
      "shape_mismatch")
    E(p + "weight-size", loss, {"input": logsm(2, Cc), "target": ri(0, Cc, 2), "weight": ru(Cc - 1)}, {},
      "shape_mismatch")
    ERAW(p + "fractional-target", loss, {"input": [[-0.1, -0.2, -0.3]], "target": [1.5]}, "invalid_tensor")
    ERAW(p + "unknown-option-label-smoothing", loss, {"input": [[-0.1, -0.2, -0.3]], "target": [1],
                                                      "label_smoothing": 0.1}, "invalid_option")


# ----------------------------------------------------------------------------------------------
# binary cross entropy


def bce():
    loss = "binary_cross_entropy"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4)}, {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"weight-row-{red}", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4),
                                          "weight": ru(4, lo=0.1, hi=2)}, {"reduction": red})
    C(p + "weight-col-mean", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4), "weight": ru(3, 1, lo=0.1, hi=2)})
    C(p + "weight-full-sum", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4), "weight": ru(3, 4, lo=0, hi=2)},
      {"reduction": "sum"})
    C(p + "weight-0d-mean", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4), "weight": T(2.5)})
    w = ru(4, lo=0.1, hi=2)
    w[1] = 0.0
    C(p + "weight-zero-mean", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4), "weight": w})
    C(p + "hard-targets-mean", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": torch.round(ru(3, 4))})
    x = T([[0.0, 0.0, 1.0, 1.0, 0.5, 0.5], [0.0, 1.0, 0.25, 1e-50, 1.0 - 1e-16, 0.999]])
    y = T([[0.0, 1.0, 0.0, 1.0, 0.5, 0.0], [0.3, 0.7, 1.0, 1.0, 0.0, 0.5]])
    for red in ("none", "mean"):
        C(p + f"log-clamp-and-grad-floor-{red}", loss, {"input": x, "target": y}, {"reduction": red})
    C(p + "log-clamp-weight-sum", loss, {"input": x, "target": y, "weight": ru(6, lo=0.1, hi=2)}, {"reduction": "sum"})
    C(p + "log-clamp-f32-none", loss, {"input": T([0.0, 1.0, 0.0, 1.0, 1e-30, 0.5]), "target": T([0.0, 1.0, 1.0, 0.0, 1.0, 0.5])},
      {"reduction": "none"}, dtype="float32")
    C(p + "unbatched-1d-mean", loss, {"input": ru(6, lo=0.02, hi=0.98), "target": ru(6)})
    C(p + "0d-none", loss, {"input": T(0.3), "target": T(0.8)}, {"reduction": "none"})
    C(p + "0d-weight-mean", loss, {"input": T(0.9), "target": T(0.1), "weight": T(3.0)})
    C(p + "3d-weight-bcast-none", loss, {"input": ru(2, 3, 2, lo=0.02, hi=0.98), "target": ru(2, 3, 2),
                                        "weight": ru(3, 1, lo=0.1, hi=2)}, {"reduction": "none"})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": ru(0), "target": ru(0)}, {"reduction": red})
    C(p + "empty-2d-weight-mean", loss, {"input": ru(0, 3), "target": ru(0, 3), "weight": ru(3)},
      enc={"input": "flat", "target": "flat"})
    for red in ("mean", "none"):
        C(p + f"f32-{red}", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4)}, {"reduction": red},
          dtype="float32")
    C(p + "f32-weight-sum", loss, {"input": ru(3, 4, lo=0.02, hi=0.98), "target": ru(3, 4), "weight": ru(4, lo=0.1, hi=2)},
      {"reduction": "sum"}, dtype="float32")
    C(p + "enc-b64-mean", loss, {"input": ru(2, 3, lo=0.02, hi=0.98), "target": ru(2, 3)},
      enc={"input": "b64", "target": "flat"})
    E(p + "input-above-1", loss, {"input": T([0.5, 1.0000001]), "target": T([0.0, 1.0])}, {}, "invalid_value")
    E(p + "input-negative", loss, {"input": T([[0.5, -0.0001]]), "target": T([[0.0, 1.0]])}, {"reduction": "none"},
      "invalid_value")
    E(p + "input-nan", loss, {"input": T([0.5, NAN]), "target": T([0.0, 1.0])}, {}, "invalid_value")
    E(p + "input-inf", loss, {"input": T([INF, 0.5]), "target": T([0.0, 1.0])}, {}, "invalid_value")
    E(p + "target-above-1", loss, {"input": T([0.5, 0.5]), "target": T([0.0, 1.5])}, {}, "invalid_value")
    E(p + "target-negative", loss, {"input": T([0.5, 0.5]), "target": T([-0.5, 1.0])}, {}, "invalid_value")
    E(p + "target-nan", loss, {"input": T([0.5, 0.5]), "target": T([NAN, 1.0])}, {}, "invalid_value")
    E(p + "input-out-of-range-f32", loss, {"input": T([0.5, 2.0]), "target": T([0.0, 1.0])}, {}, "invalid_value",
      dtype="float32")
    E(p + "shape-mismatch-bcastable", loss, {"input": ru(3, 2), "target": ru(3, 1)}, {}, "shape_mismatch")
    E(p + "shape-mismatch", loss, {"input": ru(3), "target": ru(4)}, {}, "shape_mismatch")
    E(p + "weight-enlarges", loss, {"input": ru(3, 2), "target": ru(3, 2), "weight": ru(2, 3, 2)}, {}, "shape_mismatch")
    E(p + "weight-not-broadcastable", loss, {"input": ru(3, 2), "target": ru(3, 2), "weight": ru(4)}, {},
      "shape_mismatch")
    ERAW(p + "unknown-option-pos-weight", loss, {"input": [0.5], "target": [1.0], "pos_weight": [2.0]}, "invalid_option")


def bce_logits():
    loss = "binary_cross_entropy_with_logits"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4)}, {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"pos-weight-row-{red}", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "pos_weight": ru(4, lo=0.2, hi=4)},
          {"reduction": red})
    C(p + "weight-row-mean", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "weight": ru(4, lo=0.1, hi=2)})
    C(p + "weight-col-none", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "weight": ru(3, 1, lo=0.1, hi=2)},
      {"reduction": "none"})
    C(p + "weight-0d-sum", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "weight": T(0.75)}, {"reduction": "sum"})
    C(p + "weight-and-pos-weight-mean", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "weight": ru(3, 4, lo=0, hi=2),
                                              "pos_weight": ru(4, lo=0.2, hi=4)})
    C(p + "pos-weight-zero-negative-none", loss, {"input": rn(2, 4, s=2), "target": ru(2, 4),
                                                 "pos_weight": T([0.0, -1.0, 1.0, 2.5])}, {"reduction": "none"})
    C(p + "pos-weight-kdim-c11-mean", loss, {"input": rn(2, 3, 2, 2, s=2), "target": ru(2, 3, 2, 2),
                                            "pos_weight": ru(3, 1, 1, lo=0.2, hi=4)})
    C(p + "pos-weight-0d-mean", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "pos_weight": T(3.0)})
    C(p + "target-outside-0-1-none", loss, {"input": rn(2, 3, s=2), "target": rn(2, 3, s=2)}, {"reduction": "none"})
    C(p + "hard-targets-sum", loss, {"input": rn(3, 4, s=2), "target": torch.round(ru(3, 4))}, {"reduction": "sum"})
    C(p + "zero-logits-mean", loss, {"input": torch.zeros(2, 3, dtype=torch.float64), "target": ru(2, 3)})
    x = rn(3, 4, s=1e4)
    x[0, 0] = 1e4
    x[0, 1] = -1e4
    for dt in ("float64", "float32"):
        C(p + f"large-1e4-{dt}-none", loss, {"input": x, "target": ru(3, 4)}, {"reduction": "none"}, dtype=dt)
        C(p + f"large-1e4-pos-weight-{dt}-mean", loss, {"input": x, "target": ru(3, 4), "pos_weight": ru(4, lo=0.2, hi=4)},
          dtype=dt)
    C(p + "large-200-exact-none", loss, {"input": T([200.0, -200.0, 200.0, -200.0]), "target": T([0.0, 1.0, 1.0, 0.0])},
      {"reduction": "none"})
    C(p + "nonfinite-input-none", loss, {"input": T([NAN, INF, -INF, INF, -INF, 0.5]), "target": T([0.5, 1.0, 0.0, 0.0, 1.0, 0.5])},
      {"reduction": "none"})
    C(p + "unbatched-1d-mean", loss, {"input": rn(5, s=2), "target": ru(5), "pos_weight": ru(5, lo=0.2, hi=4)})
    C(p + "0d-none", loss, {"input": T(-0.7), "target": T(0.3)}, {"reduction": "none"})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": rn(0, 3), "target": ru(0, 3), "pos_weight": ru(3)}, {"reduction": red},
          enc={"input": "flat", "target": "flat"})
    for red in ("mean", "none"):
        C(p + f"f32-pos-weight-{red}", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4), "pos_weight": ru(4, lo=0.2, hi=4),
                                             "weight": ru(4, lo=0.1, hi=2)}, {"reduction": red}, dtype="float32")
    C(p + "enc-b64-sum", loss, {"input": rn(2, 3), "target": ru(2, 3), "pos_weight": ru(3)}, {"reduction": "sum"},
      enc={"input": "b64", "target": "b64", "pos_weight": "flat"})
    E(p + "shape-mismatch-bcastable", loss, {"input": rn(3, 2), "target": ru(3, 1)}, {}, "shape_mismatch")
    E(p + "shape-mismatch", loss, {"input": rn(2, 3), "target": ru(3, 2)}, {}, "shape_mismatch")
    E(p + "pos-weight-enlarges", loss, {"input": rn(3, 2), "target": ru(3, 2), "pos_weight": ru(2, 3, 2)}, {},
      "shape_mismatch")
    E(p + "pos-weight-not-broadcastable", loss, {"input": rn(3, 2), "target": ru(3, 2), "pos_weight": ru(3)}, {},
      "shape_mismatch")
    E(p + "weight-not-broadcastable", loss, {"input": rn(3, 2), "target": ru(3, 2), "weight": ru(4)}, {},
      "shape_mismatch")
    ERAW(p + "reduction-batchmean", loss, {"input": [0.5], "target": [1.0], "reduction": "batchmean"}, "invalid_option")


# ----------------------------------------------------------------------------------------------
# margin classification losses


def multi_margin():
    loss = "multi_margin_loss"
    p = loss + "/"
    N, Cc = 4, 5
    for red in ("mean", "sum", "none"):
        C(p + f"p1-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"p2-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"p": 2, "reduction": red})
    for red in ("mean", "none"):
        C(p + f"weight-p1-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.1, hi=3)},
          {"reduction": red})
    C(p + "weight-p2-margin-sum", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.1, hi=3)},
      {"p": 2, "margin": 0.3, "reduction": "sum"})
    for m in (0.5, 0.0, -0.5, 3.0):
        C(p + f"margin-{m}-mean", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"margin": m})
    C(p + "margin-integer-json", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N)}, {"margin": 2, "p": 2})
    C(p + "weight-zero-negative-none", loss, {"input": rn(N, Cc), "target": L([0, 1, 2, 3]),
                                             "weight": T([0.0, -1.0, 2.0, 0.5, 1.0])}, {"reduction": "none"})
    # hinge exactly at 0: margin - x_t + x_i == 0 for some i
    x = T([[1.0, 0.0, 0.5, -1.0], [0.25, 1.25, 0.25, 2.25]])
    for pp in (1, 2):
        C(p + f"hinge-exactly-zero-p{pp}", loss, {"input": x, "target": L([0, 3])}, {"p": pp, "reduction": "none"})
    C(p + "unbatched-0d-target-mean", loss, {"input": rn(Cc), "target": L(2)})
    C(p + "unbatched-0d-target-none", loss, {"input": rn(Cc), "target": L(4)}, {"reduction": "none", "p": 2})
    C(p + "unbatched-1-element-target-none", loss, {"input": rn(Cc), "target": L([1])}, {"reduction": "none"})
    C(p + "0d-input-0d-target", loss, {"input": T(0.7), "target": L(0)}, {"reduction": "none"})
    C(p + "single-class-batch", loss, {"input": rn(3, 1), "target": L([0, 0, 0])})
    # section 4 item 1: empty batch
    for red, val in (("mean", "NaN"), ("sum", 0.0)):
        CX(p + f"empty-batch-{red}", loss, {"input": rn(0, Cc), "target": ri(0, Cc, 0)}, {"reduction": red},
           val, [], {"input": []}, enc={"input": "flat"},
           note=f"docs/differences.md item 1: PyTorch returns uninitialized memory; lossd gives {red} of nothing = {val}")
        CX(p + f"empty-batch-p2-weight-{red}", loss,
           {"input": rn(0, Cc), "target": ri(0, Cc, 0), "weight": ru(Cc)}, {"reduction": red, "p": 2},
           val, [], {"input": []}, enc={"input": "flat"},
           note=f"docs/differences.md item 1: PyTorch returns uninitialized memory; lossd gives {red} of nothing = {val}")
    C(p + "empty-batch-none", loss, {"input": rn(0, Cc), "target": ri(0, Cc, 0)}, {"reduction": "none"},
      enc={"input": "flat"})
    x = rn(N, Cc, s=1e4)
    C(p + "large-1e4-f64-p2-sum", loss, {"input": x, "target": ri(0, Cc, N)}, {"p": 2, "reduction": "sum"})
    C(p + "large-1e4-f32-mean", loss, {"input": x, "target": ri(0, Cc, N)}, dtype="float32")
    x = rn(2, 4)
    x[0, 2] = INF
    x[1, 1] = -INF
    C(p + "inf-input-none", loss, {"input": x, "target": L([0, 3])}, {"reduction": "none"}, grad=False)
    for red in ("mean", "none"):
        C(p + f"f32-p2-weight-{red}", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc, lo=0.1, hi=3)},
          {"p": 2, "margin": 0.7, "reduction": red}, dtype="float32")
    C(p + "enc-b64-all-mean", loss, {"input": rn(N, Cc), "target": ri(0, Cc, N), "weight": ru(Cc)},
      enc={"input": "b64", "target": "b64", "weight": "flat"})
    E(p + "p-3", loss, {"input": rn(2, 3), "target": L([0, 1])}, {"p": 3}, "invalid_option")
    E(p + "p-0", loss, {"input": rn(2, 3), "target": L([0, 1])}, {"p": 0}, "invalid_option")
    E(p + "target-eq-C", loss, {"input": rn(2, 3), "target": L([0, 3])}, {}, "invalid_value")
    E(p + "target-negative", loss, {"input": rn(2, 3), "target": L([-1, 1])}, {"reduction": "none"}, "invalid_value")
    E(p + "unbatched-target-out-of-range", loss, {"input": rn(3), "target": L(5)}, {}, "invalid_value")
    E(p + "weight-size", loss, {"input": rn(2, 3), "target": L([0, 1]), "weight": ru(4)}, {}, "shape_mismatch")
    E(p + "weight-2d", loss, {"input": rn(2, 3), "target": L([0, 1]), "weight": ru(1, 3)}, {}, "shape_mismatch")
    E(p + "target-size", loss, {"input": rn(3, 4), "target": L([0, 1])}, {}, "shape_mismatch")
    E(p + "target-2d", loss, {"input": rn(2, 4), "target": L([[0], [1]])}, {}, "shape_mismatch")
    ERAW(p + "fractional-target", loss, {"input": [[0.1, 0.2, 0.3]], "target": [0.5]}, "invalid_tensor")


def multilabel_margin():
    loss = "multilabel_margin_loss"
    p = loss + "/"
    tgt = L([[3, 0, -1, 1, 2], [1, 4, 2, 0, -1], [-1, 2, 3, 4, 0], [4, 4, 1, -1, 3]])
    for red in ("mean", "sum", "none"):
        C(p + f"prefix-{red}", loss, {"input": rn(4, 5), "target": tgt}, {"reduction": red})
    C(p + "doc-example", loss, {"input": T([[0.1, 0.2, 0.4, 0.8]]), "target": L([[3, 0, -1, 1]])})
    C(p + "duplicates", loss, {"input": T([0.5, -0.3, 0.2, 0.9]), "target": L([1, 1, -1, 2])}, {"reduction": "none"})
    C(p + "duplicates-batch-sum", loss, {"input": rn(2, 4), "target": L([[2, 2, 2, -1], [0, 3, 0, 3]])},
      {"reduction": "sum"})
    C(p + "all-minus-one", loss, {"input": rn(2, 4), "target": L([[-1, -1, -1, -1], [-1, 0, 1, 2]])},
      {"reduction": "none"})
    C(p + "all-classes-targets", loss, {"input": rn(2, 4), "target": L([[0, 1, 2, 3], [3, 2, 1, 0]])},
      {"reduction": "none"})
    C(p + "no-terminator", loss, {"input": rn(3, 4), "target": L([[0, 1, 1, 1], [2, 2, 2, 2], [3, 1, 0, 0]])})
    C(p + "after-minus-one-ignored", loss, {"input": rn(2, 5), "target": L([[1, -1, 0, 2, 3], [0, -1, -1, 4, 4]])},
      {"reduction": "none"})
    x = T([[1.0, 0.0, 0.5, 2.0], [0.25, 1.25, -0.75, 0.25]])
    C(p + "hinge-exactly-zero", loss, {"input": x, "target": L([[0, -1, 0, 0], [1, 0, -1, 0]])}, {"reduction": "none"})
    C(p + "unbatched-mean", loss, {"input": rn(5), "target": L([4, 1, -1, 0, 0])})
    C(p + "unbatched-none", loss, {"input": rn(5), "target": L([2, -1, 0, 1, 3])}, {"reduction": "none"})
    C(p + "0d-input", loss, {"input": T(0.3), "target": L(0)}, {"reduction": "none"})
    C(p + "0d-input-minus-one", loss, {"input": T(-0.3), "target": L(-1)})
    for red, val in (("mean", "NaN"), ("sum", 0.0)):
        CX(p + f"empty-batch-{red}", loss, {"input": rn(0, 4), "target": ri(0, 4, 0, 4)}, {"reduction": red},
           val, [], {"input": []}, enc={"input": "flat", "target": "flat"},
           note=f"docs/differences.md item 1: PyTorch returns uninitialized memory; lossd gives {red} of nothing = {val}")
    C(p + "empty-batch-none", loss, {"input": rn(0, 4), "target": ri(0, 4, 0, 4)}, {"reduction": "none"},
      enc={"input": "flat", "target": "flat"})
    C(p + "large-1e4-f64-sum", loss, {"input": rn(3, 5, s=1e4), "target": tgt[:3]}, {"reduction": "sum"})
    C(p + "large-1e4-f32-none", loss, {"input": rn(3, 5, s=1e4), "target": tgt[:3]}, {"reduction": "none"},
      dtype="float32")
    for red in ("mean", "none"):
        C(p + f"f32-{red}", loss, {"input": rn(4, 5), "target": tgt}, {"reduction": red}, dtype="float32")
    C(p + "random-targets-mean", loss, {"input": rn(4, 6), "target": ri(-1, 6, 4, 6)})
    C(p + "enc-b64-target-mean", loss, {"input": rn(4, 5), "target": tgt}, enc={"target": "b64", "input": "flat"})
    E(p + "target-minus-two", loss, {"input": rn(2, 4), "target": L([[0, -2, 1, 1], [0, 1, 2, 3]])}, {}, "invalid_value")
    E(p + "target-eq-C", loss, {"input": rn(2, 4), "target": L([[0, 4, -1, 1], [0, 1, 2, 3]])}, {}, "invalid_value")
    E(p + "target-out-of-range-after-terminator", loss, {"input": rn(2, 4), "target": L([[0, -1, 7, 1], [0, 1, 2, 3]])},
      {}, "invalid_value")
    E(p + "unbatched-target-out-of-range", loss, {"input": rn(4), "target": L([5, -1, 0, 0])}, {}, "invalid_value")
    E(p + "target-shape-1d-for-2d", loss, {"input": rn(5, 4), "target": L([0, 1, -1, 2])}, {}, "shape_mismatch")
    E(p + "target-shape-columns", loss, {"input": rn(2, 4), "target": L([[0, 1, -1], [0, 1, -1]])}, {}, "shape_mismatch")
    ERAW(p + "fractional-target", loss, {"input": [[0.1, 0.2, 0.3]], "target": [[0, 1.5, -1]]}, "invalid_tensor")


def multilabel_soft_margin():
    loss = "multilabel_soft_margin_loss"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": rn(4, 5, s=2), "target": torch.round(ru(4, 5))}, {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"weight-{red}", loss, {"input": rn(4, 5, s=2), "target": torch.round(ru(4, 5)), "weight": ru(5, lo=0.1, hi=2)},
          {"reduction": red})
    C(p + "weight-column-bcast-none", loss, {"input": rn(3, 4, s=2), "target": torch.round(ru(3, 4)),
                                            "weight": ru(3, 1, lo=0.1, hi=2)}, {"reduction": "none"})
    C(p + "weight-zero-negative-mean", loss, {"input": rn(3, 4, s=2), "target": torch.round(ru(3, 4)),
                                             "weight": T([0.0, -1.0, 2.0, 1.0])})
    C(p + "soft-targets-mean", loss, {"input": rn(3, 4, s=2), "target": ru(3, 4)})
    C(p + "targets-outside-0-1-none", loss, {"input": rn(3, 4, s=2), "target": rn(3, 4, s=2)}, {"reduction": "none"})
    C(p + "target-bcast-row-mean", loss, {"input": rn(3, 4, s=2), "target": torch.round(ru(4))})
    C(p + "kdim-3d-none", loss, {"input": rn(2, 3, 4), "target": torch.round(ru(2, 3, 4)), "weight": ru(4, lo=0.1, hi=2)},
      {"reduction": "none"})
    C(p + "kdim-3d-mean", loss, {"input": rn(2, 3, 4), "target": torch.round(ru(2, 3, 4))})
    C(p + "unbatched-1d-none", loss, {"input": rn(5, s=2), "target": torch.round(ru(5))}, {"reduction": "none"})
    C(p + "unbatched-1d-weight-mean", loss, {"input": rn(5, s=2), "target": torch.round(ru(5)), "weight": ru(5, lo=0.1, hi=2)})
    C(p + "single-class-none", loss, {"input": rn(3, 1), "target": T([[1.0], [0.0], [1.0]])}, {"reduction": "none"})
    C(p + "weight-0d-sum", loss, {"input": rn(3, 4), "target": torch.round(ru(3, 4)), "weight": T(1.5)}, {"reduction": "sum"})
    C(p + "target-json-integers-mean", loss, {"input": rn(2, 3), "target": T([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])},
      enc={"target": "int"})
    C(p + "zero-logits-none", loss, {"input": torch.zeros(2, 3, dtype=torch.float64), "target": ru(2, 3)},
      {"reduction": "none"})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-batch-{red}", loss, {"input": rn(0, 4), "target": ru(0, 4)}, {"reduction": red},
          enc={"input": "flat", "target": "flat"})
    x = rn(3, 4, s=1e4)
    for dt in ("float64", "float32"):
        C(p + f"large-1e4-{dt}-mean", loss, {"input": x, "target": torch.round(ru(3, 4)), "weight": ru(4, lo=0.1, hi=2)},
          dtype=dt)
    C(p + "nonfinite-input-none", loss, {"input": T([[NAN, 1.0, 0.5], [INF, -INF, 0.0], [INF, -INF, 1.0]]),
                                        "target": T([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])},
      {"reduction": "none"})
    for red in ("mean", "none"):
        C(p + f"f32-weight-{red}", loss, {"input": rn(4, 5, s=2), "target": torch.round(ru(4, 5)),
                                          "weight": ru(5, lo=0.1, hi=2)}, {"reduction": red}, dtype="float32")
    C(p + "enc-b64-sum", loss, {"input": rn(2, 3), "target": torch.round(ru(2, 3)), "weight": ru(3)},
      {"reduction": "sum"}, enc={"input": "b64", "target": "flat", "weight": "b64"})
    E(p + "target-not-broadcastable", loss, {"input": rn(3, 4), "target": ru(3, 5)}, {}, "shape_mismatch")
    E(p + "weight-not-broadcastable", loss, {"input": rn(3, 4), "target": ru(3, 4), "weight": ru(3)}, {},
      "shape_mismatch")
    ERAW(p + "unknown-option-margin", loss, {"input": [[0.1, 0.2]], "target": [[1.0, 0.0]], "margin": 1.0},
         "invalid_option")


def soft_margin():
    loss = "soft_margin_loss"
    p = loss + "/"

    def stable(kw, opts):  # section 4 item 9
        z = -kw["target"] * kw["input"]
        l = F.softplus(z)
        red = opts.get("reduction", "mean")
        return l if red == "none" else (l.sum() if red == "sum" else l.mean())

    note9 = "docs/differences.md item 9: PyTorch overflows log1p(exp(-y*x)) to inf; lossd computes softplus stably"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": rn(3, 4, s=2), "target": sgn(3, 4)}, {"reduction": red})
    C(p + "target-bcast-row-none", loss, {"input": rn(3, 4, s=2), "target": sgn(4)}, {"reduction": "none"})
    C(p + "target-bcast-col-mean", loss, {"input": rn(3, 4, s=2), "target": sgn(3, 1)})
    C(p + "target-0d-sum", loss, {"input": rn(3, 4, s=2), "target": T(-1.0)}, {"reduction": "sum"})
    C(p + "target-non-pm1-none", loss, {"input": rn(2, 4, s=2), "target": T([[0.0, 0.5, 2.0, -3.0], [1.0, -1.0, 0.25, 0.0]])},
      {"reduction": "none"})
    C(p + "target-json-integers", loss, {"input": rn(4), "target": T([1.0, -1.0, -1.0, 1.0])}, {"reduction": "sum"},
      enc={"target": "int"})
    C(p + "unbatched-1d-mean", loss, {"input": rn(6, s=2), "target": sgn(6)})
    C(p + "0d-none", loss, {"input": T(-0.4), "target": T(1.0)}, {"reduction": "none"})
    C(p + "3d-mean", loss, {"input": rn(2, 3, 2, s=2), "target": sgn(2, 3, 2)})
    C(p + "zero-input", loss, {"input": torch.zeros(3, dtype=torch.float64), "target": T([1.0, -1.0, 1.0])},
      {"reduction": "none"})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": rn(0), "target": rn(0)}, {"reduction": red})
    # large logits PyTorch still computes exactly
    C(p + "large-100-f64-none", loss, {"input": T([100.0, -100.0, 700.0, -700.0, 30.0]), "target": T([1.0, 1.0, 1.0, 1.0, -1.0])},
      {"reduction": "none"})
    C(p + "large-80-f32-none", loss, {"input": T([80.0, -80.0, 85.0, -85.0]), "target": T([1.0, 1.0, -1.0, -1.0])},
      {"reduction": "none"}, dtype="float32")
    # section 4 item 9: where PyTorch overflows
    for red in ("none", "mean"):
        C(p + f"overflow-f64-{red}", loss, {"input": T([-800.0, 1e4, -1e4, 0.5, 710.0]), "target": T([1.0, -1.0, 1.0, 1.0, -1.0])},
          {"reduction": red}, forward=stable, note=note9)
    for red in ("none", "sum"):
        C(p + f"overflow-f32-{red}", loss, {"input": T([-100.0, 1e4, -1e4, 0.5, 90.0]), "target": T([1.0, -1.0, 1.0, 1.0, -1.0])},
          {"reduction": red}, dtype="float32", forward=stable, note=note9)
    C(p + "overflow-large-1e4-f64-mean", loss, {"input": rn(3, 4, s=1e4), "target": sgn(3, 4)}, forward=stable, note=note9)
    C(p + "overflow-large-1e4-f32-mean", loss, {"input": rn(3, 4, s=1e4), "target": sgn(3, 4)}, dtype="float32",
      forward=stable, note=note9)
    # non-finite inputs: forward only (the stable and naive forms agree; gradients at +-inf differ)
    C(p + "nonfinite-input-none", loss, {"input": T([NAN, INF, -INF, INF, 1.0]), "target": T([1.0, 1.0, 1.0, -1.0, NAN])},
      {"reduction": "none"}, grad=False)
    for red in ("mean", "none"):
        C(p + f"f32-{red}", loss, {"input": rn(3, 5, s=2), "target": sgn(3, 5)}, {"reduction": red}, dtype="float32")
    C(p + "enc-flat-b64-mean", loss, {"input": rn(2, 3), "target": sgn(2, 3)}, enc={"input": "flat", "target": "b64"})
    E(p + "target-enlarges-input", loss, {"input": rn(3, 1), "target": sgn(3, 4)}, {}, "shape_mismatch")
    E(p + "target-not-broadcastable", loss, {"input": rn(3, 4), "target": sgn(3)}, {}, "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input": rn(3), "target": sgn(3)}, {"reduction": "batchmean"}, "invalid_option")
    ERAW(p + "unknown-option-margin", loss, {"input": [0.5], "target": [1.0], "margin": 1.0}, "invalid_option")


def linear_ce():
    loss = "linear_cross_entropy"
    p = loss + "/"
    N, D, Cc = 4, 3, 5
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, N)},
          {"reduction": red})
    for red in ("mean", "none"):
        C(p + f"bias-{red}", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, N),
                                    "linear_bias": rn(Cc)}, {"reduction": red})
    C(p + "weight-mean", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, N),
                                "weight": ru(Cc, lo=0.2, hi=2)})
    C(p + "ignore-index-explicit-mean", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": L([1, 3, 1, 0])},
      {"ignore_index": 1})
    C(p + "ignore-default-minus100-sum", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D),
                                               "target": L([-100, 3, 2, -100])}, {"reduction": "sum"})
    C(p + "all-ignored-mean", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D), "target": L([-100, -100])})
    C(p + "smoothing-mean", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, N)},
      {"label_smoothing": 0.2})
    for red in ("mean", "none"):
        C(p + f"smoothing-weight-ignore-bias-{red}", loss,
          {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": L([4, 2, 4, 0]), "linear_bias": rn(Cc),
           "weight": ru(Cc, lo=0.2, hi=2)}, {"label_smoothing": 0.1, "ignore_index": 4, "reduction": red})
    C(p + "unbatched-mean", loss, {"input": rn(D), "linear_weight": rn(Cc, D), "target": L(2), "linear_bias": rn(Cc)})
    C(p + "unbatched-none", loss, {"input": rn(D), "linear_weight": rn(Cc, D), "target": L(0)}, {"reduction": "none"})
    for red in ("mean", "none"):
        C(p + f"kdim-linear-weight-{red}", loss,
          {"input": rn(3, D), "linear_weight": rn(Cc, 2, D), "target": ri(0, Cc, 3, 2), "linear_bias": rn(Cc, 2)},
          {"reduction": red})
    for red in ("mean", "sum", "none"):
        C(p + f"prob-{red}", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": probs(N, Cc)},
          {"reduction": red})
    C(p + "prob-weight-smoothing-bias-mean", loss,
      {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": probs(N, Cc), "linear_bias": rn(Cc),
       "weight": ru(Cc, lo=0.2, hi=2)}, {"label_smoothing": 0.2})
    C(p + "prob-unbatched-none", loss, {"input": rn(D), "linear_weight": rn(Cc, D), "target": probs(Cc)},
      {"reduction": "none"})
    C(p + "empty-batch-mean", loss, {"input": rn(0, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, 0)},
      enc={"input": "flat"})
    C(p + "empty-batch-sum", loss, {"input": rn(0, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, 0)},
      {"reduction": "sum"}, enc={"input": "flat"})
    C(p + "large-logits-f64-mean", loss, {"input": rn(N, D, s=100), "linear_weight": rn(Cc, D, s=30),
                                         "target": ri(0, Cc, N)})
    for red in ("mean", "none"):
        C(p + f"f32-bias-weight-{red}", loss,
          {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, N), "linear_bias": rn(Cc),
           "weight": ru(Cc, lo=0.2, hi=2)}, {"reduction": red}, dtype="float32")
    C(p + "f32-prob-sum", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": probs(N, Cc)},
      {"reduction": "sum"}, dtype="float32")
    C(p + "enc-b64-mean", loss, {"input": rn(N, D), "linear_weight": rn(Cc, D), "target": ri(0, Cc, N)},
      enc={"input": "b64", "linear_weight": "flat", "target": "b64"})
    E(p + "in-features-mismatch", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D + 1), "target": L([0, 1])}, {},
      "shape_mismatch")
    E(p + "target-out-of-range", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D), "target": L([0, Cc])}, {},
      "invalid_value")
    E(p + "weight-size", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D), "target": L([0, 1]), "weight": ru(Cc - 1)},
      {}, "shape_mismatch")
    E(p + "bias-size", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D), "target": L([0, 1]), "linear_bias": rn(Cc + 1)},
      {}, "shape_mismatch")
    E(p + "batch-mismatch", loss, {"input": rn(3, D), "linear_weight": rn(Cc, D), "target": L([0, 1])}, {},
      "shape_mismatch")
    E(p + "smoothing-1.5", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D), "target": L([0, 1])},
      {"label_smoothing": 1.5}, "invalid_option")
    E(p + "prob-with-ignore-index", loss, {"input": rn(2, D), "linear_weight": rn(Cc, D), "target": probs(2, Cc)},
      {"ignore_index": 1}, "invalid_option")


# ----------------------------------------------------------------------------------------------
# probabilistic


def kl_div():
    loss = "kl_div"
    p = loss + "/"
    for lt in (False, True):
        for red in ("mean", "sum", "none", "batchmean"):
            tgt = logsm(3, 4) if lt else probs(3, 4)
            C(p + f"logtarget-{str(lt).lower()}-{red}", loss, {"input": logsm(3, 4), "target": tgt},
              {"reduction": red, "log_target": lt})
    C(p + "target-zeros-none", loss, {"input": logsm(2, 4), "target": T([[0.0, 0.5, 0.5, 0.0], [0.25, 0.0, 0.75, 0.0]])},
      {"reduction": "none"})
    C(p + "target-zeros-batchmean", loss, {"input": logsm(2, 4), "target": T([[0.0, 0.5, 0.5, 0.0], [0.25, 0.0, 0.75, 0.0]])},
      {"reduction": "batchmean"})
    C(p + "target-negative-none", loss, {"input": logsm(2, 3), "target": T([[-0.5, 0.5, 1.0], [0.2, -0.1, 0.9]])},
      {"reduction": "none"})
    C(p + "input-neg-inf-target-zero-none", loss, {"input": T([-INF, -1.0, -INF]), "target": T([0.0, 0.5, 0.5])},
      {"reduction": "none"})
    C(p + "log-target-neg-inf-none", loss, {"input": T([-1.0, -2.0, -0.5]), "target": T([-INF, -0.5, -1.0])},
      {"reduction": "none", "log_target": True})
    C(p + "nan-input-sum", loss, {"input": T([NAN, -1.0, -0.5]), "target": T([0.2, 0.3, 0.5])}, {"reduction": "sum"})
    C(p + "positive-input-values-mean", loss, {"input": rn(3, 4), "target": probs(3, 4)})
    C(p + "bcast-target-row-batchmean", loss, {"input": logsm(3, 4), "target": probs(4)}, {"reduction": "batchmean"})
    C(p + "bcast-input-row-batchmean", loss, {"input": logsm(4), "target": probs(3, 4)}, {"reduction": "batchmean"})
    C(p + "bcast-input-row-none", loss, {"input": logsm(4), "target": probs(3, 4)}, {"reduction": "none"})
    C(p + "bcast-both-log-target-sum", loss, {"input": logsm(3, 1, dim=0), "target": logsm(1, 4)},
      {"reduction": "sum", "log_target": True})
    C(p + "batchmean-1d", loss, {"input": logsm(5), "target": probs(5)}, {"reduction": "batchmean"})
    C(p + "batchmean-0d", loss, {"input": T(-1.2), "target": T(0.3)}, {"reduction": "batchmean"})
    C(p + "batchmean-3d", loss, {"input": logsm(2, 3, 4), "target": probs(2, 3, 4)}, {"reduction": "batchmean"})
    C(p + "batchmean-3d-log-target", loss, {"input": logsm(2, 3, 4), "target": logsm(2, 3, 4)},
      {"reduction": "batchmean", "log_target": True})
    C(p + "0d-none", loss, {"input": T(-0.7), "target": T(0.4)}, {"reduction": "none"})
    for red in ("mean", "batchmean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": rn(0, 3), "target": ru(0, 3)}, {"reduction": red},
          enc={"input": "flat", "target": "flat"})
    C(p + "large-values-f64-sum", loss, {"input": rn(3, 4, s=1e4), "target": ru(3, 4, hi=100)}, {"reduction": "sum"})
    C(p + "large-log-target-f64-none", loss, {"input": rn(2, 3, s=10), "target": rn(2, 3, s=10)},
      {"reduction": "none", "log_target": True})
    for lt in (False, True):
        for red in ("batchmean", "none"):
            tgt = logsm(3, 4) if lt else probs(3, 4)
            C(p + f"f32-logtarget-{str(lt).lower()}-{red}", loss, {"input": logsm(3, 4), "target": tgt},
              {"reduction": red, "log_target": lt}, dtype="float32")
    C(p + "enc-b64-batchmean", loss, {"input": logsm(2, 3), "target": probs(2, 3)}, {"reduction": "batchmean"},
      enc={"input": "b64", "target": "b64"})
    E(p + "shape-mismatch", loss, {"input": logsm(3, 4), "target": probs(3, 5)}, {}, "shape_mismatch")
    E(p + "reduction-avg", loss, {"input": logsm(3), "target": probs(3)}, {"reduction": "avg"}, "invalid_option")
    ERAW(p + "unknown-option-log-input", loss, {"input": [-0.5], "target": [0.5], "log_input": True}, "invalid_option")


def poisson():
    loss = "poisson_nll_loss"
    p = loss + "/"
    cnt = lambda *s: torch.floor(torch.abs(torch.randn(*s, generator=G, dtype=torch.float64)) * 3)
    for li in (True, False):
        for full in (False, True):
            for red in ("mean", "sum", "none"):
                x = rn(3, 4) if li else ru(3, 4, lo=0.01, hi=4)
                C(p + f"log-input-{str(li).lower()}-full-{str(full).lower()}-{red}", loss,
                  {"input": x, "target": cnt(3, 4)}, {"log_input": li, "full": full, "reduction": red})
    y = T([[0.0, 0.5, 1.0, 1.5], [2.0, 3.7, -1.0, 10.0]])
    for li in (True, False):
        x = rn(2, 4) if li else ru(2, 4, lo=0.01, hi=4)
        C(p + f"stirling-boundary-log-input-{str(li).lower()}-none", loss, {"input": x, "target": y},
          {"log_input": li, "full": True, "reduction": "none"})
    C(p + "eps-1e-3-rate-none", loss, {"input": T([0.0, 1e-4, 0.5, 2.0]), "target": T([1.0, 2.0, 0.0, 3.0])},
      {"log_input": False, "eps": 1e-3, "reduction": "none"})
    C(p + "eps-0-zero-rate-none", loss, {"input": T([0.0, 0.0, 1.0]), "target": T([0.0, 2.0, 1.0])},
      {"log_input": False, "eps": 0.0, "reduction": "none"})
    C(p + "rate-negative-input-none", loss, {"input": T([-0.5, 0.5]), "target": T([1.0, 1.0])},
      {"log_input": False, "reduction": "none"})
    C(p + "bcast-target-row-mean", loss, {"input": rn(3, 4), "target": cnt(4)})
    C(p + "bcast-target-col-full-none", loss, {"input": rn(3, 4), "target": cnt(3, 1) + 1.0},
      {"full": True, "reduction": "none"})
    C(p + "bcast-input-smaller-sum", loss, {"input": rn(4), "target": cnt(3, 4)}, {"reduction": "sum"})
    C(p + "0d-none", loss, {"input": T(0.3), "target": T(2.0)}, {"reduction": "none", "full": True})
    C(p + "3d-mean", loss, {"input": rn(2, 3, 2), "target": cnt(2, 3, 2)})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": rn(0), "target": rn(0)}, {"reduction": red})
    C(p + "large-log-input-overflow-none", loss, {"input": T([700.0, 710.0, -800.0, 20.0]), "target": T([1.0, 2.0, 3.0, 0.0])},
      {"reduction": "none"})
    C(p + "large-rate-1e4-sum", loss, {"input": ru(3, 4, lo=1, hi=1e4), "target": cnt(3, 4) * 1000},
      {"reduction": "sum", "log_input": False, "full": True})
    C(p + "nonfinite-input-none", loss, {"input": T([NAN, INF, -INF, 1.0]), "target": T([1.0, 2.0, 0.0, NAN])},
      {"reduction": "none"})
    for li in (True, False):
        x = rn(3, 4) if li else ru(3, 4, lo=0.01, hi=4)
        C(p + f"f32-log-input-{str(li).lower()}-full-mean", loss, {"input": x, "target": cnt(3, 4)},
          {"log_input": li, "full": True}, dtype="float32")
    C(p + "f32-none", loss, {"input": rn(3, 4), "target": cnt(3, 4)}, {"reduction": "none"}, dtype="float32")
    C(p + "enc-flat-b64-mean", loss, {"input": rn(2, 3), "target": cnt(2, 3)}, enc={"input": "flat", "target": "b64"})
    E(p + "shape-mismatch", loss, {"input": rn(3, 4), "target": cnt(3)}, {}, "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input": rn(3), "target": cnt(3)}, {"reduction": "batchmean"}, "invalid_option")
    ERAW(p + "unknown-option-log-target", loss, {"input": [0.5], "target": [1.0], "log_target": True}, "invalid_option")


def gaussian():
    loss = "gaussian_nll_loss"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"var-full-shape-{red}", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, 3, lo=0.1, hi=2)},
          {"reduction": red})
    for red in ("mean", "none"):
        C(p + f"var-col-4x1-{red}", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, 1, lo=0.1, hi=2)},
          {"reduction": red})
    C(p + "var-row-1x3-homoscedastic-sum", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(1, 3, lo=0.1, hi=2)},
      {"reduction": "sum"})
    C(p + "var-short-4-none", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, lo=0.1, hi=2)},
      {"reduction": "none"})
    C(p + "var-short-square-input-precedence-none", loss,
      {"input": rn(3, 3), "target": rn(3, 3), "var": T([0.5, 1.0, 4.0])}, {"reduction": "none"})
    C(p + "var-3d-2x3x1-mean", loss, {"input": rn(2, 3, 4), "target": rn(2, 3, 4), "var": ru(2, 3, 1, lo=0.1, hi=2)})
    C(p + "var-3d-1x3x4-sum", loss, {"input": rn(2, 3, 4), "target": rn(2, 3, 4), "var": ru(1, 3, 4, lo=0.1, hi=2)},
      {"reduction": "sum"})
    C(p + "full-mean", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, 3, lo=0.1, hi=2)}, {"full": True})
    C(p + "full-var-short-none", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, lo=0.1, hi=2)},
      {"full": True, "reduction": "none"})
    C(p + "var-plain-number-mean", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": 0.75})
    C(p + "var-plain-number-full-none", loss, {"input": rn(2, 3), "target": rn(2, 3), "var": 2.5},
      {"full": True, "reduction": "none"})
    C(p + "var-plain-number-below-eps", loss, {"input": rn(3), "target": rn(3), "var": 1e-9}, {"reduction": "sum"})
    C(p + "var-plain-zero", loss, {"input": rn(3), "target": rn(3), "var": 0.0}, {"reduction": "none"})
    # section 4 item 12: an integer var is accepted (PyTorch raises TypeError on a Python int)
    for v in (2, 0):
        out, grads = run_torch(loss, {"input": T([0.5, -1.0, 2.0]), "target": T([0.0, 0.5, 2.5]), "var": float(v)},
                               {"reduction": "none"}, True)
        CX(p + f"var-integer-{v}", loss, {"input": T([0.5, -1.0, 2.0]), "target": T([0.0, 0.5, 2.5]), "var": v},
           {"reduction": "none"}, to_json_value(out), list(out.shape), {k: to_json_value(g) for k, g in grads.items()},
           note="docs/differences.md item 12: lossd accepts an integer var (PyTorch raises TypeError); "
                "expected = PyTorch with float(var)")
    C(p + "var-zero-clamp-grad-none", loss, {"input": T([1.0, 0.0, -2.0]), "target": T([0.0, 0.0, 0.0]),
                                            "var": T([0.0, 0.0, 1e-7])}, {"reduction": "none"})
    C(p + "eps-1e-2-clamp-mean", loss, {"input": rn(3, 4), "target": rn(3, 4), "var": ru(3, 4, lo=0, hi=0.05)},
      {"eps": 1e-2})
    C(p + "var-nan-none", loss, {"input": rn(3), "target": rn(3), "var": T([1.0, NAN, 0.5])}, {"reduction": "none"})
    C(p + "nonfinite-input-none", loss, {"input": T([NAN, INF, 1.0]), "target": T([0.0, 0.0, -INF]), "var": T([1.0, 1.0, 1.0])},
      {"reduction": "none"})
    C(p + "target-bcast-col-none", loss, {"input": rn(4, 3), "target": rn(4, 1), "var": ru(4, 3, lo=0.1, hi=2)},
      {"reduction": "none"})
    C(p + "target-bcast-row-var-short-mean", loss, {"input": rn(4, 3), "target": rn(1, 3), "var": ru(4, lo=0.1, hi=2)})
    C(p + "input-smaller-than-target-none", loss, {"input": rn(1, 3), "target": rn(4, 3), "var": ru(1, 3, lo=0.1, hi=2)},
      {"reduction": "none"})
    C(p + "unbatched-1d-mean", loss, {"input": rn(5), "target": rn(5), "var": ru(5, lo=0.1, hi=2)})
    C(p + "unbatched-1d-var-1-sum", loss, {"input": rn(5), "target": rn(5), "var": ru(1, lo=0.1, hi=2)}, {"reduction": "sum"})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": rn(0, 3), "target": rn(0, 3), "var": ru(0, 3)}, {"reduction": red},
          enc={"input": "flat", "target": "flat", "var": "flat"})
    C(p + "large-1e4-f64-mean", loss, {"input": rn(3, 4, s=1e4), "target": rn(3, 4, s=1e4), "var": ru(3, 4, lo=1, hi=1e4)})
    for red in ("mean", "none"):
        C(p + f"f32-var-col-{red}", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, 1, lo=0.1, hi=2)},
          {"reduction": red, "full": True}, dtype="float32")
    C(p + "f32-var-plain-number-sum", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": 0.5}, {"reduction": "sum"},
      dtype="float32")
    C(p + "enc-b64-mean", loss, {"input": rn(2, 3), "target": rn(2, 3), "var": ru(2, 3, lo=0.1, hi=2)},
      enc={"input": "b64", "target": "flat", "var": "b64"})
    E(p + "var-negative-entry", loss, {"input": rn(2, 3), "target": rn(2, 3), "var": T([[1.0, 1.0, 1.0], [1.0, -0.1, 1.0]])},
      {}, "invalid_value")
    E(p + "var-negative-number", loss, {"input": rn(3), "target": rn(3), "var": -1.0}, {}, "invalid_value")
    E(p + "var-1x1-for-4x3", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(1, 1, lo=0.1)}, {}, "shape_mismatch")
    E(p + "var-3-for-4x3", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(3, lo=0.1)}, {}, "shape_mismatch")
    E(p + "var-2x3-for-4x3", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(2, 3, lo=0.1)}, {}, "shape_mismatch")
    E(p + "var-4x3x1-for-4x3", loss, {"input": rn(4, 3), "target": rn(4, 3), "var": ru(4, 3, 1, lo=0.1)}, {},
      "shape_mismatch")
    E(p + "var-2x1x1-for-2x3x4", loss, {"input": rn(2, 3, 4), "target": rn(2, 3, 4), "var": ru(2, 1, 1, lo=0.1)}, {},
      "shape_mismatch")
    E(p + "target-not-broadcastable", loss, {"input": rn(4, 3), "target": rn(4), "var": ru(4, 3, lo=0.1)}, {},
      "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input": rn(3), "target": rn(3), "var": ru(3, lo=0.1)}, {"reduction": "batchmean"},
      "invalid_option")
    ERAW(p + "missing-var", loss, {"input": [0.5], "target": [1.0]}, "invalid_option")


def ctc():
    loss = "ctc_loss"
    p = loss + "/"
    note2 = ("docs/differences.md item 2: the log_probs gradient is PyTorch's value as is "
             "(exp(log_probs) - posterior), not the true partial derivative")

    def cc(cid, args, opts=None, **kw):
        if kw.get("grad", True):
            kw.setdefault("note", note2)
        C(p + cid, loss, args, opts, **kw)

    T_, N, Cc = 8, 3, 5
    padded = L([[1, 2, 2, 3], [4, 1, 3, 3], [2, 4, 1, 1]])
    for red in ("mean", "sum", "none"):
        cc(f"padded-varlen-{red}", {"log_probs": logsm(T_, N, Cc), "targets": padded, "input_lengths": L([8, 7, 5]),
                             "target_lengths": L([4, 3, 2])}, {"reduction": red})
    for red in ("mean", "none"):
        cc(f"concatenated-{red}", {"log_probs": logsm(T_, N, Cc), "targets": L([1, 2, 2, 3, 4, 1, 3, 2, 4]),
                                   "input_lengths": L([8, 8, 6]), "target_lengths": L([4, 3, 2])}, {"reduction": red})
    cc("blank-middle-mean", {"log_probs": logsm(T_, 2, Cc), "targets": L([[0, 1, 3], [4, 4, 1]]),
                             "input_lengths": L([8, 8]), "target_lengths": L([3, 3])}, {"blank": 2})
    cc("blank-last-sum", {"log_probs": logsm(T_, 2, Cc), "targets": L([[0, 1, 3], [2, 2, 2]]),
                          "input_lengths": L([8, 7]), "target_lengths": L([3, 3])}, {"blank": 4, "reduction": "sum"})
    # tight feasibility: T_b == L + number of adjacent repeats
    cc("tight-repeats-none", {"log_probs": logsm(6, 2, 4), "targets": L([[1, 1, 2, 2], [3, 3, 3, 1]]),
                              "input_lengths": L([6, 6]), "target_lengths": L([4, 3])}, {"reduction": "none"})
    cc("infeasible-none", {"log_probs": logsm(5, 2, 4), "targets": L([[1, 1, 1, 2], [1, 2, 3, 1]]),
                           "input_lengths": L([5, 3]), "target_lengths": L([4, 4])}, {"reduction": "none"})
    for red in ("mean", "sum", "none"):
        cc(f"infeasible-zero-infinity-{red}", {"log_probs": logsm(5, 2, 4), "targets": L([[1, 1, 1, 2], [1, 2, 3, 1]]),
                                               "input_lengths": L([5, 5]), "target_lengths": L([4, 2])},
           {"reduction": red, "zero_infinity": True})
    cc("zero-target-length-mean", {"log_probs": logsm(T_, 3, Cc), "targets": L([[1, 2, 3], [2, 2, 2], [4, 1, 2]]),
                                   "input_lengths": L([8, 6, 7]), "target_lengths": L([3, 0, 1])}, {"reduction": "mean"})
    cc("zero-target-length-concat-none", {"log_probs": logsm(T_, 3, Cc), "targets": L([1, 2, 3, 4]),
                                          "input_lengths": L([8, 6, 7]), "target_lengths": L([0, 3, 1])},
       {"reduction": "none"})
    cc("zero-input-length-none", {"log_probs": logsm(4, 2, 3), "targets": L([[1, 2], [1, 2]]),
                                  "input_lengths": L([0, 0]), "target_lengths": L([0, 2])}, {"reduction": "none"})
    cc("zero-input-length-zero-infinity-mean", {"log_probs": logsm(4, 2, 3), "targets": L([[1, 2], [1, 2]]),
                                                "input_lengths": L([0, 4]), "target_lengths": L([2, 2])},
       {"reduction": "mean", "zero_infinity": True})
    cc("unbatched-0d-lengths-none", {"log_probs": logsm(T_, Cc), "targets": L([1, 3, 3, 2]), "input_lengths": L(8),
                                     "target_lengths": L(4)}, {"reduction": "none"})
    cc("unbatched-0d-lengths-mean", {"log_probs": logsm(T_, Cc), "targets": L([4, 2]), "input_lengths": L(6),
                                     "target_lengths": L(2)})
    cc("unbatched-1-element-lengths-sum", {"log_probs": logsm(T_, Cc), "targets": L([2, 1, 2]), "input_lengths": L([7]),
                                           "target_lengths": L([3])}, {"reduction": "sum"})
    cc("unnormalized-log-probs-mean", {"log_probs": rn(6, 2, 4), "targets": L([[1, 2], [3, 3]]),
                                       "input_lengths": L([6, 6]), "target_lengths": L([2, 2])})
    cc("single-class-label-long-T-none", {"log_probs": logsm(12, 1, 2), "targets": L([[1, 1, 1]]),
                                          "input_lengths": L([12]), "target_lengths": L([3])}, {"reduction": "none"})
    cc("batch-1-sum", {"log_probs": logsm(T_, 1, Cc), "targets": L([[3, 1]]), "input_lengths": L([8]),
                       "target_lengths": L([2])}, {"reduction": "sum"})
    for red in ("mean", "none"):
        cc(f"f32-padded-{red}", {"log_probs": logsm(T_, N, Cc), "targets": padded, "input_lengths": L([8, 6, 8]),
                                 "target_lengths": L([4, 2, 3])}, {"reduction": red}, dtype="float32")
    cc("f32-infeasible-zero-infinity-sum", {"log_probs": logsm(4, 2, 4), "targets": L([[1, 1, 1, 2], [1, 2, 3, 1]]),
                                            "input_lengths": L([4, 4]), "target_lengths": L([4, 2])},
       {"reduction": "sum", "zero_infinity": True}, dtype="float32")
    cc("enc-b64-targets-lengths-mean", {"log_probs": logsm(T_, N, Cc), "targets": padded, "input_lengths": L([8, 7, 5]),
                                        "target_lengths": L([4, 3, 2])},
       enc={"log_probs": "b64", "targets": "b64", "input_lengths": "b64", "target_lengths": "flat"})
    cc("forward-only-sum", {"log_probs": logsm(T_, N, Cc), "targets": padded, "input_lengths": L([8, 7, 5]),
                            "target_lengths": L([4, 3, 2])}, {"reduction": "sum"}, grad=False)
    base = lambda: {"log_probs": logsm(6, 2, Cc), "input_lengths": L([6, 6]), "target_lengths": L([2, 2])}
    note3 = "docs/differences.md item 3: PyTorch does not validate CTC label values; lossd rejects them"
    a = base(); a["targets"] = L([[1, 0], [2, 3]])
    E(p + "label-equals-blank", loss, a, {}, "invalid_value", torch_raises=False, note=note3)
    a = base(); a["targets"] = L([[1, 2], [2, 3]])
    E(p + "label-equals-blank-nondefault", loss, a, {"blank": 3}, "invalid_value", torch_raises=False, note=note3)
    a = base(); a["targets"] = L([1, 2, 0, 3])
    E(p + "label-equals-blank-concatenated", loss, a, {}, "invalid_value", torch_raises=False, note=note3)
    a = base(); a["targets"] = L([[1, Cc], [2, 3]])
    E(p + "label-eq-C", loss, a, {}, "invalid_value", torch_raises=False, note=note3)
    a = base(); a["targets"] = L([[1, 2], [-1, 3]])
    E(p + "label-negative", loss, a, {}, "invalid_value", torch_raises=False, note=note3)
    a = base(); a["targets"] = L([[1, 2], [2, 3]]); a["input_lengths"] = L([7, 6])
    E(p + "input-length-above-T", loss, a, {}, "invalid_value")
    a = base(); a["targets"] = L([[1, 2], [2, 3]]); a["input_lengths"] = L([6, -1])
    E(p + "input-length-negative", loss, a, {}, "invalid_value")
    a = base(); a["targets"] = L([[1, 2], [2, 3]]); a["target_lengths"] = L([-1, 2])
    E(p + "target-length-negative", loss, a, {}, "invalid_value")
    a = base(); a["targets"] = L([[1, 2], [2, 3]])
    E(p + "blank-eq-C", loss, a, {"blank": Cc}, "invalid_option")
    a = base(); a["targets"] = L([[1, 2], [2, 3]])
    E(p + "blank-negative", loss, a, {"blank": -1}, "invalid_option")
    a = base(); a["targets"] = L([[1, 2], [2, 3]]); a["input_lengths"] = L([6, 6, 6])
    E(p + "input-lengths-size", loss, a, {}, "shape_mismatch")
    a = base(); a["targets"] = L([[1, 2], [2, 3]]); a["target_lengths"] = L([2])
    E(p + "target-lengths-size", loss, a, {}, "shape_mismatch")
    a = base(); a["targets"] = L([[1, 2], [2, 3]])
    E(p + "reduction-batchmean", loss, a, {"reduction": "batchmean"}, "invalid_option")
    ERAW(p + "fractional-target", loss, {"log_probs": [[[-0.5, -1.0]], [[-0.7, -0.7]]], "targets": [[1.5]],
                                         "input_lengths": [2], "target_lengths": [1]}, "invalid_tensor")
    ERAW(p + "fractional-input-length", loss, {"log_probs": [[[-0.5, -1.0]], [[-0.7, -0.7]]], "targets": [[1]],
                                               "input_lengths": [1.5], "target_lengths": [1]}, "invalid_tensor")


# ----------------------------------------------------------------------------------------------
# ranking and embedding


def margin_ranking():
    loss = "margin_ranking_loss"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input1": rn(8), "input2": rn(8), "target": sgn(8)}, {"reduction": red})
    for m in (0.5, -0.3):
        C(p + f"margin-{m}-none", loss, {"input1": rn(6), "input2": rn(6), "target": sgn(6)},
          {"margin": m, "reduction": "none"})
    C(p + "margin-integer-json-mean", loss, {"input1": rn(6), "input2": rn(6), "target": sgn(6)}, {"margin": 1})
    C(p + "target-zero-and-other-none", loss, {"input1": rn(5), "input2": rn(5), "target": T([0.0, 2.0, 0.5, -3.0, 0.0])},
      {"margin": 0.2, "reduction": "none"})
    C(p + "hinge-exactly-zero-none", loss, {"input1": T([1.0, 0.5, 2.0, 0.0]), "input2": T([0.5, 1.0, 2.0, 0.0]),
                                            "target": T([1.0, -1.0, 1.0, -1.0])}, {"margin": 0.5, "reduction": "none"})
    C(p + "hinge-exactly-zero-default-margin", loss, {"input1": T([1.0, 0.5, 2.0]), "input2": T([1.0, 0.5, 2.0]),
                                                      "target": T([1.0, -1.0, 1.0])}, {"reduction": "sum"})
    C(p + "target-json-integers", loss, {"input1": rn(4), "input2": rn(4), "target": T([1.0, -1.0, 1.0, -1.0])},
      {"margin": 0.1, "reduction": "sum"}, enc={"target": "int"})
    C(p + "3d-none", loss, {"input1": rn(2, 2, 3), "input2": rn(2, 2, 3), "target": sgn(2, 2, 3)},
      {"reduction": "none", "margin": 0.4})
    C(p + "bcast-0d-like-1x1-sum", loss, {"input1": rn(1, 1), "input2": rn(3, 4), "target": sgn(3, 1)},
      {"reduction": "sum", "margin": -0.2})
    C(p + "f32-bcast-none", loss, {"input1": rn(3, 1), "input2": rn(1, 4), "target": sgn(3, 4)}, {"reduction": "none"},
      dtype="float32")
    C(p + "2d-mean", loss, {"input1": rn(3, 4), "input2": rn(3, 4), "target": sgn(3, 4)}, {"margin": 0.3})
    C(p + "bcast-2d-none", loss, {"input1": rn(3, 1), "input2": rn(1, 4), "target": sgn(3, 4)}, {"reduction": "none"})
    C(p + "bcast-target-row-mean", loss, {"input1": rn(3, 4), "input2": rn(3, 4), "target": sgn(1, 4)}, {"margin": 0.2})
    C(p + "0d-none", loss, {"input1": T(0.3), "input2": T(0.9), "target": T(1.0)}, {"reduction": "none", "margin": 0.1})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input1": rn(0), "input2": rn(0), "target": rn(0)}, {"reduction": red})
    # gradients only for infinities on the active side of the hinge; elsewhere PyTorch's gradient is
    # (x1 - x2) * 0 or y * 0 with a non-finite factor (NaN), an artifact of its autograd formula
    C(p + "inf-active-none", loss, {"input1": T([-INF, 1.0, 2.0, 0.5]), "input2": T([0.0, INF, -INF, 0.25]),
                                    "target": T([1.0, 1.0, -1.0, 1.0])}, {"reduction": "none", "margin": 0.5})
    C(p + "nonfinite-forward-none", loss, {"input1": T([INF, 1.0, NAN, 0.5]), "input2": T([0.0, INF, 1.0, 0.0]),
                                           "target": T([1.0, -1.0, 0.0, NAN])}, {"reduction": "none"}, grad=False)
    C(p + "large-1e4-f64-sum", loss, {"input1": rn(6, s=1e4), "input2": rn(6, s=1e4), "target": sgn(6)},
      {"reduction": "sum"})
    for red in ("mean", "none"):
        C(p + f"f32-{red}", loss, {"input1": rn(6), "input2": rn(6), "target": sgn(6)}, {"reduction": red, "margin": 0.25},
          dtype="float32")
    C(p + "f32-large-1e4-mean", loss, {"input1": rn(6, s=1e4), "input2": rn(6, s=1e4), "target": sgn(6)}, dtype="float32")
    C(p + "enc-b64-flat-mean", loss, {"input1": rn(4), "input2": rn(4), "target": sgn(4)},
      enc={"input1": "b64", "input2": "flat", "target": "b64"})
    E(p + "ndim-mismatch", loss, {"input1": rn(3), "input2": rn(3, 1), "target": sgn(3)}, {}, "shape_mismatch")
    E(p + "ndim-mismatch-target", loss, {"input1": rn(3), "input2": rn(3), "target": T(1.0)}, {}, "shape_mismatch")
    E(p + "not-broadcastable", loss, {"input1": rn(3), "input2": rn(4), "target": sgn(3)}, {}, "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input1": rn(3), "input2": rn(3), "target": sgn(3)}, {"reduction": "batchmean"},
      "invalid_option")
    ERAW(p + "missing-target", loss, {"input1": [0.5], "input2": [1.0]}, "invalid_option")


def hinge():
    loss = "hinge_embedding_loss"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input": ru(3, 4, lo=-0.5, hi=2), "target": sgn(3, 4)}, {"reduction": red})
    for m in (0.5, 2.0, -0.5, 0.0):
        C(p + f"margin-{m}-none", loss, {"input": ru(2, 4, lo=-1, hi=2), "target": sgn(2, 4)},
          {"margin": m, "reduction": "none"})
    C(p + "target-other-values-none", loss, {"input": T([0.3, 1.5, -0.2, 0.7, 2.0]), "target": T([0.0, 2.0, 0.5, -3.0, 0.0])},
      {"reduction": "none"})
    C(p + "hinge-exactly-zero-none", loss, {"input": T([1.0, 0.5, 1.0, 2.0]), "target": T([-1.0, -1.0, 1.0, -1.0])},
      {"reduction": "none"})
    C(p + "hinge-exactly-zero-margin-0.5-sum", loss, {"input": T([0.5, 0.5, 0.25]), "target": T([-1.0, 0.0, -1.0])},
      {"margin": 0.5, "reduction": "sum"})
    C(p + "target-json-integers", loss, {"input": ru(4, lo=0, hi=2), "target": T([1.0, -1.0, -1.0, 1.0])}, {"reduction": "none"},
      enc={"target": "int"})
    C(p + "bcast-both-none", loss, {"input": ru(3, 1, lo=0, hi=2), "target": sgn(1, 4)}, {"reduction": "none"})
    C(p + "bcast-input-smaller-mean", loss, {"input": ru(4, lo=0, hi=2), "target": sgn(3, 4)})
    C(p + "bcast-target-0d-sum", loss, {"input": ru(3, 4, lo=0, hi=2), "target": T(-1.0)}, {"reduction": "sum"})
    C(p + "bcast-input-0d-none", loss, {"input": T(0.3), "target": sgn(5)}, {"reduction": "none", "margin": 0.5})
    C(p + "margin-integer-json-mean", loss, {"input": ru(3, 4, lo=0, hi=3), "target": sgn(3, 4)}, {"margin": 2})
    C(p + "f32-nonfinite-none", loss, {"input": T([NAN, INF, -INF, 0.5]), "target": T([-1.0, -1.0, 1.0, 0.0])},
      {"reduction": "none"}, dtype="float32")
    C(p + "0d-none", loss, {"input": T(0.4), "target": T(-1.0)}, {"reduction": "none"})
    C(p + "3d-mean", loss, {"input": ru(2, 2, 3, lo=0, hi=2), "target": sgn(2, 2, 3)})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input": rn(0), "target": rn(0)}, {"reduction": red})
    C(p + "nonfinite-none", loss, {"input": T([NAN, INF, -INF, INF, -INF, NAN]), "target": T([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])},
      {"reduction": "none"})
    C(p + "large-1e4-f64-mean", loss, {"input": rn(3, 4, s=1e4), "target": sgn(3, 4)}, {"margin": 5000.0})
    for red in ("mean", "none"):
        C(p + f"f32-{red}", loss, {"input": ru(3, 4, lo=-0.5, hi=2), "target": sgn(3, 4)}, {"reduction": red, "margin": 0.75},
          dtype="float32")
    C(p + "enc-b64-mean", loss, {"input": ru(2, 3, lo=0, hi=2), "target": sgn(2, 3)}, enc={"input": "b64", "target": "b64"})
    E(p + "not-broadcastable", loss, {"input": ru(3, 4), "target": sgn(3)}, {}, "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input": ru(3), "target": sgn(3)}, {"reduction": "batchmean"}, "invalid_option")
    ERAW(p + "unknown-option-p", loss, {"input": [0.5], "target": [1.0], "p": 2}, "invalid_option")


def cosine():
    loss = "cosine_embedding_loss"
    p = loss + "/"
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, {"input1": rn(4, 5), "input2": rn(4, 5), "target": sgn(4)}, {"reduction": red})
    for m in (0.3, -0.5, 0.9):
        C(p + f"margin-{m}-none", loss, {"input1": rn(4, 5), "input2": rn(4, 5), "target": sgn(4)},
          {"margin": m, "reduction": "none"})
    C(p + "target-other-values-none", loss, {"input1": rn(4, 3), "input2": rn(4, 3), "target": T([0.0, 2.0, 0.5, -1.0])},
      {"reduction": "none"})
    C(p + "zero-vectors-none", loss, {"input1": T([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]),
                                      "input2": T([[1.0, -1.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
                                      "target": T([1.0, 1.0, -1.0])}, {"reduction": "none"})
    C(p + "orthogonal-hinge-exactly-zero", loss, {"input1": T([[1.0, 0.0], [2.0, 1.0]]), "input2": T([[0.0, 1.0], [-1.0, 2.0]]),
                                                  "target": T([-1.0, -1.0])}, {"reduction": "sum"})
    C(p + "identical-vectors", loss, {"input1": T([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]]), "input2": T([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]]),
                                      "target": T([1.0, -1.0])}, {"reduction": "none", "margin": 0.5})
    C(p + "target-json-integers", loss, {"input1": rn(3, 4), "input2": rn(3, 4), "target": T([1.0, -1.0, 1.0])},
      enc={"target": "int"})
    C(p + "bcast-input2-row-none", loss, {"input1": rn(3, 5), "input2": rn(1, 5), "target": sgn(3)}, {"reduction": "none"})
    C(p + "bcast-input1-row-mean", loss, {"input1": rn(1, 5), "input2": rn(3, 5), "target": sgn(3)}, {"margin": -0.2})
    C(p + "bcast-target-1-none", loss, {"input1": rn(3, 5), "input2": rn(3, 5), "target": T([-1.0])}, {"reduction": "none"})
    C(p + "unbatched-0d-target", loss, {"input1": rn(6), "input2": rn(6), "target": T(1.0)})
    C(p + "unbatched-0d-target-neg-none", loss, {"input1": rn(6), "input2": rn(6), "target": T(-1.0)},
      {"reduction": "none", "margin": -0.9})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"input1": rn(0, 4), "input2": rn(0, 4), "target": rn(0)}, {"reduction": red},
          enc={"input1": "flat", "input2": "flat"})
    C(p + "large-1e4-f64-mean", loss, {"input1": rn(3, 4, s=1e4), "input2": rn(3, 4, s=1e4), "target": sgn(3)})
    C(p + "tiny-values-none", loss, {"input1": rn(2, 3, s=1e-4), "input2": rn(2, 3, s=1e-4), "target": T([1.0, -1.0])},
      {"reduction": "none", "margin": -1.0})
    for red in ("mean", "none"):
        C(p + f"f32-{red}", loss, {"input1": rn(4, 5), "input2": rn(4, 5), "target": sgn(4)}, {"reduction": red, "margin": 0.1},
          dtype="float32")
    C(p + "enc-b64-mean", loss, {"input1": rn(2, 3), "input2": rn(2, 3), "target": sgn(2)},
      enc={"input1": "b64", "input2": "flat", "target": "b64"})
    E(p + "target-2d", loss, {"input1": rn(3, 4), "input2": rn(3, 4), "target": sgn(3, 1)}, {}, "shape_mismatch")
    E(p + "target-1d-inputs-1d", loss, {"input1": rn(4), "input2": rn(4), "target": sgn(1)}, {}, "shape_mismatch")
    E(p + "target-0d-inputs-2d", loss, {"input1": rn(3, 4), "input2": rn(3, 4), "target": T(1.0)}, {}, "shape_mismatch")
    E(p + "inputs-mismatch", loss, {"input1": rn(1, 5), "input2": rn(1, 6), "target": sgn(1)}, {}, "shape_mismatch")
    E(p + "target-size", loss, {"input1": rn(3, 4), "input2": rn(3, 4), "target": sgn(2)}, {}, "shape_mismatch")
    E(p + "reduction-batchmean", loss, {"input1": rn(2, 3), "input2": rn(2, 3), "target": sgn(2)},
      {"reduction": "batchmean"}, "invalid_option")


def triplet():
    loss = "triplet_margin_loss"
    p = loss + "/"
    t3 = lambda *s: {"anchor": rn(*s), "positive": rn(*s), "negative": rn(*s)}
    for red in ("mean", "sum", "none"):
        C(p + f"basic-{red}", loss, t3(4, 5), {"reduction": red})
    for pp in (1.0, 3.0, 0.5):
        C(p + f"p-{pp}-none", loss, t3(4, 5), {"p": pp, "reduction": "none"})
    C(p + "p-0-mean", loss, t3(4, 5), {"p": 0.0})
    C(p + "p-integer-json-1", loss, t3(4, 5), {"p": 1})
    C(p + "p-inf-none", loss, t3(4, 5), {"p": "Infinity", "reduction": "none"})
    C(p + "margin-0.5-eps-1e-3-mean", loss, t3(4, 5), {"margin": 0.5, "eps": 1e-3})
    C(p + "margin-3-sum", loss, t3(4, 5), {"margin": 3.0, "reduction": "sum"})
    for pp in (2.0, 1.0):
        C(p + f"swap-p{pp}-none", loss, t3(4, 5), {"swap": True, "p": pp, "reduction": "none", "margin": 2.0})
    # swap with an exact tie d(a,n) == d(p,n)
    tie = {"anchor": T([[1.0, 2.0], [3.0, -1.0]]), "positive": T([[2.0, 1.0], [-1.0, 3.0]]), "negative": T([[0.0, 0.0], [0.0, 0.0]])}
    C(p + "swap-tie-none", loss, tie, {"swap": True, "reduction": "none", "margin": 3.0})
    C(p + "swap-tie-eps-0-p1-sum", loss, tie, {"swap": True, "p": 1.0, "eps": 0.0, "reduction": "sum", "margin": 3.0})
    # p = inf with tied maxima
    pinf = {"anchor": T([[2.0, 2.0, 1.0], [0.0, 1.0, -1.0]]), "positive": T([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
            "negative": T([[1.5, 4.0, 1.0], [2.0, -1.0, 1.0]])}
    C(p + "p-inf-ties-none", loss, pinf, {"p": "Infinity", "reduction": "none", "eps": 0.0, "margin": 2.0})
    C(p + "p-inf-ties-default-eps-sum", loss, pinf, {"p": "Infinity", "reduction": "sum", "margin": 2.0})
    # zero difference vectors (eps = 0 and anchor == positive / anchor == negative)
    zv = {"anchor": T([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]), "positive": T([[1.0, 2.0, 3.0], [1.0, 0.0, 2.0]]),
          "negative": T([[0.0, 2.0, 1.0], [0.5, 0.5, 0.5]])}
    for pp in (1.0, 2.0, 3.0, "Infinity"):
        C(p + f"zero-vectors-eps-0-p-{pp}-none", loss, zv, {"p": pp, "eps": 0.0, "reduction": "none"})
    C(p + "zero-difference-default-eps", loss, {"anchor": T([[1.0, 2.0]]), "positive": T([[1.0, 2.0]]),
                                                "negative": T([[1.0, 2.0]])}, {"reduction": "none"})
    C(p + "hinge-inactive-none", loss, {"anchor": T([[0.0, 0.0]]), "positive": T([[0.1, 0.0]]), "negative": T([[5.0, 0.0]])},
      {"reduction": "none"})
    C(p + "unbatched-1d", loss, t3(6), {"swap": True})
    C(p + "unbatched-1d-none", loss, t3(6), {"reduction": "none", "p": 1.0})
    C(p + "3d-none", loss, t3(2, 3, 4), {"reduction": "none"})
    C(p + "3d-mean", loss, t3(2, 3, 4), {"p": 3.0})
    C(p + "bcast-positive-row-none", loss, {"anchor": rn(3, 4), "positive": rn(1, 4), "negative": rn(3, 4)},
      {"reduction": "none"})
    C(p + "bcast-anchor-row-swap-mean", loss, {"anchor": rn(1, 4), "positive": rn(3, 4), "negative": rn(3, 4)},
      {"swap": True})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"anchor": rn(0, 3), "positive": rn(0, 3), "negative": rn(0, 3)}, {"reduction": red},
          enc={"anchor": "flat", "positive": "flat", "negative": "flat"})
    C(p + "large-1e4-f64-mean", loss, {"anchor": rn(3, 4, s=1e4), "positive": rn(3, 4, s=1e4), "negative": rn(3, 4, s=1e4)},
      {"margin": 1e4})
    C(p + "nonfinite-none", loss, {"anchor": T([[NAN, 0.0], [INF, 0.0]]), "positive": T([[0.0, 0.0], [0.0, 0.0]]),
                                   "negative": T([[1.0, 0.0], [1.0, 0.0]])}, {"reduction": "none"}, grad=False)
    for red in ("mean", "none"):
        C(p + f"f32-swap-{red}", loss, t3(4, 5), {"swap": True, "reduction": red}, dtype="float32")
    C(p + "f32-p1-sum", loss, t3(4, 5), {"p": 1.0, "reduction": "sum"}, dtype="float32")
    C(p + "enc-b64-mean", loss, t3(2, 3), enc={"anchor": "b64", "positive": "flat", "negative": "b64"})
    E(p + "margin-zero", loss, t3(2, 3), {"margin": 0.0}, "invalid_option")
    E(p + "margin-negative", loss, t3(2, 3), {"margin": -1.0}, "invalid_option")
    E(p + "ndim-mismatch", loss, {"anchor": rn(2, 3), "positive": rn(3), "negative": rn(2, 3)}, {}, "shape_mismatch")
    E(p + "not-broadcastable", loss, {"anchor": rn(2, 3), "positive": rn(2, 3), "negative": rn(2, 4)}, {},
      "shape_mismatch")
    E(p + "reduction-batchmean", loss, t3(2, 3), {"reduction": "batchmean"}, "invalid_option")
    ERAW(p + "unknown-option-distance-function", loss,
         {"anchor": [[0.0]], "positive": [[1.0]], "negative": [[2.0]], "distance_function": "pairwise_distance"},
         "invalid_option")


def triplet_wd():
    loss = "triplet_margin_with_distance_loss"
    p = loss + "/"
    t3 = lambda *s: {"anchor": rn(*s), "positive": rn(*s), "negative": rn(*s)}
    for red in ("mean", "sum", "none"):
        C(p + f"default-{red}", loss, t3(4, 5), {"reduction": red})
    C(p + "pairwise-explicit-swap-none", loss, t3(4, 5), {"distance_function": "pairwise_distance", "swap": True,
                                                         "reduction": "none", "margin": 2.0})
    for red in ("mean", "sum", "none"):
        C(p + f"cosine-{red}", loss, t3(4, 5), {"distance_function": "cosine_distance", "reduction": red})
    C(p + "cosine-swap-none", loss, t3(4, 5), {"distance_function": "cosine_distance", "swap": True,
                                              "reduction": "none", "margin": 0.8})
    for m in (0.1, 5.0):
        C(p + f"margin-{m}-mean", loss, t3(4, 5), {"margin": m})
    C(p + "margin-integer-json", loss, t3(4, 5), {"margin": 2, "distance_function": "cosine_distance"})
    tie = {"anchor": T([[1.0, 2.0], [3.0, -1.0]]), "positive": T([[2.0, 1.0], [-1.0, 3.0]]), "negative": T([[0.0, 0.0], [0.0, 0.0]])}
    C(p + "swap-tie-pairwise-none", loss, tie, {"swap": True, "reduction": "none", "margin": 3.0})
    ctie = {"anchor": T([[1.0, 0.0], [2.0, 1.0]]), "positive": T([[0.0, 1.0], [1.0, 2.0]]), "negative": T([[1.0, 1.0], [3.0, 3.0]])}
    C(p + "swap-tie-cosine-sum", loss, ctie, {"swap": True, "reduction": "sum", "distance_function": "cosine_distance"})
    C(p + "cosine-zero-vector-forward", loss, {"anchor": T([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
                                               "positive": T([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
                                               "negative": T([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])},
      {"distance_function": "cosine_distance", "reduction": "none"}, grad=False)
    C(p + "cosine-identical-hinge-inactive", loss, {"anchor": T([[1.0, 2.0]]), "positive": T([[2.0, 4.0]]),
                                                    "negative": T([[-1.0, -2.0]])},
      {"distance_function": "cosine_distance", "reduction": "none"})
    C(p + "unbatched-1d-pairwise", loss, t3(6), {"reduction": "none"})
    C(p + "unbatched-1d-cosine", loss, t3(6), {"distance_function": "cosine_distance"})
    C(p + "3d-cosine-none", loss, t3(2, 3, 4), {"distance_function": "cosine_distance", "reduction": "none"})
    C(p + "3d-pairwise-mean", loss, t3(2, 3, 4))
    C(p + "bcast-negative-row-none", loss, {"anchor": rn(3, 4), "positive": rn(3, 4), "negative": rn(1, 4)},
      {"reduction": "none"})
    C(p + "bcast-positive-row-cosine-mean", loss, {"anchor": rn(3, 4), "positive": rn(1, 4), "negative": rn(3, 4)},
      {"distance_function": "cosine_distance", "swap": True})
    for red in ("mean", "sum", "none"):
        C(p + f"empty-{red}", loss, {"anchor": rn(0, 3), "positive": rn(0, 3), "negative": rn(0, 3)}, {"reduction": red},
          enc={"anchor": "flat", "positive": "flat", "negative": "flat"})
    C(p + "large-1e4-f64-cosine-mean", loss, {"anchor": rn(3, 4, s=1e4), "positive": rn(3, 4, s=1e4),
                                              "negative": rn(3, 4, s=1e4)}, {"distance_function": "cosine_distance"})
    for dfn in ("pairwise_distance", "cosine_distance"):
        C(p + f"f32-{dfn}-swap-none", loss, t3(4, 5), {"distance_function": dfn, "swap": True, "reduction": "none"},
          dtype="float32")
    C(p + "enc-b64-mean", loss, t3(2, 3), {"distance_function": "cosine_distance"},
      enc={"anchor": "b64", "positive": "b64", "negative": "flat"})
    E(p + "margin-zero", loss, t3(2, 3), {"margin": 0.0}, "invalid_option")
    E(p + "margin-negative-cosine", loss, t3(2, 3), {"margin": -0.5, "distance_function": "cosine_distance"},
      "invalid_option")
    E(p + "ndim-mismatch", loss, {"anchor": rn(2, 3), "positive": rn(2, 3), "negative": rn(3)}, {}, "shape_mismatch")
    E(p + "not-broadcastable", loss, {"anchor": rn(2, 3), "positive": rn(3, 3), "negative": rn(2, 3)}, {},
      "shape_mismatch")
    ERAW(p + "distance-function-unknown", loss, {"anchor": [[0.0]], "positive": [[1.0]], "negative": [[2.0]],
                                                 "distance_function": "manhattan"}, "invalid_option")
    E(p + "reduction-batchmean", loss, t3(2, 3), {"reduction": "batchmean"}, "invalid_option")


# ----------------------------------------------------------------------------------------------


def main():
    if not torch.__version__.startswith("2.15."):
        raise SystemExit(f"needs PyTorch 2.15, found {torch.__version__}")
    for loss in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"):
        regression(loss)
    cross_entropy()
    nll_loss()
    bce()
    bce_logits()
    multi_margin()
    multilabel_margin()
    multilabel_soft_margin()
    soft_margin()
    linear_ce()
    kl_div()
    poisson()
    gaussian()
    ctc()
    margin_ranking()
    hinge()
    cosine()
    triplet()
    triplet_wd()

    ids = [c["id"] for c in CASES]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SystemExit(f"duplicate ids: {sorted(dup)}")
    if os.path.exists(SHARED):
        with open(SHARED) as f:
            shared = {json.loads(line)["id"] for line in f if line.strip()}
        clash = shared & set(ids)
        if clash:
            raise SystemExit(f"ids also in the shared file: {sorted(clash)}")
    for c in CASES:
        if not c["id"].startswith(c["loss"] + "/"):
            raise SystemExit(f"bad id {c['id']}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        for c in CASES:
            f.write(json.dumps(c, allow_nan=False, separators=(", ", ": ")) + "\n")
    counts = {}
    for c in CASES:
        counts[c["loss"]] = counts.get(c["loss"], 0) + 1
    for k, v in counts.items():
        print(f"{k:36s} {v}", file=sys.stderr)
    print(f"{len(CASES)} cases -> {os.path.relpath(OUT)} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
