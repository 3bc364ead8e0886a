"""lossd through the Open Inference Protocol v2, with NVIDIA's tritonclient (pip).

Starts the release binary on free ports (HTTP and gRPC) and sends the PyTorch conformance
cases (tests/fixtures/pytorch-cases.jsonl) to each loss three ways: HTTP with binary tensor
data, HTTP with JSON tensor data, and gRPC. Every value must be the JSON route's, from the
same server, exactly; a case the JSON route refuses must be refused as a client error of
the protocol. Then custom expressions, metadata and health through both clients, and the
errors: unknown model, wrong datatype, shape mismatch, missing input, unknown parameter,
malformed binary framing.

    python -m pytest tests/oip/test_tritonclient.py   (LOSSD_BIN: the binary; default
                                                       target/release/lossd)
"""

import base64
import http.client
import json
import os
import pathlib
import socket
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASES = [ROOT / "tests" / "fixtures" / f for f in ("pytorch-cases.jsonl", "torch-extra.jsonl")]
NON_FINITE = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("LOSSD_BIN", str(ROOT / "target" / "release" / "lossd"))
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "--addr", f"127.0.0.1:{http_port}", "--grpc-addr",
         f"127.0.0.1:{grpc_port}", "--log", "warn", "--max-body-bytes", "1000000"]
    )
    http_url, grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    h = httpclient.InferenceServerClient(http_url)
    g = grpcclient.InferenceServerClient(grpc_url)
    for _ in range(100):
        try:
            if h.is_server_live() and g.is_server_live():
                break
        except Exception:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("lossd did not start")
    yield {"http": h, "grpc": g, "http_url": http_url, "grpc_url": grpc_url,
           "port": http_port}
    h.close()
    g.close()
    proc.terminate()
    assert proc.wait(timeout=30) == 0, "lossd did not shut down cleanly"


def post_json(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data)


def raw_post(port, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body, headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data)


def to_array(value):
    """A tensor of a JSON request body as numpy (None: not expressible, e.g. ragged or bad
    base64)."""
    try:
        return _to_array(value)
    except (ValueError, TypeError, KeyError):
        return None


def _to_array(value):
    if isinstance(value, dict):
        if "base64" in value:
            dt = {"float64": np.float64, "float32": np.float32, "int64": np.int64}[value["dtype"]]
            raw = base64.b64decode(value["base64"])
            return np.frombuffer(raw, dtype=dt).reshape(value["shape"])
        value = np.array([NON_FINITE.get(x, x) if isinstance(x, str) else x
                          for x in value["data"]]).reshape(value["shape"])
        return value

    def fix(v):
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, bool):
            # JSON's true is not a number (the JSON route refuses it); a protocol tensor
            # cannot hold one, so the case is not expressible.
            raise TypeError("a boolean element")
        return NON_FINITE.get(v, v) if isinstance(v, str) else v
    try:
        a = np.array(fix(value))
    except ValueError:
        return None
    if a.dtype == object or a.dtype.kind not in "iuf":
        return None if a.size else np.zeros(a.shape)
    return a


def oip_request(loss, body, kinds):
    """The OIP inputs (name, numpy array) and parameters of a JSON request body; None when
    the body cannot be said in the protocol (ragged arrays, non-scalar options)."""
    inputs, params = [], {"grad": True, "dtype": body.get("dtype", "float64")}
    for k, v in body.items():
        if k in ("dtype", "grad", "encoding"):
            continue
        if loss == "custom" and k == "expression":
            params[k] = v
            continue
        if loss == "custom" and k == "tensors":
            for name, t in v.items():
                a = to_array(t)
                if a is None:
                    return None
                inputs.append((name, a.astype(np.float64)))
            continue
        if k in kinds:
            a = to_array(v)
            if a is None:
                return None
            kind = kinds[k]
            whole = a.dtype.kind in "iu" or (np.all(np.isfinite(a)) and np.all(a == np.round(a)))
            if kind == "integer" or (kind == "float_or_integer" and a.dtype.kind in "iu"):
                a = a.astype(np.int64) if whole and np.all(np.abs(a) < 2**62) else a.astype(np.float64)
            elif a.dtype != np.float32:
                a = a.astype(np.float64)
            inputs.append((k, a))
        elif isinstance(v, (bool, int, float, str)):
            params[k] = v
        else:
            return None
    return inputs, params


