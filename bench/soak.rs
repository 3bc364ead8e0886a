//! Load and soak test: many concurrent clients against a release build of lossd on loopback.
//!
//! ```sh
//! cargo build --release && cargo run --release --example soak -- target/release/lossd 30 32
//! ```
//!
//! Arguments: the lossd binary, the duration in seconds (default 30) and the number of
//! concurrent clients (default 32). It starts the binary on a free port, drives it with a mix
//! of every loss and custom expressions — the PyTorch cases of `tests/fixtures/` (valid and
//! invalid requests, every option), plus batches and malformed bodies — for the given time,
//! and checks every answer against PyTorch's expected values. It prints requests, statuses,
//! latency percentiles and the server's RSS over time, and exits non-zero on any 5xx other
//! than 503, any wrong answer, or RSS growth after warm-up. Bounded in time and in count; stops by itself.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

#[path = "../tests/support/compare.rs"]
mod compare;

/// One request of the mix and what a correct answer looks like.
struct Case {
    id: String,
    path: String,
    body: Vec<u8>,
    content_type: &'static str,
    check: Expect,
}

enum Expect {
    /// A PyTorch case: status, then values or error code.
    Torch(Value, f64, f64),
    /// Only the status (and, for errors, the problem's code).
    Status(u16, Option<&'static str>),
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for text in [
        include_str!("../tests/fixtures/pytorch-cases.jsonl"),
        include_str!("../tests/fixtures/torch-extra.jsonl"),
        include_str!("../tests/fixtures/custom-cases.jsonl"),
    ] {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let c: Value = serde_json::from_str(line).expect("fixture line");
            out.push(Case {
                id: c["id"].as_str().unwrap_or("?").to_string(),
                // The custom-expression cases have no `loss`: their route is `custom`.
                path: format!("/v1/losses/{}", c["loss"].as_str().unwrap_or("custom")),
                body: serde_json::to_vec(&c["body"]).expect("serializes"),
                content_type: "application/json",
                check: Expect::Torch(
                    c["expect"].clone(),
                    c["rtol"].as_f64().unwrap_or(1e-7),
                    c["atol"].as_f64().unwrap_or(1e-10),
                ),
            });
        }
    }
    let batch = serde_json::json!({"jobs": [
        {"loss": "mse_loss", "input": [1, 2], "target": [1, 3]},
        {"loss": "cross_entropy", "input": [[0.1, 2.0]], "target": [1], "grad": true},
        {"loss": "nope", "input": [1]},
    ]});
    out.push(Case {
        id: "batch".into(),
        path: "/v1/batch".into(),
        body: serde_json::to_vec(&batch).unwrap(),
        content_type: "application/json",
        check: Expect::Status(200, None),
    });
    let deep = format!(
        "{{\"input\": {}1{}, \"target\": 1}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    for (id, body, ct, status, code) in [
        (
            "truncated",
            &b"{\"input\": [1, 2"[..],
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "not-utf8",
            &b"\xff\xfe\xfd"[..],
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "form",
            &b"input=1"[..],
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (
            "deep",
            deep.as_bytes(),
            "application/json",
            422,
            "invalid_tensor",
        ),
    ] {
        out.push(Case {
            id: id.into(),
            path: "/v1/losses/mse_loss".into(),
            body: body.to_vec(),
            content_type: ct,
            check: Expect::Status(status, Some(code)),
        });
    }
    out
}

fn judge(case: &Case, status: u16, body: &[u8]) -> Result<(), String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    match &case.check {
        Expect::Status(want, code) => {
            if status != *want {
                return Err(format!("status {status}, want {want}"));
            }
            if let Some(code) = code {
                let got = json
                    .as_ref()
                    .map(|j| j["code"].clone())
                    .unwrap_or(Value::Null);
                if got != *code {
                    return Err(format!("code {got}, want {code}"));
                }
            }
            Ok(())
        }
        Expect::Torch(expect, rtol, atol) => {
            let want = expect["status"].as_u64().unwrap_or(0) as u16;
            if status != want {
                return Err(format!("status {status}, want {want}"));
            }
            let got = json.ok_or("the body is not JSON")?;
            if want != 200 {
                return if got["code"] == expect["code"] {
                    Ok(())
                } else {
                    Err(format!("code {}, want {}", got["code"], expect["code"]))
                };
            }
            if got["shape"] != expect["shape"] {
                return Err("shape".into());
            }
            compare::compare("loss", &got["loss"], &expect["loss"], *rtol, *atol)?;
            if let Some(grads) = expect.get("grad").and_then(Value::as_object) {
                for (name, w) in grads {
                    compare::compare(name, &got["grad"][name], w, *rtol, *atol)?;
                }
            }
            Ok(())
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    latencies_us: Vec<u64>,
    wrong: Vec<String>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/lossd".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let clients: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server(
        Command::new(&binary)
            .args(["--addr", &addr, "--log", "warn", "--queue-capacity", "64"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}")),
    );
    let pid = server.0.id();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let start = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "lossd did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cases = Arc::new(cases());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    println!(
        "soak: {clients} clients for {seconds} s against {binary} (pid {pid}), {} distinct requests",
        cases.len()
    );
    let mut tasks = Vec::new();
    for k in 0..clients {
        let (cases, tally, stop, client, base) = (
            cases.clone(),
            tally.clone(),
            stop.clone(),
            client.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = k * 7919;
            let mut local = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let case = &cases[i % cases.len()];
                i += 1;
                let t = Instant::now();
                let res = client
                    .post(format!("{base}{}", case.path))
                    .header("content-type", case.content_type)
                    .body(case.body.clone())
                    .send()
                    .await;
                let (status, body) = match res {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
                    }
                    Err(e) => {
                        local
                            .wrong
                            .push(format!("{}: transport error {e}", case.id));
                        continue;
                    }
                };
                local.latencies_us.push(t.elapsed().as_micros() as u64);
                *local.statuses.entry(status).or_default() += 1;
                if status == 503 {
                    continue; // refusing under load is allowed
                }
                if let Err(e) = judge(case, status, &body) {
                    local.wrong.push(format!("{}: {e}", case.id));
                }
            }
            let mut t = tally.lock().await;
            for (s, n) in local.statuses {
                *t.statuses.entry(s).or_default() += n;
            }
            t.latencies_us.extend(local.latencies_us);
            t.wrong.extend(local.wrong);
        }));
    }
    let mut rss = Vec::new();
    let total = Duration::from_secs(seconds);
    while start.elapsed() < total + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = rss_kib(pid);
        rss.push(r);
        println!("  t={:>3}s rss={} MiB", rss.len(), r / 1024);
        if start.elapsed() >= total {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().await;
    let mut lat = t.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let requests: u64 = t.statuses.values().sum();
    println!(
        "requests: {requests} ({:.0}/s)",
        requests as f64 / seconds as f64
    );
    println!("statuses: {:?}", t.statuses);
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5) as f64 / 1e3,
        pct(0.99) as f64 / 1e3,
        lat.last().copied().unwrap_or(0) as f64 / 1e3
    );
    // Warm-up: the first quarter of the run (allocator arenas, caches, thread pools grow).
    let warm = rss.len() / 4;
    let after_warm = rss.get(warm.max(1) - 1).copied().unwrap_or(0);
    let peak_after = rss[warm..].iter().copied().max().unwrap_or(0);
    let end = rss.last().copied().unwrap_or(0);
    println!(
        "rss: start {} MiB, after warm-up {} MiB, peak after {} MiB, end {} MiB",
        rss.first().copied().unwrap_or(0) / 1024,
        after_warm / 1024,
        peak_after / 1024,
        end / 1024
    );
    let mut failed = false;
    let bad5xx: u64 = t
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500 && **s != 503)
        .map(|(_, n)| n)
        .sum();
    if bad5xx > 0 {
        println!("FAIL: {bad5xx} responses were 5xx other than 503");
        failed = true;
    }
    if !t.wrong.is_empty() {
        println!("FAIL: {} wrong answers, e.g.:", t.wrong.len());
        for w in t.wrong.iter().take(10) {
            println!("  {w}");
        }
        failed = true;
    }
    // Growth after warm-up: the end may not exceed the post-warm-up level by more than 25%
    // plus 32 MiB (allocator noise); a leak grows without bound and fails this.
    if end > after_warm + after_warm / 4 + 32 * 1024 {
        println!("FAIL: RSS grew after warm-up");
        failed = true;
    }
    if requests == 0 {
        println!("FAIL: no requests completed");
        failed = true;
    }
    drop(server);
    if failed {
        std::process::exit(1);
    }
    println!("ok");
}
