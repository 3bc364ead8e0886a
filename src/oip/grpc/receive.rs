//! Receiving a `ModelInfer` message frame by frame, its tensors decoded as they arrive.
//!
//! tonic collects a whole message into one buffer before prost decodes it, and the tensors
//! were then decoded out of that buffer: two copies of every `raw_input_contents` byte after
//! the kernel's, the second from memory long out of cache (for a 16.8 MB request, a third of
//! the server's CPU time). [`Receive`] stands in front of the generated server for
//! `ModelInfer` only. It reads the body itself and copies each `raw_input_contents` entry
//! straight into its tensor as each HTTP/2 frame arrives, while the frame is still in cache;
//! the frame is freed at once, so the connection's next read reuses its memory instead of
//! faulting in fresh pages. The generated server then gets a message of the other fields only
//! (names, shapes, parameters: small), which prost decodes as always, and the tensors ride
//! along in the request's extensions as a [`Receipt`].
//!
//! A message it does not expect (compressed, over the size limit, with a field that is not
//! protobuf) goes on to tonic and prost in a form that makes them answer as they always do,
//! so the errors stay theirs. Every byte it holds past a small allowance is reserved from the
//! memory budget before it is allocated.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::server::NamedService;

use super::pb::model_infer_request::InferInputTensor;
use crate::AppState;
use crate::error::ApiError;
use crate::memory::{Memory, Reservation};
use crate::oip::Datatype;
use crate::wire::Data;

/// The route of `ModelInfer`.
pub const PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// Bytes a message may hold before it reserves: enough for its first fields (the model's
/// name, the inputs' names and shapes), so that a refusal can name the model in the metrics.
const ALLOWANCE: u64 = 64 << 10;

/// The gRPC message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// `raw_input_contents`' field number in `ModelInferRequest`.
const RAW_FIELD: u64 = 7;
/// `inputs`' field number.
const INPUTS_FIELD: u64 = 5;
/// `model_name`'s field number.
const MODEL_FIELD: u64 = 1;
/// Groups nested this deep hold nothing prost takes: its recursion limit.
const GROUP_DEPTH: usize = 100;

/// One entry of `raw_input_contents`.
#[derive(Debug)]
pub enum Raw {
    /// The bytes as they came (prost's, or kept because the input's datatype or shape was not
    /// known, or did not fit them, when they arrived): decoded later, with its checks.
    Bytes(Bytes),
    /// Decoded as they arrived, as `datatype` (`INT32` widened), from `bytes` bytes.
    Decoded {
        data: Data,
        datatype: Datatype,
        bytes: usize,
    },
}

/// A message received by [`Receive`]: its tensors and the memory they hold.
#[derive(Debug)]
pub struct Received {
    /// `raw_input_contents`, in order.
    pub raw: Vec<Raw>,
    /// The memory reserved for what the message holds; `None` while under [`ALLOWANCE`].
    pub held: Option<Reservation>,
    /// The message's length.
    pub len: u64,
}

/// A message refused for memory while it was received.
#[derive(Debug)]
pub struct Refused {
    /// The refusal.
    pub error: ApiError,
    /// The model the message named before it was refused, if it did.
    pub model: String,
}

/// What [`Receive`] hands `ModelInfer` in the request's extensions (which must be `Clone`):
/// taken once.
#[derive(Clone, Debug)]
pub struct Receipt(Arc<Mutex<Option<Result<Received, Refused>>>>);

impl Receipt {
    /// The message's tensors, or why it was refused; `None` when already taken.
    pub fn take(&self) -> Option<Result<Received, Refused>> {
        self.0.lock().ok()?.take()
    }
}

/// The layer in front of the generated server (see the module docs).
#[derive(Clone)]
pub struct Receive<S> {
    inner: S,
    state: AppState,
}

impl<S> Receive<S> {
    /// `inner` with `ModelInfer` bodies received here.
    pub fn new(inner: S, state: AppState) -> Self {
        Self { inner, state }
    }
}

impl<S: NamedService> NamedService for Receive<S> {
    const NAME: &'static str = S::NAME;
}

