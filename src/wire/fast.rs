//! The fast path for tensors at the top level of a request: one pass over the bytes.
//!
//! serde_json reads a number array through one visitor call per element and parses floats
//! with its own exact but slow algorithm. For the common large request (a few tensors at the
//! top level of the body) [`prepare`] walks the body itself: each top-level value that is a
//! well-formed tensor (rectangular nested arrays of numbers, `{shape, data}` or
//! `{shape, dtype, base64}`) is decoded here, with exact float parsing (Clinger's fast path
//! for the common short numbers, `lexical-core` for the rest: correctly rounded like
//! serde_json's `float_roundtrip`), and replaced in a copy of the body
//! by a short placeholder string. serde then decodes that small copy as usual; a tensor field
//! meeting a placeholder takes the decoded tensor ([`take`]).
//!
//! The fast path only ever has to succeed: a tensor it does not fully understand (empty
//! arrays, non-finite strings, a number serde_json refuses, anything ragged, escapes in its
//! keys, over the element budget) is left in the copy for serde to decode or refuse, and if
//! the copy fails to decode at all the caller decodes the original body the slow way, so
//! every error is the one the slow path gives. What it accepts, it decodes to exactly what
//! the slow path gives (same shape, same dtype rule: integers stay `i64` until the first
//! number that is not one, same rounding); the tests compare the two.
//!
//! A large body (1 MiB and up) whose tensors are top-level nested arrays has them decoded at
//! once, one per core ([`parallel`]); it falls back to the sequential walk for anything
//! else, and gives exactly what that walk gives (the tests run every case both ways).
//!
//! Placeholders start with a NUL character, which the walk refuses to find escaped anywhere
//! in the body, so a client cannot forge one.

use std::cell::RefCell;

use super::de::{
    Budget, Buf, Data, Dtype, FIRST_ROOM, Form, Tensor, check_base64_length, decode_base64,
};

#[cfg(target_arch = "x86_64")]
mod short;
#[cfg(target_arch = "x86_64")]
mod span;

/// What a placeholder string starts with (after JSON unescaping); the slot index follows.
const MARK: &str = "\0lossd:";
/// Placeholders per request at the most (each adds a few bytes to the copy).
const MAX_SLOTS: usize = 16;
/// The deepest nesting [`skip_value`] follows.
const MAX_DEPTH: usize = 128;

thread_local! {
    static SLOTS: RefCell<Option<Vec<Option<Tensor>>>> = const { RefCell::new(None) };
}

/// A body with its top-level tensors decoded and replaced by placeholders.
pub struct Prepared {
    /// The body with placeholders.
    pub body: Vec<u8>,
    /// The decoded tensors, in placeholder order.
    pub tensors: Vec<Tensor>,
}

/// Runs `f` (a decode of a prepared body) with its tensors available to [`take`]; `None`
/// when `f` left a tensor untaken (then the decode did not mean what the body meant).
pub fn with_tensors<R>(tensors: Vec<Tensor>, f: impl FnOnce() -> R) -> Option<R> {
    SLOTS.with(|s| *s.borrow_mut() = Some(tensors.into_iter().map(Some).collect()));
    let r = f();
    let all_taken = SLOTS.with(|s| {
        s.borrow_mut()
            .take()
            .is_some_and(|v| v.iter().all(Option::is_none))
    });
    all_taken.then_some(r)
}

/// The tensor a placeholder stands for, during [`with_tensors`].
pub fn take(s: &str) -> Option<Tensor> {
    let i: usize = s.strip_prefix(MARK)?.parse().ok()?;
    SLOTS.with(|slots| slots.borrow_mut().as_mut()?.get_mut(i)?.take())
}

/// Decodes the top-level tensors of `body` under the current [`Budget`] (spending their
/// elements) and returns the body with placeholders; `None` when there is nothing to gain or
/// the body is not a JSON object this walk follows (then spend nothing: decode `body`).
pub fn prepare(body: &[u8]) -> Option<Prepared> {
    prepare_with(body, PARALLEL_FROM)
}

/// Bodies of at least this many bytes with two or more top-level arrays have those arrays
/// decoded at once on rayon's pool (one per core), the rest as [`sequential`] does it.
const PARALLEL_FROM: usize = 1 << 20;

