//! The Open Inference Protocol's HTTP routes (`/v2`): health, metadata, inference with JSON
//! and binary tensor data, and errors in the protocol's form (docs/oip.md).

use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app, spawn_app_with};

/// `POST path` with a raw body and, when given, `Inference-Header-Content-Length`.
async fn post(app: &TestApp, path: &str, body: Vec<u8>, header_len: Option<&str>) -> Reply {
    let mut req = app.client.post(format!("{}{path}", app.base)).body(body);
    if let Some(n) = header_len {
        req = req.header("Inference-Header-Content-Length", n);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = res.bytes().await.unwrap().to_vec();
    Reply {
        status,
        content_type,
        headers,
        bytes,
    }
}

/// Asserts an error in the protocol's form and returns its message.
fn error(r: &Reply, status: u16) -> String {
    let body = String::from_utf8_lossy(&r.bytes).to_string();
    assert_eq!(r.status, status, "{body}");
    let v = r.json();
    assert_eq!(v["status"], status, "{body}");
    v["error"].as_str().expect("an `error` member").to_string()
}

fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A JSON header with two FP64 inputs given as binary data, and the body it heads.
fn binary_body(input: &[f64], target: &[f64], extra: Value) -> (Vec<u8>, usize) {
    let mut head = json!({
        "inputs": [
            {"name": "input", "shape": [input.len()], "datatype": "FP64",
             "parameters": {"binary_data_size": input.len() * 8}},
            {"name": "target", "shape": [target.len()], "datatype": "FP64",
             "parameters": {"binary_data_size": target.len() * 8}},
        ],
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            head[k] = v;
        }
    }
    let mut body = serde_json::to_vec(&head).unwrap();
    let n = body.len();
    for x in input.iter().chain(target) {
        body.extend_from_slice(&x.to_le_bytes());
    }
    (body, n)
}

#[tokio::test]
async fn health_and_server_metadata() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/v2/health/live").await.json(),
        json!({"live": true})
    );
    assert_eq!(
        app.get("/v2/health/ready").await.json(),
        json!({"ready": true})
    );
    let m = app.get("/v2").await.json();
    assert_eq!(m["name"], "lossd");
    assert_eq!(m["extensions"], json!(["binary_tensor_data"]));
}

#[tokio::test]
async fn model_metadata_and_readiness() {
    let app = spawn_app().await;
    for path in [
        "/v2/models/cross_entropy",
        "/v2/models/cross_entropy/versions/1",
    ] {
        let m = app.get(path).await.json();
        assert_eq!(m["name"], "cross_entropy");
        assert_eq!(m["versions"], json!(["1"]));
        assert_eq!(m["platform"], "lossd");
        assert_eq!(
            m["inputs"][0],
            json!({"name": "input", "datatype": "FP64", "shape": [-1]})
        );
        let outputs: Vec<&str> = m["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            outputs,
            ["loss", "grad_input", "grad_target", "grad_weight"]
        );
    }
    let r = app.get("/v2/models/custom/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ready"], true);
    let r = app.get("/v2/models/mse_loss/versions/1/ready").await;
    assert_eq!(r.status, 200);
    assert!(error(&app.get("/v2/models/nope").await, 404).contains("no model named `nope`"));
    assert!(error(&app.get("/v2/models/mse_loss/versions/2").await, 404).contains("version"));
    assert!(error(&app.get("/v2/models/nope/ready").await, 404).contains("nope"));
}

