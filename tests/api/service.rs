//! Health, readiness, request IDs, and that the server survives what clients send.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn request_ids_are_returned_and_made_when_missing() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert!(!r.headers["x-request-id"].is_empty());
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn the_same_request_gives_the_same_bytes() {
    let app = spawn_app().await;
    let body = json!({"input": [[0.1, 0.2], [0.3, 0.4]], "target": [[0.0, 1.0], [1.0, 0.0]], "grad": true});
    let first = app.loss("huber_loss", &body).await.bytes;
    for _ in 0..5 {
        assert_eq!(app.loss("huber_loss", &body).await.bytes, first);
    }
}

#[tokio::test]
async fn metrics_count_requests_by_loss_and_rejections_by_reason() {
    let app = crate::helpers::spawn_app_with(&["--max-elements", "4"]).await;
    app.loss("mse_loss", &json!({"input": [1.0], "target": [1.0]}))
        .await;
    app.loss(
        "mse_loss",
        &json!({"input": [1, 2, 3], "target": [1, 2, 3]}),
    )
    .await;
    app.post_json(
        "/v1/losses/custom",
        &json!({"expression": "sum(x)", "tensors": {"x": [1.0]}}),
    )
    .await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    let text = String::from_utf8(r.bytes).unwrap();
    for needle in [
        r#"lossd_requests_total{route="/v1/losses/{name}",loss="mse_loss",status="200"}"#,
        r#"lossd_request_duration_seconds_bucket{loss="mse_loss""#,
        r#"lossd_requests_total{route="/v1/losses/custom",loss="custom",status="200"}"#,
        r#"lossd_rejected_total{reason="payload_too_large"}"#,
        "lossd_elements_total",
        "lossd_queue_depth",
        "lossd_jobs_in_flight",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn a_thousand_concurrent_identical_requests_get_identical_bytes() {
    let app = std::sync::Arc::new(spawn_app().await);
    let body = json!({"input": [[0.3, -1.2, 2.5], [0.1, 0.0, -0.7]], "target": [2, 0], "grad": true, "label_smoothing": 0.1});
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move {
                loop {
                    let r = app.loss("cross_entropy", &body).await;
                    if r.status != 503 {
                        return r;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let mut first: Option<Vec<u8>> = None;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        match &first {
            None => first = Some(r.bytes),
            Some(f) => assert_eq!(&r.bytes, f),
        }
    }
}

/// The access log: one `info` line per request, written by the time its response arrives,
/// with method, route (the template, or the path when no route matched), request id, status
/// and latency.
#[tokio::test]
async fn each_request_is_logged_once_with_route_id_and_status() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // The test runtime is one thread: the server's tasks log through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let send = |path: &str, id: &str| {
        app.client
            .post(format!("{}{path}", app.base))
            .header("x-request-id", id)
            .json(&json!({"input": [1.0, 2.0], "target": [0.0, 0.0]}))
            .send()
    };
    assert_eq!(
        send("/v1/losses/mse_loss", "log-a").await.unwrap().status(),
        200
    );
    assert_eq!(send("/nowhere", "log-b").await.unwrap().status(), 404);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let line = |id: &str| {
        let found: Vec<&str> = text.lines().filter(|l| l.contains(id)).collect();
        assert_eq!(found.len(), 1, "{id} in {text}");
        found[0].to_owned()
    };
    let a = line("request_id=\"log-a\"");
    for part in [
        " INFO ",
        "answered",
        "method=POST",
        "route=\"/v1/losses/{name}\"",
        "status=200",
        "latency_ms=",
    ] {
        assert!(a.contains(part), "{part} in {a}");
    }
    let b = line("request_id=\"log-b\"");
    assert!(
        b.contains("route=\"/nowhere\"") && b.contains("status=404"),
        "{b}"
    );
}

/// A body without a declared length (chunked, split inside a number) is assembled in order;
/// the body limit counts its bytes exactly: a body of the limit's size is read, one byte more
/// is 413.
#[tokio::test]
async fn chunked_bodies_are_assembled_and_counted_to_the_byte() {
    use std::io::{Read, Write};

    let body = br#"{"input": [1.0, 2.0], "target": [0.0, 0.0]}"#;
    let send = |addr: String, pieces: Vec<&'static [u8]>| {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").unwrap();
            for p in pieces {
                s.write_all(format!("{:x}\r\n", p.len()).as_bytes())
                    .unwrap();
                s.write_all(p).unwrap();
                s.write_all(b"\r\n").unwrap();
                s.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            s.write_all(b"0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
    };
    let pieces: Vec<&'static [u8]> = vec![&body[..13], &body[13..16], &body[16..]];
    for (limit, status) in [(body.len(), "200"), (body.len() - 1, "413")] {
        let app = spawn_app_with(&["--max-body-bytes", &limit.to_string()]).await;
        let addr = app.base.trim_start_matches("http://").to_string();
        let out = send(addr, pieces.clone()).await.unwrap();
        assert_eq!(&out[9..12], status, "{out}");
        if status == "200" {
            assert!(out.contains(r#""loss":2.5"#), "{out}");
        } else {
            assert!(out.contains("payload_too_large"), "{out}");
        }
    }
}