type Fut<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Receive<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Fut<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // A compressed body is tonic's to accept or refuse.
        let identity = req
            .headers()
            .get("grpc-encoding")
            .is_none_or(|v| v.as_bytes() == b"identity");
        if req.uri().path() != PATH || !identity {
            return Box::pin(self.inner.call(req));
        }
        // The clone that was made ready is the one to call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let body = match receive(body, &state).await {
                Ok((forward, receipt)) => {
                    if let Some(r) = receipt {
                        parts
                            .extensions
                            .insert(Receipt(Arc::new(Mutex::new(Some(r)))));
                    }
                    forward
                }
                Err(status) => return Ok(status.into_http()),
            };
            // The body is no longer the one the headers describe.
            parts.headers.remove(http::header::CONTENT_LENGTH);
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// Reads a `ModelInfer` body up to the end of its message: the body to hand the generated
/// server, and what was received besides it (none when that body is the original, for tonic
/// to answer). An error is an answer of its own.
async fn receive(
    mut body: Body,
    state: &AppState,
) -> Result<(Body, Option<Result<Received, Refused>>), tonic::Status> {
    let limit = state.config.max_body_bytes;
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    let mut parser: Option<Parser> = None;
    while parser.as_ref().is_none_or(|p| p.seen < p.len) {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(mut data) = frame?.into_data() else {
            continue; // trailers
        };
        let p = match &mut parser {
            Some(p) => p,
            None => {
                let take = (PREFIX - got).min(data.len());
                prefix[got..got + take].copy_from_slice(&data.split_to(take));
                got += take;
                if got < PREFIX {
                    continue;
                }
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                if prefix[0] != 0 || len as usize > limit {
                    // tonic refuses these from the prefix alone, in its own words.
                    let first = [Bytes::copy_from_slice(&prefix), data];
                    return Ok((Then::body(first, body), None));
                }
                parser.insert(Parser::new(
                    len as usize,
                    state.memory.clone(),
                    state.pool.deadline(),
                ))
            }
        };
        let tail = data.split_off((p.len - p.seen).min(data.len()));
        if let Err(refused) = p.feed(&data).await {
            return Ok((Then::body([empty()], Body::empty()), Some(Err(refused))));
        }
        if !tail.is_empty() {
            // Past the message: tonic reads on as it would.
            body = Then::body([tail], body);
        }
    }
    let Some(p) = parser else {
        // Fewer bytes than a prefix: tonic's to answer (a missing message, an early end).
        let first = [Bytes::copy_from_slice(&prefix[..got])];
        return Ok((Then::body(first, body), None));
    };
    if p.seen == 0 && p.len > 0 {
        // A prefix and nothing after it: tonic's to answer (a missing message, not an early
        // end, as it has no bytes of the message).
        return Ok((Then::body([Bytes::copy_from_slice(&prefix)], body), None));
    }
    if p.seen < p.len {
        return Err(tonic::Status::internal("Unexpected EOF decoding stream."));
    }
    match p.finish().await {
        Ok((message, received)) => Ok((Then::body([message], body), Some(Ok(received)))),
        Err(refused) => Ok((Then::body([empty()], Body::empty()), Some(Err(refused)))),
    }
}

#[doc(hidden)]
impl super::Service {
    /// A `ModelInfer` body arriving in `frames`, taken the two ways the service could take it:
    /// as tonic alone reads it, and through [`receive`]; each up to the request that
    /// [`super::request`] makes. The fuzz target checks that they agree; it reaches this
    /// private module through a public type.
    pub fn receive_both(
        state: &AppState,
        frames: &[&[u8]],
    ) -> [Result<crate::oip::Request, tonic::Status>; 2] {
        use tonic::codec::Codec;
        let body = || {
            let first: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
            Body::new(Then {
                first: first.into_iter(),
                then: Body::empty(),
            })
        };
        let limit = state.config.max_body_bytes;
        let budget = state.budget();
        // What the generated server does with a body before it calls `ModelInfer`.
        let decode = async |body: Body| {
            let decoder =
                tonic_prost::ProstCodec::<(), super::pb::ModelInferRequest>::default().decoder();
            let mut stream = tonic::codec::Streaming::new_request(decoder, body, None, Some(limit));
            let message = stream
                .message()
                .await?
                .ok_or_else(|| tonic::Status::internal("Missing request message."))?;
            stream.trailers().await?;
            Ok::<_, tonic::Status>(message)
        };
        let request = |mut m: super::pb::ModelInferRequest, raw: Vec<Raw>| {
            let raw = super::raw_contents(&mut m, raw);
            super::request(m, raw, budget).map_err(super::status)
        };
        let alone = async { request(decode(body()).await?, Vec::new()) };
        let layered = async {
            let (forward, receipt) = receive(body(), state).await?;
            let m = decode(forward).await?;
            match receipt {
                Some(Ok(received)) => request(m, received.raw),
                Some(Err(refused)) => Err(super::status(refused.error)),
                None => request(m, Vec::new()),
            }
        };
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt.block_on(async { [alone.await, layered.await] }),
            Err(e) => [(), ()].map(|()| Err(tonic::Status::internal(e.to_string()))),
        }
    }
}

/// An empty message: what the generated server decodes when the receipt says it all.
fn empty() -> Bytes {
    Bytes::from_static(&[0; PREFIX])
}

/// A body of some bytes, then another body.
struct Then {
    first: std::vec::IntoIter<Bytes>,
    then: Body,
}

impl Then {
    fn body<const N: usize>(first: [Bytes; N], then: Body) -> Body {
        Body::new(Self {
            first: first
                .into_iter()
                .filter(|b| !b.is_empty())
                .collect::<Vec<_>>()
                .into_iter(),
            then,
        })
    }
}

impl hyper::body::Body for Then {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, tonic::Status>>> {
        if let Some(b) = self.first.next() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
        }
        std::pin::Pin::new(&mut self.then).poll_frame(cx)
    }
}

/// Where a `raw_input_contents` entry goes as its bytes arrive.
enum Sink {
    F64(Vec<f64>),
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// `INT32`, widened.
    I32(Vec<i64>),
    Bytes(Vec<u8>),
}

