//! lossd: PyTorch's `torch.nn` losses and their gradients over HTTP.
//!
//! # Layout
//!
//! - [`config`]: command-line flags and `LOSSD_*` environment variables.
//! - [`error`]: [`ApiError`](error::ApiError), every error as `application/problem+json`.
//! - [`wire`]: tensor encodings in and out, decoded straight into flat buffers.
//! - [`losses`]: one file per loss (request type, catalog entry, kernel call) and the registry.
//! - [`routes`]: the HTTP handlers.
//! - [`compute`]: the bounded compute pool on tokio's blocking threads.
//! - [`catalog`], [`openapi`]: the catalog and the OpenAPI document, from the registry.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`]: the log subscriber (written off the request path) and request ids.
//! - [`access`]: API keys, CORS, compressed request and response bodies.
//! - [`memory`]: the memory budget; requests reserve before they allocate.
//! - [`oip`]: the Open Inference Protocol v2 over HTTP (`/v2`) and gRPC.
//! - [`custom`]: custom losses written as expressions.
//!
//! The math lives in the `lossd-kernels` crate. [`app`] builds the router (tests use it with a
//! listener on port 0); [`serve`] runs it until SIGTERM or SIGINT, then drains.

pub mod access;
pub mod allocator;
pub mod catalog;
pub mod compute;
pub mod config;
pub mod custom;
pub mod error;
pub mod losses;
pub mod memory;
pub mod metrics;
pub mod observe;
pub mod oip;
pub mod openapi;
pub mod routes;
pub mod telemetry;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::compute::Pool;
use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::wire::Budget;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// The compute pool.
    pub pool: Arc<Pool>,
    /// The API keys, when keys are required.
    pub keys: Option<Arc<access::Keys>>,
    /// The memory budget of requests.
    pub memory: memory::Memory,
}

