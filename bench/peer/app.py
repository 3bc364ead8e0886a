"""A reference loss service, written the way a Python team would: FastAPI + pydantic + PyTorch.

The same routes and body shapes as lossd for the losses it covers (`POST /v1/losses/{name}`,
tensors as nested JSON, `{shape, data}` or `{shape, dtype, base64}`, `reduction`, `dtype`,
`grad`, `encoding`), so `bench/http.sh` can send both services the same bytes. It is a
benchmark peer, not a second implementation: no limits, no problem documents, few checks.

Run: `uvicorn app:app --workers 2` (bench/http.sh does this). Each worker is one process
with one PyTorch thread (two workers already use both cores of the benchmark machine).
"""

import base64
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

torch.set_num_threads(1)

app = FastAPI(title="reference loss service")

DTYPES = {"float64": torch.float64, "float32": torch.float32, "int64": torch.int64}
NUMPY = {"float64": "<f8", "float32": "<f4", "int64": "<i8"}


class Base64Tensor(BaseModel):
    shape: list[int]
    dtype: Literal["float64", "float32", "int64"]
    base64: str


class DataTensor(BaseModel):
    shape: list[int]
    data: list[Any]


TensorIn = Union[Base64Tensor, DataTensor, list, float, int]


class LossRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: TensorIn
    target: TensorIn
    weight: Optional[TensorIn] = None
    reduction: Literal["mean", "sum", "none"] = "mean"
    dtype: Literal["float64", "float32"] = "float64"
    grad: bool = False
    encoding: Literal["json", "base64"] = "json"
    # options of the covered losses
    ignore_index: int = -100
    label_smoothing: float = 0.0
    beta: float = 1.0
    delta: float = 1.0


def to_tensor(t: TensorIn, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(t, Base64Tensor):
        raw = base64.b64decode(t.base64)
        a = np.frombuffer(raw, dtype=NUMPY[t.dtype]).reshape(t.shape)
        return torch.from_numpy(a.copy()).to(dtype)
    if isinstance(t, DataTensor):
        return torch.tensor(t.data, dtype=dtype).reshape(t.shape)
    return torch.tensor(t, dtype=dtype)


def from_tensor(t: torch.Tensor, encoding: str):
    t = t.detach()
    if encoding == "base64":
        a = t.numpy()
        name = {torch.float64: "float64", torch.float32: "float32"}[t.dtype]
        raw = np.ascontiguousarray(a, dtype=NUMPY[name]).tobytes()
        return {"shape": list(t.shape), "dtype": name, "base64": base64.b64encode(raw).decode()}
    return t.tolist()


FLOAT_TARGET = {"l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy"}
LOSSES = FLOAT_TARGET | {"cross_entropy", "nll_loss"}


@app.post("/v1/losses/{name}")
def compute(name: str, req: LossRequest):
    if name not in LOSSES:
        raise HTTPException(status_code=404, detail=f"unknown loss {name}")
    dtype = DTYPES[req.dtype]
    x = to_tensor(req.input, dtype).requires_grad_(req.grad)
    if name in FLOAT_TARGET:
        y = to_tensor(req.target, dtype).requires_grad_(req.grad)
    else:
        y = to_tensor(req.target, torch.int64)
    w = None if req.weight is None else to_tensor(req.weight, dtype)
    args = [x, y] if y.is_floating_point() else [x]
    try:
        if name == "mse_loss":
            loss = F.mse_loss(x, y, reduction=req.reduction, weight=w)
        elif name == "l1_loss":
            loss = F.l1_loss(x, y, reduction=req.reduction, weight=w)
        elif name == "smooth_l1_loss":
            loss = F.smooth_l1_loss(x, y, reduction=req.reduction, beta=req.beta)
        elif name == "huber_loss":
            loss = F.huber_loss(x, y, reduction=req.reduction, delta=req.delta, weight=w)
        elif name == "binary_cross_entropy":
            loss = F.binary_cross_entropy(x, y, weight=w, reduction=req.reduction)
        elif name == "cross_entropy":
            loss = F.cross_entropy(
                x, y, weight=w, ignore_index=req.ignore_index,
                reduction=req.reduction, label_smoothing=req.label_smoothing,
            )
        else:
            loss = F.nll_loss(x, y, weight=w, ignore_index=req.ignore_index, reduction=req.reduction)
    except (RuntimeError, ValueError) as e:
        raise HTTPException(status_code=422, detail=str(e))
    out = {
        "loss": loss.item() if loss.dim() == 0 else from_tensor(loss, req.encoding),
        "shape": list(loss.shape),
        "dtype": req.dtype,
    }
    if req.grad:
        names = ["input", "target"][: len(args)]
        grads = torch.autograd.grad(loss.sum(), args)
        out["grad"] = {n: from_tensor(g, req.encoding) for n, g in zip(names, grads)}
    return out


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
