//! `POST /v1/losses/custom`: a loss written as an expression (not implemented yet).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::AppState;
use crate::error::ApiError;
use crate::losses::Job;
use crate::wire::Budget;

/// Computes a custom loss.
pub async fn handler(
    State(_state): State<AppState>,
    _headers: HeaderMap,
    _body: Body,
) -> Result<Response, ApiError> {
    Err(crate::routes::losses::unknown_loss("custom"))
}

/// Decodes a custom job of a batch (the `"loss"` key hidden).
pub fn prepare_job(_job: &[u8], _budget: &mut Budget) -> Result<Job, ApiError> {
    Err(crate::routes::losses::unknown_loss("custom"))
}

/// The catalog entry of `custom`, or `None` while it is not implemented.
pub fn catalog_entry() -> Option<serde_json::Value> {
    None
}

/// The OpenAPI path item and the schemas it uses, or `None` while it is not implemented.
pub fn openapi() -> Option<(utoipa::openapi::path::PathItem, Vec<crate::losses::NamedSchema>)> {
    None
}
