//! The memory budget (`--max-memory`): what requests hold at once is bounded, so that any
//! number of concurrent large requests cannot push the process past its container's limit.
//!
//! A request reserves memory before it holds it, and holds a [`Reservation`] (released when
//! dropped, on every path: answered, failed, client gone, timed out, panicked):
//!
//! 1. Before its body is read: the declared length plus the most its tensors could decode to
//!    ([`Estimate::before_read`]; a chunked body grows its reservation as it arrives).
//! 2. Once read: shrunk to the body plus what the elements counted in it hold while computing
//!    ([`Estimate::after_read`]); once decoded, to the body plus the decoded elements' working
//!    set ([`Estimate::decoded`]).
//!
//! A reservation that does not fit waits until memory comes back or the request's deadline
//! passes (then 503 `overloaded` with `Retry-After`); one larger than the whole budget is
//! refused at once (413). The waiting policy ([`Memory::reserve`]): any waiter that fits is
//! admitted, in arrival order, so a large waiter never holds up smaller ones behind it; but
//! once the oldest waiter has waited [`PATIENCE`], later large reservations are admitted only
//! if they leave its room free, so that it is served as soon as enough comes back. Small
//! reservations (at most [`SMALL_SHARE`] of the budget) are never held back for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use crate::error::{ApiError, Code};

/// How long the oldest waiter waits before later large reservations must leave room for it.
pub const PATIENCE: Duration = Duration::from_millis(500);

/// Reservations up to this share of the budget (1/SMALL_SHARE) are small: never held back for
/// a waiting large one.
pub const SMALL_SHARE: u64 = 64;

/// The budget when neither `--max-memory` nor a container memory limit says otherwise: room
/// for the largest request the default limits allow (a 64 MiB body whose tensors decode to
/// 16M elements) and a handful of ordinary large ones, on any machine that runs lossd at all.
pub const DEFAULT_BUDGET: u64 = 1 << 30;

/// The share of a container's memory limit the budget takes by default: the rest is the
/// process itself, its allocator's slack and what the budget does not count (connections'
/// buffers, the access log).
pub const CGROUP_SHARE: f64 = 0.75;

/// A response marker: the request was refused by the memory budget (for the metrics).
#[derive(Clone, Copy, Debug)]
pub struct Refused;

/// The budget shared by every request of the process.
#[derive(Clone, Debug)]
pub struct Memory {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    capacity: u64,
    state: Mutex<State>,
    /// `State::used`, readable without the lock (the gauge).
    reserved: AtomicU64,
    /// The most reserved since the last purge.
    peak: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    next_id: u64,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    bytes: u64,
    since: Instant,
    grant: oneshot::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing holding the lock panics; a poisoned lock would still hold sound counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn small(&self, bytes: u64) -> bool {
        bytes <= self.capacity / SMALL_SHARE
    }

    /// The room kept for the oldest waiter once it has waited [`PATIENCE`] (0 otherwise).
    fn held_for_oldest(&self, s: &State, now: Instant) -> u64 {
        match s.waiters.front() {
            Some(w) if now.duration_since(w.since) >= PATIENCE => w.bytes,
            _ => 0,
        }
    }

    /// Whether `bytes` may be admitted now, keeping `held` bytes free for the oldest waiter.
    fn admits(&self, s: &State, bytes: u64, held: u64) -> bool {
        let fits = s.used + bytes <= self.capacity;
        fits && (self.small(bytes) || s.used + bytes + held <= self.capacity)
    }

    fn set_used(&self, s: &mut State, used: u64) {
        s.used = used;
        self.reserved.store(used, Ordering::SeqCst);
        self.peak.fetch_max(used, Ordering::SeqCst);
    }

    /// Admits every waiter that now fits, in arrival order.
    fn grant(&self, s: &mut State) {
        let now = Instant::now();
        let mut i = 0;
        while i < s.waiters.len() {
            // The oldest waiter itself is never held back by its own room.
            let held = if i == 0 {
                0
            } else {
                self.held_for_oldest(s, now)
            };
            if self.admits(s, s.waiters[i].bytes, held) {
                let w = s.waiters.remove(i).expect("index in range");
                // A waiter whose future is gone is skipped: its guard takes it out of the
                // queue, but it may have been dropped between the two.
                if w.grant.send(()).is_ok() {
                    let used = s.used + w.bytes;
                    self.set_used(s, used);
                }
            } else {
                i += 1;
            }
        }
    }

    fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut s = self.lock();
        let used = s.used.saturating_sub(bytes);
        self.set_used(&mut s, used);
        self.grant(&mut s);
    }
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than the whole budget: it could never fit.
    NeverFits,
    /// The deadline passed while it waited.
    TimedOut,
}

/// Memory held by a request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back what is reserved beyond `bytes` (nothing if it holds less).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            let freed = self.bytes - bytes;
            self.bytes = bytes;
            self.shared.release(freed);
        }
    }

    /// Reserves `more` bytes in addition, waiting until `deadline` as [`Memory::reserve`].
    pub async fn grow(&mut self, more: u64, deadline: Instant) -> Result<(), Refusal> {
        let memory = Memory {
            shared: self.shared.clone(),
        };
        if self.bytes + more > memory.capacity() {
            return Err(Refusal::NeverFits);
        }
        let mut extra = memory.reserve(more, deadline).await?;
        self.bytes += std::mem::take(&mut extra.bytes);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.release(self.bytes);
    }
}

/// Takes a waiter out of the queue when its future ends without its grant (deadline passed,
/// client gone), or gives the grant back if it came in between.
struct Waiting {
    shared: Arc<Shared>,
    id: u64,
    bytes: u64,
    done: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut s = self.shared.lock();
        if let Some(i) = s.waiters.iter().position(|w| w.id == self.id) {
            s.waiters.remove(i);
        } else {
            // Granted after all: give it back.
            let used = s.used.saturating_sub(self.bytes);
            self.shared.set_used(&mut s, used);
        }
        // It may have been the oldest, holding room for itself.
        self.shared.grant(&mut s);
    }
}

impl Memory {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                state: Mutex::default(),
                reserved: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            }),
        }
    }

    /// The whole budget.
    pub fn capacity(&self) -> u64 {
        self.shared.capacity
    }

    /// The bytes reserved now.
    pub fn reserved(&self) -> u64 {
        self.shared.reserved.load(Ordering::SeqCst)
    }

    /// The requests waiting for memory now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiters.len()
    }

    /// Reserves `bytes`, waiting until `deadline` for them to fit.
    pub async fn reserve(&self, bytes: u64, deadline: Instant) -> Result<Reservation, Refusal> {
        let shared = &self.shared;
        if bytes > shared.capacity {
            return Err(Refusal::NeverFits);
        }
        let (grant, id) = {
            let mut s = shared.lock();
            let held = shared.held_for_oldest(&s, Instant::now());
            // Arrivals go behind the waiters unless they fit: no head-of-line blocking.
            if shared.admits(&s, bytes, held) {
                let used = s.used + bytes;
                shared.set_used(&mut s, used);
                return Ok(Reservation {
                    shared: shared.clone(),
                    bytes,
                });
            }
            let (tx, rx) = oneshot::channel();
            let id = s.next_id;
            s.next_id += 1;
            s.waiters.push_back(Waiter {
                id,
                bytes,
                since: Instant::now(),
                grant: tx,
            });
            (rx, id)
        };
        let mut waiting = Waiting {
            shared: shared.clone(),
            id,
            bytes,
            done: false,
        };
        match timeout_at(deadline, grant).await {
            Ok(Ok(())) => {
                waiting.done = true;
                Ok(Reservation {
                    shared: shared.clone(),
                    bytes,
                })
            }
            // The sender is only dropped unsent when the waiter is taken out of the queue
            // by its own guard, which cannot happen while this future runs.
            Ok(Err(_)) | Err(_) => Err(Refusal::TimedOut),
        }
    }
}

/// Bytes a request holds while it is served.
pub mod estimate {
    /// Bytes per decoded element: every tensor is decoded as float64 (or int64), and float32
    /// requests hold less.
    pub const ELEMENT: u64 = 8;

