//! `POST /v1/losses/{name}`: compute one loss.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::require_json;
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::losses;
use crate::memory::{self, HeldBody, estimate::Family};

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
    // Waiting for memory (before the body is read) is bounded by the time limit too.
    let deadline = state.pool.deadline();
    let family = Family::of(&name);
    let (bytes, mut held) =
        match memory::read_admitted(&state, &headers, body, family, deadline).await {
            Ok(read) => read,
            Err(refused) => return Ok(refused),
        };
    // The time limit for computing starts once the body has arrived, as without a budget.
    let deadline = state.pool.deadline();
    let mut budget = state.budget();
    if bytes.len() <= crate::compute::INLINE_BODY {
        // A small body is decoded here; it is computed here too unless its work is large
        // (a small body can still broadcast to many elements).
        let (job, work) = decode(entry, &bytes, &mut budget, &mut held, family)?;
        let out = if work <= crate::compute::INLINE_WORK {
            job()?
        } else {
            state.pool.run_small(deadline, true, job).await?
        };
        return Ok(answer(out, held));
    }
    let small = bytes.len() <= crate::compute::SMALL_BODY;
    let (out, held) = state
        .pool
        .run_small(deadline, small, move || {
            let (job, _) = decode(entry, &bytes, &mut budget, &mut held, family)?;
            Ok((job()?, held))
        })
        .await?;
    Ok(answer(out, held))
}

/// Decodes `bytes` into a ready job, spending the element budget, and shrinks the request's
/// reservation to what its decoded elements need; with the job's work bound
/// ([`crate::compute::work_bound`]).
fn decode(
    entry: &losses::Entry,
    bytes: &[u8],
    budget: &mut crate::wire::Budget,
    held: &mut memory::Reservation,
    family: Family,
) -> Result<(losses::Job, usize), ApiError> {
    let start = budget.elements;
    let (job, work) = crate::compute::work_bound(|| (entry.prepare)(bytes, budget, None));
    let job = job?;
    let decoded = (start - budget.elements) as u64;
    held.shrink_to(family.bytes(bytes.len() as u64, decoded));
    Ok((job, work))
}

/// The JSON answer, holding the request's memory reservation until it is sent.
fn answer(out: Vec<u8>, held: memory::Reservation) -> Response {
    let mut res = out.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    HeldBody::wrap(res, held)
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