impl Sink {
    /// A sink for `len` bytes of the input `meta` describes: decoded when its datatype and
    /// shape make exactly `len` bytes, else kept as bytes. Also the bytes it will hold.
    fn new(meta: Option<&Meta>, len: usize) -> (Self, u64) {
        let fits = meta.filter(|m| m.count.checked_mul(m.datatype.size()) == Some(len));
        let n = fits.map_or(0, |m| m.count);
        match fits.map(|m| m.datatype) {
            Some(Datatype::Fp64) => (Sink::F64(Vec::with_capacity(n)), len as u64),
            Some(Datatype::Fp32) => (Sink::F32(Vec::with_capacity(n)), len as u64),
            Some(Datatype::Int64) => (Sink::I64(Vec::with_capacity(n)), len as u64),
            Some(Datatype::Int32) => (Sink::I32(Vec::with_capacity(n)), 2 * len as u64),
            None => (Sink::Bytes(Vec::with_capacity(len)), len as u64),
        }
    }

    /// Appends `piece`; `carry` holds an element's first bytes when a frame ends within it.
    fn push(&mut self, carry: &mut Carry, piece: &[u8]) {
        match self {
            Sink::F64(v) => carry.feed_le(v, piece, f64::from_le_bytes),
            Sink::F32(v) => carry.feed_le(v, piece, f32::from_le_bytes),
            Sink::I64(v) => carry.feed_le(v, piece, i64::from_le_bytes),
            Sink::I32(v) => carry.feed(v, piece, |b| i64::from(i32::from_le_bytes(b))),
            Sink::Bytes(v) => v.extend_from_slice(piece),
        }
    }

    /// The entry, from `bytes` bytes.
    fn into_raw(self, bytes: usize) -> Raw {
        let (data, datatype) = match self {
            Sink::F64(v) => (Data::F64(v), Datatype::Fp64),
            Sink::F32(v) => (Data::F32(v), Datatype::Fp32),
            Sink::I64(v) => (Data::I64(v), Datatype::Int64),
            Sink::I32(v) => (Data::I64(v), Datatype::Int32),
            Sink::Bytes(v) => return Raw::Bytes(Bytes::from(v)),
        };
        Raw::Decoded {
            data,
            datatype,
            bytes,
        }
    }
}

/// The first bytes of an element split between two frames.
#[derive(Default)]
struct Carry {
    bytes: [u8; 8],
    len: usize,
}

impl Carry {
    /// Appends the elements of `piece` to `v`, after the one begun in the previous piece.
    /// `from` is a closure or function item so that it inlines: the loop is then a plain copy
    /// on a little-endian machine, from any alignment.
    fn feed<T, const N: usize>(
        &mut self,
        v: &mut Vec<T>,
        piece: &[u8],
        from: impl Fn([u8; N]) -> T,
    ) {
        let Some(piece) = self.finish(v, piece, &from) else {
            return;
        };
        let (whole, tail) = piece.as_chunks::<N>();
        v.extend(whole.iter().map(|&c| from(c)));
        self.keep(tail);
    }

    /// [`Self::feed`] for a type whose little-endian bytes are its value (`f64`, `f32`,
    /// `i64`): on a little-endian machine the whole elements are copied with
    /// [`copy_vectors`], not element by element (which LLVM turns into a `memcpy` call).
    fn feed_le<T: bytemuck::Pod, const N: usize>(
        &mut self,
        v: &mut Vec<T>,
        piece: &[u8],
        from: impl Fn([u8; N]) -> T,
    ) {
        debug_assert_eq!(size_of::<T>(), N);
        if cfg!(target_endian = "big") {
            return self.feed(v, piece, from);
        }
        let Some(piece) = self.finish(v, piece, &from) else {
            return;
        };
        let (whole, tail) = piece.as_chunks::<N>();
        let bytes = whole.as_flattened();
        v.reserve(whole.len());
        // SAFETY: the spare capacity holds `whole.len()` elements, `bytes.len()` bytes, which
        // do not overlap `bytes`; any bytes are a valid `T` (`Pod`), and on a little-endian
        // machine they are the value `from` would make of them.
        unsafe {
            copy_vectors(v.as_mut_ptr().add(v.len()).cast::<u8>(), bytes);
            v.set_len(v.len() + whole.len());
        }
        self.keep(tail);
    }

    /// Completes the element begun in the previous piece with the first bytes of `piece`:
    /// the rest of `piece`, or `None` when `piece` ends before the element does.
    fn finish<'a, T, const N: usize>(
        &mut self,
        v: &mut Vec<T>,
        piece: &'a [u8],
        from: &impl Fn([u8; N]) -> T,
    ) -> Option<&'a [u8]> {
        if self.len == 0 {
            return Some(piece);
        }
        let take = (N - self.len).min(piece.len());
        self.bytes[self.len..self.len + take].copy_from_slice(&piece[..take]);
        self.len += take;
        if self.len < N {
            return None;
        }
        let mut one = [0; N];
        one.copy_from_slice(&self.bytes[..N]);
        v.push(from(one));
        self.len = 0;
        Some(&piece[take..])
    }

    /// Holds the first bytes (fewer than an element) of an element the next piece completes.
    fn keep(&mut self, tail: &[u8]) {
        self.bytes[..tail.len()].copy_from_slice(tail);
        self.len = tail.len();
    }
}

