//! An inference body with binary data, read as it arrives: the JSON header first (its length
//! is `Inference-Header-Content-Length`), then each input's bytes straight into the buffer
//! of its tensor. The body is never held whole, so a request holds its tensors and no copy
//! of their bytes, and its memory is reserved from the header's exact element count rather
//! than from an estimate of the body.
//!
//! The body limit, the body read timeout and the memory budget are the JSON routes'; sizes
//! that disagree with the bytes that arrive are a client error (the same messages as
//! [`super::binary`] gives for a body read whole).

use tokio::time::Instant;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

use super::Datatype;
use super::http::{Head, Parsed, Slot};
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::memory::{self, Reservation, estimate::Family};
use crate::wire::Data;

/// Why a body was not read: an error of the request, or the memory budget's refusal (a
/// ready response).
pub enum Failed {
    /// A client error (or a timeout).
    Error(ApiError),
    /// The memory budget's answer.
    Refused(axum::response::Response),
}

impl From<ApiError> for Failed {
    fn from(e: ApiError) -> Self {
        Self::Error(e)
    }
}

/// Headers above this size are parsed on a compute worker rather than on the connection's
/// task (a header may hold its tensors as JSON).
const INLINE_HEADER: usize = 64 << 10;

/// Elements decoded from little-endian bytes that arrive in pieces of any length (a frame
/// may end inside an element: its first bytes wait in `carry`).
struct Filling<T, const N: usize> {
    v: Vec<T>,
    carry: [u8; N],
    held: usize,
}

impl<T, const N: usize> Filling<T, N> {
    /// Room for `count` elements, not zeroed: each is written once, as its bytes come.
    fn new(count: usize) -> Self {
        Self {
            v: Vec::with_capacity(count),
            carry: [0; N],
            held: 0,
        }
    }

    /// Appends the elements of `data` (after what `carry` holds). `from` inlines, so that
    /// the loop is a plain copy on a little-endian machine: vector moves here. Keep it so
    /// when touching this: LLVM turns such a loop into a `memcpy` call in other contexts
    /// (`as_chunks`, as gRPC's `Carry::feed` has; or this one moved out of `Sinks::write`
    /// into a function shared with gRPC), and glibc's `rep movsb` for pieces this large
    /// was markedly slower than these moves on the AMD EPYC machine measured (see the
    /// commit that added this note).
    fn push(&mut self, mut data: &[u8], from: impl Fn([u8; N]) -> T) {
        if self.held > 0 {
            let k = (N - self.held).min(data.len());
            self.carry[self.held..self.held + k].copy_from_slice(&data[..k]);
            self.held += k;
            data = &data[k..];
            if self.held < N {
                return;
            }
            self.v.push(from(self.carry));
            self.held = 0;
        }
        let chunks = data.chunks_exact(N);
        let rest = chunks.remainder();
        self.v
            .extend(chunks.map(|c| from(c.try_into().expect("chunks of N bytes"))));
        self.carry[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
    }
}

/// One binary input's elements, decoded as the body arrives.
enum Sink {
    F64(Filling<f64, 8>),
    F32(Filling<f32, 4>),
    I64(Filling<i64, 8>),
    /// `INT32`, widened to `i64` as the decoders hold indices.
    I32(Filling<i64, 4>),
}

impl Sink {
    fn new(datatype: Datatype, count: usize) -> Self {
        match datatype {
            Datatype::Fp64 => Sink::F64(Filling::new(count)),
            Datatype::Fp32 => Sink::F32(Filling::new(count)),
            Datatype::Int64 => Sink::I64(Filling::new(count)),
            Datatype::Int32 => Sink::I32(Filling::new(count)),
        }
    }

    fn push(&mut self, data: &[u8]) {
        match self {
            Sink::F64(f) => f.push(data, f64::from_le_bytes),
            Sink::F32(f) => f.push(data, f32::from_le_bytes),
            Sink::I64(f) => f.push(data, i64::from_le_bytes),
            Sink::I32(f) => f.push(data, |b| i64::from(i32::from_le_bytes(b))),
        }
    }

