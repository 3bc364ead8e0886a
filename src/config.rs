//! Configuration: every flag is also an environment variable `LOSSD_<FLAG>`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// lossd: PyTorch's torch.nn losses and their gradients over HTTP.
#[derive(Clone, Debug, Parser)]
#[command(name = "lossd", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LOSSD_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Largest request body, in bytes (past it: 413 payload_too_large).
    #[arg(long, env = "LOSSD_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most tensor elements in one request, all tensors together (past it: 413).
    #[arg(long, env = "LOSSD_MAX_ELEMENTS", default_value_t = 16_777_216)]
    pub max_elements: usize,

    /// Highest tensor rank (past it: 422 invalid_tensor).
    #[arg(long, env = "LOSSD_MAX_RANK", default_value_t = 16)]
    pub max_rank: usize,

    /// Most jobs in one batch request (past it: 413).
    #[arg(long, env = "LOSSD_MAX_BATCH_JOBS", default_value_t = 1024)]
    pub max_batch_jobs: usize,

    /// Longest custom-loss expression, in characters (past it: 422 invalid_expression).
    #[arg(long, env = "LOSSD_MAX_EXPRESSION_CHARS", default_value_t = crate::custom::MAX_EXPRESSION_CHARS)]
    pub max_expression_chars: usize,

    /// Most syntax nodes in one custom-loss expression (past it: 422 invalid_expression).
    #[arg(long, env = "LOSSD_MAX_EXPRESSION_NODES", default_value_t = crate::custom::MAX_EXPRESSION_NODES)]
    pub max_expression_nodes: usize,

    /// Deepest nesting of one custom-loss expression (past it: 422 invalid_expression).
    #[arg(long, env = "LOSSD_MAX_EXPRESSION_DEPTH", default_value_t = crate::custom::MAX_EXPRESSION_DEPTH)]
    pub max_expression_depth: usize,

    /// Most requests waiting for a compute worker (past it: 503 overloaded).
    #[arg(long, env = "LOSSD_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,

    /// Time limit for one request, in seconds, waiting included (past it: 503 timeout).
    #[arg(long, env = "LOSSD_REQUEST_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub request_timeout: f64,

    /// Time a client has to send a request's headers, in seconds (then the connection closes).
    #[arg(long, env = "LOSSD_HEADER_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds)]
    pub header_timeout: f64,

    /// Time a client has to send a request's body, in seconds (past it: 503 `timeout`).
    #[arg(long, env = "LOSSD_BODY_TIMEOUT", default_value_t = 60.0, value_parser = positive_seconds)]
    pub body_timeout: f64,

    /// Memory that requests may hold at once, in bytes (`KiB`, `MiB`, `GiB` suffixes); a request
    /// that does not fit waits, then 503 overloaded. Default: 75 % of the container's memory
    /// limit (cgroup), else 1 GiB.
    #[arg(long, env = "LOSSD_MAX_MEMORY", value_parser = crate::memory::parse_size)]
    pub max_memory: Option<u64>,

    /// Most open connections; further ones wait in the listen backlog.
    #[arg(long, env = "LOSSD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Compute workers (jobs computing at once); default: the number of CPUs.
    #[arg(long, env = "LOSSD_WORKERS")]
    pub workers: Option<usize>,

    /// Address of the Open Inference Protocol's gRPC service (docs/oip.md); `off`: none.
    #[arg(long, env = "LOSSD_GRPC_ADDR", default_value = "127.0.0.1:8001", value_parser = grpc_addr)]
    pub grpc_addr: GrpcAddr,

    /// Log format.
    #[arg(long, env = "LOSSD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "LOSSD_LOG", default_value = "info")]
    pub log: String,

    /// API keys, comma-separated: every route but the health checks and the docs then needs
    /// `Authorization: Bearer <key>` (docs/access.md). Off by default.
    #[arg(
        long,
        env = "LOSSD_API_KEYS",
        hide_env_values = true,
        value_name = "KEYS"
    )]
    pub api_keys: Option<ApiKeys>,

    /// A file of API keys, one a line, re-read on SIGHUP (with `--api-keys`: both count).
    #[arg(long, env = "LOSSD_API_KEYS_FILE", value_name = "PATH")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Origins browsers may call from, comma-separated (`https://app.example.org`), or `*`
    /// for any (docs/access.md, CORS). Off by default.
    #[arg(long, env = "LOSSD_CORS_ORIGINS", value_name = "ORIGINS", value_parser = cors_origins)]
    pub cors_origins: Option<CorsOrigins>,

    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Ask a running lossd at `--addr` for `/healthz`; exit 0 when it answers 200.
    /// For container health checks: needs no shell or curl.
    Healthcheck,
    /// Print the OpenAPI document (what `GET /openapi.json` serves) and exit.
    /// `cargo run -q -- openapi > openapi/openapi.json` refreshes the committed copy.
    Openapi,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// API keys given on the command line or in `LOSSD_API_KEYS`. Its `Debug` says how many
