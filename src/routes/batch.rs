//! `POST /v1/batch`: many loss jobs in one request, run in parallel on the compute pool.
//!
//! The whole body is decoded first, on one worker, under one element budget shared by every
//! job; then each decoded job computes on its own worker. A job that fails (bad tensor,
//! unknown loss, a panic) fails alone, with its problem in its result; a whole-request
//! problem (not JSON, too large, too many jobs, past the time limit) is an ordinary error.

use std::cell::Cell;
use std::fmt;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::losses::unknown_loss;
use super::require_json;
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::losses::{self, Job};
use crate::memory::{self, HeldBody, estimate::Family};
use crate::wire::Budget;

/// Runs many loss jobs in one request, in parallel on the compute pool; results in job order.
///
/// Each job is the body of `POST /v1/losses/{loss}` plus `"loss"`. A job that fails fails
/// alone: its result is `{"ok": false, "error": {problem}}` with a pointer starting
/// `/jobs/{index}`. A whole-request problem (not JSON, too large, too many jobs, past the time
/// limit) is an ordinary error response.
#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "batch",
    request_body(content = crate::openapi::BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per job, in job order", body = crate::openapi::BatchResponse, content_type = "application/json"),
        (status = 400, description = "`invalid_json`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: body, elements or jobs over the limit", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_option`: the body is not `{\"jobs\": [...]}`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded` or `timeout`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    // Waiting for memory (before the body is read) is bounded by the time limit too.
    let deadline = state.pool.deadline();
    // Jobs may be of any loss: the batch is charged as the heaviest family.
    let family = Family::Heavy;
    let (bytes, mut held) =
        match memory::read_admitted(&state, &headers, body, family, deadline).await {
            Ok(read) => read,
            Err(refused) => return Ok(refused),
        };
    // The time limit for computing starts once the body has arrived, as without a budget.
    let deadline = state.pool.deadline();
    let budget = state.budget();
    let max_jobs = state.config.max_batch_jobs;
    let limits = state.config.expression_limits();
    let len = bytes.len() as u64;
    let small = bytes.len() <= crate::compute::SMALL_BODY;
    let (prepared, decoded) = state
        .pool
        .run_small(deadline, small, move || {
            let start = budget.elements;
            let mut left = budget;
            let prepared = prepare(&bytes, &mut left, max_jobs, &limits)?;
            Ok((prepared, (start - left.elements) as u64))
        })
        .await?;
    held.shrink_to(family.bytes(len, decoded));
    let tasks: Vec<_> = prepared
        .into_iter()
        .map(|p| {
            let pool = state.pool.clone();
            tokio::spawn(async move {
                match p {
                    Ok(job) => pool.run_until(deadline, false, job).await,
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(64 * tasks.len() + 16);
    out.extend_from_slice(b"{\"results\":[");
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("a batch task failed: {e}"))));
        if i > 0 {
            out.push(b',');
        }
        match result {
            Ok(body) => {
                out.extend_from_slice(b"{\"ok\":true,\"result\":");
                out.extend_from_slice(&body);
            }
            // Running out of time is the whole request's problem, not one job's.
            Err(e) if e.code == Code::Timeout => return Err(e),
            Err(e) => {
                out.extend_from_slice(b"{\"ok\":false,\"error\":");
                out.extend_from_slice(&e.body());
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    let mut res = out.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(HeldBody::wrap(res, held))
}

/// Decodes every job of the body; a job's own problem stays with it (pointers made absolute).
pub fn prepare(
    body: &[u8],
    budget: &mut Budget,
    max_jobs: usize,
    limits: &crate::custom::Limits,
) -> Result<Vec<Result<Job, ApiError>>, ApiError> {
    let limit = budget.elements;
    let jobs = parse_jobs(body, max_jobs)?;
    let mut prepared = Vec::with_capacity(jobs.len());
    for (i, raw) in jobs.iter().enumerate() {
        match prepare_job(raw.get().as_bytes(), budget, limits) {
            Err(e) if e.code == Code::PayloadTooLarge => {
                return Err(ApiError::new(
                    Code::PayloadTooLarge,
                    format!(
                        "the batch's tensors hold more than {limit} elements together (the element limit)"
                    ),
                ));
            }
            Err(mut e) => {
                e.pointer = Some(format!("/jobs/{i}{}", e.pointer.as_deref().unwrap_or("")));
                prepared.push(Err(e));
            }
            Ok(job) => prepared.push(Ok(job)),
        }
    }
    Ok(prepared)
}

/// Decodes one job: its `loss` names the request type the rest of it decodes into.
fn prepare_job(
    job: &[u8],
    budget: &mut Budget,
    limits: &crate::custom::Limits,
) -> Result<Job, ApiError> {
    #[derive(serde::Deserialize)]
    struct Head {
        loss: Option<String>,
    }
    let head: Head = serde_json::from_slice(job).map_err(|e| {
        ApiError::new(
            Code::InvalidOption,
            format!("a job must be an object with a string `loss`: {e}"),
        )
    })?;
    let name = head.loss.ok_or_else(|| {
        ApiError::option(
            "loss",
            "missing field `loss`: each job names the loss to compute",
        )
    })?;
    if name == "custom" {
        return crate::custom::prepare_job(job, budget, limits);
    }
    let entry = losses::find(&name).ok_or_else(|| unknown_loss(&name).at("/loss"))?;
    (entry.prepare)(job, budget, Some("loss"))
}

/// The jobs of `{"jobs": [...]}` as raw slices of the body, refusing more than `max`.
fn parse_jobs(body: &[u8], max: usize) -> Result<Vec<&RawValue>, ApiError> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BodySeed {
        max,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|jobs| de.end().map(|()| jobs));
    parsed.map_err(|e| {
        if too_many.get() {
            ApiError::new(
                Code::PayloadTooLarge,
                format!("the batch has more than {max} jobs (the job limit)"),
            )
        } else if e.classify() == serde_json::error::Category::Data {
            ApiError::new(
                Code::InvalidOption,
                format!("a batch is {{\"jobs\": [...]}}: {e}"),
            )
            .at("/jobs")
        } else {
            ApiError::new(
                Code::InvalidJson,
                format!("the body is not valid JSON: {e}"),
            )
        }
    })
}

struct BodySeed<'c> {
    max: usize,
    too_many: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object {\"jobs\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut jobs = None;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "jobs" if jobs.is_none() => {
                    jobs = Some(map.next_value_seed(JobsSeed {
                        max: self.max,
                        too_many: self.too_many,
                    })?);
                }
                "jobs" => return Err(de::Error::duplicate_field("jobs")),
                other => return Err(de::Error::unknown_field(other, &["jobs"])),
            }
        }
        jobs.ok_or_else(|| de::Error::missing_field("jobs"))
    }
}

struct JobsSeed<'c> {
    max: usize,
    too_many: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for JobsSeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for JobsSeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of jobs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut jobs = Vec::new();
        while let Some(job) = seq.next_element::<&'de RawValue>()? {
            // The batch's own structure: every job is an object (what it holds is the job's
            // business, answered in its result).
            if !job.get().starts_with('{') {
                return Err(de::Error::custom(format_args!(
                    "job {} is not an object: each job is a loss request body plus \"loss\"",
                    jobs.len()
                )));
            }
            if jobs.len() == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom("too many jobs"));
            }
            jobs.push(job);
        }
        Ok(jobs)
    }
}