/// Copies `src` to `dst` (`src.len()` bytes, not overlapping) with 16-byte vector moves.
///
/// Not `copy_nonoverlapping`: that is a `memcpy` call, and glibc 2.36 copies pieces this
/// large (frames of up to 256 KiB) with `rep movsb`, which was about 1 ms slower per 16 MB
/// request than vector moves on the AMD EPYC machine measured (later glibc stopped using it
/// there for large sizes). A plain Rust loop of loads and stores would be turned back into
/// `memcpy` by LLVM; the loop is written in assembly so that it stays one.
///
/// # Safety
/// `dst` must be valid for writing `src.len()` bytes that do not overlap `src`.
#[inline]
unsafe fn copy_vectors(dst: *mut u8, src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    let done = {
        let blocks = src.len() / 64;
        if blocks > 0 {
            // SAFETY: each iteration reads 64 bytes of `src` and writes 64 of `dst`, `blocks`
            // times: within both (the caller's promise for `dst`). SSE2 is part of x86_64.
            unsafe {
                std::arch::asm!(
                    "2:",
                    "movdqu {a}, [{s}]",
                    "movdqu {b}, [{s} + 16]",
                    "movdqu {c}, [{s} + 32]",
                    "movdqu {d}, [{s} + 48]",
                    "movdqu [{t}], {a}",
                    "movdqu [{t} + 16], {b}",
                    "movdqu [{t} + 32], {c}",
                    "movdqu [{t} + 48], {d}",
                    "add {s}, 64",
                    "add {t}, 64",
                    "dec {n}",
                    "jnz 2b",
                    s = inout(reg) src.as_ptr() => _,
                    t = inout(reg) dst => _,
                    n = inout(reg) blocks => _,
                    a = out(xmm_reg) _,
                    b = out(xmm_reg) _,
                    c = out(xmm_reg) _,
                    d = out(xmm_reg) _,
                    options(nostack),
                );
            }
        }
        blocks * 64
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    // SAFETY: the rest of `src` (under 64 bytes on x86_64) to the rest of `dst`.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr().add(done), dst.add(done), src.len() - done)
    };
}

/// What an `inputs` entry says of its tensor's bytes.
struct Meta {
    datatype: Datatype,
    count: usize,
}

impl Meta {
    /// From an encoded `InferInputTensor`; `None` when it is not one lossd can take as it is
    /// (the decode of the whole message says why).
    fn of(encoded: &[u8]) -> Option<Self> {
        let t = InferInputTensor::decode(encoded).ok()?;
        let datatype = Datatype::parse(&t.datatype)?;
        let count = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))?;
        Some(Self { datatype, count })
    }
}

/// Where the parser is within the message.
enum State {
    /// Reading a field's key (and length, for a length-delimited one) into `head`.
    Head,
    /// Copying a varint's bytes into `rest`.
    Varint,
    /// Copying `left` more bytes of field `field` into `rest`, where its value starts at
    /// `start`.
    Copy {
        field: u64,
        start: usize,
        left: usize,
    },
    /// Decoding `left` more bytes of a `raw_input_contents` entry of `bytes` bytes.
    Raw {
        sink: Sink,
        carry: Carry,
        bytes: usize,
        left: usize,
    },
    /// Past something that is not protobuf: everything left goes to `rest`, for prost to
    /// refuse.
    Verbatim,
}

/// A varint at the start of `b`: its value and length; `None` while incomplete, `Some(Err)`
/// when it is none: more than 10 bytes, or a tenth byte past the 64th bit (prost refuses it,
/// and a raw entry's key and length are not passed on for prost to see).
fn varint(b: &[u8]) -> Option<Result<(u64, usize), ()>> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Some(Err(()));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(Ok((v, i + 1)));
        }
    }
    (b.len() >= 10).then_some(Err(()))
}

/// A `ModelInferRequest` parsed as its bytes arrive: `raw_input_contents` decoded into
/// [`Raw`]s, every other field copied into `rest`, which is a message of its own.
struct Parser {
    /// The message's length.
    len: usize,
    /// Its bytes seen so far.
    seen: usize,
    /// The gRPC prefix and the message without `raw_input_contents`.
    rest: Vec<u8>,
    /// A field's key and length while they arrive: two varints of at most 10 bytes.
    head: [u8; 20],
    head_len: usize,
    state: State,
    /// The `inputs` entries so far.
    inputs: Vec<Option<Meta>>,
    raw: Vec<Raw>,
    /// The field numbers of the groups open here, innermost last. A group is an unknown field
    /// to prost, skipped with everything in it: a `raw_input_contents` in it is no tensor.
    groups: Vec<u64>,
    /// The last `model_name` so far.
    model: String,
    /// The bytes held, in `rest` and the tensors.
    holding: u64,
    held: Option<Reservation>,
    memory: Memory,
    deadline: Instant,
}

impl Parser {
    /// A parser of a message of `len` bytes, reserving from `memory` and waiting for it until
    /// `deadline`.
    fn new(len: usize, memory: Memory, deadline: Instant) -> Self {
        let mut rest = Vec::with_capacity(PREFIX + len.min(ALLOWANCE as usize / 4));
        rest.extend_from_slice(&[0; PREFIX]);
        Self {
            len,
            seen: 0,
            holding: rest.capacity() as u64,
            rest,
            head: [0; 20],
            head_len: 0,
            state: State::Head,
            inputs: Vec::new(),
            raw: Vec::new(),
            groups: Vec::new(),
            model: String::new(),
            held: None,
            memory,
            deadline,
        }
    }

