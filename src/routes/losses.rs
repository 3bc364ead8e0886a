//! `POST /v1/losses/{name}`: compute one loss.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{read_body, require_json};
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::losses;

/// Computes the loss `name` on the request body, on the compute pool.
pub async fn compute(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::new(Code::NotFound, e.body_text()))?;
    let entry = losses::find(&name).ok_or_else(|| unknown_loss(&name))?;
    require_json(&headers)?;
    let bytes = read_body(
        &headers,
        body,
        state.config.max_body_bytes,
        state.config.body_timeout(),
    )
    .await?;
    let budget = state.budget();
    let out = state.pool.run(move || entry.run(&bytes, budget)).await?;
    let mut res = out.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// The 404 for a loss name that is not registered.
pub fn unknown_loss(name: &str) -> ApiError {
    let names: Vec<&str> = losses::registry().iter().map(|e| e.info.name).collect();
    ApiError::new(
        Code::UnknownLoss,
        format!(
            "no loss named `{name}`; the losses are: {}",
            names.join(", ")
        ),
    )
}
