"""The fast peer: the loss service a performance-minded Python team would write.

FastAPI + PyTorch like `app.py`, but without its pydantic models: the raw body goes through
orjson and straight into `torch.nn.functional`, nothing is validated (a bad body is a 500),
and the answer is serialised by orjson too. Same routes and tensor shapes as lossd for the
bodies `bench/http_bench.py` sends: nested arrays, `{shape, data}` and `{shape, dtype, base64}`,
options passed through as keyword arguments, `grad: true` for the gradients of the inputs.

Run: `uvicorn fast:app --workers 2 --loop uvloop --http httptools --log-level warning`
(bench/http.sh does this: access logs off). One PyTorch thread per worker process; the two
workers cover the two cores of the benchmark machine.
"""

import base64

import numpy as np
import orjson
import torch
import torch.nn.functional as F
from fastapi import FastAPI, Request, Response

torch.set_num_threads(1)

app = FastAPI(title="fast reference loss service")

# Request keys that are settings of the request, not arguments of the loss.
CONTROL = {"reduction", "dtype", "grad", "encoding"}
# Arguments that always hold integers (class indices, lengths).
INTEGER_ARGS = {"targets", "input_lengths", "target_lengths"}
# Losses whose `target` holds class indices when it has one dimension less than `input`.
INDEX_TARGET = {"cross_entropy", "nll_loss", "multi_margin_loss", "multilabel_margin_loss"}
# The arguments `grad: true` differentiates.
DIFFERENTIABLE = {"input", "input1", "input2", "anchor", "positive", "negative", "log_probs", "var"}
NUMPY = {"float32": np.float32, "float64": np.float64, "int64": np.int64}


def rank(value) -> int:
    if isinstance(value, dict):
        return len(value["shape"])
    return torch.tensor(value).dim()


def to_tensor(value, integer: bool, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, dict) and "base64" in value:
        # The payload's own dtype, as sent; .copy() because frombuffer's array is read-only.
        raw = base64.b64decode(value["base64"])
        array = np.frombuffer(raw, dtype=NUMPY[value["dtype"]]).reshape(value["shape"])
        return torch.from_numpy(array.copy())
    dtype = torch.int64 if integer else dtype
    if isinstance(value, dict):
        return torch.tensor(value["data"], dtype=dtype).reshape(value["shape"])
    return torch.tensor(value, dtype=dtype)


def from_tensor(t: torch.Tensor):
    return t.item() if t.dim() == 0 else t.tolist()


@app.post("/v1/losses/{name}")
async def compute(name: str, request: Request):
    body = orjson.loads(await request.body())
    loss_fn = getattr(F, name)
    dtype = torch.float32 if body.get("dtype") == "float32" else torch.float64
    kwargs, leaves = {}, {}
    for key, value in body.items():
        if key in CONTROL:
            continue
        if isinstance(value, (list, dict)) or key in ("input", "target"):
            integer = key in INTEGER_ARGS or (
                key == "target" and name in INDEX_TARGET and not isinstance(value, dict)
                and rank(value) < rank(body["input"]))
            t = to_tensor(value, integer, dtype)
            if body.get("grad") and key in DIFFERENTIABLE:
                t.requires_grad_(True)
                leaves[key] = t
            kwargs[key] = t
        else:
            kwargs[key] = value
    kwargs["reduction"] = body.get("reduction", "mean")
    loss = loss_fn(**kwargs)
    answer = {"loss": from_tensor(loss.detach()), "shape": list(loss.shape)}
    if leaves:
        grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        answer["grad"] = {key: from_tensor(g) for key, g in zip(leaves, grads)}
    return Response(orjson.dumps(answer), media_type="application/json")


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