/// [`prepare`], with the parallel path from `parallel_from` bytes (the tests force it).
fn prepare_with(body: &[u8], parallel_from: usize) -> Option<Prepared> {
    if body.len() >= parallel_from
        && let Some(done) = parallel(body)
    {
        return done;
    }
    sequential(body)
}

/// Elements left to the parallel walks of one body, taken in blocks.
struct Reservoir {
    left: std::sync::atomic::AtomicUsize,
    /// Whether a walk was refused elements (it failed for want of budget).
    starved: std::sync::atomic::AtomicBool,
}

impl Reservoir {
    /// Elements per block.
    const BLOCK: usize = 1 << 16;

    /// Takes up to a block (at least one element); `None` when none are left. `held` is what
    /// the walk holds already (a walk's first block is small, for small arrays).
    fn new(left: usize) -> Self {
        Self {
            left: left.into(),
            starved: false.into(),
        }
    }

    fn take(&self, held: usize) -> Option<usize> {
        use std::sync::atomic::Ordering::Relaxed;
        let want = Self::BLOCK.min(held.max(1024));
        match self.left.fetch_update(Relaxed, Relaxed, |left| {
            (left > 0).then(|| left - left.min(want))
        }) {
            Ok(got) => Some(got.min(want)),
            Err(_) => {
                self.starved.store(true, Relaxed);
                None
            }
        }
    }

    /// Returns elements taken and not used.
    fn give_back(&self, n: usize) {
        self.left.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The parallel path of [`prepare_with`]: `None` when it does not apply (then the sequential
/// walk decides everything), else what the sequential walk would give. It applies to a body
/// whose top-level values are two or more arrays (at most [`MAX_SLOTS`]) and values that are
/// not tensors; it finds each array's end by its brackets (no strings inside: a numeric
/// tensor has none), decodes the arrays in parallel drawing on one shared element budget,
/// then takes them in body order as the sequential walk would. Anything unusual (a tensor
/// object, a string inside an array, the budget running out) sends the body to the
/// sequential walk, so errors and budget accounting stay exactly the sequential ones; the
/// walks together never hold more elements than the budget has left. The walks run on
/// rayon's threads and touch none of the thread-local state (budget, placeholder slots),
/// which stays on the calling thread.
fn parallel(b: &[u8]) -> Option<Option<Prepared>> {
    use rayon::prelude::*;
    let mut arrays: Vec<(usize, usize, usize)> = Vec::new();
    members(b, |p| match at(b, p) {
        b'[' if arrays.len() < MAX_SLOTS => {
            let (end, commas) = span(b, p)?;
            arrays.push((p, end, commas));
            Some(end)
        }
        b'[' | b'{' => None,
        _ => skip_value(b, p),
    })?;
    if arrays.len() < 2 {
        return None;
    }
    let (max_rank, left) = (Budget::max_rank(), Budget::left());
    let reservoir = Reservoir::new(left);
    let walks: Vec<_> = arrays
        .par_iter()
        .map(|&(start, end, commas)| {
            let capacity = (commas + 1).min(left);
            numbers(b, start, max_rank, left, capacity, Some(&reservoir)).filter(|r| r.3 == end)
        })
        .collect();
    // Out of budget: some walk may have failed for want of elements another held.
    if reservoir.starved.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let mut out = Vec::new();
    let mut copied = 0;
    let mut tensors = Vec::new();
    for (&(start, end, _), walk) in arrays.iter().zip(walks) {
        let Some((shape, buf, count, _)) = walk else {
            continue;
        };
        if count > Budget::left() {
            return None;
        }
        Budget::spend(count);
        out.extend_from_slice(&b[copied..start]);
        placeholder(&mut out, tensors.len());
        tensors.push(Tensor {
            shape,
            data: buf.into_data(),
            form: Form::Nested,
        });
        copied = end;
    }
    if tensors.is_empty() {
        return Some(None);
    }
    out.extend_from_slice(&b[copied..]);
    Some(Some(Prepared { body: out, tensors }))
}

/// The position after the array at `p` by its brackets alone and the commas in it; `None`
/// when a string (or an unbalanced bracket) is met first. In one pass where the CPU has
/// AVX2 ([`span::span`]).
fn span(b: &[u8], p: usize) -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    if span::supported() {
        // SAFETY: the CPU has the features `span::span` is compiled for (checked above).
        return unsafe { span::span(b, p) };
    }
    let end = array_end(b, p)?;
    Some((end, commas(&b[p..end])))
}

/// The position after the array at `p` by its brackets alone; `None` when a string (or an
/// unbalanced bracket) is met first.
fn array_end(b: &[u8], p: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut q = p;
    loop {
        q += memchr::memchr3(b'[', b']', b'"', b.get(q..)?)?;
        match b[q] {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(q + 1);
                }
            }
            _ => return None,
        }
        q += 1;
    }
}

