//! `POST /v1/losses/{name}`: compute one loss.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{require_json, stream};
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::losses;
use crate::memory::{self, HeldBody, estimate::Family};

/// Computes the loss `name` on the request body, on the compute pool.
pub async fn compute(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    // The request whole rather than a `HeaderMap` extractor, which copies the headers.
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let Path(name) = name.map_err(|e| ApiError::new(Code::NotFound, e.body_text()))?;
    let entry = losses::find(&name).ok_or_else(|| unknown_loss(&name))?;
    require_json(&headers)?;
    // Waiting for memory (before the body is read) is bounded by the time limit too.
    let deadline = state.pool.deadline();
    let family = Family::of(&name);
    let mut budget = state.budget();
    let stream = Some(budget);
    let (read, mut held) = match memory::read_admitted_streamed(
        &state, &headers, body, family, deadline, stream,
    )
    .await
    {
        Ok(read) => read,
        Err(refused) => return Ok(refused),
    };
    // The time limit for computing starts once the body has arrived, as without a budget.
    let deadline = state.pool.deadline();
    if !read.is_whole() {
        let (out, held) = state
            .pool
            .run_small(deadline, false, move || {
                let (job, _) = decode_streamed(entry, read, &mut budget, &mut held, family)?;
                Ok((job()?, held))
            })
            .await?;
        // The tensors were allocated on a connection's thread and freed on the compute
        // worker: when this is the thread that allocated them, its heap takes them back now.
        memory::reclaim_freed();
        return Ok(answer(out, held));
    }
    let bytes = read.whole();
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

/// [`decode`] for a body whose base64 tensors were decoded as it arrived
/// ([`super::stream`]): the rest of the body, the tensors at their placeholders. When that
/// fails, the request's error comes from a body that decodes as the one sent does (see
/// [`stream::Read::standing_in`]); a body the reader did not follow to its end is decoded
/// whole, as sent.
fn decode_streamed(
    entry: &losses::Entry,
    read: stream::Read,
    budget: &mut crate::wire::Budget,
    held: &mut memory::Reservation,
    family: Family,
) -> Result<(losses::Job, usize), ApiError> {
    let len = read.len() as u64;
    let streamed = read.streamed_elements();
    // Every streamed tensor must be one of the loss's tensor arguments, each given once, so
    // that the decode takes each placeholder as a tensor.
    let names = read.streamed_keys();
    let known = names.iter().enumerate().all(|(i, k)| {
        entry.info.tensors.iter().any(|t| t.name.as_bytes() == *k) && !names[..i].contains(k)
    });
    let placed = if known && streamed <= budget.elements {
        read.with_placeholders()
    } else {
        Err(read)
    };
    let (body, tensors, stand_in) = match placed {
        Ok(placed) => placed,
        Err(read) => {
            let body = read.whole();
            return decode(entry, &body, budget, held, family);
        }
    };
    let mut left = *budget;
    left.elements -= streamed;
    let got = crate::wire::fast::with_tensors(tensors, || {
        crate::compute::work_bound(|| (entry.prepare)(&body, &mut left, None))
    });
    if let Some((Ok(job), work)) = got {
        crate::metrics::global().add_elements(streamed);
        let decoded = (budget.elements - left.elements) as u64;
        *budget = left;
        held.shrink_to(family.bytes(len, decoded));
        return Ok((job, work));
    }
    let failed = match got {
        Some((Err(e), _)) => Some(e),
        _ => None,
    };
    let body = stand_in.body();
    match decode(entry, &body, budget, held, family) {
        Err(e) => Err(e),
        // Cannot be: the body that stands in decodes as the one sent, which just failed.
        Ok(_) => Err(failed.unwrap_or_else(|| {
            ApiError::internal("a streamed body decoded only where it stood in")
        })),
    }
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