    /// What a loss holds per decoded element while it computes, in units of [`ELEMENT`]: its
    /// inputs, outputs, gradients and scratch, and the response as written (a float64 in JSON
    /// text is up to 24 bytes), with the options that hold the most (`grad: true`,
    /// `reduction: "none"`, JSON output). Measured by `bench/memory_factors.py` (the peak
    /// resident size of a fresh release server over one request of 1M to 4M elements, less
    /// the idle server and the body) and rounded up: element-wise losses 5.4 to 5.5, row-wise
    /// ones 6.8 (`cross_entropy`) to 9.6 (`kl_div`), the rest 4.0 (a batch) to 8.5 (cosine
    /// embedding) and 12.8 (a custom expression of eight operations).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Family {
        /// Element-wise losses (`mse_loss`, `l1_loss`, `huber_loss`, BCE, ...): an output and
        /// a gradient per input element.
        Elementwise,
        /// Row-wise losses over classes (`cross_entropy`, `nll_loss`, the margin losses,
        /// `kl_div`): a row of scratch per class row besides the outputs.
        Rowwise,
        /// Everything else: CTC's alignment tables, the triplet and cosine losses, custom
        /// expressions (their intermediates), batches (any of these).
        Heavy,
    }

    impl Family {
        /// The working set per decoded element, in units of [`ELEMENT`].
        pub fn factor(self) -> u64 {
            match self {
                Family::Elementwise => 7,
                Family::Rowwise => 11,
                Family::Heavy => 14,
            }
        }

        /// The family of the loss `name`.
        pub fn of(name: &str) -> Self {
            match name {
                "l1_loss"
                | "mse_loss"
                | "smooth_l1_loss"
                | "huber_loss"
                | "binary_cross_entropy"
                | "binary_cross_entropy_with_logits"
                | "soft_margin_loss"
                | "poisson_nll_loss"
                | "gaussian_nll_loss"
                | "hinge_embedding_loss"
                | "margin_ranking_loss" => Family::Elementwise,
                "cross_entropy"
                | "nll_loss"
                | "kl_div"
                | "multi_margin_loss"
                | "multilabel_margin_loss"
                | "multilabel_soft_margin_loss" => Family::Rowwise,
                _ => Family::Heavy,
            }
        }

        /// The body plus the working set of `elements` decoded elements.
        pub fn bytes(self, body: u64, elements: u64) -> u64 {
            body.saturating_add(elements.saturating_mul(ELEMENT * self.factor()))
        }
    }

    /// The most elements a body of `len` bytes can hold: a JSON number takes at least two
    /// bytes with its separator, a base64 element at least five (float32); at most `limit`.
    pub fn max_elements(len: u64, limit: u64) -> u64 {
        (len / 2 + 1).min(limit)
    }

    /// The most elements `body` can decode to, counted: every JSON number is followed by
    /// `,`, `]`, `}` or the end, and base64 strings hold at most 3/16 of an element per
    /// byte (float32). At most `limit`.
    pub fn count_elements(body: &[u8], limit: u64) -> u64 {
        let mut count = ElementCount::default();
        count.add(body);
        count.total(limit)
    }

    /// [`count_elements`] of a body read in pieces, each counted as it arrives (while it is
    /// still in cache: counting the whole body afterwards read 20–27 MB from memory twice).
    #[derive(Debug, Default)]
    pub struct ElementCount {
        separators: u64,
        string_bytes: u64,
        /// Where the string being read started, if one is open.
        open: Option<u64>,
        /// Bytes counted so far.
        len: u64,
        /// Backslashes at the end of what has been counted (they may escape a quote next).
        backslashes: u64,
    }

    impl ElementCount {
        /// Counts the next piece of the body.
        pub fn add(&mut self, piece: &[u8]) {
            self.separators += separators(piece);
            for at in memchr::memchr_iter(b'"', piece) {
                let mut run = piece[..at]
                    .iter()
                    .rev()
                    .take_while(|&&b| b == b'\\')
                    .count() as u64;
                if run == at as u64 {
                    run += self.backslashes;
                }
                if run % 2 == 1 {
                    continue; // an escaped quote
                }
                let pos = self.len + at as u64;
                match self.open.take() {
                    None => self.open = Some(pos),
                    Some(start) => self.string_bytes += pos - start - 1,
                }
            }
            let trail = piece.iter().rev().take_while(|&&b| b == b'\\').count() as u64;
            self.backslashes = if trail == piece.len() as u64 {
                self.backslashes + trail
            } else {
                trail
            };
            self.len += piece.len() as u64;
        }

        /// Counts a string of `len` bytes whose content is not in what [`ElementCount::add`]
        /// was given (a base64 text decoded as it arrived: the body kept `""` in its place).
        pub fn add_string(&mut self, len: u64) {
            self.string_bytes += len;
        }

        /// The most elements the body counted so far can decode to, at most `limit`.
        pub fn total(&self, limit: u64) -> u64 {
            let strings = self.string_bytes + self.open.map_or(0, |start| self.len - start);
            (self.separators + 1)
                .saturating_add(strings * 3 / 16)
                .min(limit)
        }
    }

    /// The `,`, `]` and `}` in `body`, in one pass with byte-wide counters the compiler
    /// vectorizes (as long as the test stays branch-free: `matches!` is not): three
    /// `filter().count()` passes widened every byte to a 64-bit lane and were a third of a
    /// 26 MB JSON request's CPU time, two thirds of a base64 one's.
    pub(super) fn separators(body: &[u8]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the features `separators_avx2` is compiled for.
            return unsafe { separators_avx2(body) };
        }
        separators_in_lanes(body)
    }

    /// [`separators`] compiled for AVX2: the same lanes, 32 bytes at a step instead of 16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn separators_avx2(body: &[u8]) -> u64 {
        separators_in_lanes(body)
    }

    /// The count of [`separators`], in lanes the compiler vectorizes for the features of its
    /// caller.
    #[inline(always)]
    pub(super) fn separators_in_lanes(body: &[u8]) -> u64 {
        const LANES: usize = 32;
        // `]` and `}` differ in one bit only.
        let is_separator = |b: u8| u8::from(b == b',') | u8::from(b | 0x20 == b'}');
        // A lane counts at most one per block: 255 blocks fill it at the most. The last,
        // shorter chunk goes through the lanes too (a small body is nothing but that chunk:
        // byte by byte it cost 6.6 instructions a byte, a fifth of a 3.5 kB request).
        let mut total = 0u64;
        for chunk in body.chunks(LANES * 255) {
            let mut lanes = [0u8; LANES];
            let mut blocks = chunk.chunks_exact(LANES);
            for block in &mut blocks {
                for (lane, &b) in lanes.iter_mut().zip(block) {
                    *lane += is_separator(b);
                }
            }
            total += lanes.iter().map(|&n| u64::from(n)).sum::<u64>();
            let rest = blocks.remainder().iter();
            total += rest.map(|&b| u64::from(is_separator(b))).sum::<u64>();
        }
        total
    }
}