/// there are, never what they are, so that printing a `Config` cannot leak them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys(pub Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

/// Parsing never fails here: a failure's message would quote the value, keys and all. The
/// keys are checked when the server starts (`access::Keys`), with messages that name a key by
/// its position only.
impl From<String> for ApiKeys {
    fn from(s: String) -> Self {
        ApiKeys(
            s.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// The origins of `--cors-origins`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin.
    Any,
    /// These origins (`scheme://host[:port]`, as browsers send them in `Origin`).
    List(Vec<http::HeaderValue>),
}

fn cors_origins(s: &str) -> Result<CorsOrigins, String> {
    let mut list = Vec::new();
    for origin in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            return Ok(CorsOrigins::Any);
        }
        // Browsers send an origin without a path; `https://app.example.org/` means the same.
        let origin = origin.strip_suffix('/').unwrap_or(origin);
        let uri: http::Uri = origin
            .parse()
            .map_err(|_| format!("`{origin}` is not an origin like https://app.example.org"))?;
        if uri.scheme().is_none() || uri.authority().is_none() || origin.ends_with('/') {
            return Err(format!(
                "`{origin}` is not an origin like https://app.example.org (scheme and host, no path)"
            ));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!(
                "`{origin}` has a path; an origin is a scheme and a host"
            ));
        }
        list.push(http::HeaderValue::from_str(origin).map_err(|e| e.to_string())?);
    }
    if list.is_empty() {
        return Err("no origin given".to_string());
    }
    Ok(CorsOrigins::List(list))
}

/// Where the gRPC service listens: an address, or nowhere (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcAddr(pub Option<SocketAddr>);

fn grpc_addr(s: &str) -> Result<GrpcAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(GrpcAddr(None));
    }
    s.parse()
        .map(|a| GrpcAddr(Some(a)))
        .map_err(|_| format!("`{s}` is not an address (host:port) or `off`"))
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

impl Config {
    /// The configuration with every default, as for tests.
    pub fn default_for_tests() -> Self {
        Config::parse_from(["lossd"])
    }

    /// The request time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout)
    }

    /// The header read timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout)
    }

    /// The body read timeout.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout)
    }

    /// The limits custom-loss expressions are parsed under.
    pub fn expression_limits(&self) -> crate::custom::Limits {
        crate::custom::Limits {
            max_chars: self.max_expression_chars,
            max_nodes: self.max_expression_nodes,
            max_depth: self.max_expression_depth,
        }
    }

    /// The memory budget: `--max-memory`, else its default (see [`crate::memory`]).
    pub fn memory_budget(&self) -> u64 {
        self.max_memory
            .unwrap_or_else(crate::memory::default_budget)
    }

    /// The number of compute workers.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_has_a_flag_and_a_default() {
        let c = Config::default_for_tests();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_body_bytes, 64 << 20);
        assert_eq!(c.max_elements, 16_777_216);
        assert_eq!(c.max_rank, 16);
        assert_eq!(c.max_batch_jobs, 1024);
        assert_eq!(c.queue_capacity, 256);
        assert_eq!(c.timeout(), Duration::from_secs(30));
        let c = Config::parse_from(["lossd", "--max-elements", "10", "--request-timeout", "0.5"]);
        assert_eq!(
            (c.max_elements, c.timeout()),
            (10, Duration::from_millis(500))
        );
        assert!(Config::try_parse_from(["lossd", "--request-timeout", "0"]).is_err());
    }

    #[test]
    fn access_is_off_by_default_and_keys_never_show() {
        let c = Config::default_for_tests();
        assert_eq!(
            (c.api_keys, c.api_keys_file, c.cors_origins),
            (None, None, None)
        );
        let c = Config::parse_from(["lossd", "--api-keys", " k-one,,k-two ,"]);
        let keys = c.api_keys.unwrap();
        assert_eq!(keys.0, ["k-one", "k-two"]);
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
        let c = Config::parse_from([
            "lossd",
            "--cors-origins",
            "https://app.example.org/, http://localhost:3000",
        ]);
        assert_eq!(
            c.cors_origins,
            Some(CorsOrigins::List(vec![
                http::HeaderValue::from_static("https://app.example.org"),
                http::HeaderValue::from_static("http://localhost:3000"),
            ]))
        );
        let c = Config::parse_from(["lossd", "--cors-origins", "*"]);
        assert_eq!(c.cors_origins, Some(CorsOrigins::Any));
        for bad in ["app.example.org", "https://app.example.org/path", ""] {
            assert!(
                Config::try_parse_from(["lossd", "--cors-origins", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
