//! The memory budget through HTTP: admission, waiting, refusal, and the reservation given back
//! on every path.
//!
//! With `--max-elements 1000` a request's reservation is predictable: its body's length plus at
//! most 1000 elements' working set (under 100 KB), so the budgets here are a few MiB and a
//! request "of n MiB" is one whose body declares n MiB.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};

const MIB: usize = 1 << 20;

/// A metric's value from `/metrics` (the first line that starts with `name`).
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = String::from_utf8(app.get("/metrics").await.bytes).unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn reserved(app: &TestApp) -> f64 {
    metric(app, "lossd_memory_reserved_bytes ").await
}

/// Waits until the reserved memory satisfies `ok`.
async fn wait_reserved(app: &TestApp, ok: impl Fn(f64) -> bool) -> f64 {
    let start = Instant::now();
    loop {
        let r = reserved(app).await;
        if ok(r) {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "reserved {r}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An mse_loss body of exactly `len` bytes: two short tensors and spaces.
fn padded_body(len: usize) -> Vec<u8> {
    let mut body = br#"{"input": [1.0, 2.0, 3.0], "target": [1.5, 2.0, 2.0]"#.to_vec();
    body.resize(len - 1, b' ');
    body.push(b'}');
    body
}

/// Opens a connection and sends the head of a request declaring `len` body bytes, and the
/// first few of them: the server reserves for the whole body and waits for the rest.
async fn hold(app: &TestApp, len: usize) -> TcpStream {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/losses/mse_loss HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{\"input\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Sends a whole request of `body` on a new connection, writing all of it before reading the
/// answer (as Python's `requests` and curl without `Expect` do); the status line and body.
async fn send_all_then_read(app: &TestApp, body: &[u8]) -> (String, String) {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/losses/mse_loss HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body)
        .await
        .expect("the whole body is sent: no reset");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .expect("the answer is read");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.lines().next().unwrap_or("").to_string();
    (status, text)
}

#[tokio::test]
async fn a_served_request_and_a_failed_one_give_their_reservation_back() {
    let app = spawn_app_with(&["--max-memory", "8MiB"]).await;
    let ok = app
        .loss(
            "mse_loss",
            &json!({"input": [1.0, 2.0], "target": [0.0, 2.0], "grad": true, "reduction": "none"}),
        )
        .await;
    assert_eq!(ok.status, 200);
    let bad = app
        .loss(
            "mse_loss",
            &json!({"input": [1.0, 2.0], "target": [0.0, 2.0, 3.0]}),
        )
        .await;
    bad.problem(422, "shape_mismatch");
    let batch = app
        .post_json(
            "/v1/batch",
            &json!({"jobs": [{"loss": "l1_loss", "input": [1.0], "target": [2.0]}]}),
        )
        .await;
    assert_eq!(batch.status, 200);
    let custom = app
        .post_json(
            "/v1/losses/custom",
            &json!({"expression": "mean(square(x - y))", "tensors": {"x": [1.0, 2.0], "y": [0.0, 0.0]}, "grad": ["x"]}),
        )
        .await;
    assert_eq!(
        custom.status,
        200,
        "{}",
        String::from_utf8_lossy(&custom.bytes)
    );
    wait_reserved(&app, |r| r == 0.0).await;
    assert_eq!(
        metric(&app, "lossd_memory_budget_bytes ").await,
        (8 * MIB) as f64
    );
}

#[tokio::test]
async fn a_request_larger_than_the_whole_budget_gets_413_at_once_and_is_drained() {
    let app = spawn_app_with(&["--max-memory", "1MiB"]).await;
    let start = Instant::now();
    // The client writes all 32 MiB (more than the sockets' buffers hold) before it reads:
    // the refused body is read and discarded, not cut off by a reset.
    let (status, text) = send_all_then_read(&app, &padded_body(32 * MIB)).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/problem+json") && text.contains("memory budget"));
    assert!(start.elapsed() < Duration::from_secs(5));
    // Counted as refused for memory.
    assert!(metric(&app, "lossd_rejected_total{reason=\"memory\"}").await >= 1.0);
    assert_eq!(reserved(&app).await, 0.0);
    // A body small on the wire whose elements could never fit is refused too.
    let n = 200_000;
    let wide = json!({"input": vec![0.5; n], "target": vec![0.5; n]});
    app.loss("mse_loss", &wide)
        .await
        .problem(413, "payload_too_large");
}

#[tokio::test]
async fn a_request_that_does_not_fit_waits_then_gets_503_with_retry_after() {
    let app = spawn_app_with(&[
        "--max-memory",
        "4MiB",
        "--max-elements",
        "1000",
        "--request-timeout",
        "0.5",
    ])
    .await;
    let hog = hold(&app, 3 * MIB).await;
    wait_reserved(&app, |r| r >= (3 * MIB) as f64).await;
    let before = reserved(&app).await;
    let start = Instant::now();
    let (status, text) = send_all_then_read(&app, &padded_body(2 * MIB)).await;
    let waited = start.elapsed();
    assert!(status.starts_with("HTTP/1.1 503"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("retry-after: "), "{text}");
    assert!(text.contains("\"code\":\"overloaded\""), "{text}");
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    // The waiter left nothing reserved; the held request still holds its own.
    assert_eq!(reserved(&app).await, before);
    // The client holding memory goes away: its reservation comes back.
    drop(hog);
    wait_reserved(&app, |r| r == 0.0).await;
}

#[tokio::test]
async fn small_requests_pass_a_waiting_large_one_which_is_served_when_memory_comes_back() {
    let app = std::sync::Arc::new(
        spawn_app_with(&["--max-memory", "4MiB", "--max-elements", "1000"]).await,
    );
    let hog = hold(&app, 3 * MIB).await;
    wait_reserved(&app, |r| r >= (3 * MIB) as f64).await;
    let a = app.clone();
    let large = tokio::spawn(async move { send_all_then_read(&a, &padded_body(2 * MIB)).await });
    // The large one waits for memory (the hog's reservation and its own do not fit together).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!large.is_finished());
    for _ in 0..5 {
        let start = Instant::now();
        let small = app
            .loss(
                "mse_loss",
                &json!({"input": [1.0, 2.0], "target": [0.0, 2.0]}),
            )
            .await;
        assert_eq!(small.status, 200);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    assert!(!large.is_finished());
    drop(hog);
    let (status, text) = tokio::time::timeout(Duration::from_secs(10), large)
        .await
        .expect("the large request is served once memory comes back")
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{text}");
    wait_reserved(&app, |r| r == 0.0).await;
}

/// Sends `body` chunked in 64 KiB chunks, then reads the answer (whatever happens while
/// sending); the answer's text.
async fn send_chunked(app: &TestApp, body: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/losses/mse_loss HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 << 10) {
        let frame = [
            format!("{:x}\r\n", chunk.len()).as_bytes(),
            chunk,
            b"\r\n".as_slice(),
        ]
        .concat();
        s.write_all(&frame).await.expect("no reset while sending");
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .expect("the answer is read");
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test]
async fn a_chunked_body_grows_its_reservation_as_it_arrives() {
    let app = spawn_app_with(&["--max-memory", "2MiB", "--max-elements", "1000"]).await;
    // Past the whole budget: refused while it arrives, the rest discarded.
    let text = send_chunked(&app, &padded_body(24 * MIB)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("memory budget"), "{text}");
    wait_reserved(&app, |r| r == 0.0).await;
    // One that fits is served.
    let text = send_chunked(&app, &padded_body(MIB + MIB / 2)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    wait_reserved(&app, |r| r == 0.0).await;
}

#[tokio::test]
async fn the_inference_protocol_route_reserves_from_the_same_budget() {
    let app = spawn_app_with(&["--max-memory", "1MiB"]).await;
    let n = 200_000;
    let input =
        |name: &str| json!({"name": name, "shape": [n], "datatype": "FP64", "data": vec![0.5; n]});
    let body = json!({"inputs": [input("input"), input("target")]});
    let reply = app.post_json("/v2/models/mse_loss/infer", &body).await;
    assert_eq!(reply.status, 413);
    let doc: serde_json::Value = serde_json::from_slice(&reply.bytes).unwrap();
    // The protocol's own error field, beside the problem document's.
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("memory budget"), "{doc}");
    assert_eq!(doc["code"], "payload_too_large");
    assert!(metric(&app, "lossd_rejected_total{reason=\"memory\"}").await >= 1.0);
    assert_eq!(reserved(&app).await, 0.0);
    // A small inference still passes, and gives its reservation back.
    let small = json!({"inputs": [
        {"name": "input", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
        {"name": "target", "shape": [2], "datatype": "FP64", "data": [0.0, 0.0]},
    ]});
    let reply = app.post_json("/v2/models/mse_loss/infer", &small).await;
    assert_eq!(reply.status, 200);
    wait_reserved(&app, |r| r == 0.0).await;
}