/// The budget's refusal as a problem response, marked for the metrics.
pub fn refusal(r: Refusal, bytes: u64, capacity: u64) -> Response {
    mark(refusal_error(r, bytes, capacity).into_response())
}

/// The budget's refusal of a request needing about `bytes`: 413 `payload_too_large` when it
/// could never fit, 503 `overloaded` when the budget stayed full until its deadline.
pub fn refusal_error(r: Refusal, bytes: u64, capacity: u64) -> ApiError {
    match r {
        Refusal::NeverFits => ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "the request needs about {} MiB while it is served, more than the memory \
                 budget of {} MiB (--max-memory)",
                bytes.div_ceil(1 << 20),
                capacity >> 20
            ),
        ),
        Refusal::TimedOut => ApiError::new(
            Code::Overloaded,
            format!(
                "the server's memory budget stayed too full for this request (about {} MiB) \
                 until its deadline; retry later",
                bytes.div_ceil(1 << 20)
            ),
        ),
    }
}

/// Marks a response as refused for memory.
pub fn mark(mut res: Response) -> Response {
    res.extensions_mut().insert(Refused);
    res
}

/// Reads and discards what is left of a refused body in the background, up to `max_bytes`
/// and `timeout`, so that a client still sending it reads the answer instead of a connection
/// reset (nginx's lingering close does the same). The connection closes after.
pub fn discard(body: Body, max_bytes: u64, timeout: Duration) {
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        let _ = tokio::time::timeout(timeout, async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                    if seen > max_bytes {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// The declared length of a request's body, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// How a body's reservation grows while it is read past what was reserved for it (a chunked
/// body, or one that decompresses to more than its declared length).
#[derive(Debug)]
pub struct Growth<'a> {
    held: &'a mut Reservation,
    family: estimate::Family,
    max_elements: u64,
    deadline: Instant,
    /// The body length the reservation covers.
    covered: u64,
    /// Why the reservation could not grow, if it could not.
    pub refused: Option<(Refusal, u64)>,
    /// The body's elements, counted piece by piece as it is read.
    pub count: estimate::ElementCount,
}

/// Bodies read past their reservation grow it by at least this much at a time.
const GROWTH_STEP: u64 = 1 << 20;

impl Growth<'_> {
    /// Makes sure the reservation covers a body of `len` bytes, waiting as
    /// [`Memory::reserve`] does.
    pub async fn ensure(&mut self, len: u64) -> Result<(), ApiError> {
        if len <= self.covered {
            return Ok(());
        }
        let capacity = self.held.shared.capacity;
        let target = len
            .max(self.covered.saturating_mul(2))
            .max(len + GROWTH_STEP);
        let need = self
            .family
            .bytes(target, estimate::max_elements(target, self.max_elements))
            .min(capacity);
        if len > capacity {
            self.refused = Some((Refusal::NeverFits, len));
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                "over the memory budget",
            ));
        }
        if need > self.held.bytes
            && let Err(r) = self.held.grow(need - self.held.bytes, self.deadline).await
        {
            self.refused = Some((r, need));
            return Err(ApiError::new(Code::Overloaded, "over the memory budget"));
        }
        self.covered = target;
        Ok(())
    }
}

