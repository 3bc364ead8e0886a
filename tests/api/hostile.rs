//! Hostile input through HTTP against the real binary: each gets a 4xx problem quickly, the
//! server keeps answering correctly, and its peak RSS stays under a stated bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::TestApp;

/// Peak RSS the server may reach during the whole hostile suite (it holds at most a 64 MiB
/// body and the elements of one request at a time per worker).
const PEAK_RSS_BOUND_MIB: u64 = 512;

struct Server {
    child: Child,
    app: TestApp,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start() -> Server {
    let addr = crate::helpers::free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_lossd"))
        .args([
            "--addr",
            &addr,
            "--grpc-addr",
            "off",
            "--log",
            "error",
            "--header-timeout",
            "1",
            "--body-timeout",
            "2",
        ])
        .spawn()
        .unwrap();
    let app = TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    };
    let t = Instant::now();
    while reqwest::get(format!("{}/healthz", app.base)).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "lossd did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, app, addr }
}

fn peak_rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Sends raw bytes and returns the status line's code and the body (or None if the server
/// closed the connection without an answer).
fn raw(addr: &str, request: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.get(9..12)?.parse().ok()?;
    Some((code, text))
}

async fn still_correct(app: &TestApp) {
    let r = app
        .loss(
            "mse_loss",
            &json!({"input": [1.0, 2.0], "target": [1.0, 4.0]}),
        )
        .await;
    assert_eq!(r.json()["loss"], 2.0);
}

#[tokio::test]
async fn hostile_inputs_get_quick_4xx_problems_and_the_server_stays_small_and_correct() {
    let server = start().await;
    let app = &server.app;
    let quick = Duration::from_secs(5);
    let post = |body: Vec<u8>| {
        app.send(
            "POST",
            "/v1/losses/mse_loss",
            Some("application/json"),
            body,
        )
    };

    // Nesting 100,000 deep.
    let t = Instant::now();
    let deep = format!(
        "{{\"input\": {}1{}, \"target\": 1}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    post(deep.into_bytes()).await.problem(422, "invalid_tensor");
    assert!(t.elapsed() < quick);

    // A declared shape whose product overflows 64 bits, and one that is merely huge, each
    // with data that cannot match it: refused before anything is decoded or allocated.
    for shape in [
        json!([4294967296u64, 4294967296u64, 4294967296u64]),
        json!([1u64 << 40]),
    ] {
        for tensor in [
            json!({"shape": shape, "dtype": "float64", "base64": ""}),
            json!({"shape": shape, "data": [1.0, 2.0]}),
        ] {
            let t = Instant::now();
            let body = json!({"input": tensor, "target": 1});
            app.loss("mse_loss", &body)
                .await
                .problem(422, "invalid_tensor");
            assert!(t.elapsed() < quick);
        }
    }
    // Base64 whose length disagrees with the shape.
    let body = json!({"input": {"shape": [3], "dtype": "float64", "base64": "AAAAAAAA8D8="}, "target": [1, 2, 3]});
    app.loss("mse_loss", &body)
        .await
        .problem(422, "invalid_tensor");

    // Numbers out of range.
    post(br#"{"input": [1e400], "target": [1]}"#.to_vec())
        .await
        .problem(422, "invalid_tensor");
    post(br#"{"input": [-1e999, 2], "target": [1, 2]}"#.to_vec())
        .await
        .problem(422, "invalid_tensor");

    // Class indices of ±2^63.
    for target in [
        "9223372036854775808",
        "-9223372036854775808",
        "18446744073709551615",
    ] {
        let body = format!(r#"{{"input": [[0.1, 0.2, 0.3]], "target": [{target}]}}"#);
        let r = app
            .send(
                "POST",
                "/v1/losses/cross_entropy",
                Some("application/json"),
                body.into_bytes(),
            )
            .await;
        assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.bytes));
    }

    // A 100 MiB body: refused from its declared length before it is read, and without a
    // declared length (chunked) as soon as the limit is passed.
    let t = Instant::now();
    let addr = server.addr.clone();
    let (declared, chunked) = tokio::task::spawn_blocking(move || {
        let declared = raw(
            &addr,
            b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n",
        );
        let chunked = chunked_upload(&addr, 100 << 20);
        (declared, chunked)
    })
    .await
    .unwrap();
    let (code, text) = declared.expect("an answer to the declared 100 MiB");
    assert!(code == 413 && text.contains("payload_too_large"), "{text}");
    let (code, text) = chunked.expect("an answer to the chunked 100 MiB");
    assert!(code == 413 && text.contains("payload_too_large"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(20));

    // A batch of 100,000 jobs.
    let t = Instant::now();
    let job = r#"{"loss":"mse_loss","input":[1],"target":[1]}"#;
    let batch = format!("{{\"jobs\": [{}]}}", vec![job; 100_000].join(","));
    app.send(
        "POST",
        "/v1/batch",
        Some("application/json"),
        batch.into_bytes(),
    )
    .await
    .problem(413, "payload_too_large");
    assert!(t.elapsed() < quick);

    // Invalid UTF-8, inside a string and as a whole.
    post(b"{\"input\": [1], \"target\": [1], \"reduction\": \"\xff\xfe\"}".to_vec())
        .await
        .problem(400, "invalid_json");
    post(vec![0xc3, 0x28, 0xa0, 0xa1])
        .await
        .problem(400, "invalid_json");

    // Duplicate keys.
    let r = post(br#"{"input": [1], "input": [2], "target": [1]}"#.to_vec()).await;
    let p = r.problem(422, "invalid_option");
    assert!(p["detail"].as_str().unwrap().contains("duplicate"), "{p}");
    assert_eq!(p["pointer"], "/input");
    post(br#"{"input": [1], "target": [1], "reduction": "sum", "reduction": "mean"}"#.to_vec())
        .await
        .problem(422, "invalid_option");

    // Half-sent requests held open: headers never finished, a body that never comes.
    let addr = server.addr.clone();
    let t = Instant::now();
    let halves = std::thread::spawn(move || {
        let headers = raw(
            &addr,
            b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-",
        );
        let body = raw(
            &addr,
            b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"in",
        );
        (headers, body)
    });
    still_correct(app).await;
    let (headers, body) = tokio::task::spawn_blocking(move || halves.join().unwrap())
        .await
        .unwrap();
    // Unfinished headers: closed (hyper answers 408 or just hangs up); an unfinished body: 503.
    assert!(
        headers.as_ref().is_none_or(|(code, _)| *code == 408),
        "{headers:?}"
    );
    let (code, text) = body.expect("an answer to the half-sent body");
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(t.elapsed() < Duration::from_secs(10));

    still_correct(app).await;
    let peak = peak_rss_mib(server.child.id());
    eprintln!("hostile suite: peak RSS {peak} MiB (bound {PEAK_RSS_BOUND_MIB} MiB)");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak} MiB");
}

/// Sends `total` bytes of body chunked, 1 MiB a chunk, until the server stops reading; then
/// reads its answer.
fn chunked_upload(addr: &str, total: usize) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        .ok()?;
    let chunk = vec![b' '; 1 << 20];
    let mut sent = 0;
    while sent < total {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.get(9..12)?.parse().ok()?;
    Some((code, text))
}
