#!/usr/bin/env python3
"""Generates tests/fixtures/custom-cases.jsonl: custom-loss expressions evaluated by PyTorch.

Each case is a request body of POST /v1/losses/custom and PyTorch's answer for it: the value,
its shape, and the gradient of the value (of its sum, when it is not a scalar) with respect to
each tensor of `grad`, from autograd. The expression language is close enough to Python that
PyTorch evaluates the same text: `^` becomes `**` (same precedence and associativity), and the
language's functions are bound to their torch equivalents below (`max(x)` is `x.max()`,
`max(x, dim)` is `x.max(dim).values`, built-in losses are `torch.nn.functional`'s).

Run once with PyTorch 2.15 and commit the output; the service's tests do not need PyTorch:

    python tests/torch/gen_custom_cases.py > tests/fixtures/custom-cases.jsonl
"""

import base64
import json
import math

import torch
import torch.nn.functional as F

RTOL = {"float64": 1e-9, "float32": 1e-5}
ATOL = {"float64": 1e-12, "float32": 1e-6}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def sample(shape, seed, lo=-2.0, hi=2.0, decimals=4):
    """Deterministic values in [lo, hi], rounded so that JSON carries them exactly."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    return (v * 10**decimals).round().div(10**decimals).tolist()


def onehot(labels, classes):
    return [[1 if c == y else 0 for c in range(classes)] for y in labels]


def b64(values, dtype="float64"):
    """The base64 encoding of nested float values."""
    t = torch.tensor(values, dtype=DTYPES[dtype])
    raw = t.contiguous().numpy().tobytes()
    return {"shape": list(t.shape), "dtype": dtype, "base64": base64.b64encode(raw).decode()}


def decoded(v):
    """A tensor's values from any of the encodings used here."""
    if isinstance(v, dict) and "base64" in v:
        import numpy as np

        dt = {"float64": np.float64, "float32": np.float32}[v["dtype"]]
        a = np.frombuffer(base64.b64decode(v["base64"]), dtype=dt).reshape(v["shape"])
        return a.tolist()
    return v


def jsonable(t):
    """A tensor as the API writes it: numbers, with strings for non-finite values."""

    def one(x):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return x

    def walk(v):
        return [walk(u) for u in v] if isinstance(v, list) else one(v)

    return walk(t.detach().to(torch.float64).tolist())


def reduction(op):
    def f(x, dim=None, keepdim=False):
        if dim is None:
            if keepdim:
                return getattr(x, "amax" if op == "max" else "amin" if op == "min" else op)(
                    dim=tuple(range(x.dim())), keepdim=True
                ) if x.dim() > 0 else getattr(x, op)()
            return getattr(x, op)()
        r = getattr(x, op)(dim, keepdim)
        return r.values if op in ("max", "min") else r

    return f


def logsumexp(x, dim=None, keepdim=False):
    if dim is None:
        r = torch.logsumexp(x.reshape(-1), 0)
        return r.reshape([1] * x.dim()) if keepdim else r
    return torch.logsumexp(x, dim, keepdim)


def namespace(dtype):
    def tensor(v):
        return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=dtype)

    ns = {
        "abs": torch.abs,
        "square": torch.square,
        "sqrt": torch.sqrt,
        "exp": torch.exp,
        "log": torch.log,
        "log1p": torch.log1p,
        "expm1": torch.expm1,
        "sigmoid": torch.sigmoid,
        "softplus": F.softplus,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "clamp": lambda input, min=None, max=None: torch.clamp(input, min, max),
        "minimum": lambda a, b: torch.minimum(tensor(a), tensor(b)),
        "maximum": lambda a, b: torch.maximum(tensor(a), tensor(b)),
        "pow": torch.pow,
        "where": lambda c, a, b: torch.where(c if c.dtype == torch.bool else c != 0, a, b),
        "sum": reduction("sum"),
        "mean": reduction("mean"),
        "max": reduction("max"),
        "min": reduction("min"),
        "logsumexp": logsumexp,
        "softmax": lambda x, dim: torch.softmax(x, dim),
        "log_softmax": lambda x, dim: torch.log_softmax(x, dim),
    }
    for name in [
        "l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "multi_margin_loss",
        "multilabel_margin_loss", "multilabel_soft_margin_loss", "soft_margin_loss", "kl_div",
        "poisson_nll_loss", "gaussian_nll_loss", "margin_ranking_loss", "hinge_embedding_loss",
        "cosine_embedding_loss", "triplet_margin_loss",
    ]:
        ns[name] = getattr(F, name)
    return ns