/// Reserves memory for a request's body and what it decodes to, then reads the body
/// (`read_body`'s limits and timeout apply). On success the reservation has been shrunk to
/// the body plus the working set of the elements counted in it.
pub async fn read_admitted(
    state: &crate::AppState,
    headers: &HeaderMap,
    body: Body,
    family: estimate::Family,
    deadline: Instant,
) -> Result<(axum::body::Bytes, Reservation), Response> {
    let (read, held) = read_admitted_streamed(state, headers, body, family, deadline, None).await?;
    Ok((axum::body::Bytes::from(read.whole()), held))
}

/// [`read_admitted`], with the base64 tensors of a large body decoded as it arrives when
/// `stream` gives the request's element budget ([`crate::routes::stream`]). The reservation
/// is the same as for the body read whole: the decoded tensors take less than their text.
pub async fn read_admitted_streamed(
    state: &crate::AppState,
    headers: &HeaderMap,
    body: Body,
    family: estimate::Family,
    deadline: Instant,
    stream: Option<crate::wire::Budget>,
) -> Result<(crate::routes::stream::Read, Reservation), Response> {
    let config = &state.config;
    let memory = &state.memory;
    let max_elements = config.max_elements as u64;
    let declared = declared_length(headers);
    let first = match declared {
        // Over the body limit: read_body answers its own 413 at once.
        Some(n) if n > config.max_body_bytes as u64 => 0,
        Some(n) if n > memory.capacity() => {
            return Err(refusal(Refusal::NeverFits, n, memory.capacity()));
        }
        Some(n) => family
            .bytes(n, estimate::max_elements(n, max_elements))
            .min(memory.capacity()),
        None => family
            .bytes(
                GROWTH_STEP,
                estimate::max_elements(GROWTH_STEP, max_elements),
            )
            .min(memory.capacity()),
    };
    let mut held = match memory.reserve(first, deadline).await {
        Ok(r) => r,
        Err(r) => return Err(refusal(r, first, memory.capacity())),
    };
    let mut growth = Growth {
        held: &mut held,
        family,
        max_elements,
        deadline,
        covered: declared.unwrap_or(GROWTH_STEP),
        refused: None,
        count: estimate::ElementCount::default(),
    };
    let read = crate::routes::read_body_streamed(
        headers,
        body,
        config.max_body_bytes,
        config.body_timeout(),
        Some(&mut growth),
        stream,
    )
    .await;
    let (refused, count) = (growth.refused, growth.count);
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            return Err(match refused {
                Some((r, need)) => refusal(r, need, memory.capacity()),
                None => e.into_response(),
            });
        }
    };
    // The elements the body can decode to, counted as it was read.
    let counted = count.total(max_elements);
    let need = family.bytes(read.len() as u64, counted);
    if need > memory.capacity() {
        return Err(refusal(Refusal::NeverFits, need, memory.capacity()));
    }
    held.shrink_to(need);
    Ok((read, held))
}