/// Arrays starting this many bytes or more before the body's end have their buffer sized by
/// [`commas`] first (a pass that costs less than growing the buffer, above a few thousand
/// numbers).
const LARGE: usize = 1 << 16;

/// The commas in `b`: 16 bytes at a step in SSE2 (part of x86-64's baseline). Left to the
/// compiler, the same count in byte lanes came out vectorized or byte by byte from one build
/// to the next, ten times apart (a fifth of a 1M-float request's CPU time).
fn commas(b: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64's baseline, so every x86-64 CPU has these instructions;
    // each load reads the 16 bytes of one `chunk` and needs no alignment.
    unsafe {
        use std::arch::x86_64::*;
        let (comma, zero) = (_mm_set1_epi8(b',' as i8), _mm_setzero_si128());
        let mut chunks = b.chunks_exact(16);
        let mut total = 0;
        loop {
            // Byte lanes count the commas (a match is -1, subtracted), 255 steps at the most.
            let (mut lanes, mut steps) = (zero, 0);
            for chunk in chunks.by_ref().take(255) {
                let v = _mm_loadu_si128(chunk.as_ptr().cast());
                lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(v, comma));
                steps += 1;
            }
            // The lanes' sums, one per half.
            let sums = _mm_sad_epu8(lanes, zero);
            let high = _mm_unpackhi_epi64(sums, sums);
            total += (_mm_cvtsi128_si64(sums) + _mm_cvtsi128_si64(high)) as usize;
            if steps < 255 {
                break;
            }
        }
        total + chunks.remainder().iter().filter(|&&c| c == b',').count()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        b.iter().filter(|&&c| c == b',').count()
    }
}

/// Appends the placeholder of slot `slot` (as JSON text: [`MARK`] with its NUL escaped).
fn placeholder(out: &mut Vec<u8>, slot: usize) {
    out.extend_from_slice(b"\"\\u0000lossd:");
    // The slot's digits, written without `format!` and its machinery.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = slot;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.push(b'"');
}

/// The room the copy of a body starts with: what a body's other members usually take (the
/// copy grows from there), and never more than the body.
const COPY_ROOM: usize = 256;

/// The sequential walk of [`prepare`].
fn sequential(body: &[u8]) -> Option<Prepared> {
    let b = body;
    let mut out = Vec::with_capacity(b.len().min(COPY_ROOM));
    let mut copied = 0;
    let mut tensors = Vec::new();
    members(b, |p| {
        let found = match at(b, p) {
            _ if tensors.len() == MAX_SLOTS => None,
            b'[' => nested(b, p),
            b'{' => object(b, p),
            _ => None,
        };
        match found {
            Some((t, end)) => {
                out.extend_from_slice(&b[copied..p]);
                placeholder(&mut out, tensors.len());
                tensors.push(t);
                copied = end;
                Some(end)
            }
            None => skip_value(b, p),
        }
    })?;
    if tensors.is_empty() {
        return None;
    }
    out.extend_from_slice(&b[copied..]);
    Some(Prepared { body: out, tensors })
}

/// Walks the members of the body's top-level object: `value` is called at the first byte of
/// each member's value and returns where that value ends (`None`: give up). `None` unless the
/// whole body is one object of that shape (keys plain strings, nothing after the `}` but
/// whitespace).
fn members(b: &[u8], mut value: impl FnMut(usize) -> Option<usize>) -> Option<()> {
    let mut p = ws(b, 0);
    if at(b, p) != b'{' {
        return None;
    }
    p = ws(b, p + 1);
    if at(b, p) != b'}' {
        loop {
            if at(b, p) != b'"' {
                return None;
            }
            p = ws(b, skip_string(b, p)?);
            if at(b, p) != b':' {
                return None;
            }
            p = ws(b, value(ws(b, p + 1))?);
            match at(b, p) {
                b',' => p = ws(b, p + 1),
                b'}' => break,
                _ => return None,
            }
        }
    }
    (ws(b, p + 1) == b.len()).then_some(())
}