def triton_dtype(a):
    return {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32",
            "int8": "INT8"}[str(a.dtype)]


def infer(client, kind, model, inputs, params, outputs=None):
    mod = grpcclient if kind == "grpc" else httpclient
    ins = []
    for name, a in inputs:
        i = mod.InferInput(name, list(a.shape), triton_dtype(a))
        if kind == "http-json":
            i.set_data_from_numpy(a, binary_data=False)
        else:
            i.set_data_from_numpy(a)
        ins.append(i)
    outs = None
    if outputs is not None:
        if kind == "grpc":
            outs = [grpcclient.InferRequestedOutput(n) for n in outputs]
        else:
            outs = [httpclient.InferRequestedOutput(n, binary_data=(kind == "http-binary"))
                    for n in outputs]
    return client.infer(model, ins, outputs=outs, parameters=params)


def same(a, b):
    """Equal values, NaN where NaN, the same sign of zero."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan], b[~nan])
                and np.array_equal(np.signbit(a[~nan]), np.signbit(b[~nan])))


def json_tensor(v, dtype):
    if isinstance(v, dict):
        return to_array(v).astype(dtype)
    return np.array(NON_FINITE.get(v, v) if isinstance(v, str) else v, dtype=dtype)


def load_cases():
    """The conformance sample and lossd's own PyTorch cases (tests/torch/gen_torch_cases.py)."""
    return [
        json.loads(line)
        for path in CASES
        for line in path.read_text().splitlines()
        if line.strip()
    ]


KINDS = ["http-binary", "http-json", "grpc"]


def test_every_conformance_case_three_ways(server):
    port = server["port"]
    catalog = {}
    done, refused, skipped, losses_with_grad = 0, 0, 0, set()
    for case in load_cases():
        loss, body = case["loss"], dict(case["body"])
        if loss not in catalog:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", f"/v1/losses/{loss}")
            r = conn.getresponse()
            info = json.loads(r.read())
            conn.close()
            catalog[loss] = {t["name"]: t["kind"] for t in info.get("tensors", [])} \
                if r.status == 200 else None
        body["grad"] = True
        body["encoding"] = "base64"
        status, want = post_json(port, f"/v1/losses/{loss}", body)
        if catalog[loss] is None:
            # An unknown loss is an unknown model.
            for kind in KINDS:
                client = server["grpc" if kind == "grpc" else "http"]
                with pytest.raises(InferenceServerException) as e:
                    infer(client, kind, loss, [("input", np.zeros(2))], {})
                assert e.value.status() in ("404", "StatusCode.NOT_FOUND"), (case["id"], kind)
            refused += 1
            continue
        req = oip_request(loss, body, catalog[loss])
        if req is None:
            skipped += 1
            continue
        inputs, params = req
        for kind in KINDS:
            client = server["grpc" if kind == "grpc" else "http"]
            if status != 200:
                with pytest.raises(InferenceServerException) as e:
                    infer(client, kind, loss, inputs, params)
                expected = {413: ("413", "StatusCode.RESOURCE_EXHAUSTED")}.get(
                    status, ("400", "StatusCode.INVALID_ARGUMENT"))
                assert e.value.status() in expected, (case["id"], kind, e.value)
                continue
            try:
                res = infer(client, kind, loss, inputs, params)
            except InferenceServerException as e:
                raise AssertionError(f"{case['id']} over {kind}: {e}") from e
            dtype = np.float32 if want["dtype"] == "float32" else np.float64
            got = res.as_numpy("loss")
            assert same(got, json_tensor(want["loss"], dtype).reshape(want["shape"])), \
                (case["id"], kind, got, want["loss"])
            for name, g in want.get("grad", {}).items():
                assert same(res.as_numpy(f"grad_{name}"), json_tensor(g, dtype)), \
                    (case["id"], kind, name)
            if want.get("grad"):
                losses_with_grad.add(loss)
        if status == 200:
            done += 1
        else:
            refused += 1
    registry = [e for e in catalog if catalog[e] is not None]
    missing = sorted(set(registry) - losses_with_grad)
    assert not missing, f"losses never checked with gradients: {missing}"
    assert done >= 150 and refused >= 15, (done, refused, skipped)
    print(f"{done} computed and {refused} refused cases, each three ways; {skipped} skipped")