/// A response body that holds its request's reservation until it has been sent.
pub struct HeldBody {
    body: Body,
    _held: Reservation,
}

impl HeldBody {
    /// `res` with `held` given back only once its body has been sent (or the connection is
    /// gone), shrunk to the body's length.
    pub fn wrap(res: Response, mut held: Reservation) -> Response {
        let len = axum::body::HttpBody::size_hint(res.body())
            .exact()
            .unwrap_or(held.bytes());
        held.shrink_to(len);
        res.map(|body| Body::new(HeldBody { body, _held: held }))
    }
}

impl axum::body::HttpBody for HeldBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that, dropped before its end (the request was refused, or failed before
/// reading it all), has its rest read and discarded in the background up to a bound, so that
/// a client still sending it gets to read the answer instead of a connection reset. The
/// bound: `max_bytes` more bytes, within `timeout`; past it the connection closes.
pub struct DrainOnDrop {
    body: Option<Body>,
    max_bytes: u64,
    timeout: Duration,
}

impl DrainOnDrop {
    /// Wraps `body`.
    pub fn new(body: Body, max_bytes: u64, timeout: Duration) -> Self {
        Self {
            body: Some(body),
            max_bytes,
            timeout,
        }
    }
}

impl axum::body::HttpBody for DrainOnDrop {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        // A body declared larger than the bound is not waited for: the connection closes.
        let past_bound = body.size_hint().lower() > self.max_bytes;
        if body.is_end_stream() || past_bound || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        discard(body, self.max_bytes, self.timeout);
    }
}

// The allocator of the `lossd` binary (mimalloc), linked in for `mi_collect`.
use libmimalloc_sys as _;

unsafe extern "C" {
    /// mimalloc: frees what the calling thread's heap holds unused and, with `force`, returns
    /// every arena's free pages to the OS now rather than on a later allocation.
    fn mi_collect(force: bool);
    /// mimalloc: sets an option (`mi_option_t`, the index in mimalloc.h's `mi_option_e`).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e`: how long after a free mimalloc gives
/// the memory back to the OS (1000 ms by default).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// The purge delay [`purge_when_idle`] sets. mimalloc purges every range freed since its last
/// purge once the first one's delay has passed, so under a steady load of large requests it
/// kept decommitting the tensors just freed, and the next request faulted them in again (a
/// 16.8 MB binary request: some 60 page faults and 1.5 ms of zeroing pages, a quarter of its
/// CPU time). Memory stays for reuse this long; when the server goes idle,
/// [`purge_when_idle`] gives it back sooner.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Reservations at or under this are "idle" for [`purge_when_idle`] (a few small requests).
const IDLE: u64 = 16 << 20;

/// After a burst, once reservations have stayed at [`IDLE`] or under for a whole second, gives
/// the allocator's free memory back to the OS. mimalloc purges freed pages only when it next
/// allocates, so a server gone quiet after a burst would keep its peak resident size; checked
/// every second. Under steady load of large requests the reservations fall to nothing between
/// two requests, but not for a second: purging at such a moment made the next requests fault
/// their pages in afresh (gRPC, 16.8 MB requests from two clients: about 150 page faults and
/// 1 ms of system time per request). Under load, mimalloc's own purge is pushed out to
/// [`PURGE_DELAY_MS`] (unless `MIMALLOC_PURGE_DELAY` says otherwise) so that large requests
/// reuse the pages the ones before them freed.
pub async fn purge_when_idle(memory: Memory) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set takes no pointers; the option index and value are in range.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether large reservations were made since the memory was last given back.
    let mut burst = false;
    loop {
        tick.tick().await;
        // The largest reservation since the last tick (the mark starts again from now).
        let peak = memory.shared.peak.swap(memory.reserved(), Ordering::SeqCst);
        if peak > IDLE {
            // Large requests within the last second: their memory is for the next ones. (At
            // the first tick that found the reservations low, a slow client's requests had
            // their pages given back between one request and the next, every second.)
            burst = true;
        } else if burst {
            burst = false;
            let _ = tokio::task::spawn_blocking(purge).await;
        }
    }
}

