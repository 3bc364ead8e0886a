//! Limits hold through HTTP, with small limits configured: a full queue, the time limit,
//! graceful shutdown with a request in flight, slow clients.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};

/// A CTC request small on the wire but long to compute: `frames` frames, a target of
/// `frames / 3` labels, forward and gradient (work grows as frames²).
fn slow_body(frames: usize) -> Value {
    let labels = frames / 3;
    let lp: Vec<[f64; 3]> = (0..frames).map(|_| [-1.0986, -1.0986, -1.0986]).collect();
    let targets: Vec<i64> = (0..labels).map(|i| 1 + (i % 2) as i64).collect();
    json!({"log_probs": lp, "targets": targets, "input_lengths": frames, "target_lengths": labels, "grad": true})
}

/// Waits until the server reports a job computing (via /metrics), so a test knows a request
/// is in flight.
async fn wait_for_a_running_job(app: &TestApp) {
    let start = Instant::now();
    loop {
        let text = String::from_utf8(app.get("/metrics").await.bytes).unwrap();
        if text
            .lines()
            .any(|l| l.starts_with("lossd_jobs_in_flight ") && !l.ends_with(" 0"))
        {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no job started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_overloaded_with_retry_after() {
    let app = spawn_app_with(&["--workers", "1", "--queue-capacity", "1"]).await;
    let app = std::sync::Arc::new(app);
    let slow = slow_body(1500);
    let a = app.clone();
    let s = slow.clone();
    let running = tokio::spawn(async move { a.loss("ctc_loss", &s).await });
    wait_for_a_running_job(&app).await;
    // Bodies past the inline bound, so that they go through the queue (tiny ones are
    // computed on the async worker and never wait for the pool).
    let queued_body = json!({"input": vec![1.0; 4096], "target": vec![2.0; 4096]});
    let a = app.clone();
    let b = queued_body.clone();
    let queued = tokio::spawn(async move { a.loss("mse_loss", &b).await });
    // Give the second request time to take the one place in the queue.
    let start = Instant::now();
    loop {
        let text = String::from_utf8(app.get("/metrics").await.bytes).unwrap();
        if text
            .lines()
            .any(|l| l.starts_with("lossd_queue_depth ") && !l.ends_with(" 0"))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "nothing queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = app.loss("mse_loss", &queued_body).await;
    refused.problem(503, "overloaded");
    assert_eq!(refused.headers["retry-after"], "1");
    // A tiny request is computed on the async worker: answered though the queue is full.
    let tiny = app
        .loss("mse_loss", &json!({"input": [1.0], "target": [2.0]}))
        .await;
    assert_eq!(tiny.status, 200, "{}", String::from_utf8_lossy(&tiny.bytes));
    // A small body that broadcasts to many elements is not: it needs a place in the queue.
    let wide = json!({
        "input": {"shape": [100, 1], "data": vec![1.0; 100]},
        "target": {"shape": [1, 100], "data": vec![2.0; 100]},
    });
    app.loss("mse_loss", &wide).await.problem(503, "overloaded");
    assert_eq!(running.await.unwrap().status, 200);
    assert_eq!(queued.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_request_past_the_time_limit_answers_503_timeout_and_frees_its_worker() {
    let app = spawn_app_with(&["--workers", "1", "--request-timeout", "0.2"]).await;
    let start = Instant::now();
    let r = app.loss("ctc_loss", &slow_body(3000)).await;
    r.problem(503, "timeout");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The cancelled job stops at its next checkpoint and gives its worker back (a body past
    // the inline bound, so that it needs the worker).
    let ok = app
        .loss(
            "mse_loss",
            &json!({"input": vec![1.0; 4096], "target": vec![2.0; 4096]}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.bytes));
}

#[tokio::test]
async fn a_slow_client_does_not_block_others_and_runs_out_of_time() {
    let app = spawn_app_with(&["--body-timeout", "0.5", "--header-timeout", "0.5"]).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // A body sent a byte at a time.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let dribble = tokio::spawn(async move {
        let mut answer = Vec::new();
        for _ in 0..40 {
            if slow.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).to_string()
    });
    // Others are served meanwhile.
    let start = Instant::now();
    let ok = app
        .loss("mse_loss", &json!({"input": [1.0], "target": [2.0]}))
        .await;
    assert_eq!(ok.status, 200);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "blocked behind the slow client"
    );
    let answer = dribble.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");

    // Headers that never finish: the connection is closed.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server kept a connection with unfinished headers open"
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let addr = crate::helpers::free_addr();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lossd"))
        .args(["--addr", &addr, "--grpc-addr", "off", "--log", "warn"])
        .spawn()
        .unwrap();
    let app = TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    };
    let start = Instant::now();
    while reqwest::get(format!("{}/healthz", app.base)).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "lossd did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = std::sync::Arc::new(app);
    let a = app.clone();
    let in_flight = tokio::spawn(async move { a.loss("ctc_loss", &slow_body(1500)).await });
    wait_for_a_running_job(&app).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert!(r.json()["loss"].is_number());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