    fn into_data(self) -> Data {
        match self {
            Sink::F64(f) => Data::F64(f.v),
            Sink::F32(f) => Data::F32(f.v),
            Sink::I64(f) => Data::I64(f.v),
            Sink::I32(f) => Data::I64(f.v),
        }
    }
}

/// The binary inputs' buffers and how far the body has filled them.
struct Sinks {
    /// Each input's sink and the bytes it takes.
    sinks: Vec<(Sink, usize)>,
    /// The sink being filled, and the bytes written into it.
    at: usize,
    written: usize,
    /// The binary bytes the inputs take, and those received.
    want: usize,
    got: usize,
}

impl Sinks {
    /// Moves past the sinks that are full (or take no bytes at all).
    fn skip_full(&mut self) {
        while self
            .sinks
            .get(self.at)
            .is_some_and(|&(_, bytes)| self.written == bytes)
        {
            self.at += 1;
            self.written = 0;
        }
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), ApiError> {
        if data.len() > self.want - self.got {
            return Err(ApiError::tensor(format!(
                "binary data after the header belongs to no input (the inputs' \
                 binary_data_size add up to {} bytes)",
                self.want
            )));
        }
        self.got += data.len();
        // Room for every byte: `got` stays within the sinks' sizes.
        while !data.is_empty() {
            let (sink, bytes) = &mut self.sinks[self.at];
            let n = (*bytes - self.written).min(data.len());
            sink.push(&data[..n]);
            data = &data[n..];
            self.written += n;
            self.skip_full();
        }
        Ok(())
    }
}

/// Reads the body of an inference request whose JSON header is `header_len` bytes: the
/// header, parsed, then the binary data into the inputs' tensors. The reservation covers the
/// header and the request's working set.
pub async fn read(
    state: &AppState,
    headers: &http::HeaderMap,
    body: Body,
    header_len: usize,
    family: Family,
    deadline: Instant,
) -> Result<(Parsed, Reservation), Failed> {
    let config = &state.config;
    let limit = config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = memory::declared_length(headers);
    if declared.is_some_and(|n| n > limit as u64) || header_len > limit {
        return Err(too_large().into());
    }
    if let Some(n) = declared
        && header_len as u64 > n
    {
        return Err(ApiError::tensor(format!(
            "Inference-Header-Content-Length is {header_len} but the body has only {n} bytes"
        ))
        .into());
    }
    let memory = &state.memory;
    let max_elements = config.max_elements as u64;
    // The header first: what its JSON can decode to, at most.
    let first = family.bytes(
        header_len as u64,
        memory::estimate::max_elements(header_len as u64, max_elements),
    );
    let mut held = memory
        .reserve(first.min(memory.capacity()), deadline)
        .await
        .map_err(|r| Failed::Refused(memory::refusal(r, first, memory.capacity())))?;
    let timeout = config.body_timeout();
    let read = async {
        let mut body = body;
        let mut head = Vec::with_capacity(header_len);
        let mut rest = Bytes::new();
        let mut total = 0usize;
        while head.len() < header_len {
            let Some(data) = frame(&mut body, &mut total, limit).await? else {
                return Err(ApiError::tensor(format!(
                    "Inference-Header-Content-Length is {header_len} but the body has only {} \
                     bytes",
                    head.len()
                ))
                .into());
            };
            let take = data.len().min(header_len - head.len());
            head.extend_from_slice(&data[..take]);
            rest = data.slice(take..);
        }
        let budget = state.budget();
        let parsed = if header_len <= INLINE_HEADER {
            super::http::parse_head(&head, budget)?
        } else {
            state
                .pool
                .run(move || super::http::parse_head(&head, budget))
                .await?
        };
        // The request's working set, now that its elements are known exactly.
        let need = family.bytes(header_len as u64, parsed.elements() as u64);
        if need > held.bytes() {
            if let Err(r) = held.grow(need - held.bytes(), deadline).await {
                return Err(Failed::Refused(memory::refusal(r, need, memory.capacity())));
            }
        } else {
            held.shrink_to(need);
        }
        let mut sinks = sinks(&parsed, declared.map(|n| n as usize - header_len))?;
        sinks.write(&rest)?;
        drop(rest);
        while let Some(data) = frame(&mut body, &mut total, limit).await? {
            sinks.write(&data)?;
        }
        if sinks.got < sinks.want {
            return Err(ApiError::tensor(format!(
                "the inputs' binary_data_size add up to more than the {} bytes of binary data \
                 after the header",
                sinks.got
            ))
            .into());
        }
        Ok::<_, Failed>(finish(parsed, sinks)?)
    };
    let parsed = tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            Code::Timeout,
            format!(
                "the body did not arrive within {:.3} s (the body read timeout)",
                timeout.as_secs_f64()
            ),
        )
    })??;
    Ok((parsed, held))
}

/// The next data frame of `body` (trailers skipped), counted against the body limit.
async fn frame(body: &mut Body, total: &mut usize, limit: usize) -> Result<Option<Bytes>, Failed> {
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(
                |e| match e.into_inner().downcast::<crate::access::CorruptBody>() {
                    Ok(corrupt) => ApiError::new(Code::InvalidBody, corrupt.to_string()),
                    Err(e) => ApiError::new(
                        Code::InvalidJson,
                        format!("the body could not be read: {e}"),
                    ),
                },
            )?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.len() > limit - *total {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!("the body is larger than the limit of {limit} bytes"),
            )
            .into());
        }
        *total += data.len();
        return Ok(Some(data));
    }
    Ok(None)
}