def case(cid, expression, tensors, grad=(), dtype="float64", note=""):
    dt = DTYPES[dtype]
    torch.set_default_dtype(dt)
    leaves = {}
    for name, v in tensors.items():
        values = decoded(v)
        flat = json.dumps(values)
        is_int = isinstance(v, list | int) and "." not in flat and "e" not in flat
        t = torch.tensor(values, dtype=torch.int64 if is_int and name not in grad else dt)
        if name in grad:
            t = t.to(dt).requires_grad_(True)
        leaves[name] = t
    ns = namespace(dt)
    ns.update(leaves)
    value = eval(expression.replace("^", "**"), {"__builtins__": {}}, ns)  # noqa: S307
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(value, dtype=dt)
    grads = {}
    if grad:
        total = value if value.dim() == 0 else value.sum()
        got = torch.autograd.grad(total, [leaves[n] for n in grad], allow_unused=True)
        for n, g in zip(grad, got):
            grads[n] = jsonable(g if g is not None else torch.zeros_like(leaves[n]))
    body = {"expression": expression, "tensors": tensors}
    if grad:
        body["grad"] = list(grad)
    if dtype != "float64":
        body["dtype"] = dtype
    expect = {"status": 200, "loss": jsonable(value), "shape": list(value.shape), "dtype": dtype}
    if grad:
        expect["grad"] = grads
    out = {"id": cid, "body": body, "expect": expect, "rtol": RTOL[dtype], "atol": ATOL[dtype]}
    if note:
        out["note"] = note
    return out