def test_custom_expression(server):
    port = server["port"]
    x = np.array([[0.25, -1.5, 3.0], [2.0, 0.5, -0.125]])
    y = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    expr = "mean(square(x - y)) + 0.1 * huber_loss(x, y, delta=0.5)"
    status, want = post_json(port, "/v1/losses/custom", {
        "expression": expr, "tensors": {"x": x.tolist(), "y": y.tolist()},
        "grad": ["x", "y"], "encoding": "base64"})
    assert status == 200
    for kind in KINDS:
        client = server["grpc" if kind == "grpc" else "http"]
        res = infer(client, kind, "custom", [("x", x), ("y", y)],
                    {"expression": expr, "grad": "x,y"})
        assert same(res.as_numpy("loss"), np.float64(want["loss"])), kind
        assert same(res.as_numpy("grad_x"), json_tensor(want["grad"]["x"], np.float64)), kind
        assert same(res.as_numpy("grad_y"), json_tensor(want["grad"]["y"], np.float64)), kind


def test_float32_outputs_selection_and_non_finite(server):
    x = np.array([0.5, np.inf, -2.0], dtype=np.float32)
    y = np.array([0.25, 1.0, np.nan], dtype=np.float32)
    for kind in KINDS:
        client = server["grpc" if kind == "grpc" else "http"]
        # Every floating input FP32 and no dtype: computed in float32.
        res = infer(client, kind, "mse_loss", [("input", x), ("target", y)],
                    {"reduction": "none"}, outputs=["grad_target", "loss"])
        loss, g = res.as_numpy("loss"), res.as_numpy("grad_target")
        assert loss.dtype == np.float32 and g.dtype == np.float32, kind
        assert same(loss, (x - y) ** 2), (kind, loss)
        assert same(g, -2 * (x - y)), (kind, g)
        assert res.as_numpy("grad_input") is None, kind


def test_metadata_and_health(server):
    h, g = server["http"], server["grpc"]
    assert h.is_server_live() and h.is_server_ready()
    assert g.is_server_live() and g.is_server_ready()
    assert h.is_model_ready("cross_entropy") and g.is_model_ready("cross_entropy")
    assert h.is_model_ready("custom", "1") and g.is_model_ready("custom", "1")
    assert not h.is_model_ready("no_such_loss")
    assert h.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert "binary_tensor_data" in g.get_server_metadata().extensions
    m = h.get_model_metadata("nll_loss", "1")
    assert m["versions"] == ["1"] and m["platform"] == "lossd"
    assert [(i["name"], i["datatype"]) for i in m["inputs"]] == \
        [("input", "FP64"), ("target", "INT64"), ("weight", "FP64")]
    assert [o["name"] for o in m["outputs"]] == ["loss", "grad_input"]
    gm = g.get_model_metadata("nll_loss")
    assert [i.name for i in gm.inputs] == ["input", "target", "weight"]
    assert list(gm.inputs[0].shape) == [-1]
    with pytest.raises(InferenceServerException) as e:
        g.get_model_metadata("nll_loss", "2")
    assert e.value.status() == "StatusCode.NOT_FOUND"


def errors(server, model, inputs, params, http_status="400",
           grpc_status="StatusCode.INVALID_ARGUMENT", contains=""):
    for kind in KINDS:
        client = server["grpc" if kind == "grpc" else "http"]
        with pytest.raises(InferenceServerException) as e:
            infer(client, kind, model, inputs, params)
        want = grpc_status if kind == "grpc" else http_status
        assert e.value.status() == want, (kind, e.value)
        assert contains in e.value.message(), (kind, e.value.message())


