//! Access (docs/access.md): API keys, CORS, compressed request and response bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, spawn_app, spawn_app_with};

const ORIGIN: &str = "https://app.example.org";

fn mse_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "input": [[0.5, 1.0, -2.0], [2.0, -1.0, 0.25]],
        "target": [[0.0, 1.5, 1.0], [2.0, 0.0, 0.5]],
        "grad": true,
    }))
    .unwrap()
}

async fn mse(app: &TestApp, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    app.send_with("POST", "/v1/losses/mse_loss", &all, body)
        .await
}

fn assert_unauthorized(r: &Reply) {
    let p = r.problem(401, "unauthorized");
    assert_eq!(
        r.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer"),
        "{p}"
    );
}

#[tokio::test]
async fn with_keys_every_route_but_health_and_docs_needs_one() {
    let app = spawn_app_with(&["--api-keys", "k-one, k-two"]).await;
    // No key, a wrong key, a key's prefix or extension, another scheme, an empty bearer.
    for auth in [
        None,
        Some("Bearer k-three"),
        Some("Bearer k-on"),
        Some("Bearer k-one2"),
        Some("Bearer "),
        Some("Basic ay1vbmU6"),
        Some("k-one"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = mse(&app, &headers, mse_body()).await;
        assert_unauthorized(&r);
        let text = String::from_utf8_lossy(&r.bytes);
        assert!(
            !text.contains("k-one") && !text.contains("k-three"),
            "{text}"
        );
        for path in ["/v1/losses", "/v1/losses/mse_loss", "/metrics", "/nowhere"] {
            let r = app.send_with("GET", path, &headers, Vec::new()).await;
            assert_unauthorized(&r);
        }
    }
    // Both keys work, the scheme in any case.
    for auth in [
        "Bearer k-one",
        "Bearer k-two",
        "bearer k-one",
        "BEARER  k-two ",
    ] {
        let r = mse(&app, &[("authorization", auth)], mse_body()).await;
        assert_eq!(
            r.status,
            200,
            "{auth}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
        assert!(r.json()["loss"].is_f64());
        let r = app
            .send_with("GET", "/metrics", &[("authorization", auth)], Vec::new())
            .await;
        assert_eq!(r.status, 200);
    }
    // Open without a key: the health checks and the documentation.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    // The inference protocol's health routes are open too; its other routes need a key.
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    app.get("/v2/models/mse_loss")
        .await
        .problem(401, "unauthorized");
}

#[tokio::test]
async fn without_keys_the_service_is_open() {
    let app = spawn_app().await;
    let r = mse(&app, &[], mse_body()).await;
    assert_eq!(r.status, 200);
    // A client that sends a key anyway is not refused.
    let r = mse(&app, &[("authorization", "Bearer anything")], mse_body()).await;
    assert_eq!(r.status, 200);
}

#[test]
fn unusable_keys_stop_the_server_without_showing_them() {
    let long = format!("k{}", "x".repeat(300));
    for keys in [long.as_str(), "k-one,with space"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lossd"))
            .args(["--addr", "127.0.0.1:0", "--api-keys", keys])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("key 1 of --api-keys") || text.contains("key 2 of --api-keys"),
            "{text}"
        );
        assert!(
            !text.contains("xxxx") && !text.contains("with space"),
            "{text}"
        );
    }
}

/// The lossd binary on a free port, its output (stdout and stderr) collected as it comes.
struct Server {
    child: Option<Child>,
    base: String,
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let addr = crate::helpers::free_addr();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lossd"))
            .args(["--addr", &addr, "--grpc-addr", "off"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [out, err]
            .into_iter()
            .map(|mut r| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = r.read(&mut buf) {
                        log.lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                })
            })
            .collect();
        let base = format!("http://{addr}");
        let t = Instant::now();
        while raw_get(&addr, "/healthz", None).is_none_or(|(s, _)| s != 200) {
            assert!(t.elapsed() < Duration::from_secs(20), "lossd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child: Some(child),
            base,
            log,
            readers,
        }
    }

    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Waits until the log holds `text`.
    fn wait_for_log(&self, text: &str) {
        let t = Instant::now();
        while !self.log.lock().unwrap().contains(text) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no `{text}` in the log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and returns everything it wrote.
    fn stop(mut self) -> String {
        self.signal("TERM");
        self.child.take().unwrap().wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The answer on `s`: its head, then as many bytes as its content-length says; the status and
/// the whole text. The server may go on reading (and discarding) the rest of a refused body
/// after it has answered, so the connection's end is not the answer's.
fn read_answer(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let complete = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let len: usize = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })?;
        (rest.len() >= len).then_some(())
    };
    while complete(&out).is_none() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    Some((text.get(9..12)?.parse().ok()?, text))
}

/// `GET path` over a fresh connection; the status and the whole answer.
fn raw_get(addr: &str, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = auth.map_or_else(String::new, |a| format!("authorization: {a}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    read_answer(&mut s)
}

fn status(server: &Server, auth: &str) -> u16 {
    raw_get(server.addr(), "/v1/losses", Some(auth)).unwrap().0
}

#[test]
fn the_keys_file_is_read_again_on_sighup_and_no_key_is_ever_logged() {
    let dir = std::env::temp_dir().join(format!("lossd-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, "\n  k-file-first  \n\n").unwrap();
    let server = Server::start(&[
        "--api-keys",
        "k-inline-secret",
        "--api-keys-file",
        file.to_str().unwrap(),
        "--log",
        "debug",
    ]);
    assert_eq!(status(&server, "Bearer k-file-first"), 200);
    assert_eq!(status(&server, "Bearer k-inline-secret"), 200);
    assert_eq!(status(&server, "Bearer k-file-second"), 401);
    assert_eq!(status(&server, "Bearer k-wrong-guess"), 401);

    std::fs::write(&file, "k-file-second\r\nk-file-third\n").unwrap();
    server.signal("HUP");
    let t = Instant::now();
    while status(&server, "Bearer k-file-second") != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "keys not reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status(&server, "Bearer k-file-third"), 200);
    assert_eq!(status(&server, "Bearer k-file-first"), 401);
    assert_eq!(status(&server, "Bearer k-inline-secret"), 200);

    // A file that cannot be read keeps the keys in force.
    std::fs::remove_file(&file).unwrap();
    server.signal("HUP");
    server.wait_for_log("API keys not reloaded");
    assert_eq!(status(&server, "Bearer k-file-second"), 200);
    assert_eq!(raw_get(server.addr(), "/healthz", None).unwrap().0, 200);

    let log = server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(log.contains("API keys reloaded"), "{log}");
    assert!(log.contains("keys=3"), "the count of keys in force: {log}");
    assert!(log.contains("API keys not reloaded"), "{log}");
    for key in [
        "k-inline-secret",
        "k-file-first",
        "k-file-second",
        "k-file-third",
        "k-wrong-guess",
    ] {
        assert!(!log.contains(key), "{key} in the log:\n{log}");
    }
}

async fn preflight(app: &TestApp, origin: &str) -> Reply {
    app.send_with(
        "OPTIONS",
        "/v1/losses/mse_loss",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,authorization,content-encoding,x-request-id",
            ),
        ],
        Vec::new(),
    )
    .await
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn cors_lets_the_allowed_origin_in_before_the_key_check() {
    let app = spawn_app_with(&["--api-keys", "k-one,k-two", "--cors-origins", ORIGIN]).await;
    let r = preflight(&app, ORIGIN).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ORIGIN));
    let allowed = header(&r, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    for h in [
        "content-type",
        "authorization",
        "content-encoding",
        "x-request-id",
    ] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
    assert!(
        header(&r, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );

    // The call itself: the key is checked, the answer readable by the page, its id exposed.
    let r = mse(
        &app,
        &[("origin", ORIGIN), ("authorization", "Bearer k-two")],
        mse_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ORIGIN));
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let r = mse(&app, &[("origin", ORIGIN)], mse_body()).await;
    assert_unauthorized(&r);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ORIGIN));

    // Another origin: nothing allows it.
    let r = preflight(&app, "https://evil.example.com").await;
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r:?}");
    let r = mse(
        &app,
        &[
            ("origin", "https://evil.example.com"),
            ("authorization", "Bearer k-one"),
        ],
        mse_body(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_is_off_by_default_and_star_allows_any_origin() {
    let app = spawn_app().await;
    let r = preflight(&app, ORIGIN).await;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let app = spawn_app_with(&["--cors-origins", "*"]).await;
    let r = preflight(&app, "https://anywhere.example.net").await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn compressed_bodies_give_the_same_loss_as_plain_ones() {
    let app = spawn_app().await;
    let plain = mse(&app, &[], mse_body()).await;
    assert_eq!(plain.status, 200);
    let expected = plain.json();
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    deflate.write_all(&mse_body()).unwrap();
    let bodies = [
        ("gzip", gzip(&mse_body())),
        ("zstd", zstd::encode_all(&mse_body()[..], 3).unwrap()),
        ("deflate", deflate.finish().unwrap()),
        ("identity", mse_body()),
    ];
    for (encoding, body) in bodies {
        let r = mse(&app, &[("content-encoding", encoding)], body).await;
        assert_eq!(
            r.status,
            200,
            "{encoding}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
        assert_eq!(r.json(), expected, "{encoding}");
    }
    // The batch and custom routes read their bodies the same way.
    let batch = json!({"jobs": [{"loss": "l1_loss", "input": [1, 2, 3], "target": [1, 1, 1]}]});
    let r = app
        .send_with(
            "POST",
            "/v1/batch",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            gzip(&serde_json::to_vec(&batch).unwrap()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["result"]["loss"], 1.0);
}

#[tokio::test]
async fn a_corrupt_body_is_400_and_an_unknown_encoding_415() {
    let app = spawn_app().await;
    let good = gzip(&mse_body());
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 8] {
        *b ^= 0xa5;
    }
    let truncated = good[..good.len() / 2].to_vec();
    for (what, encoding, body) in [
        ("not gzip at all", "gzip", mse_body()),
        ("damaged", "gzip", flipped),
        ("truncated", "gzip", truncated),
        ("not zstd", "zstd", b"definitely not zstd".to_vec()),
    ] {
        let r = mse(&app, &[("content-encoding", encoding)], body).await;
        let p = r.problem(400, "invalid_body");
        assert!(
            p["detail"].as_str().unwrap().contains(encoding),
            "{what}: {p}"
        );
    }
    let r = mse(&app, &[("content-encoding", "compress")], good.clone()).await;
    let p = r.problem(415, "unsupported_media_type");
    assert!(p["detail"].as_str().unwrap().contains("compress"), "{p}");
    assert!(header(&r, "accept-encoding").unwrap().contains("gzip"));
    // Stacked encodings are not decoded either.
    let r = mse(&app, &[("content-encoding", "gzip, zstd")], good).await;
    r.problem(415, "unsupported_media_type");
}

/// One gzip member that decodes to `mib` MiB of zeros, about 1 KiB of body per MiB: the
/// deflate blocks of 1 MiB of zeros (ending on a full flush, so they stand alone) repeated,
/// a final empty block, and the CRC and size of the whole.
fn gzip_bomb(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut c = Compress::new(Compression::best(), false);
    let mut blocks = Vec::with_capacity(1 << 20);
    c.compress_vec(&zeros, &mut blocks, FlushCompress::Full)
        .unwrap();
    let mut last = Vec::with_capacity(64);
    c.compress_vec(&[], &mut last, FlushCompress::Finish)
        .unwrap();
    let mut one = Crc::new();
    one.update(&zeros);
    let mut crc = Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..mib {
        out.extend_from_slice(&blocks);
        crc.combine(&one);
    }
    out.extend_from_slice(&last);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&((mib << 20) as u32).to_le_bytes());
    out
}

#[test]
fn the_bomb_is_one_valid_gzip_member() {
    let decoded = gunzip(&gzip_bomb(3));
    assert_eq!(decoded.len(), 3 << 20);
    assert!(decoded.iter().all(|&b| b == 0));
}

/// POSTs `body` gzip-encoded with a declared length, writing until the server stops reading;
/// then reads its answer.
fn post_gzip(addr: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST /v1/losses/mse_loss HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    for chunk in body.chunks(64 << 10) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    read_answer(&mut s)
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_early_by_the_decoded_size() {
    let app = spawn_app().await;
    let bomb = gzip_bomb(1024);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let addr = app.base.trim_start_matches("http://").to_string();
    let t = Instant::now();
    let answer = tokio::task::spawn_blocking(move || post_gzip(&addr, &bomb))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    let (code, text) = answer.expect("an answer to the bomb");
    assert_eq!(code, 413, "{text}");
    assert!(
        text.contains("application/problem+json") && text.contains("payload_too_large"),
        "{text}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // A body that decodes to just under the limit still computes its error normally: the
    // limit is on the decoded size, not the declared one.
    let app = spawn_app_with(&["--max-body-bytes", "3000000"]).await;
    let r = mse(&app, &[("content-encoding", "gzip")], gzip_bomb(3)).await;
    r.problem(413, "payload_too_large");
    let r = mse(&app, &[("content-encoding", "gzip")], gzip_bomb(2)).await;
    r.problem(400, "invalid_json");
}

#[tokio::test]
async fn large_answers_are_compressed_when_asked_and_small_ones_never() {
    let app = spawn_app().await;
    let n = 100_000;
    let input: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    let target: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
    let body = serde_json::to_vec(&json!({"input": input, "target": target, "reduction": "none"}))
        .unwrap();
    let plain = mse(&app, &[], body.clone()).await;
    assert_eq!(plain.status, 200);
    assert_eq!(header(&plain, "content-encoding"), None);
    let plain_json = plain.json();
    assert_eq!(plain_json["loss"].as_array().unwrap().len(), n);

    let zipped = mse(&app, &[("accept-encoding", "gzip")], body.clone()).await;
    assert_eq!(zipped.status, 200);
    assert_eq!(header(&zipped, "content-encoding"), Some("gzip"));
    assert!(
        zipped.bytes.len() < plain.bytes.len() / 2,
        "{} bytes",
        zipped.bytes.len()
    );
    let decoded: Value = serde_json::from_slice(&gunzip(&zipped.bytes)).unwrap();
    assert_eq!(decoded, plain_json);

    let z = mse(&app, &[("accept-encoding", "zstd")], body).await;
    assert_eq!(header(&z, "content-encoding"), Some("zstd"));
    let decoded: Value = serde_json::from_slice(&zstd::decode_all(&z.bytes[..]).unwrap()).unwrap();
    assert_eq!(decoded, plain_json);

    // Small answers and problem documents stay plain.
    let r = mse(&app, &[("accept-encoding", "gzip")], mse_body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-encoding"), None);
    let r = mse(&app, &[("accept-encoding", "gzip")], b"{".to_vec()).await;
    r.problem(400, "invalid_json");
    assert_eq!(header(&r, "content-encoding"), None);
    // The catalog is large enough.
    let r = app
        .send_with(
            "GET",
            "/v1/losses",
            &[("accept-encoding", "gzip")],
            Vec::new(),
        )
        .await;
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    serde_json::from_slice::<Value>(&gunzip(&r.bytes)).unwrap();
    // Refusing every encoding lossd can send, identity included, is a 406.
    for refuse in ["identity;q=0", "*;q=0"] {
        let r = app
            .send_with(
                "GET",
                "/v1/losses",
                &[("accept-encoding", refuse)],
                Vec::new(),
            )
            .await;
        r.problem(406, "not_acceptable");
    }
}
