//! `GET /v1/losses` and `GET /v1/losses/{name}`: the catalog.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use serde_json::{Value, json};

use super::losses::unknown_loss;
use crate::catalog;
use crate::error::{ApiError, Code};

/// Every loss: PyTorch module and functional names, category, formula, tensor arguments,
/// options with defaults, reductions, what `reduction: "none"` returns, gradients, and where
/// lossd differs from PyTorch (docs/losses.md is the same data as a document).
#[utoipa::path(
    get,
    path = "/v1/losses",
    tag = "catalog",
    responses((status = 200, description = "Every loss the service computes", body = inline(Object), content_type = "application/json"))
)]
pub async fn list() -> Json<Value> {
    let mut all: Vec<Value> = catalog::entries().to_vec();
    all.extend(crate::custom::catalog_entry());
    Json(json!({"losses": all}))
}

/// The catalog entry of custom losses: the expression language's functions.
pub async fn custom() -> Result<Json<Value>, ApiError> {
    crate::custom::catalog_entry()
        .map(Json)
        .ok_or_else(|| unknown_loss("custom"))
}

/// One loss's catalog entry (documented per loss in the OpenAPI document).
pub async fn one(name: Result<Path<String>, PathRejection>) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::new(Code::NotFound, e.body_text()))?;
    catalog::entry(&name)
        .map(|e| Json(e.clone()))
        .ok_or_else(|| unknown_loss(&name))
}