    /// Makes sure `more` bytes more may be held: within the allowance, or reserved (the whole
    /// message the first time, as a message holds about its length).
    async fn hold(&mut self, more: u64) -> Result<(), Refused> {
        let total = self.holding + more;
        let reserved = self.held.as_ref().map_or(ALLOWANCE, Reservation::bytes);
        if total > reserved {
            let r = match &mut self.held {
                None => {
                    let want = total.max((PREFIX + self.len) as u64);
                    match self.memory.reserve(want, self.deadline).await {
                        Ok(r) => {
                            self.held = Some(r);
                            Ok(())
                        }
                        Err(r) => Err((r, want)),
                    }
                }
                Some(held) => {
                    let more = total - held.bytes();
                    held.grow(more, self.deadline).await.map_err(|r| (r, total))
                }
            };
            if let Err((r, want)) = r {
                return Err(Refused {
                    error: crate::memory::refusal_error(r, want, self.memory.capacity()),
                    model: std::mem::take(&mut self.model),
                });
            }
        }
        self.holding = total;
        Ok(())
    }

    /// Appends `bytes` to `rest`, reserving what it grows by.
    async fn keep(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        let need = self.rest.len() + bytes.len();
        let cap = self.rest.capacity();
        if need > cap {
            let grown = need.max((2 * cap).min(PREFIX + self.len));
            self.hold((grown - cap) as u64).await?;
            self.rest.reserve_exact(grown - self.rest.len());
        }
        self.rest.extend_from_slice(bytes);
        Ok(())
    }

    /// Makes room for one more entry in the vector `of` picks, reserved first: an entry is
    /// small, but a message can be nothing but empty entries (two bytes each).
    async fn room<T>(&mut self, of: fn(&mut Self) -> &mut Vec<T>) -> Result<(), Refused> {
        let v = of(self);
        if v.len() == v.capacity() {
            let more = v.capacity().max(4);
            self.hold((more * size_of::<T>()) as u64).await?;
            of(self).reserve_exact(more);
        }
        Ok(())
    }

    /// Moves a field's key (and length) from `head` to `rest`.
    async fn keep_head(&mut self) -> Result<(), Refused> {
        let (head, n) = (self.head, self.head_len);
        self.head_len = 0;
        self.keep(&head[..n]).await
    }

    /// Parses `piece`, the message's next bytes.
    async fn feed(&mut self, mut piece: &[u8]) -> Result<(), Refused> {
        loop {
            self.settle();
            let Some(&first) = piece.first() else {
                return Ok(());
            };
            match &mut self.state {
                State::Head => {
                    self.head[self.head_len] = first;
                    self.head_len += 1;
                    self.seen += 1;
                    piece = &piece[1..];
                    self.on_head().await?;
                }
                State::Varint => {
                    let end = piece.iter().position(|b| b & 0x80 == 0);
                    let (bytes, more) = piece.split_at(end.map_or(piece.len(), |i| i + 1));
                    self.seen += bytes.len();
                    piece = more;
                    self.keep(bytes).await?;
                    if end.is_some() {
                        self.state = State::Head;
                    }
                }
                State::Copy { left, .. } => {
                    let n = (*left).min(piece.len());
                    *left -= n;
                    let (bytes, more) = piece.split_at(n);
                    self.seen += n;
                    piece = more;
                    self.keep(bytes).await?;
                }
                State::Raw {
                    sink, carry, left, ..
                } => {
                    let n = (*left).min(piece.len());
                    *left -= n;
                    let (bytes, more) = piece.split_at(n);
                    sink.push(carry, bytes);
                    self.seen += n;
                    piece = more;
                }
                State::Verbatim => {
                    self.seen += piece.len();
                    self.keep(piece).await?;
                    piece = &[];
                }
            }
        }
    }

    /// Ends a field whose bytes have all come.
    fn settle(&mut self) {
        match self.state {
            State::Copy {
                field,
                start,
                left: 0,
            } => {
                let value = &self.rest[start..];
                match field {
                    _ if !self.groups.is_empty() => {}
                    INPUTS_FIELD => self.inputs.push(Meta::of(value)),
                    MODEL_FIELD => self.model = String::from_utf8_lossy(value).into_owned(),
                    _ => {}
                }
                self.state = State::Head;
            }
            State::Raw { left: 0, bytes, .. } => {
                if let State::Raw { sink, .. } = std::mem::replace(&mut self.state, State::Head) {
                    self.raw.push(sink.into_raw(bytes));
                }
            }
            _ => {}
        }
    }

