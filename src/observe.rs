//! The access log and the request metrics: one tower layer around the whole service
//! ([`crate::app`]), inside the request id and outside everything else, so that every answer
//! is logged and counted, a 401 or a 415 included.
//!
//! A plain `Service` rather than axum's `middleware::from_fn`: `from_fn` clones the services
//! under it and boxes them and a future on every request, the largest part of the framework's
//! cost of a small request after axum's per-route layers (callgrind, `GET /healthz`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use tower::Service;

use crate::{X_REQUEST_ID, metrics, route_template, telemetry};

/// Counts every request in the metrics ([`metrics::Pending`]) and writes the access log: one
/// `info` event per request, when it is answered, with its method, route, request id, status
/// and latency, and `client_request_id_rejected = true` when the client's own id was refused
/// (`telemetry::screen_request_id`; its value is never logged). One event rather than a span
/// around the request: nothing inside a request logs at `info`, so a span would be created,
/// recorded and formatted on every request for nothing.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
}

impl<S> Observe<S> {
    /// `inner`, observed.
    pub fn new(inner: S) -> Self {
        Observe { inner }
    }
}

/// What the access log line needs from the request.
struct Access {
    method: Method,
    /// The route template when one matched, else the path (a 404 says what was asked).
    route: Result<&'static str, String>,
    id: Option<HeaderValue>,
    rejected: bool,
}

impl Access {
    fn write(self, status: u16, latency: Duration) {
        let Access {
            method,
            route,
            id,
            rejected,
        } = self;
        let route = match &route {
            Ok(template) => template,
            Err(path) => path.as_str(),
        };
        tracing::info!(
            method = %method,
            route,
            request_id = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            client_request_id_rejected = rejected.then_some(true),
            status,
            // Whole nanoseconds over 1e6: the shortest text of the result is the exact
            // milliseconds (0.360665), where `as_secs_f64() * 1e3` rounds twice
            // (0.36066499999999996).
            latency_ms = latency.as_nanos() as f64 / 1e6,
            "answered"
        );
    }
}

impl<S, B> Service<Request> for Observe<S>
where
    S: Service<Request, Response = http::Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let template = route_template(req.uri().path());
        let pending = metrics::Pending::of(&req, template);
        let access = tracing::enabled!(tracing::Level::INFO).then(|| Access {
            method: req.method().clone(),
            route: template.ok_or_else(|| req.uri().path().to_owned()),
            id: req.headers().get(&X_REQUEST_ID).cloned(),
            rejected: req
                .extensions()
                .get::<telemetry::RejectedRequestId>()
                .is_some(),
        });
        ObserveFuture {
            inner: self.inner.call(req),
            pending: Some(pending),
            access,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`]: the inner answer, counted and logged when it is ready.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        pending: Option<metrics::Pending>,
        access: Option<Access>,
        // One clock for both: the metrics' latency and the log's are the same figure.
        start: Instant,
    }
}

impl<F, B, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Ok(res) = &out {
            let latency = this.start.elapsed();
            if let Some(pending) = this.pending.take() {
                pending.record(res, latency);
            }
            if let Some(access) = this.access.take() {
                access.write(res.status().as_u16(), latency);
            }
        }
        Poll::Ready(out)
    }
}