impl AppState {
    /// State for `config`; panics when its API keys cannot be loaded (see [`AppState::try_new`]).
    pub fn new(config: Config) -> Self {
        Self::try_new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// State for `config`, or why its API keys cannot be loaded.
    pub fn try_new(config: Config) -> std::io::Result<Self> {
        let keys = access::Keys::from_config(&config)?;
        let pool = Pool::new(
            config.worker_count(),
            config.queue_capacity,
            config.timeout(),
        );
        let memory = memory::Memory::new(config.memory_budget());
        Ok(Self {
            config: Arc::new(config),
            pool: Arc::new(pool),
            keys,
            memory,
        })
    }

    /// The decode limits of one request.
    pub fn budget(&self) -> Budget {
        Budget {
            elements: self.config.max_elements,
            rank: self.config.max_rank,
        }
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route templates of [`app`]'s router. The layers of [`app`] wrap the router once, as one
/// service, rather than each route (axum's `Router::layer` boxes a copy of every layer around
/// every route, and each request then went through ten boxed services: 40.6k instructions
/// for `GET /healthz`, 18.8k without them). Outside the router they cannot read axum's
/// `MatchedPath`, so the access log and the metrics look the path up here; debug builds check
/// on every routed request that this table and the router agree ([`check_route`]).
const ROUTES: &[&str] = &[
    "/v1/losses",
    "/v1/losses/custom",
    "/v1/losses/{name}",
    "/v1/batch",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{model}",
    "/v2/models/{model}/ready",
    "/v2/models/{model}/infer",
    "/v2/models/{model}/versions/{version}",
    "/v2/models/{model}/versions/{version}/ready",
    "/v2/models/{model}/versions/{version}/infer",
];

/// The template of the route that serves `path`, as axum's router matches it (the same
/// matcher, `matchit`); `None` when no route does.
pub fn route_template(path: &str) -> Option<&'static str> {
    static TABLE: std::sync::LazyLock<matchit::Router<&'static str>> =
        std::sync::LazyLock::new(|| {
            let mut table = matchit::Router::new();
            for &route in ROUTES {
                table
                    .insert(route, route)
                    .expect("ROUTES holds valid, distinct templates");
            }
            table
        });
    TABLE.at(path).ok().map(|m| *m.value)
}

/// Debug builds: fails the request (a panic, answered as a 500) when [`route_template`] and
/// axum's router disagree about the route it reached, so a route added to one and not the
/// other shows in the first test that calls it.
#[cfg(debug_assertions)]
async fn check_route(req: Request, next: axum::middleware::Next) -> Response {
    let matched = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    assert_eq!(
        route_template(req.uri().path()),
        matched.as_deref(),
        "lib.rs's ROUTES and the router disagree on {}",
        req.uri().path()
    );
    next.run(req).await
}

/// The service: every route, wrapped in every layer.
pub fn app(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = http::Response<
        impl http_body::Body<Data = bytes::Bytes, Error = impl Into<tower::BoxError>> + Send + 'static,
    >,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let keys = state.keys.clone();
    let cors = access::cors(&state.config);
    let router = Router::new()
        .route("/v1/losses", get(routes::catalog::list))
        .route(
            "/v1/losses/custom",
            post(custom::handler).get(routes::catalog::custom),
        )
        .route(
            "/v1/losses/{name}",
            post(routes::losses::compute).get(routes::catalog::one),
        )
        .route("/v1/batch", post(routes::batch::batch))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(routes::docs::router())
        .merge(oip::http::router());
    #[cfg(debug_assertions)]
    let router = router.route_layer(axum::middleware::from_fn(check_route));
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    ServiceBuilder::new()
        .map_request(telemetry::screen_request_id)
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(CatchPanicLayer::custom(|p| {
            ApiError::internal(format!("a handler panicked: {}", compute::panic_message(p)))
                .into_response()
        }))
        .layer_fn(observe::Observe::new)
        // Access (docs/access.md), outermost first: CORS outside the rest, so a preflight
        // needs no key and a 401 reaches the browser's script; then compress the answer,
        // check the key, decode the body.
        .layer(cors)
        .map_response(problems_only)
        .layer_fn(access::Compress::new)
        .layer(access::auth(keys.as_ref()))
        .layer_fn(access::Decompress::new)
        .service(router)
}

async fn not_found(req: Request) -> ApiError {
    debug_assert_eq!(
        route_template(req.uri().path()),
        None,
        "ROUTES has an extra route"
    );
    ApiError::new(
        Code::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// A safety net: an error response that is not already a problem document becomes one, so
/// no plain-text rejection ever reaches a client.
fn problems_only<B>(res: http::Response<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return res.into_response();
    }
    let code = match status {
        StatusCode::BAD_REQUEST => Code::InvalidJson,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::NOT_ACCEPTABLE => Code::NotAcceptable,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::SERVICE_UNAVAILABLE => Code::Overloaded,
        s if s.is_client_error() => Code::InvalidOption,
        _ => Code::Internal,
    };
    let reason = status.canonical_reason().unwrap_or("error");
    let mut fixed = ApiError::new(code, reason.to_string()).into_response();
    *fixed.status_mut() = status;
    fixed
}

/// Serves `app` on `listener` until SIGTERM or SIGINT; then stops accepting, marks the pool
/// as draining and finishes in-flight requests before returning.
///
/// Connections are served by hyper directly (HTTP/1.1) so that a header read timeout applies:
/// a client that never finishes its headers is disconnected instead of holding a connection.
/// At most `--max-connections` are open at once: past that the server stops accepting, and
/// new connections wait in the listen backlog. A request body the server stops reading (a
/// refusal) is read on and discarded, up to a bound, so that its client reads the answer
/// rather than a connection reset ([`memory::DrainOnDrop`]).
pub async fn serve(listener: TcpListener, config: Config) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let state = AppState::try_new(config)?;
    if let Some(keys) = &state.keys {
        access::reload_on_sighup(keys.clone());
    }
    let pool = state.pool.clone();
    let header_timeout = state.config.header_timeout();
    // What a refused body may still send: twice the body limit, within the body timeout.
    let drain_bytes = 2 * state.config.max_body_bytes as u64;
    let drain_time = state.config.body_timeout();
    let connections = Arc::new(tokio::sync::Semaphore::new(
        state.config.max_connections.max(1),
    ));
    let purger = tokio::spawn(memory::purge_when_idle(state.memory.clone()));
    let (stop_grpc, grpc) = oip::spawn_grpc(&state).await?;
    let app = app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut signal => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            move |req: Request<hyper::body::Incoming>| {
                req.map(|body| {
                    axum::body::Body::new(memory::DrainOnDrop::new(
                        axum::body::Body::new(body),
                        drain_bytes,
                        drain_time,
                    ))
                })
            },
        ));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    pool.drain();
    drop(listener);
    let _ = stop_grpc.send(());
    graceful.shutdown().await;
    purger.abort();
    oip::join_grpc(grpc).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Asks the lossd at `addr` for `/healthz` over plain HTTP/1.1; true when it answers 200.
pub fn healthcheck(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = Duration::from_secs(3);
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
