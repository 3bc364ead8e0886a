//! `spawn_app()`: a real lossd on 127.0.0.1:0, and a client for it.

use std::sync::Once;

use lossd::config::Config;
use serde_json::Value;

/// A running server and a client.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An HTTP client.
    pub client: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: String,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// Asserts that this is a problem document with `status` and `code`, and returns it.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        let body = String::from_utf8_lossy(&self.bytes);
        assert_eq!(self.status, status, "status; body: {body}");
        assert_eq!(
            self.content_type, "application/problem+json",
            "content type; body: {body}"
        );
        let p = self.json();
        assert_eq!(p["code"], code, "code; body: {body}");
        assert_eq!(p["status"], status, "status in the body");
        assert_eq!(p["type"], "about:blank");
        assert!(p["title"].is_string() && p["detail"].is_string(), "{body}");
        p
    }
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter("info").init();
        }
    });
}

/// A server with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A server with extra command-line flags (e.g. `["--max-elements", "10"]`, or
/// `["--api-keys", "k-one"]` for a server that wants keys).
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    init_tracing();
    let mut args = vec!["lossd", "--addr", "127.0.0.1:0", "--grpc-addr", "off"];
    args.extend_from_slice(flags);
    let config = <Config as clap::Parser>::parse_from(args);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lossd::serve(listener, config));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    /// Sends `method path` with a raw body and content type.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.send_with(method, path, &headers, body).await
    }

    /// Sends `method path` with a raw body and these headers.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = res.bytes().await.expect("body read").to_vec();
        Reply {
            status,
            content_type,
            headers,
            bytes,
        }
    }

    /// `POST /v1/losses/{loss}` with a JSON body.
    pub async fn loss(&self, loss: &str, body: &Value) -> Reply {
        self.post_json(&format!("/v1/losses/{loss}"), body).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            "POST",
            path,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, Vec::new()).await
    }
}

/// A loopback address with a port that was free a moment ago, for a server started as its own
/// process.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}