/// The byte at `p`, or 0 past the end (0 is no JSON token's first byte).
#[inline(always)]
fn at(b: &[u8], p: usize) -> u8 {
    b.get(p).copied().unwrap_or(0)
}

/// Skips JSON whitespace.
#[inline(always)]
fn ws(b: &[u8], mut p: usize) -> usize {
    while matches!(at(b, p), b' ' | b'\n' | b'\r' | b'\t') {
        p += 1;
    }
    p
}

/// The string starting at the quote at `p`: the position after its closing quote. `None` for
/// an unterminated string or one holding an escaped NUL (which could forge a placeholder).
fn skip_string(b: &[u8], p: usize) -> Option<usize> {
    let mut p = p + 1;
    loop {
        p += memchr::memchr2(b'"', b'\\', b.get(p..)?)?;
        if b[p] == b'"' {
            return Some(p + 1);
        }
        if b.get(p + 1..p + 6) == Some(b"u0000") {
            return None;
        }
        p += 2;
    }
}

/// The raw text of the string at `p` when it has no escapes, and the position after it.
fn plain_string(b: &[u8], p: usize) -> Option<(&[u8], usize)> {
    if at(b, p) != b'"' {
        return None;
    }
    let end = p + 1 + memchr::memchr2(b'"', b'\\', b.get(p + 1..)?)?;
    (b[end] == b'"').then(|| (&b[p + 1..end], end + 1))
}

/// The string at `p` when its closing quote is `len` bytes after its opening one (its
/// content unchecked), and the position after it.
fn sized_string(b: &[u8], p: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = p.checked_add(len)?.checked_add(1)?;
    (at(b, p) == b'"' && at(b, end) == b'"').then(|| (&b[p + 1..end], end + 1))
}

/// The string at `p` up to the next quote, and the position after that quote; for base64
/// text, which the decode refuses if it holds a backslash (so an escaped quote cut short
/// does no harm).
fn string_to_quote(b: &[u8], p: usize) -> Option<(&[u8], usize)> {
    if at(b, p) != b'"' {
        return None;
    }
    let end = p + 1 + memchr::memchr(b'"', b.get(p + 1..)?)?;
    Some((&b[p + 1..end], end + 1))
}

/// The length of the base64 text of a tensor of `shape` and `dtype`.
fn base64_len(shape: &[usize], dtype: Dtype) -> Option<usize> {
    let bytes = product(shape)?.checked_mul(dtype.size())?;
    bytes.div_ceil(3).checked_mul(4)
}

/// Skips any JSON value at `p` (brackets matched, strings followed exactly; the rest is
/// serde's to check), returning the position after it.
fn skip_value(b: &[u8], mut p: usize) -> Option<usize> {
    let mut closers = Vec::new();
    loop {
        p = ws(b, p);
        match at(b, p) {
            b'"' => p = skip_string(b, p)?,
            b'[' | b'{' if closers.len() < MAX_DEPTH => {
                closers.push(if at(b, p) == b'[' { b']' } else { b'}' });
                p += 1;
                continue;
            }
            c @ (b']' | b'}') if closers.last() == Some(&c) => {
                closers.pop();
                p += 1;
            }
            c if c == b'-' || c.is_ascii_alphanumeric() => {
                while matches!(at(b, p), b'-' | b'+' | b'.') || at(b, p).is_ascii_alphanumeric() {
                    p += 1;
                }
            }
            _ => return None,
        }
        if closers.is_empty() {
            return Some(p);
        }
        p = ws(b, p);
        if matches!(at(b, p), b',' | b':') {
            p += 1;
        }
    }
}

/// A JSON number as serde_json reads it for our visitors.
enum Num {
    /// An integer that fits `i64`.
    Int(i64),
    /// Anything else (what serde_json hands over as `f64`, or a `u64` past `i64`).
    Float(f64),
}