def cases():
    x = sample([4, 3], 1)
    y = sample([4, 3], 2)
    labels = [0, 2, 1, 2]
    probs = torch.softmax(torch.tensor(sample([4, 3], 3)), 1).tolist()
    mask = [[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 1, 1]]
    w4 = sample([4], 4, 0.1, 2.0)
    ties = [[1.0, 3.0, 3.0], [-1.0, -1.0, 0.5], [2.0, 2.0, 2.0], [0.0, -2.0, 1.0]]
    at_bounds = [[-0.5, 0.5, 0.2], [-1.0, 0.5, 1.0], [-0.5, -0.5, 0.0], [0.7, 0.5, -0.3]]
    out = []
    add = out.append
    add(case("custom-mse", "mean(square(input - target))", {"input": x, "target": y},
             ["input", "target"], note="equals mse_loss"))
    add(case("builtin-mse", "mse_loss(input, target)", {"input": x, "target": y},
             ["input", "target"], note="the built-in the custom MSE must equal"))
    add(case("api-example",
             "mean(square(input - target)) + 0.1 * huber_loss(input, target, delta=0.5)",
             {"input": x, "target": y}, ["input"]))
    add(case("focal-log-softmax",
             "mean(sum(-target * (1 - softmax(input, 1)) ^ 2 * log_softmax(input, 1), dim=1))",
             {"input": x, "target": onehot(labels, 3)}, ["input"]))
    add(case("focal-cross-entropy-none",
             "mean((1 - exp(-cross_entropy(input, target, reduction='none'))) ^ 2"
             " * cross_entropy(input, target, reduction='none'))",
             {"input": x, "target": labels}, ["input"],
             note="non-uniform gradient through an unreduced cross_entropy (row-wise)"))
    add(case("dice",
             "1 - (2 * sum(sigmoid(input) * target) + 1) / (sum(sigmoid(input)) + sum(target) + 1)",
             {"input": x, "target": mask}, ["input"]))
    add(case("weighted-builtins",
             "0.7 * huber_loss(input, target, delta=0.5) + 0.3 * l1_loss(input, target, reduction='sum')",
             {"input": x, "target": y}, ["input", "target"]))
    add(case("logsumexp-dim",
             "mean(logsumexp(input, dim=1) - sum(input * target, 1))",
             {"input": x, "target": probs}, ["input", "target"],
             note="cross-entropy with soft labels"))
    add(case("ce-equals", "cross_entropy(input, target)", {"input": x, "target": probs},
             ["input", "target"]))
    add(case("broadcasting", "mean((input - bias) ^ 2 * scale)",
             {"input": x, "bias": sample([3], 5), "scale": sample([4, 1], 6, 0.1, 1.0)},
             ["input", "bias", "scale"]))
    add(case("where-comparisons",
             "sum(where(input > target, (input - target) ^ 2, 0.5 * abs(input - target)))",
             {"input": x, "target": y}, ["input", "target"]))
    add(case("comparison-arithmetic",
             "mean((input > 0) * input - (input <= 0) * 0.1 * input + (input == target) * 100)",
             {"input": ties, "target": at_bounds}, ["input", "target"]))
    add(case("clamp-scalar-bounds", "sum(clamp(input, -0.5, 0.5) * target)",
             {"input": at_bounds, "target": y}, ["input", "target"],
             note="values exactly at the bounds"))
    add(case("clamp-one-bound", "sum(clamp(input, min=-0.5) + clamp(input, max=0.5))",
             {"input": at_bounds}, ["input"]))
    add(case("clamp-tensor-bounds", "sum(clamp(input, lo, hi) * target)",
             {"input": at_bounds, "lo": [-0.5, 0.5, 0.0], "hi": [[0.5], [1.0], [-0.5], [0.5]],
              "target": y},
             ["input", "lo", "hi"], note="ties with both bounds, min > max rows"))
    add(case("max-min-ties", "max(input) + 2 * min(input)", {"input": ties}, ["input"],
             note="x.max() shares the gradient among ties"))
    add(case("max-dim-ties", "sum(max(input, dim=1) * w) - sum(min(input, 0))",
             {"input": ties, "w": w4}, ["input", "w"],
             note="x.max(dim) gives it all to the first"))
    add(case("keepdim-negative-dim", "mean(square(input - mean(input, dim=-1, keepdim=True)))",
             {"input": x}, ["input"]))
    add(case("negative-dims", "sum(softmax(input, -1) * log_softmax(target, -2))",
             {"input": x, "target": y}, ["input", "target"]))
    add(case("keepdim-max", "sum(input - max(input, 1, True)) + sum(max(input, keepdim=True))",
             {"input": x}, ["input"]))
    add(case("unreduced-elementwise",
             "sum(w * smooth_l1_loss(input, target, reduction='none', beta=0.5))",
             {"input": x, "target": sample([3], 7), "w": sample([4, 1], 8)},
             ["input", "target", "w"],
             note="non-uniform gradient through a broadcast element-wise loss"))
    add(case("bce-logits-mask",
             "mean(binary_cross_entropy_with_logits(input, target, reduction='none') * mask)",
             {"input": x, "target": probs, "mask": mask}, ["input", "target"]))
    add(case("powers",
             "sum(abs(input) ^ 1.5) + sum(2 ^ input) + sum(pow(abs(input) + 1, target)) + sum(-input ^ 2)",
             {"input": x, "target": y}, ["input", "target"]))
    add(case("elementwise-functions",
             "mean(sqrt(square(input) + 1) - 1) + mean(log1p(exp(-abs(input)))) + mean(expm1(input * 0.1))"
             " + mean(tanh(input)) + mean(softplus(input)) + mean(relu(input)) + mean(log(sigmoid(input)))",
             {"input": x}, ["input"]))
    add(case("softplus-threshold", "sum(softplus(input * 30))", {"input": x}, ["input"]))
    add(case("minimum-maximum-ties", "sum(maximum(input, target) * 2) + sum(minimum(input, 0))",
             {"input": ties, "target": [[1.0, 0.0, 3.0], [-1.0, 2.0, 0.5], [2.0, 1.0, 2.0], [0.0, 0.0, 0.0]]},
             ["input", "target"]))
    add(case("logsumexp-all", "logsumexp(input) + sum(logsumexp(input, 0, keepdim=True))",
             {"input": x}, ["input"]))
    add(case("scalars", "sum(input * s) + s ^ 2 - 3 * s", {"input": x, "s": 0.75}, ["input", "s"]))
    add(case("kl-batchmean",
             "kl_div(log_softmax(input, 1), softmax(target, 1), reduction='batchmean')",
             {"input": x, "target": y}, ["input", "target"]))
    add(case("nll-log-softmax", "nll_loss(log_softmax(input, 1), labels)",
             {"input": x, "labels": labels}, ["input"]))
    add(case("cross-entropy-options",
             "cross_entropy(input, labels, weight=cw, label_smoothing=0.1, reduction='sum')",
             {"input": x, "labels": labels, "cw": [0.5, 1.0, 2.0]}, ["input"]))
    add(case("triplet-weighted",
             "sum(w * triplet_margin_loss(anchor, positive, negative, margin=2.0, reduction='none'))",
             {"anchor": x, "positive": y, "negative": sample([4, 3], 9), "w": w4},
             ["anchor", "positive", "negative"]))
    add(case("cosine-weighted",
             "sum(w * cosine_embedding_loss(input1, input2, target, reduction='none'))",
             {"input1": x, "input2": y, "target": [1, -1, 1, -1], "w": w4}, ["input1", "input2"]))
    add(case("multilabel-soft-weighted",
             "sum(w * multilabel_soft_margin_loss(input, target, reduction='none'))",
             {"input": x, "target": mask, "w": w4}, ["input", "w"]))
    add(case("gaussian-nll",
             "gaussian_nll_loss(input, target, exp(logvar)) + gaussian_nll_loss(input, target, 0.5, reduction='sum')",
             {"input": x, "target": y, "logvar": sample([4], 10, -1.0, 1.0)},
             ["input", "target", "logvar"]))
    add(case("base64-tensors", "mean(abs(input - target) * weight)",
             {"input": b64(x), "target": b64(y), "weight": b64(sample([3], 11, 0.0, 1.0))},
             ["input", "weight"]))
    add(case("non-scalar-result", "input * 2 - target ^ 2", {"input": x, "target": y},
             ["input", "target"], note="the gradient of the sum"))
    add(case("unused-grad", "sum(input)", {"input": x, "other": y}, ["input", "other"],
             note="an unused tensor's gradient is zeros"))
    add(case("where-broadcast-condition", "sum(where(c > 0, input, target))",
             {"c": [1.0, -1.0, 2.0], "input": x, "target": 0.5}, ["input", "target"]))
    # float32
    add(case("f32-api-example",
             "mean(square(input - target)) + 0.1 * huber_loss(input, target, delta=0.5)",
             {"input": x, "target": y}, ["input", "target"], dtype="float32"))
    add(case("f32-focal",
             "mean(sum(-target * (1 - softmax(input, 1)) ^ 2 * log_softmax(input, 1), dim=1))",
             {"input": x, "target": onehot(labels, 3)}, ["input"], dtype="float32"))
    add(case("f32-dice",
             "1 - (2 * sum(sigmoid(input) * target) + 1) / (sum(sigmoid(input)) + sum(target) + 1)",
             {"input": x, "target": mask}, ["input"], dtype="float32"))
    return out


if __name__ == "__main__":
    for c in cases():
        print(json.dumps(c, separators=(",", ":")))