    /// Acts on `head` once it holds a field's key (and length).
    async fn on_head(&mut self) -> Result<(), Refused> {
        let head = &self.head[..self.head_len];
        let (key, at) = match varint(head) {
            None => return Ok(()),
            Some(Ok(key)) => key,
            Some(Err(())) => return self.verbatim().await,
        };
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 || wire > 5 {
            // Field 0, wire types that do not exist.
            return self.verbatim().await;
        }
        if wire == 3 && self.groups.len() < GROUP_DEPTH {
            self.keep_head().await?;
            self.groups.push(field);
            return Ok(());
        }
        if wire == 4 && self.groups.last() == Some(&field) {
            self.keep_head().await?;
            self.groups.pop();
            return Ok(());
        }
        if matches!(wire, 3 | 4) {
            // Too deep, or an end that is not the open group's.
            return self.verbatim().await;
        }
        if wire != 2 {
            self.keep_head().await?;
            let start = self.rest.len();
            self.state = match wire {
                0 => State::Varint,
                1 => State::Copy {
                    field,
                    start,
                    left: 8,
                },
                _ => State::Copy {
                    field,
                    start,
                    left: 4,
                },
            };
            return Ok(());
        }
        let len = match varint(&head[at..]) {
            None => return Ok(()),
            Some(Ok((len, _))) => len,
            Some(Err(())) => return self.verbatim().await,
        };
        // A field past the message's end is prost's to refuse.
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.len - self.seen)
        else {
            return self.verbatim().await;
        };
        let top = self.groups.is_empty();
        if field == RAW_FIELD && top {
            self.room(|p| &mut p.raw).await?;
            let meta = self.inputs.get(self.raw.len()).and_then(Option::as_ref);
            let (sink, bytes) = Sink::new(meta, len);
            self.hold(bytes).await?;
            self.head_len = 0;
            self.state = State::Raw {
                sink,
                carry: Carry::default(),
                bytes: len,
                left: len,
            };
        } else {
            if field == INPUTS_FIELD && top {
                self.room(|p| &mut p.inputs).await?;
            }
            self.keep_head().await?;
            self.state = State::Copy {
                field,
                start: self.rest.len(),
                left: len,
            };
        }
        Ok(())
    }

    /// Gives up parsing: the field's key and everything after it go to `rest` as they are.
    async fn verbatim(&mut self) -> Result<(), Refused> {
        self.state = State::Verbatim;
        self.keep_head().await
    }

    /// The message without `raw_input_contents` (prefix included), and what was received.
    async fn finish(mut self) -> Result<(Bytes, Received), Refused> {
        self.settle();
        // A key cut short by the message's end: prost refuses it.
        self.keep_head().await?;
        let len = u32::try_from(self.rest.len() - PREFIX).unwrap_or(u32::MAX);
        self.rest[1..PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok((
            Bytes::from(self.rest),
            Received {
                raw: self.raw,
                held: self.held,
                len: self.len as u64,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oip::grpc::pb;
    use std::time::Duration;

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }
    }

    fn le<T: bytemuck::Pod>(v: &[T]) -> Bytes {
        Bytes::copy_from_slice(bytemuck::cast_slice(v))
    }

    /// Elements copied in blocks ([`copy_vectors`]) and element by element give the same
    /// values, whatever the cut between pieces and wherever the bytes start (alignment).
    #[test]
    fn elements_copied_in_blocks_are_the_elements() {
        let bytes: Vec<u8> = (0..1031u32).map(|i| (i * 37 % 251) as u8).collect();
        for start in 0..3 {
            let data = &bytes[start..start + 8 * 120];
            let want: Vec<f64> = data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            for cut in [0, 1, 7, 8, 9, 63, 64, 65, 200, 511, 960] {
                let (a, b) = data.split_at(cut);
                let mut carry = Carry::default();
                let mut got = Vec::new();
                carry.feed_le(&mut got, a, f64::from_le_bytes);
                carry.feed_le(&mut got, b, f64::from_le_bytes);
                assert_eq!(carry.len, 0);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same && got.len() == want.len(), "start {start}, cut {cut}");
            }
            for size in [1, 3, 7, 9, 13, 70, 129] {
                let mut carry = Carry::default();
                let mut got = Vec::new();
                for piece in data.chunks(size) {
                    carry.feed_le(&mut got, piece, f64::from_le_bytes);
                }
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same && got.len() == want.len(),
                    "start {start}, pieces of {size}"
                );
            }
        }
    }

    /// A request with every kind of field: strings, a map, messages, raw tensors of each
    /// datatype (one of them empty).
    fn sample() -> pb::ModelInferRequest {
        let mut req = pb::ModelInferRequest {
            model_name: "mse_loss".into(),
            model_version: "1".into(),
            id: "an id".into(),
            inputs: vec![
                input("input", "FP64", &[3]),
                input("target", "FP32", &[1, 2]),
                input("i", "INT64", &[2]),
                input("j", "INT32", &[3]),
                input("e", "FP64", &[0, 4]),
            ],
            raw_input_contents: vec![
                le(&[1.5f64, -0.0, f64::NAN]),
                le(&[2.5f32, f32::INFINITY]),
                le(&[-7i64, i64::MAX]),
                le(&[-3i32, 7, i32::MIN]),
                Bytes::new(),
            ],
            ..Default::default()
        };
        req.parameters.insert(
            "reduction".into(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam("sum".into())),
            },
        );
        req.parameters.insert(
            "grad".into(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(true)),
            },
        );
        req
    }

    use pb::infer_parameter::ParameterChoice;

    /// Parses `message` fed in pieces of `step` bytes: the message the generated server
    /// gets, and the raw entries.
    async fn parse(
        message: &[u8],
        step: usize,
        memory: Memory,
    ) -> Result<(Result<pb::ModelInferRequest, prost::DecodeError>, Received), Refused> {
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut p = Parser::new(message.len(), memory, deadline);
        for piece in message.chunks(step) {
            p.feed(piece).await?;
        }
        assert_eq!(p.seen, message.len());
        let (rest, received) = p.finish().await?;
        let len = u32::from_be_bytes(rest[1..PREFIX].try_into().unwrap()) as usize;
        assert_eq!((rest[0], len), (0, rest.len() - PREFIX));
        let decoded = pb::ModelInferRequest::decode(&rest[PREFIX..]);
        Ok((decoded, received))
    }

    fn memory() -> Memory {
        Memory::new(1 << 30)
    }

    #[tokio::test]
    async fn tensors_decode_as_they_arrive_in_pieces_of_any_size() {
        let req = sample();
        let message = req.encode_to_vec();
        for step in (1..=40).chain([message.len() / 2, message.len()]) {
            let (decoded, Received { raw, .. }) = parse(&message, step, memory()).await.unwrap();
            let mut want = req.clone();
            let want_raw = std::mem::take(&mut want.raw_input_contents);
            assert_eq!(decoded.unwrap(), want, "pieces of {step}");
            assert_eq!(raw.len(), want_raw.len());
            for ((r, bytes), t) in raw.into_iter().zip(&want_raw).zip(&req.inputs) {
                let Raw::Decoded {
                    data,
                    datatype,
                    bytes: n,
                } = r
                else {
                    panic!("{} kept as bytes", t.name)
                };
                assert_eq!(datatype.as_str(), t.datatype);
                assert_eq!(n, bytes.len());
                let dt = Datatype::parse(&t.datatype).unwrap();
                let count = bytes.len() / dt.size();
                let want = crate::oip::binary::decode(&t.name, bytes, dt, count).unwrap();
                // Bit for bit (NaN included).
                let bits = |d: &Data| match d {
                    Data::F64(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    Data::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                    Data::I64(v) => v.iter().map(|&x| x as u64).collect(),
                };
                assert_eq!(bits(&data), bits(&want), "{} in pieces of {step}", t.name);
            }
        }
    }

    #[tokio::test]
    async fn tensors_whose_input_is_not_known_or_does_not_fit_are_kept_as_bytes() {
        // raw_input_contents before inputs: protobuf allows any order.
        let req = sample();
        let raw_only = pb::ModelInferRequest {
            raw_input_contents: req.raw_input_contents.clone(),
            ..Default::default()
        };
        let mut message = raw_only.encode_to_vec();
        let mut rest = req.clone();
        rest.raw_input_contents.clear();
        rest.encode(&mut message).unwrap();
        let (decoded, Received { raw, .. }) = parse(&message, 7, memory()).await.unwrap();
        assert_eq!(decoded.unwrap(), rest);
        for (r, want) in raw.iter().zip(&req.raw_input_contents) {
            assert!(matches!(r, Raw::Bytes(b) if b == want), "{r:?}");
        }
        // A shape that does not make the bytes, a datatype lossd does not take.
        let mut odd = sample();
        odd.inputs[0].shape = vec![4];
        odd.inputs[1].datatype = "FP16".into();
        let (_, Received { raw, .. }) = parse(&odd.encode_to_vec(), 5, memory()).await.unwrap();
        assert!(matches!(&raw[0], Raw::Bytes(b) if b.len() == 24));
        assert!(matches!(&raw[1], Raw::Bytes(b) if b.len() == 8));
        assert!(matches!(&raw[2], Raw::Decoded { .. }));
    }

    #[tokio::test]
    async fn what_is_not_protobuf_is_left_for_prost_to_refuse() {
        let message = sample().encode_to_vec();
        let bad: [&[u8]; 9] = [
            // raw_input_contents longer than the message
            &[0x3a, 0x10, 1, 2],
            // field 0
            &[0x02, 0x01, 0],
            // a group
            &[0x0b, 0x0c],
            // a key that is not a varint
            &[0xff; 11],
            // a string cut short by the message's end
            &[0x0a, 0x05, b'a'],
            // raw_input_contents whose length overflows 64 bits in its tenth byte
            &[
                0x3a, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 9,
            ],
            // a key that does (field 7, length-delimited, but for the overflow)
            &[
                0xba, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x00,
            ],
            // a group ended by another field's end
            &[0xa3, 0x06, 0xac, 0x06],
            // an end with no group
            &[0xa4, 0x06],
        ];
        for tail in bad {
            let mut m = message.clone();
            m.extend_from_slice(tail);
            for step in [1, 3, m.len()] {
                let (decoded, _) = parse(&m, step, memory()).await.unwrap();
                assert!(decoded.is_err(), "{tail:?} in pieces of {step}");
            }
        }
    }

    #[tokio::test]
    async fn groups_are_skipped_with_all_they_hold() {
        let req = sample();
        let mut first = req.clone();
        let later = first.raw_input_contents.split_off(2);
        let mut message = first.encode_to_vec();
        // Field 100 holding field 101 (a group), an `inputs`, a `raw_input_contents` and a
        // varint `model_name` entry: prost skips them all, as unknown.
        message.extend_from_slice(&[
            0xa3, 0x06, 0xab, 0x06, 0xac, 0x06, 0x2a, 0x00, 0x3a, 0x02, 1, 2, 0x08, 0x01, 0xa4,
            0x06,
        ]);
        pb::ModelInferRequest {
            raw_input_contents: later,
            ..Default::default()
        }
        .encode(&mut message)
        .unwrap();
        assert_eq!(pb::ModelInferRequest::decode(&message[..]).unwrap(), req);
        let mut want = req.clone();
        want.raw_input_contents.clear();
        for step in [1, 2, 5, message.len()] {
            let (decoded, Received { raw, .. }) = parse(&message, step, memory()).await.unwrap();
            assert_eq!(decoded.unwrap(), want, "pieces of {step}");
            assert_eq!(raw.len(), 5, "pieces of {step}");
            assert!(raw.iter().all(|r| matches!(r, Raw::Decoded { .. })));
        }
        // Nested as deep as prost takes, and one deeper.
        for depth in [GROUP_DEPTH, GROUP_DEPTH + 1] {
            let mut m = sample().encode_to_vec();
            m.extend([0xa3, 0x06].repeat(depth));
            m.extend([0xa4, 0x06].repeat(depth));
            let whole = pb::ModelInferRequest::decode(&m[..]);
            assert_eq!(whole.is_ok(), depth == GROUP_DEPTH);
            let (decoded, Received { raw, .. }) = parse(&m, 3, memory()).await.unwrap();
            assert_eq!(decoded.is_ok(), whole.is_ok(), "{depth} deep");
            assert_eq!(raw.len(), 5);
        }
    }

    #[tokio::test]
    async fn entries_are_reserved_however_small() {
        let n = 1 << 14;
        for (key, size) in [(0x3a, size_of::<Raw>()), (0x2a, size_of::<Option<Meta>>())] {
            // Empty entries: two bytes of message each.
            let message = [key, 0].repeat(n);
            let memory = Memory::new(1 << 30);
            let (_, received) = parse(&message, 1000, memory.clone()).await.unwrap();
            assert!(
                memory.reserved() >= (n * size) as u64,
                "{key:#x}: {} reserved",
                memory.reserved()
            );
            drop(received);
            assert_eq!(memory.reserved(), 0);
        }
    }

    #[test]
    fn a_body_taken_frame_by_frame_gives_what_tonic_alone_gives() {
        let state = AppState::new(crate::config::Config::default_for_tests());
        let message = sample().encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        let frames: Vec<&[u8]> = body.chunks(3).collect();
        let [alone, layered] = super::super::Service::receive_both(&state, &frames);
        let [alone, layered] = [alone, layered].map(|r| {
            let mut r = r.unwrap();
            // From a map: in no order.
            r.params.sort_by(|a, b| a.0.cmp(&b.0));
            r
        });
        assert_eq!(layered.inputs.len(), 5);
        assert_eq!(format!("{alone:?}"), format!("{layered:?}"));
        // Compressed; a prefix alone; a message cut short: tonic's refusals, both ways.
        let mut compressed = body.clone();
        compressed[0] = 1;
        for body in [&compressed[..], &body[..PREFIX], &body[..PREFIX + 1]] {
            let [alone, layered] = super::super::Service::receive_both(&state, &[body]);
            let (alone, layered) = (alone.unwrap_err(), layered.unwrap_err());
            assert_eq!(
                (alone.code(), alone.message()),
                (layered.code(), layered.message()),
                "{body:?}"
            );
        }
        assert_eq!(state.memory.reserved(), 0);
    }

    #[tokio::test]
    async fn large_tensors_are_reserved_before_they_are_held() {
        let n = 1 << 12;
        let req = pb::ModelInferRequest {
            model_name: "mse_loss".into(),
            inputs: vec![input("input", "INT32", &[n])],
            raw_input_contents: vec![le(&vec![1i32; n as usize])],
            ..Default::default()
        };
        let message = req.encode_to_vec();
        // Within the allowance (32 KiB once widened): nothing reserved.
        let small = Memory::new(1 << 20);
        let (_, received) = parse(&message, 1000, small.clone()).await.unwrap();
        assert!(received.held.is_none());
        assert_eq!(small.reserved(), 0);
        assert!(
            matches!(&received.raw[0], Raw::Decoded { data: Data::I64(v), .. } if v.len() == 1 << 12)
        );
        // Past it: the message, and the widening of INT32 to 64 bits.
        let big = pb::ModelInferRequest {
            inputs: vec![input("input", "INT32", &[16 * n])],
            raw_input_contents: vec![le(&vec![1i32; 16 * n as usize])],
            ..req.clone()
        };
        let message = big.encode_to_vec();
        let memory = Memory::new(1 << 20);
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut p = Parser::new(message.len(), memory.clone(), deadline);
        p.feed(&message).await.unwrap();
        let (_, received) = p.finish().await.unwrap();
        assert!(
            memory.reserved() >= 2 * 4 * 4 * n as u64,
            "{}",
            memory.reserved()
        );
        drop(received);
        assert_eq!(memory.reserved(), 0);
        // A budget it does not fit: refused, naming the model.
        let refused = parse(&message, 1000, Memory::new(100 << 10))
            .await
            .unwrap_err();
        assert_eq!(refused.model, "mse_loss");
        assert_eq!(
            crate::oip::status(refused.error.code),
            413,
            "{:?}",
            refused.error
        );
    }
}
