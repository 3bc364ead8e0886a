"""lossd through the Open Inference Protocol v2 with KServe's Python SDK (pip `kserve`): its
InferenceRESTClient (REST v2) and InferenceGRPCClient answer liveness, readiness and model
readiness, and an inference with gradients gives the JSON route's numbers. (The SDK's
clients have no model metadata call; tritonclient's test covers metadata.)

    python -m pytest tests/oip/test_kserve.py   (LOSSD_BIN: the binary; default
                                                 target/release/lossd)

Run it in a pytest process of its own: kserve and tritonclient each register the protocol's
`inference.*` protobuf messages, and the second import in one process fails.
"""

import asyncio
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import numpy as np
from kserve import (InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest,
                    RESTConfig)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(binary):
    x = np.array([[0.5, 1.5, -2.0], [1.0, 0.25, 3.0]])
    y = np.array([[0.0, 1.0, 1.0], [2.0, 0.0, 3.5]])
    ins = []
    for name, a in (("input", x), ("target", y)):
        i = InferInput(name, list(a.shape), "FP64")
        i.set_data_from_numpy(a, binary_data=binary)
        ins.append(i)
    # An integer `beta`: KServe's gRPC messages have no double parameter (its SDK refuses a
    # float one), and lossd takes an integer for a float option.
    return InferRequest(model_name="smooth_l1_loss", infer_inputs=ins,
                        parameters={"grad": True, "beta": 2}), x, y


def json_route(port, x, y):
    body = json.dumps({"input": x.tolist(), "target": y.tolist(), "grad": True, "beta": 2})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/losses/smooth_l1_loss",
                                 body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def check(res, want):
    out = {o.name: o.as_numpy() for o in res.outputs}
    assert out["loss"] == want["loss"], (out, want)
    assert out["grad_input"].tolist() == want["grad"]["input"], (out, want)
    assert out["grad_target"].tolist() == want["grad"]["target"], (out, want)


def test_kserve_clients_over_rest_and_grpc():
    binary = os.environ.get("LOSSD_BIN", str(ROOT / "target" / "release" / "lossd"))
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen([binary, "--addr", f"127.0.0.1:{http_port}", "--grpc-addr",
                             f"127.0.0.1:{grpc_port}", "--log", "warn"])

    async def run():
        base = f"http://127.0.0.1:{http_port}"
        rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        grpc = InferenceGRPCClient(f"127.0.0.1:{grpc_port}", retries=0)
        try:
            for _ in range(100):
                try:
                    if await rest.is_server_live(base):
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.1)
            assert await rest.is_server_live(base) and await rest.is_server_ready(base)
            assert await rest.is_model_ready(base, "smooth_l1_loss")
            assert await grpc.is_server_live() and await grpc.is_server_ready()
            assert await grpc.is_model_ready("smooth_l1_loss")
            for binary_data in (False, True):
                req, x, y = request(binary_data)
                want = json_route(http_port, x, y)
                check(await rest.infer(base, req, model_name="smooth_l1_loss"), want)
            req, x, y = request(False)
            check(await grpc.infer(req), json_route(http_port, x, y))
        finally:
            await rest.close()
            await grpc.close()

    try:
        asyncio.run(run())
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
