"""Calling lossd from Python: requests for HTTP, numpy arrays as base64 both ways, a body
sent gzip-compressed, and an API key from LOSSD_API_KEY when the server wants one.

    pip install requests numpy
    python examples/clients/python_client.py [http://localhost:8080]
"""

import base64
import gzip
import json
import os
import sys

import numpy as np
import requests

URL = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8080"
# A server run with API keys wants one in every request: `Authorization: Bearer <key>`.
KEY = os.environ.get("LOSSD_API_KEY")
AUTH = {"authorization": f"Bearer {KEY}"} if KEY else {}


DTYPES = {"float64": "<f8", "float32": "<f4", "int64": "<i8"}


def tensor(a: np.ndarray) -> dict:
    """A numpy array as lossd's base64 tensor (raw little-endian bytes)."""
    name = {"f": "float", "i": "int"}[a.dtype.kind] + str(8 * a.dtype.itemsize)
    raw = np.ascontiguousarray(a, dtype=DTYPES[name]).tobytes()
    return {"shape": list(a.shape), "dtype": name, "base64": base64.b64encode(raw).decode()}


def array(t) -> np.ndarray:
    """A tensor of a lossd response (a number, nested lists or a base64 object) as numpy."""
    if isinstance(t, dict):
        raw = base64.b64decode(t["base64"])
        return np.frombuffer(raw, dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return np.array(t, dtype=np.float64)


rng = np.random.default_rng(0)
logits = rng.standard_normal((32, 10))
labels = rng.integers(0, 10, size=32)
body = {"input": tensor(logits), "target": tensor(labels), "grad": True, "encoding": "base64"}
# Large bodies may travel gzip-compressed (`Content-Encoding: gzip`); requests already asks
# for compressed answers (`Accept-Encoding: gzip, deflate`) and decodes them.
r = requests.post(
    f"{URL}/v1/losses/cross_entropy",
    data=gzip.compress(json.dumps(body).encode()),
    headers={"content-type": "application/json", "content-encoding": "gzip", **AUTH},
)
r.raise_for_status()
out = r.json()
grad = array(out["grad"]["input"])
print(f"cross_entropy = {out['loss']:.6f}, gradient {grad.shape}, |grad| = {np.abs(grad).sum():.6f}")

# An error is a problem document: the code and a pointer to the field at fault.
body = {"input": tensor(logits), "target": [10] * 32}
r = requests.post(f"{URL}/v1/losses/cross_entropy", json=body, headers=AUTH)
print(r.status_code, r.json()["code"], r.json()["pointer"])