#[tokio::test]
async fn json_data_gives_the_json_routes_numbers() {
    let app = spawn_app().await;
    let x = [0.1, -2.5, 3.75, 1e-300];
    let y = [0.3, 0.5, -1.0, 2.0];
    let want = app
        .loss(
            "smooth_l1_loss",
            &json!({"input": x, "target": y, "beta": 0.5, "grad": true, "reduction": "sum"}),
        )
        .await
        .json();
    let body = json!({
        "id": "r-1",
        "inputs": [
            {"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [[x[0], x[1]], [x[2], x[3]]]},
            {"name": "target", "shape": [2, 2], "datatype": "FP64", "data": y},
        ],
        "parameters": {"beta": 0.5, "grad": true, "reduction": "sum"},
    });
    for path in [
        "/v2/models/smooth_l1_loss/infer",
        "/v2/models/smooth_l1_loss/versions/1/infer",
    ] {
        let r = post(&app, path, serde_json::to_vec(&body).unwrap(), None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        assert_eq!(r.content_type, "application/json");
        let v = r.json();
        assert_eq!(v["model_name"], "smooth_l1_loss");
        assert_eq!(v["model_version"], "1");
        assert_eq!(v["id"], "r-1");
        let out = &v["outputs"];
        assert_eq!(out[0]["name"], "loss");
        assert_eq!(out[0]["shape"], json!([]));
        assert_eq!(out[0]["datatype"], "FP64");
        assert_eq!(out[0]["data"], json!([want["loss"]]));
        assert_eq!(out[1]["name"], "grad_input");
        assert_eq!(out[1]["shape"], json!([2, 2]));
        let flat: Vec<Value> = want["grad"]["input"].as_array().unwrap().clone();
        assert_eq!(out[1]["data"], json!(flat));
    }
}

#[tokio::test]
async fn binary_data_both_ways() {
    let app = spawn_app().await;
    let x = [0.5, -1.25, 2.0];
    let y = [1.0, 1.0, f64::NAN];
    let (body, n) = binary_body(
        &x,
        &y,
        json!({"parameters": {"reduction": "none", "grad": true},
               "outputs": [{"name": "grad_input", "parameters": {"binary_data": true}},
                           {"name": "loss", "parameters": {"binary_data": false}}]}),
    );
    let r = post(
        &app,
        "/v2/models/mse_loss/infer",
        body,
        Some(&n.to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.content_type, "application/octet-stream");
    let len: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The JSON part holds the loss with NaN as the bare token tritonclient reads (which
    // serde_json does not).
    let text = String::from_utf8_lossy(&r.bytes[..len]).to_string();
    assert!(text.contains(r#""data":[0.25,5.0625,NaN]"#), "{text}");
    let head: Value = serde_json::from_str(&text.replace("NaN", "null")).unwrap();
    assert_eq!(head["outputs"][0]["name"], "grad_input");
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"], 24,
        "{head}"
    );
    let g = f64s(&r.bytes[len..]);
    assert_eq!(&g[..2], &[2.0 * (0.5 - 1.0), 2.0 * (-1.25 - 1.0)]);
    assert!(g[2].is_nan());
}

#[tokio::test]
async fn malformed_framing_is_a_400() {
    let app = spawn_app().await;
    let (body, n) = binary_body(&[1.0, 2.0], &[3.0, 4.0], json!({}));
    let path = "/v2/models/mse_loss/infer";
    let ok = post(&app, path, body.clone(), Some(&n.to_string())).await;
    assert_eq!(ok.status, 200);
    for (body, len) in [
        (body.clone(), (body.len() + 1).to_string()),
        (body.clone(), "-3".to_string()),
        (body.clone(), "ten".to_string()),
        (body[..body.len() - 1].to_vec(), n.to_string()),
        ([&body[..], b"x"].concat(), n.to_string()),
        (body.clone(), (n - 2).to_string()),
        (body.clone(), "0".to_string()),
    ] {
        let r = post(&app, path, body, Some(&len)).await;
        error(&r, 400);
    }
    // Binary data without a header length is not JSON.
    let r = post(&app, path, body, None).await;
    assert!(error(&r, 400).contains("not JSON"));
}

#[tokio::test]
async fn protocol_errors() {
    let app = spawn_app().await;
    let path = "/v2/models/mse_loss/infer";
    let send = |v: Value| {
        let app = &app;
        async move { post(app, path, serde_json::to_vec(&v).unwrap(), None).await }
    };
    let input = |name: &str, dt: &str, shape: Value, data: Value| json!({"name": name, "datatype": dt, "shape": shape, "data": data});
    let x = || input("input", "FP64", json!([2]), json!([1.0, 2.0]));
    let y = || input("target", "FP64", json!([2]), json!([1.0, 3.0]));
    for (body, status, says) in [
        (
            json!({"inputs": [input("input", "BYTES", json!([2]), json!(["a", "b"])), y()]}),
            400,
            "datatype BYTES",
        ),
        (
            json!({"inputs": [input("input", "INT64", json!([2]), json!([1, 2])), y()]}),
            400,
            "datatype INT64",
        ),
        (
            json!({"inputs": [input("input", "FP64", json!([3]), json!([1.0, 2.0])), y()]}),
            400,
            "its shape makes 3",
        ),
        (json!({"inputs": [x()]}), 400, "`target` is missing"),
        (
            json!({"inputs": [x(), y()], "parameters": {"margin": 1}}),
            400,
            "unknown parameter `margin`",
        ),
        (
            json!({"inputs": [x(), y()], "parameters": {"reduction": "max"}}),
            400,
            "reduction",
        ),
        (
            json!({"inputs": [x(), y()], "outputs": [{"name": "grad_weight"}]}),
            400,
            "grad_weight",
        ),
        (json!({"inputs": [x(), x()]}), 400, "given twice"),
        (
            json!({"inputs": [x(), y(), input("other", "FP64", json!([1]), json!([1.0]))]}),
            400,
            "`other` is not an input",
        ),
        (
            json!({"inputs": [x(), input("target", "FP64", json!([1, 2, 3]), json!([1.0]))]}),
            400,
            "",
        ),
    ] {
        let r = send(body.clone()).await;
        let msg = error(&r, status);
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let r = post(&app, path, b"{\"inputs\": [".to_vec(), None).await;
    error(&r, 400);
    let r = post(&app, "/v2/models/nope/infer", b"{}".to_vec(), None).await;
    error(&r, 404);
}

#[tokio::test]
async fn limits_are_the_json_routes() {
    let app = spawn_app_with(&["--max-elements", "3", "--max-body-bytes", "4096"]).await;
    let (body, n) = binary_body(&[1.0, 2.0], &[3.0, 4.0], json!({}));
    let r = post(
        &app,
        "/v2/models/mse_loss/infer",
        body,
        Some(&n.to_string()),
    )
    .await;
    assert!(error(&r, 413).contains("element limit"));
    let r = post(&app, "/v2/models/mse_loss/infer", vec![b' '; 5000], None).await;
    error(&r, 413);
}

/// `POST path` on a raw connection with a chunked body cut into `piece`-byte chunks (so that
/// frames end inside elements); the status line and the body of the answer.
async fn post_chunked(
    app: &TestApp,
    path: &str,
    body: &[u8],
    header_len: usize,
    piece: usize,
) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nInference-Header-Content-Length: {header_len}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(piece) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&answer[..at]).to_string();
    (head, answer[at + 4..].to_vec())
}

#[tokio::test]
async fn binary_data_read_as_it_arrives_in_any_pieces() {
    let app = spawn_app().await;
    // FP64 and INT32 binary inputs around a JSON one, in chunks that split elements.
    let input = [0.5f64, -1.25, 2.0, 0.0, 1.5, -0.75];
    let head = serde_json::to_vec(&json!({
        "inputs": [
            {"name": "input", "shape": [2, 3], "datatype": "FP64",
             "parameters": {"binary_data_size": 48}},
            {"name": "weight", "shape": [3], "datatype": "FP64", "data": [1.0, 0.5, 2.0]},
            {"name": "target", "shape": [2], "datatype": "INT32",
             "parameters": {"binary_data_size": 8}},
        ],
        "parameters": {"reduction": "sum", "grad": true},
    }))
    .unwrap();
    let mut body = head.clone();
    for x in input {
        body.extend_from_slice(&x.to_le_bytes());
    }
    for t in [2i32, 0] {
        body.extend_from_slice(&t.to_le_bytes());
    }
    let want = app
        .loss(
            "nll_loss",
            &json!({"input": [[0.5, -1.25, 2.0], [0.0, 1.5, -0.75]], "target": [2, 0],
                    "weight": [1.0, 0.5, 2.0], "reduction": "sum", "grad": true}),
        )
        .await
        .json();
    let path = "/v2/models/nll_loss/infer";
    for piece in [1, 3, 7, 13, body.len()] {
        let (status, answer) = post_chunked(&app, path, &body, head.len(), piece).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let v: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["outputs"][0]["data"][0], want["loss"], "{v}");
        let rows = want["grad"]["input"].as_array().unwrap();
        let flat: Vec<Value> = rows
            .iter()
            .flat_map(|r| r.as_array().unwrap().clone())
            .collect();
        assert_eq!(v["outputs"][1]["name"], "grad_input", "{v}");
        assert_eq!(v["outputs"][1]["data"], json!(flat), "{v}");
    }
    // Too few and too many bytes after the header, without a declared length to check first.
    for bad in [&body[..body.len() - 3], &[&body[..], b"xy"].concat()[..]] {
        let (status, answer) = post_chunked(&app, path, bad, head.len(), 5).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
        let v: Value = serde_json::from_slice(&answer).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("binary_data_size"),
            "{v}"
        );
    }
    // A header longer than the body.
    let (status, _) = post_chunked(&app, path, &head[..10], head.len(), 4).await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
}

#[tokio::test]
async fn binary_tensors_over_the_memory_budget_are_refused_before_they_arrive() {
    let app = spawn_app_with(&["--max-memory", "1MiB"]).await;
    let n = 100_000;
    let (body, len) = binary_body(&vec![0.5; n], &vec![0.0; n], json!({}));
    let r = post(
        &app,
        "/v2/models/mse_loss/infer",
        body,
        Some(&len.to_string()),
    )
    .await;
    assert!(error(&r, 413).contains("memory budget"));
    // A request that fits is served, and gives its reservation back.
    let (body, len) = binary_body(&[0.5; 100], &[0.0; 100], json!({}));
    let r = post(
        &app,
        "/v2/models/mse_loss/infer",
        body,
        Some(&len.to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
}