/// Hands the calling thread's heap back the blocks other threads have freed, before it
/// allocates a large buffer. A request's tensors are allocated on the connection's task as its
/// body arrives (streamed base64, binary tensor data) and freed on a compute worker; mimalloc
/// gives such blocks back to the allocating thread's heap only when that heap next collects,
/// so until then each new tensor took fresh pages from the OS and faulted every one of them
/// in: a quarter of the CPU time of a 21 MB base64 request (perf, `clear_page_erms`).
pub fn reclaim_freed() {
    // SAFETY: as in `purge`; without `force` it only collects this thread's heap.
    unsafe { mi_collect(false) }
}

/// Returns the allocator's free memory to the OS.
pub fn purge() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(true) }
}

/// The budget's default: [`CGROUP_SHARE`] of the container's memory limit when there is one,
/// else [`DEFAULT_BUDGET`].
pub fn default_budget() -> u64 {
    match cgroup_limit() {
        Some(limit) => (limit as f64 * CGROUP_SHARE) as u64,
        None => DEFAULT_BUDGET,
    }
}

/// The memory limit of this process's cgroup: v2's `memory.max`, else v1's
/// `memory.limit_in_bytes`; none when unset (`max`, or v1's huge "unlimited" value).
pub fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in own.lines() {
        // `hierarchy-id:controllers:path`; v2 is `0::path`.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
            candidates.push("/sys/fs/cgroup/memory.max".to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
            candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string());
        }
    }
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| parse_limit(&text))
}

/// A cgroup memory limit's text: bytes, or `max`; v1 says "unlimited" with a value near
/// 2^63 rounded to pages, so anything from 2^60 up is no limit.
pub fn parse_limit(text: &str) -> Option<u64> {
    let v = text.trim().parse::<u64>().ok()?;
    (v > 0 && v < 1 << 60).then_some(v)
}

