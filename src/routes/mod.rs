//! HTTP handlers: one module per group of routes.

pub mod batch;
pub mod catalog;
pub mod docs;
pub mod health;
pub mod losses;
pub mod stream;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;

use crate::error::{ApiError, Code};

/// Refuses bodies that are not `application/json` (a `charset=utf-8` parameter is fine).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = ct.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("");
    let charset_ok = parts.all(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        !k.trim().eq_ignore_ascii_case("charset")
            || v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    });
    if essence.eq_ignore_ascii_case("application/json") && charset_ok {
        Ok(())
    } else {
        let got = if ct.is_empty() {
            "none".to_string()
        } else {
            format!("`{ct}`")
        };
        Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!("the content type must be application/json (got {got})"),
        ))
    }
}

/// Reads the whole body within `timeout`, refusing more than `limit` bytes before reading
/// them when the client declares its length, and as soon as the limit is passed otherwise.
/// A compressed body arrives here decoded (`access::decompress`, which drops its declared
/// length), so the limit counts decoded bytes, checked frame by frame as they are decoded.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    read_body_within(headers, body, limit, timeout, None).await
}

/// [`read_body`], growing a memory reservation as the body passes what it covers.
pub async fn read_body_within(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    growth: Option<&mut crate::memory::Growth<'_>>,
) -> Result<Bytes, ApiError> {
    let read = read_body_streamed(headers, body, limit, timeout, growth, None).await?;
    Ok(Bytes::from(read.whole()))
}

/// Bodies declared at least this long have their base64 tensors decoded as they arrive
/// ([`stream`]); smaller ones gain nothing from it.
const STREAM_FROM: u64 = 1 << 20;

/// [`read_body_within`], with the base64 tensors of a large body decoded as it arrives when
/// `stream` gives the request's element budget (see [`stream`]).
pub async fn read_body_streamed(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    growth: Option<&mut crate::memory::Growth<'_>>,
    stream: Option<crate::wire::Budget>,
) -> Result<stream::Read, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let reader = match (stream, declared) {
        (Some(budget), Some(n)) if n >= STREAM_FROM => {
            Some(stream::Reader::new(n as usize, budget))
        }
        _ => None,
    };
    let read = tokio::time::timeout(timeout, collect(body, limit, declared, growth, reader)).await;
    let Ok(read) = read else {
        return Err(ApiError::new(
            Code::Timeout,
            format!(
                "the body did not arrive within {:.3} s (the body read timeout)",
                timeout.as_secs_f64()
            ),
        ));
    };
    read.map_err(|e| match e {
        Collect::TooLarge => too_large(),
        Collect::Body(e) => match e.into_inner().downcast::<crate::access::CorruptBody>() {
            Ok(corrupt) => ApiError::new(Code::InvalidBody, corrupt.to_string()),
            Err(e) => ApiError::new(
                Code::InvalidJson,
                format!("the body could not be read: {e}"),
            ),
        },
        Collect::Memory(e) => e,
    })
}

/// Why [`collect`] stopped.
enum Collect {
    TooLarge,
    Body(axum::Error),
    Memory(ApiError),
}

/// The body's bytes in one buffer, each frame copied in as it arrives (while it is still in
/// cache, and then freed for the connection's next read) rather than all frames kept until
/// the end and copied then (`axum::body::to_bytes`). The buffer is sized once by the declared
/// length (already checked against `limit`; capacity is not memory until written). With a
/// `reader`, the frames go through it instead, and its base64 texts are not kept.
async fn collect(
    body: Body,
    limit: usize,
    declared: Option<u64>,
    mut growth: Option<&mut crate::memory::Growth<'_>>,
    mut reader: Option<stream::Reader>,
) -> Result<stream::Read, Collect> {
    use http_body_util::BodyExt;
    let mut body = body;
    let room = declared.map_or(0, |n| n.min(limit as u64) as usize);
    let mut buf = Vec::with_capacity(if reader.is_some() { 0 } else { room });
    let mut received = 0usize;
    // Huge pages for the rest of a large buffer once 4 MiB have really arrived (a client
    // that declares a large body and sends little holds 4 KiB pages only).
    let mut advised = false;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Collect::Body)?.into_data() else {
            continue; // trailers
        };
        if data.len() > limit - received {
            return Err(Collect::TooLarge);
        }
        received += data.len();
        if let Some(g) = growth.as_deref_mut() {
            g.ensure(received as u64).await.map_err(Collect::Memory)?;
        }
        if let Some(r) = reader.as_mut() {
            let was_off = r.is_off();
            r.feed(&data);
            if r.is_off() {
                if was_off {
                    if let Some(g) = growth.as_deref_mut() {
                        g.count.add(&data);
                    }
                } else {
                    // Kept whole from here: room for the rest, and the count of what it kept
                    // so far (the texts it decoded are counted when it finishes).
                    r.reserve(room.saturating_sub(received));
                    if let Some(g) = growth.as_deref_mut() {
                        g.count.add(r.kept());
                    }
                }
            }
            continue;
        }
        buf.extend_from_slice(&data);
        if let Some(g) = growth.as_deref_mut() {
            // Counted while the frame is in cache, not in a pass over the whole body later.
            g.count.add(&data);
        }
        if !advised && buf.len() >= 4 << 20 {
            advised = true;
            lossd_kernels::alloc::huge_pages(&mut buf);
        }
    }
    let Some(r) = reader else {
        return Ok(stream::Read::plain(buf));
    };
    let counted = r.is_off();
    let read = r.finish();
    if let Some(g) = growth {
        if !counted {
            g.count.add(read.kept());
        }
        g.count.add_string(read.text_chars() as u64);
    }
    Ok(read)
}
