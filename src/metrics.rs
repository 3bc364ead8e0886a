//! Prometheus metrics (`GET /metrics`): requests by route, loss and status, latency by loss,
//! tensor elements decoded, compute queue depth and jobs in flight, memory reserved by requests
//! and the budget, rejections by reason.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::error::Code;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    loss: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LossLabel {
    loss: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

type HistogramFamily = Family<LossLabel, Histogram, fn() -> Histogram>;

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    elements: Counter,
    rejected: Family<ReasonLabel, Counter>,
    queued: Gauge,
    running: Gauge,
    reserved: Gauge,
    budget: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 27 s.
    Histogram::new(exponential_buckets(5e-5, 2.0, 20))
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let mut registry = Registry::with_prefix("lossd");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let elements = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let queued = Gauge::default();
        let running = Gauge::default();
        let reserved = Gauge::default();
        let budget = Gauge::default();
        registry.register(
            "requests",
            "HTTP requests by route, loss and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Latency of loss and batch requests, by loss",
            latency.clone(),
        );
        registry.register(
            "elements",
            "Tensor elements decoded from requests",
            elements.clone(),
        );
        registry.register(
            "rejected",
            "Requests refused by a limit, by reason (overloaded, timeout, payload_too_large, unsupported_media_type, memory)",
            rejected.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a compute worker",
            queued.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Compute jobs running now",
            running.clone(),
        );
        registry.register(
            "memory_reserved_bytes",
            "Memory reserved by requests now (bodies, tensors, outputs), in bytes",
            reserved.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "The memory budget of requests (--max-memory), in bytes",
            budget.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            elements,
            rejected,
            queued,
            running,
            reserved,
            budget,
        }
    });
    &METRICS
}

impl Metrics {
    /// Counts tensor elements decoded.
    pub fn add_elements(&self, n: usize) {
        self.elements.inc_by(n as u64);
    }
}

/// The label for the loss a request is about: its registered name, `custom`, `batch`, `unknown` for an
/// unregistered name (so clients cannot grow the label set), or empty for other routes.
fn loss_label(req: &Request, route: &str) -> String {
    match route {
        "/v1/losses/{name}" if req.method() == Method::POST => {
            let name = req.uri().path().rsplit('/').next().unwrap_or("");
            if crate::losses::find(name).is_some() {
                name.to_string()
            } else {
                "unknown".to_string()
            }
        }
        "/v1/batch" => "batch".to_string(),
        "/v1/losses/custom" if req.method() == Method::POST => "custom".to_string(),
        _ => String::new(),
    }
}

/// A request being answered, as the metrics will count it: taken from the request by
/// [`Pending::of`] before it is handled, counted by [`Pending::record`] with its answer. (Split
/// so that one middleware, `lossd::observe`, serves both the metrics and the access log.)
pub struct Pending {
    route: String,
    loss: String,
}

impl Pending {
    /// The labels of `req`: its route template (`route`, `unmatched` when none matched) and
    /// its loss.
    pub fn of(req: &Request, route: Option<&'static str>) -> Pending {
        let route = route.unwrap_or("unmatched").to_string();
        let loss = loss_label(req, &route);
        Pending { route, loss }
    }

    /// Counts the request with its answer `res`, given after `latency`: requests, latency,
    /// rejections.
    pub fn record<B>(self, res: &http::Response<B>, latency: std::time::Duration) {
        let Pending { route, loss } = self;
        let m = global();
        let status = res.status().as_u16();
        if !loss.is_empty() {
            m.latency
                .get_or_create(&LossLabel { loss: loss.clone() })
                .observe(latency.as_secs_f64());
        }
        m.requests
            .get_or_create(&RequestLabels {
                route,
                loss,
                status,
            })
            .inc();
        let memory = res.extensions().get::<crate::memory::Refused>().is_some();
        let reason = match res.extensions().get::<Code>() {
            _ if memory => Some("memory"),
            Some(
                c @ (Code::Overloaded
                | Code::Timeout
                | Code::PayloadTooLarge
                | Code::UnsupportedMediaType),
            ) => Some(c.as_str()),
            _ => None,
        };
        if let Some(reason) = reason {
            m.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .inc();
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus text format: requests by route, loss and status; latency by loss; elements decoded; queue depth; jobs in flight; rejections by reason", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = global();
    m.queued
        .set(state.pool.gauges.queued.load(Ordering::SeqCst) as i64);
    m.running
        .set(state.pool.gauges.running.load(Ordering::SeqCst) as i64);
    m.reserved.set(state.memory.reserved() as i64);
    m.budget.set(state.memory.capacity() as i64);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry) {
        return crate::error::ApiError::internal(format!("metrics encoding failed: {e}"))
            .into_response();
    }
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    res
}

/// Records a call that the HTTP middleware does not see (a gRPC call): counted in
/// `lossd_requests` under `route` and `loss` with the HTTP status of its outcome, its latency
/// observed by loss when `loss` is not empty, and a refusal by a limit counted by `reason`
/// (as [`record`] names them) when given.
pub fn record_call(
    route: &str,
    loss: &str,
    status: u16,
    elapsed: std::time::Duration,
    reason: Option<&str>,
) {
    let m = global();
    if !loss.is_empty() {
        m.latency
            .get_or_create(&LossLabel {
                loss: loss.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
    m.requests
        .get_or_create(&RequestLabels {
            route: route.to_string(),
            loss: loss.to_string(),
            status,
        })
        .inc();
    if let Some(reason) = reason {
        m.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}