def test_errors(server):
    x, y = np.array([1.0, 2.0]), np.array([0.5, 1.5])
    errors(server, "no_such_loss", [("input", x), ("target", y)], {}, "404",
           "StatusCode.NOT_FOUND", "no model named `no_such_loss`")
    errors(server, "mse_loss", [("input", x.astype(np.int64)), ("target", y)], {},
           contains="datatype INT64")
    errors(server, "mse_loss", [("input", x.astype(np.int8)), ("target", y)], {},
           contains="datatype INT8")
    errors(server, "mse_loss", [("input", x), ("target", np.zeros(3))], {},
           contains="target")
    errors(server, "mse_loss", [("input", x)], {}, contains="`target` is missing")
    errors(server, "mse_loss", [("input", x), ("target", y)], {"margin": 1.0},
           contains="unknown parameter `margin`")
    errors(server, "mse_loss", [("input", x), ("target", y)], {"reduction": "max"},
           contains="reduction")
    errors(server, "nll_loss", [("input", np.zeros((2, 3))), ("target", np.array([0, 3]))], {},
           contains="3")


def test_malformed_binary_framing(server):
    port = server["port"]
    head = json.dumps({"inputs": [
        {"name": "input", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
        {"name": "target", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
    ]}).encode()
    data = np.array([1.0, 2.0, 3.0, 4.0]).tobytes()
    path = "/v2/models/mse_loss/infer"
    status, ok = raw_post(port, path, head + data,
                          {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200 and ok["outputs"][0]["data"] == [4.0], ok
    for body, length, what in [
        (head + data, len(head) + len(data) + 1, "past the body"),
        (head + data[:-1], len(head), "sizes add up to more than the data"),
        (head + data + b"x", len(head), "a byte left over"),
        (head + data, "12x", "not a number"),
        (head + data, len(head) - 1, "header cut short"),
    ]:
        status, err = raw_post(port, path, body, {"Inference-Header-Content-Length": str(length)})
        assert status == 400 and err["error"], (what, status, err)
    # Non-finite JSON tokens, as tritonclient writes them, and nested data.
    body = (b'{"inputs": [{"name": "input", "shape": [2, 1], "datatype": "FP64", '
            b'"data": [[NaN], [1.5]]}, {"name": "target", "shape": [2, 1], "datatype": "FP64", '
            b'"data": [Infinity, -Infinity]}], "parameters": {"reduction": "none"}}')
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("POST", path, body)
    r = conn.getresponse()
    text = r.read()
    assert r.status == 200, text
    assert b'"data":[NaN,Infinity]' in text, text


def test_the_documented_examples_run(server, capsys):
    """The Python examples of docs/oip.md (and the README's), against this server."""
    import re
    text = (ROOT / "docs" / "oip.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for code in blocks:
        code = code.replace("127.0.0.1:8080", server["http_url"])
        code = code.replace("127.0.0.1:8001", server["grpc_url"])
        exec(compile(code, "docs/oip.md", "exec"), {})
    out = capsys.readouterr().out
    assert "nan" not in out.lower(), out


def test_api_keys_over_both_protocols():
    """With keys set, /v2 inference and every gRPC call of the inference service need
    `Authorization: Bearer <key>`; the health checks stay open."""
    binary = os.environ.get("LOSSD_BIN", str(ROOT / "target" / "release" / "lossd"))
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "--addr", f"127.0.0.1:{http_port}", "--grpc-addr",
         f"127.0.0.1:{grpc_port}", "--log", "warn", "--api-keys", "k-one,k-two"]
    )
    h = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        for _ in range(100):
            try:
                if h.is_server_live():
                    break
            except Exception:
                pass
            time.sleep(0.1)
        x = np.array([1.0, 2.0])
        y = np.array([0.0, 0.0])

        def inputs(mod):
            ins = [mod.InferInput("input", [2], "FP64"), mod.InferInput("target", [2], "FP64")]
            ins[0].set_data_from_numpy(x)
            ins[1].set_data_from_numpy(y)
            return ins

        # tritonclient's HTTP client adds its own entries to the dict it is given: a new one
        # for each call.
        good = {"authorization": "Bearer k-two"}
        for client, mod in ((h, httpclient), (g, grpcclient)):
            for headers in (None, {"authorization": "Bearer nope"}, {"authorization": "Basic k-one"}):
                with pytest.raises(InferenceServerException):
                    client.infer("mse_loss", inputs(mod), headers=headers)
            out = client.infer("mse_loss", inputs(mod), headers=dict(good))
            assert out.as_numpy("loss") == 2.5
        # Liveness over HTTP needs no key.
        assert h.is_server_live()
    finally:
        h.close()
        g.close()
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def start(*args):
    """A server of its own with `args`, and its HTTP and gRPC clients."""
    binary = os.environ.get("LOSSD_BIN", str(ROOT / "target" / "release" / "lossd"))
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "--addr", f"127.0.0.1:{http_port}", "--grpc-addr",
         f"127.0.0.1:{grpc_port}", "--log", "warn", *args]
    )
    h = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    for _ in range(100):
        try:
            if h.is_server_live() and g.is_server_live():
                break
        except Exception:
            pass
        time.sleep(0.1)
    return proc, h, g, http_port


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def metric(text, name):
    """The value of the sample `name` (with its labels), 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def grpc_mse(n):
    ins = [grpcclient.InferInput("input", [n], "FP64"), grpcclient.InferInput("target", [n], "FP64")]
    ins[0].set_data_from_numpy(np.full(n, 0.5))
    ins[1].set_data_from_numpy(np.zeros(n))
    return ins


def test_grpc_calls_reserve_from_the_memory_budget_and_are_counted():
    """ModelInfer reserves its working set as /v2 infer does: RESOURCE_EXHAUSTED when it could
    never fit, UNAVAILABLE when the budget stays full until its deadline; every call is
    counted in lossd_requests_total and latency by loss, refusals by reason."""
    proc, h, g, port = start("--max-memory", "8MiB", "--request-timeout", "0.5")
    try:
        # Fits: 2 x 10k elements.
        assert g.infer("mse_loss", grpc_mse(10_000)).as_numpy("loss") == 0.25
        # 2 x 100k elements hold more than 8 MiB while served.
        with pytest.raises(InferenceServerException) as e:
            g.infer("mse_loss", grpc_mse(100_000))
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED", e.value
        assert "memory budget" in e.value.message()
        # An HTTP request whose body has not all come holds most of the budget.
        hog = socket.create_connection(("127.0.0.1", port))
        hog.sendall(b"POST /v1/losses/mse_loss HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 6000000\r\n\r\n{")
        try:
            for _ in range(100):
                if metric(metrics(port), "lossd_memory_reserved_bytes") >= 6_000_000:
                    break
                time.sleep(0.05)
            with pytest.raises(InferenceServerException) as e:
                g.infer("mse_loss", grpc_mse(10_000))
            assert e.value.status() == "StatusCode.UNAVAILABLE", e.value
            # Read while the HTTP request is still open (it is counted when it ends).
            text = metrics(port)
        finally:
            hog.close()
        route = 'route="grpc ModelInfer",loss="mse_loss"'
        assert metric(text, f"lossd_requests_total{{{route},status=\"200\"}}") == 1, text
        assert metric(text, f"lossd_requests_total{{{route},status=\"413\"}}") == 1, text
        assert metric(text, f"lossd_requests_total{{{route},status=\"503\"}}") == 1, text
        assert metric(text, 'lossd_rejected_total{reason="memory"}') == 2, text
        assert metric(text, 'lossd_request_duration_seconds_count{loss="mse_loss"}') == 3, text
        g.is_model_ready("mse_loss")
        with pytest.raises(InferenceServerException):
            g.infer("no_such_loss", grpc_mse(2))
        text = metrics(port)
        assert metric(text, 'lossd_requests_total{route="grpc ModelReady",loss="",status="200"}') == 1
        assert metric(text, 'lossd_requests_total{route="grpc ModelInfer",loss="unknown",'
                            'status="404"}') == 1, text
        # Everything reserved has come back.
        for _ in range(100):
            if metric(metrics(port), "lossd_memory_reserved_bytes") == 0:
                break
            time.sleep(0.05)
        assert metric(metrics(port), "lossd_memory_reserved_bytes") == 0
    finally:
        h.close()
        g.close()
        proc.terminate()
        assert proc.wait(timeout=30) == 0