/// The binary inputs' buffers, each checked against its shape and datatype first, and
/// their sizes against the binary data the body declares (`declared`, when it does).
fn sinks(head: &Head, declared: Option<usize>) -> Result<Sinks, ApiError> {
    let want = head.binary_bytes();
    match declared {
        Some(d) if want > d => {
            return Err(ApiError::tensor(format!(
                "the inputs' binary_data_size add up to more than the {d} bytes of binary data \
                 after the header"
            )));
        }
        Some(d) if want < d => {
            return Err(ApiError::tensor(format!(
                "{} bytes of binary data after the header belong to no input (the inputs' \
                 binary_data_size add up to {want})",
                d - want
            )));
        }
        _ => {}
    }
    // The tensors are freed on a compute worker: take back what earlier requests freed
    // before allocating (see `memory::reclaim_freed`).
    if want > 0 {
        crate::memory::reclaim_freed();
    }
    let mut sinks = Vec::new();
    for i in &head.inputs {
        let Slot::Binary(bytes) = i.slot else {
            continue;
        };
        let expect = i.count.checked_mul(i.datatype.size());
        if expect != Some(bytes) {
            return Err(ApiError::tensor(format!(
                "input `{}` has {bytes} bytes of data, but its shape and datatype {} make {} \
                 bytes",
                i.name,
                i.datatype.as_str(),
                expect.map_or_else(|| "too many".to_string(), |n| n.to_string())
            )));
        }
        sinks.push((Sink::new(i.datatype, i.count), bytes));
    }
    // Empty inputs take no bytes: start at the first that does.
    let mut s = Sinks {
        sinks,
        at: 0,
        written: 0,
        want,
        got: 0,
    };
    s.skip_full();
    Ok(s)
}

fn finish(head: Head, sinks: Sinks) -> Result<Parsed, ApiError> {
    let data = sinks
        .sinks
        .into_iter()
        .map(|(sink, _)| sink.into_data())
        .collect();
    head.finish_with(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sinks for inputs of these datatypes and element counts.
    fn sinks(inputs: &[(Datatype, usize)]) -> Sinks {
        let sinks: Vec<(Sink, usize)> = inputs
            .iter()
            .map(|&(dt, n)| (Sink::new(dt, n), n * dt.size()))
            .collect();
        let want = sinks.iter().map(|(_, b)| b).sum();
        let mut s = Sinks {
            sinks,
            at: 0,
            written: 0,
            want,
            got: 0,
        };
        s.skip_full();
        s
    }

    #[test]
    fn pieces_of_any_length_give_the_whole_bodys_elements() {
        let inputs = [
            (Datatype::Fp64, 3),
            (Datatype::Int32, 2),
            (Datatype::Fp64, 0),
            (Datatype::Fp32, 3),
            (Datatype::Int64, 1),
        ];
        let mut body = Vec::new();
        for x in [1.5f64, -0.0, f64::NAN] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        for i in [-3i32, i32::MAX] {
            body.extend_from_slice(&i.to_le_bytes());
        }
        for x in [0.25f32, -2.0, f32::INFINITY] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        body.extend_from_slice(&i64::MIN.to_le_bytes());
        // What the body read whole decodes to.
        let mut at = 0;
        let whole: Vec<Data> = inputs
            .iter()
            .map(|&(dt, n)| {
                let bytes = &body[at..at + n * dt.size()];
                at += bytes.len();
                crate::oip::binary::decode("x", bytes, dt, n).unwrap()
            })
            .collect();
        let show = |d: &[Data]| format!("{d:?}"); // NaN != NaN: compare as written
        for piece in 1..=body.len() {
            let mut s = sinks(&inputs);
            for chunk in body.chunks(piece) {
                s.write(chunk).unwrap();
            }
            assert_eq!(s.got, s.want);
            let got: Vec<Data> = s.sinks.into_iter().map(|(k, _)| k.into_data()).collect();
            assert_eq!(show(&got), show(&whole), "pieces of {piece}");
        }
        // A byte more than the inputs take is refused, whatever piece it comes in.
        let mut s = sinks(&inputs);
        s.write(&body[..5]).unwrap();
        s.write(&body[5..]).unwrap();
        assert!(s.write(b"x").is_err());
        let mut s = sinks(&inputs);
        assert!(s.write(&[body.as_slice(), b"x"].concat()).is_err());
    }
}