/// The JSON number at `p` and the position after it; `None` for anything that is not a
/// number by JSON's grammar, or one serde_json refuses (out of range).
#[inline(always)]
fn number(b: &[u8], mut p: usize) -> Option<(Num, usize)> {
    let start = p;
    let neg = at(b, p) == b'-';
    p += usize::from(neg);
    let first = p;
    let mut sig = 0u64;
    // One loop for every integer part (no branch on a leading `0`, which half of a tensor's
    // numbers have and half not), JSON's rule checked after it.
    while let c @ b'0'..=b'9' = at(b, p) {
        sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        p += 1;
    }
    let int_digits = p - first;
    if int_digits == 0 || (int_digits > 1 && b[first] == b'0') {
        return None;
    }
    let float = matches!(at(b, p), b'.' | b'e' | b'E');
    if !float {
        if int_digits > 19 {
            return exact(b, start);
        }
        // Exact in u64. serde_json: u64 for a positive integer (our visitors keep it as i64
        // when it fits, else as f64); a negative one is i64 when it fits and not -0, else f64.
        let n = if !neg {
            match i64::try_from(sig) {
                Ok(i) => Num::Int(i),
                Err(_) => Num::Float(sig as f64),
            }
        } else {
            match (sig as i64).wrapping_neg() {
                i if i < 0 => Num::Int(i),
                _ => Num::Float(-(sig as f64)),
            }
        };
        return Some((n, p));
    }
    // The fraction's digits join the integer's in `sig`, eight at a time where they can.
    let mut fraction = 0;
    if at(b, p) == b'.' {
        p += 1;
        let from = p;
        while let Some(eight) = eight_digits(b, p) {
            sig = sig.wrapping_mul(100_000_000).wrapping_add(eight);
            p += 8;
        }
        while let c @ b'0'..=b'9' = at(b, p) {
            sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            p += 1;
        }
        fraction = p - from;
        // JSON wants a digit after the point.
        if fraction == 0 {
            return None;
        }
    }
    let mut exponent = 0i64;
    if matches!(at(b, p), b'e' | b'E') {
        p += 1;
        let negative = at(b, p) == b'-';
        p += usize::from(matches!(at(b, p), b'-' | b'+'));
        if !at(b, p).is_ascii_digit() {
            return None;
        }
        while let c @ b'0'..=b'9' = at(b, p) {
            // Far past any f64's range already; the exact parse below decides those.
            exponent = (exponent * 10 + i64::from(c - b'0')).min(1 << 20);
            p += 1;
        }
        if negative {
            exponent = -exponent;
        }
    }
    // Clinger's fast path: with at most 19 digits `sig` holds them exactly, and when it is at
    // most 2^53 and the power of ten at most 10^22 both are exact f64s, so one multiplication
    // or division rounds correctly. lexical-core has the same fast path, but it parses the
    // number again from its start, a byte at a time: numbers with 9 decimals took 20 ns each
    // that way, 12 ns here. Everything else goes to lexical's exact algorithms.
    let e = exponent - fraction as i64;
    if int_digits + fraction <= 19 && sig <= 1 << 53 && (-22..=22).contains(&e) {
        let m = sig as f64;
        let v = if e < 0 {
            m / POW10[e.unsigned_abs() as usize]
        } else {
            m * POW10[e as usize]
        };
        // The sign bit set without a branch: the sign of random data is a coin toss, and a
        // mispredicted branch here cost a quarter of the walk's time.
        let v = f64::from_bits(v.to_bits() | (u64::from(neg) << 63));
        return Some((Num::Float(v), p));
    }
    exact(b, start)
}

