//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = inline(Object), content_type = "application/json"))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 while the compute pool accepts work, 503 once shutdown has begun.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = inline(Object), content_type = "application/json"),
        (status = 503, description = "`{\"status\": \"draining\"}`: shutting down", body = inline(Object), content_type = "application/json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.pool.ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
    }
}
