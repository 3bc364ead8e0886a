#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from the PyTorch cases in tests/fixtures.

Usage: fuzz/seeds.py <corpus-dir>   (creates <dir>/{tensor_decode,loss_request,batch})
"""

import hashlib
import json
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "fuzz", "corpus")
cases = []
for name in ("pytorch-cases.jsonl", "torch-extra.jsonl"):
    with open(os.path.join(root, "tests", "fixtures", name)) as f:
        cases += [json.loads(line) for line in f if line.strip()]


def put(target: str, data: bytes) -> None:
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


for c in cases:
    body = json.dumps(c["body"], separators=(",", ":")).encode()
    if len(body) > 60000:
        continue
    put("loss_request", c["loss"].encode() + b"\n" + body)
    for key, value in c["body"].items():
        if isinstance(value, (list, dict)):
            put("tensor_decode", json.dumps(value, separators=(",", ":")).encode())
# Custom-expression bodies, and some hostile expressions, for the `custom` target and batches.
with open(os.path.join(root, "tests", "fixtures", "custom-cases.jsonl")) as f:
    custom = [json.loads(line) for line in f if line.strip()]
for c in custom:
    put("custom", json.dumps(c["body"], separators=(",", ":")).encode())
for expr in ["(" * 200 + "x" + ")" * 200, "x" + " + x" * 300, "sum(x, dim=5)", "huber_loss(x)",
             "mse_loss(x, x, reduction='none', weight=x) ^ -0.5", "where(x > 0, x, 1 / x)",
             "log_softmax(x, -1) * softmax(x, 0)", "logsumexp(x, dim=0, keepdim=True) - max(x, 0)"]:
    body = {"expression": expr, "tensors": {"x": [[1.0, -2.0, 0.0], [3.0, 0.5, -1e308]]}, "grad": ["x"]}
    put("custom", json.dumps(body, separators=(",", ":")).encode())
put("batch", json.dumps({"jobs": [dict(c["body"], loss="custom") for c in custom[:4]]}).encode())
for i in range(0, len(cases), 4):
    jobs = [dict(c["body"], loss=c["loss"]) for c in cases[i : i + 4]]
    data = json.dumps({"jobs": jobs}, separators=(",", ":")).encode()
    if len(data) <= 60000:
        put("batch", data)
print(f"fuzz seeds: {sum(len(os.listdir(os.path.join(out, t))) for t in os.listdir(out))} files in {out}")
