//! Request ids: a client's own id is kept only when short and printable, a generated one is a
//! version 4 UUID, and the access log (the real binary, in both formats) has every request's
//! line, written out on shutdown, never a refused id.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// A 36-character id, as a client's own UUID would be.
const SHORT: &str = "0f8b6c2e-client-id-of-36-characters!";

/// An id of 60,000 characters, recognisable by its first part.
fn huge() -> String {
    format!("refused-id-{}", "q".repeat(60_000 - 11))
}

fn assert_v4(id: &str) {
    let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));
    assert_eq!(parsed.get_version_num(), 4, "{id}");
    assert_eq!(parsed.hyphenated().to_string(), id, "canonical form");
}

#[tokio::test]
async fn client_ids_are_echoed_only_when_short_and_printable() {
    let app = spawn_app().await;
    let echo = |id: Option<Vec<u8>>| {
        let mut req = app.client.get(format!("{}/healthz", app.base));
        if let Some(id) = id {
            req = req.header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(&id).unwrap(),
            );
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(SHORT.len(), 36);
    let kept = [SHORT.to_owned(), "a".repeat(128), "!~\"{}[]".to_owned()];
    for id in kept {
        assert_eq!(echo(Some(id.clone().into_bytes())).await, id);
    }
    let refused: [Vec<u8>; 6] = [
        huge().into_bytes(),
        "a".repeat(129).into_bytes(),
        b"a b".to_vec(),
        b"a\tb".to_vec(),
        b"caf\xc3\xa9".to_vec(),
        Vec::new(),
    ];
    let mut made = std::collections::HashSet::new();
    for id in refused.into_iter().map(Some).chain([None, None]) {
        let got = echo(id).await;
        assert_v4(&got);
        assert!(made.insert(got), "a generated id repeated");
    }
}

/// The server process, killed if a test fails before it stops.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the binary with `--log-format format`, sends it `requests` (id sent, or none), stops it
/// with SIGTERM, and returns each request's answered id and the whole of its stdout.
async fn run_binary(format: &str, requests: &[Option<String>]) -> (Vec<String>, String) {
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_lossd"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "off",
                "--log",
                "info",
                "--log-format",
                format,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut server.0;
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            tx.send(line.clone()).ok();
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The first line says where it listens (the port it was given).
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let port: String = first[first.find("127.0.0.1:").expect(&first) + 10..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for id in requests {
        let mut req = client
            .post(format!("http://127.0.0.1:{port}/v1/losses/mse_loss"))
            .json(&json!({"input": [1.0, 2.0], "target": [0.0, 0.0]}));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        ids.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lossd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    (ids, reader.join().unwrap())
}

#[tokio::test]
async fn the_binary_logs_every_request_in_both_formats_and_flushes_on_shutdown() {
    // A refused id, a kept one, none, then a burst whose last lines are still queued for the
    // writer thread when SIGTERM arrives.
    let mut requests = vec![Some(huge()), Some(SHORT.to_owned()), None];
    requests.extend((0..300).map(|i| Some(format!("burst-{i}"))));
    for format in ["json", "text"] {
        let (ids, out) = run_binary(format, &requests).await;
        assert!(
            !out.contains("refused-id-"),
            "{format}: the refused id was logged"
        );
        assert!(!out.contains('\x1b'), "{format}: colours on a pipe");
        assert_v4(&ids[0]);
        assert_eq!(ids[1], SHORT);
        assert_v4(&ids[2]);
        for (id, sent) in ids.iter().zip(&requests).skip(3) {
            assert_eq!(Some(id), sent.as_ref());
        }
        let lines: Vec<&str> = out.lines().collect();
        // Every request's line, once, with the access log's fields.
        for (i, id) in ids.iter().enumerate() {
            let quoted = format!("\"{id}\"");
            let found: Vec<&&str> = lines.iter().filter(|l| l.contains(&quoted)).collect();
            assert_eq!(found.len(), 1, "{format}: {id} in\n{out}");
            let rejected = if format == "json" {
                let line: Value = serde_json::from_str(found[0]).unwrap();
                let f = &line["fields"];
                assert_eq!(line["level"], "INFO", "{line}");
                assert_eq!(
                    (
                        &f["message"],
                        &f["method"],
                        &f["route"],
                        &f["request_id"],
                        &f["status"]
                    ),
                    (
                        &json!("answered"),
                        &json!("POST"),
                        &json!("/v1/losses/{name}"),
                        &json!(id),
                        &json!(200)
                    ),
                    "{line}"
                );
                assert!(f["latency_ms"].as_f64().unwrap() >= 0.0, "{line}");
                f["client_request_id_rejected"] == json!(true)
            } else {
                let line = found[0];
                for part in [
                    " INFO ",
                    "answered",
                    "method=POST",
                    "route=\"/v1/losses/{name}\"",
                    &format!("request_id=\"{id}\""),
                    "status=200",
                    "latency_ms=",
                ] {
                    assert!(line.contains(part), "{part} in {line}");
                }
                line.contains("client_request_id_rejected=true")
            };
            assert_eq!(rejected, i == 0, "{format}: request {i}: {id}");
        }
        assert!(
            lines.last().unwrap().contains("shutting down"),
            "{format}: {:?}",
            lines.last()
        );
    }
}