/// A size in bytes: a number with an optional `KiB`, `MiB`, `GiB` or `TiB` suffix (`K`, `M`,
/// `G`, `T` and `KB`-style spellings mean the same powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{s}` is not a size (bytes, or KiB, MiB, GiB)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or KiB, MiB, GiB)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < 2f64.powi(63)) {
        return Err(format!("`{s}` is not a positive size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    unsafe extern "C" {
        /// mimalloc: an option's value.
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    #[test]
    fn the_purge_delay_is_mimallocs_option() {
        // SAFETY: mi_option_get takes no pointers and reads an option in range.
        let delay = unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() && delay != super::PURGE_DELAY_MS {
            assert_eq!(
                delay, 1000,
                "mimalloc 3's default: the option's index is right"
            );
        }
    }

    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 apples").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn cgroup_limits_parse_and_unlimited_is_none() {
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn counted_elements_bound_every_encoding() {
        let nested = br#"{"input": [[1, 2.5], [3, 4]], "target": [[0,0],[0,0]], "beta": 1}"#;
        assert!(estimate::count_elements(nested, u64::MAX) >= 9);
        // 16 float32 in base64 (64 bytes, 88 characters).
        let b64 = format!(
            r#"{{"input": {{"shape": [16], "dtype": "float32", "base64": "{}"}}}}"#,
            "A".repeat(86) + "=="
        );
        assert!(estimate::count_elements(b64.as_bytes(), u64::MAX) >= 16);
        assert_eq!(estimate::count_elements(nested, 5), 5);
        assert!(estimate::max_elements(nested.len() as u64, u64::MAX) >= 9);
    }

    #[test]
    fn a_body_counted_in_pieces_counts_as_the_whole() {
        // Strings with escaped quotes and runs of backslashes, split at every position.
        let body = br#"{"a": "x\"y\\", "b": [1, 2, {"c": "\\\"q"}], "d": "open"#;
        let whole = estimate::count_elements(body, u64::MAX);
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let mut count = estimate::ElementCount::default();
                count.add(&body[..cut]);
                count.add(&body[cut..second]);
                count.add(&body[second..]);
                assert_eq!(count.total(u64::MAX), whole, "{cut} {second}");
            }
        }
        // One byte at a time.
        let mut count = estimate::ElementCount::default();
        body.iter().for_each(|b| count.add(std::slice::from_ref(b)));
        assert_eq!(count.total(u64::MAX), whole);
    }

    #[test]
    fn separators_are_counted_across_the_counters_blocks() {
        // Lengths around the 8160-byte blocks and 32-byte lanes, separators dense and sparse.
        let mut s = 1u64;
        for len in [0, 1, 31, 32, 33, 8159, 8160, 8161, 16320 + 77, 100_003] {
            for every in [1, 3, 50] {
                let body: Vec<u8> = (0..len)
                    .map(|i| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                        if i % every == 0 {
                            b",]}"[(s >> 62) as usize % 3]
                        } else {
                            b"0[{\"x"[(s >> 61) as usize % 5]
                        }
                    })
                    .collect();
                let naive = body.iter().filter(|&&b| b",]}".contains(&b)).count() as u64;
                assert_eq!(estimate::separators(&body), naive, "{len} {every}");
                // The portable lanes too, where the CPU would take its AVX2 build.
                let portable = estimate::separators_in_lanes(&body);
                assert_eq!(portable, naive, "{len} {every}");
            }
        }
    }

    #[tokio::test]
    async fn reservations_are_given_back_when_dropped() {
        let m = Memory::new(100);
        let a = m.reserve(60, soon()).await.unwrap();
        let mut b = m.reserve(40, soon()).await.unwrap();
        assert_eq!(m.reserved(), 100);
        b.shrink_to(10);
        assert_eq!(m.reserved(), 70);
        drop(a);
        drop(b);
        assert_eq!(m.reserved(), 0);
        assert_eq!(
            m.reserve(101, soon()).await.unwrap_err(),
            Refusal::NeverFits
        );
    }

    #[tokio::test]
    async fn a_waiter_times_out_and_leaves_the_queue() {
        let m = Memory::new(100);
        let _a = m.reserve(90, soon()).await.unwrap();
        let e = m
            .reserve(20, Instant::now() + Duration::from_millis(30))
            .await
            .unwrap_err();
        assert_eq!(e, Refusal::TimedOut);
        assert_eq!(m.waiting(), 0);
        assert_eq!(m.reserved(), 90);
    }

    #[tokio::test]
    async fn a_waiter_is_admitted_when_memory_comes_back() {
        let m = Memory::new(100);
        let a = m.reserve(90, soon()).await.unwrap();
        let m2 = m.clone();
        let w = tokio::spawn(async move { m2.reserve(50, soon()).await.map(|r| r.bytes()) });
        while m.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(a);
        assert_eq!(w.await.unwrap(), Ok(50));
        assert_eq!(m.reserved(), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_holds_nothing() {
        let m = Memory::new(100);
        let a = m.reserve(90, soon()).await.unwrap();
        let m2 = m.clone();
        let w = tokio::spawn(async move { m2.reserve(50, soon()).await.map(|r| r.bytes()) });
        while m.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        w.abort();
        let _ = w.await;
        assert_eq!(m.waiting(), 0);
        drop(a);
        assert_eq!(m.reserved(), 0);
    }

    #[tokio::test]
    async fn smaller_requests_pass_a_waiting_large_one_until_it_has_waited_its_patience() {
        let m = Memory::new(1 << 20);
        let held = m.reserve(600 << 10, soon()).await.unwrap();
        let m2 = m.clone();
        let large = tokio::spawn(async move { m2.reserve(500 << 10, soon()).await.is_ok() });
        while m.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // A medium one that fits passes the large waiter.
        let medium = m.reserve(300 << 10, soon()).await.unwrap();
        drop(medium);
        tokio::time::sleep(PATIENCE).await;
        // Now a medium one must leave the large waiter's room free: it waits.
        let m3 = m.clone();
        let late = tokio::spawn(async move { m3.reserve(300 << 10, soon()).await.is_ok() });
        while m.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        // A small one still passes.
        drop(m.reserve(1 << 10, soon()).await.unwrap());
        drop(held);
        assert!(large.await.unwrap());
        assert!(late.await.unwrap());
        assert_eq!(m.reserved(), 0);
    }
}