/// The exact powers of ten in f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The value of the eight ASCII digits at `p`, `None` unless all eight are digits.
#[inline(always)]
fn eight_digits(b: &[u8], p: usize) -> Option<u64> {
    let v = u64::from_le_bytes(b.get(p..p.checked_add(8)?)?.try_into().ok()?);
    // A byte is a digit when neither subtracting '0' nor adding 0x46 (past '9' gives 0x80)
    // sets its top bit.
    let d = v.wrapping_sub(0x3030_3030_3030_3030);
    if (v.wrapping_add(0x4646_4646_4646_4646) | d) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    // Pairs, then fours, then all eight, in place (the first digit is the lowest byte).
    let d = d.wrapping_mul(10).wrapping_add(d >> 8);
    let pairs = (d & 0x0000_00FF_0000_00FF).wrapping_mul(0x000F_4240_0000_0064);
    let fours = ((d >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(0x0000_2710_0000_0001);
    Some((pairs.wrapping_add(fours) >> 32) & 0xFFFF_FFFF)
}

/// The number at `start` parsed exactly (correctly rounded, as serde_json's
/// `float_roundtrip`) as a float, and the position after it. The parse goes as far as the
/// number does; what follows is the caller's to check.
#[cold]
fn exact(b: &[u8], start: usize) -> Option<(Num, usize)> {
    let (v, len): (f64, usize) = lexical_core::parse_partial(&b[start..]).ok()?;
    v.is_finite().then_some((Num::Float(v), start + len))
}

/// A rectangular nested array of numbers at `p` (at most the rank limit deep, at most the
/// elements the budget has left, no empty arrays): the tensor and the position after it.
/// Spends its elements.
fn nested(b: &[u8], p: usize) -> Option<(Tensor, usize)> {
    let left = Budget::left();
    // A large array's buffer is sized once, by its commas (a well-formed array of numbers
    // has one fewer than its numbers), instead of grown and copied as the walk goes.
    let capacity = if b.len() - p >= LARGE
        && let Some((_, commas)) = span(b, p)
    {
        (commas + 1).min(left)
    } else {
        0
    };
    let (shape, buf, count, end) = numbers(b, p, Budget::max_rank(), left, capacity, None)?;
    Budget::spend(count).then_some(())?;
    Some((
        Tensor {
            shape,
            data: buf.into_data(),
            form: Form::Nested,
        },
        end,
    ))
}

/// The walk of [`nested`]: shape, numbers, their count and the position after the array.
fn numbers(
    b: &[u8],
    p: usize,
    max_rank: usize,
    limit: usize,
    capacity: usize,
    shared: Option<&Reservoir>,
) -> Option<(Vec<usize>, Buf, usize, usize)> {
    let Some(shared) = shared else {
        let mut limit = limit;
        return walk(b, p, max_rank, &mut limit, capacity, None);
    };
    // With a shared reservoir (parallel decodes), elements are taken from it in blocks as
    // the count grows; whatever the walk holds and does not keep goes back, whether it
    // succeeds or fails.
    let mut held = 0;
    let r = walk(b, p, max_rank, &mut held, capacity, Some(shared));
    shared.give_back(held - r.as_ref().map_or(0, |r| r.2));
    r
}

/// The walk of [`numbers`]: `limit` elements at most, more taken from `shared` when given;
/// room for `capacity` of them from the start. Short floats go through [`short`] where the
/// CPU has its instructions.
fn walk(
    b: &[u8],
    p: usize,
    max_rank: usize,
    limit: &mut usize,
    capacity: usize,
    shared: Option<&Reservoir>,
) -> Option<(Vec<usize>, Buf, usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    if short::supported() {
        // SAFETY: the CPU has the features `walk_short` is compiled for (checked above).
        return unsafe { walk_short(b, p, max_rank, limit, capacity, shared) };
    }
    walk_with(b, p, max_rank, limit, capacity, shared, |_, p, _, _| {
        (0, p, true)
    })
}

/// [`walk_with`] compiled for [`short`]'s instructions, taking short floats there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2")]
fn walk_short(
    b: &[u8],
    p: usize,
    max_rank: usize,
    limit: &mut usize,
    capacity: usize,
    shared: Option<&Reservoir>,
) -> Option<(Vec<usize>, Buf, usize, usize)> {
    let mut tokens = short::Tokens::new();
    walk_with(b, p, max_rank, limit, capacity, shared, |b, p, out, max| {
        tokens.floats(b, p, out, max)
    })
}

/// The walk of [`walk`]. Once its numbers are floats, `short_floats` takes what it can of an
/// innermost array (as [`short::Tokens::floats`] does: how many, where to go on, whether a
/// number starts there); [`number`] takes the rest, one at a time.
#[inline(always)]
fn walk_with(
    b: &[u8],
    mut p: usize,
    max_rank: usize,
    limit: &mut usize,
    capacity: usize,
    shared: Option<&Reservoir>,
    mut short_floats: impl FnMut(&[u8], usize, &mut Vec<f64>, usize) -> (usize, usize, bool),
) -> Option<(Vec<usize>, Buf, usize, usize)> {
    const UNSET: usize = usize::MAX;
    let max_rank = max_rank.min(64);
    // Per depth: the size every array there must have (once one closed), and the count so
    // far in the open one.
    let mut sizes = [UNSET; 64];
    let mut counts = [0usize; 64];
    let mut open = 0usize;
    let mut rank = 0usize;
    let mut total = 0usize;
    // An array not sized by the caller starts with room for a short row (growing a buffer
    // from nothing took as many reallocations as doublings, and the short floats stop at
    // each) and is sized once its first innermost array closes ([`estimate`]).
    let start = p;
    let unsized_ = capacity == 0;
    let mut buf = Buf::with_capacity(if unsized_ {
        ((b.len() - p) / 2 + 1).min(FIRST_ROOM).min(*limit)
    } else {
        capacity
    });
    'value: loop {
        if at(b, p) == b'[' {
            if open >= max_rank || (rank != 0 && open >= rank) {
                return None;
            }
            counts[open] = 0;
            open += 1;
            p = ws(b, p + 1);
            if at(b, p) == b']' {
                return None;
            }
            continue 'value;
        }
        if open != rank {
            if rank != 0 {
                return None;
            }
            rank = open;
        }
        // The numbers of one innermost array (counted at its end, which keeps the count in a
        // register rather than in `counts` for every number).
        let before = total;
        loop {
            if let Buf::F(floats) = &mut buf {
                let (taken, q, at_number) = short_floats(b, p, floats, *limit - total);
                total += taken;
                if !at_number {
                    p = ws(b, q);
                    match at(b, p) {
                        b',' => {
                            p = ws(b, p + 1);
                            continue;
                        }
                        b']' => break,
                        _ => return None,
                    }
                }
                p = q;
            }
            let (n, q) = number(b, p)?;
            total += 1;
            if total > *limit {
                *limit += shared?.take(*limit)?;
            }
            match n {
                Num::Int(i) => buf.push_i64(i),
                Num::Float(v) => buf.push_f64(v),
            }
            // The common separator in one comparison.
            if b.get(q..q + 2) == Some(b", ") {
                p = ws(b, q + 2);
                continue;
            }
            p = ws(b, q);
            match at(b, p) {
                b',' => p = ws(b, p + 1),
                b']' => break,
                _ => return None,
            }
        }
        counts[open - 1] += total - before;
        // Close arrays until one goes on.
        loop {
            p += 1;
            let k = open - 1;
            if sizes[k] == UNSET {
                sizes[k] = counts[k];
                if unsized_ && k > 0 && k + 1 == rank {
                    buf.reserve_total(estimate(b.len(), start, p, total).min(*limit));
                }
            } else if sizes[k] != counts[k] {
                return None;
            }
            open = k;
            if open == 0 {
                if unsized_ {
                    buf.trim();
                }
                return Some((sizes[..rank].to_vec(), buf, total, p));
            }
            counts[open - 1] += 1;
            p = ws(b, p);
            match at(b, p) {
                b',' => {
                    p = ws(b, p + 1);
                    continue 'value;
                }
                b']' => {}
                _ => return None,
            }
        }
    }
}

/// The numbers an array starting at `start` is likely to hold in all, `total` of them in the
/// `at - start` bytes read so far: as many as the rest of the body holds at the same density
/// (more when the body goes on past the array: what is left over is given back at the end,
/// when it is more than the array).
fn estimate(len: usize, start: usize, at: usize, total: usize) -> usize {
    total.saturating_add((len - at).saturating_mul(total) / (at - start))
}

/// `{shape, data}` or `{shape, dtype, base64}` at `p`, keys in any order, each once, written
/// without escapes: the tensor and the position after it. Spends its elements.
fn object(b: &[u8], mut p: usize) -> Option<(Tensor, usize)> {
    let mut shape: Option<Vec<usize>> = None;
    let mut dtype: Option<Dtype> = None;
    // The numbers of `data`, or where they start when the shape comes after them.
    let mut data: Option<Result<Buf, usize>> = None;
    let mut b64: Option<&[u8]> = None;
    p = ws(b, p + 1);
    loop {
        let (key, q) = plain_string(b, p)?;
        p = ws(b, q);
        if at(b, p) != b':' {
            return None;
        }
        p = ws(b, p + 1);
        match key {
            b"shape" if shape.is_none() => {
                let (s, q) = shape_array(b, p)?;
                shape = Some(s);
                p = q;
            }
            b"dtype" if dtype.is_none() => {
                let (d, q) = plain_string(b, p)?;
                dtype = Some(match d {
                    b"float32" => Dtype::Float32,
                    b"float64" => Dtype::Float64,
                    b"int64" => Dtype::Int64,
                    _ => return None,
                });
                p = q;
            }
            b"data" if data.is_none() && b64.is_none() => {
                let q;
                (data, q) = match &shape {
                    Some(s) => {
                        let (buf, q) = flat(b, p, product(s)?)?;
                        (Some(Ok(buf)), q)
                    }
                    None => (Some(Err(p)), skip_value(b, p)?),
                };
                p = q;
            }
            b"base64" if data.is_none() && b64.is_none() => {
                // With the shape and dtype already read, the text's length is known: look for
                // its closing quote there instead of scanning megabytes for it. A quote or
                // backslash inside that span is not base64, so the decode below refuses it.
                let sized = shape
                    .as_deref()
                    .zip(dtype)
                    .and_then(|(s, d)| sized_string(b, p, base64_len(s, d)?));
                let (text, q) = match sized {
                    Some(found) => found,
                    None => string_to_quote(b, p)?,
                };
                b64 = Some(text);
                p = q;
            }
            _ => return None,
        }
        p = ws(b, p);
        match at(b, p) {
            b',' => p = ws(b, p + 1),
            b'}' => break,
            _ => return None,
        }
    }
    let end = p + 1;
    let shape = shape?;
    let n = product(&shape)?;
    if n > Budget::left() || n == 0 {
        return None;
    }
    let (data, form) = match (data, b64) {
        (Some(numbers), None) => {
            let buf = match numbers {
                Ok(buf) => buf,
                Err(start) => flat(b, start, n)?.0,
            };
            let data = match (dtype, buf.into_data()) {
                (Some(Dtype::Int64), Data::F64(_)) => return None,
                (Some(Dtype::Float32 | Dtype::Float64), Data::I64(v)) => {
                    Data::F64(v.into_iter().map(|i| i as f64).collect())
                }
                (_, d) => d,
            };
            (data, Form::Flat)
        }
        (None, Some(text)) => {
            let dtype = dtype?;
            check_base64_length(text.len(), n, dtype).ok()?;
            (decode_base64(text, n, dtype).ok()?, Form::Base64)
        }
        _ => return None,
    };
    Budget::spend(n).then_some(())?;
    Some((Tensor { shape, data, form }, end))
}

/// The product of a shape, `None` when it overflows.
fn product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// The flat array of exactly `n` numbers at `p` (at most the elements the budget has left)
/// and the position after it.
fn flat(b: &[u8], p: usize, n: usize) -> Option<(Buf, usize)> {
    if at(b, p) != b'[' || n > Budget::left() {
        return None;
    }
    // Room for the `n` numbers the shape promises, as far as the body can hold them (a
    // number takes two bytes with its separator).
    let capacity = n.min((b.len() - p) / 2 + 1);
    let (shape, buf, count, end) = numbers(b, p, 1, n, capacity, None)?;
    (count == n && shape == [n]).then_some((buf, end))
}

/// A shape: `[d0, d1, ...]` of plain non-negative integers, at most the rank limit of them.
fn shape_array(b: &[u8], mut p: usize) -> Option<(Vec<usize>, usize)> {
    if at(b, p) != b'[' {
        return None;
    }
    let mut shape = Vec::new();
    p = ws(b, p + 1);
    if at(b, p) == b']' {
        return Some((shape, p + 1));
    }
    loop {
        let (Num::Int(d), q) = number(b, p)? else {
            return None;
        };
        if at(b, p) == b'-' || shape.len() == Budget::max_rank() {
            return None;
        }
        shape.push(usize::try_from(d).ok()?);
        p = ws(b, q);
        match at(b, p) {
            b',' => p = ws(b, p + 1),
            b']' => return Some((shape, p + 1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests;
