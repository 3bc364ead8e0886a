//! The fast path for tensors at the top level of a request: one pass over the bytes.
//!
//! serde_json reads a number array through one visitor call per element and parses floats
//! with its own exact but slow algorithm. For the common large request (a few tensors at the
//! top level of the body) [`prepare`] walks the body itself: each top-level value that is a
//! well-formed tensor (rectangular nested arrays of numbers, `{shape, data}` or
//! `{shape, dtype, base64}`) is decoded here, with exact float parsing (`lexical-core`,
//! correctly rounded like serde_json's `float_roundtrip`), and replaced in a copy of the body
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

use super::de::{Budget, Buf, Data, Dtype, Form, Tensor, check_base64_length, decode_base64};

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
    let mut arrays: Vec<(usize, usize)> = Vec::new();
    members(b, |p| match at(b, p) {
        b'[' if arrays.len() < MAX_SLOTS => {
            let end = array_end(b, p)?;
            arrays.push((p, end));
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
        .map(|&(start, end)| {
            numbers(b, start, max_rank, left, Some(&reservoir)).filter(|r| r.3 == end)
        })
        .collect();
    // Out of budget: some walk may have failed for want of elements another held.
    if reservoir.starved.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let mut out = Vec::new();
    let mut copied = 0;
    let mut tensors = Vec::new();
    for (&(start, end), walk) in arrays.iter().zip(walks) {
        let Some((shape, buf, count, _)) = walk else {
            continue;
        };
        if count > Budget::left() {
            return None;
        }
        Budget::spend(count);
        out.extend_from_slice(&b[copied..start]);
        out.extend_from_slice(format!("\"\\u0000lossd:{}\"", tensors.len()).as_bytes());
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

/// The sequential walk of [`prepare`].
fn sequential(body: &[u8]) -> Option<Prepared> {
    let b = body;
    let mut out = Vec::new();
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
                out.extend_from_slice(format!("\"\\u0000lossd:{}\"", tensors.len()).as_bytes());
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
    match at(b, p) {
        b'0' => p += 1,
        b'1'..=b'9' => {
            while let c @ b'0'..=b'9' = at(b, p) {
                sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                p += 1;
            }
        }
        _ => return None,
    }
    let int_digits = p - first;
    // JSON wants a digit after the point; lexical's own grammar would take `1.` too.
    if at(b, p) == b'.' && !at(b, p + 1).is_ascii_digit() {
        return None;
    }
    let float = matches!(at(b, p), b'.' | b'e' | b'E');
    if !float && int_digits <= 19 {
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
    // Floats and longer integers: correctly rounded, as serde_json's `float_roundtrip`. The
    // parse goes as far as the number does (the integer part was checked above, the exponent
    // needs its digits in lexical's grammar too); what follows is the caller's to check.
    let (v, len): (f64, usize) = lexical_core::parse_partial(&b[start..]).ok()?;
    v.is_finite().then_some((Num::Float(v), start + len))
}

/// A rectangular nested array of numbers at `p` (at most the rank limit deep, at most the
/// elements the budget has left, no empty arrays): the tensor and the position after it.
/// Spends its elements.
fn nested(b: &[u8], p: usize) -> Option<(Tensor, usize)> {
    let (shape, buf, count, end) = numbers(b, p, Budget::max_rank(), Budget::left(), None)?;
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
    shared: Option<&Reservoir>,
) -> Option<(Vec<usize>, Buf, usize, usize)> {
    let Some(shared) = shared else {
        let mut limit = limit;
        return walk(b, p, max_rank, &mut limit, None);
    };
    // With a shared reservoir (parallel decodes), elements are taken from it in blocks as
    // the count grows; whatever the walk holds and does not keep goes back, whether it
    // succeeds or fails.
    let mut held = 0;
    let r = walk(b, p, max_rank, &mut held, Some(shared));
    shared.give_back(held - r.as_ref().map_or(0, |r| r.2));
    r
}

/// The walk of [`numbers`]: `limit` elements at most, more taken from `shared` when given.
fn walk(
    b: &[u8],
    mut p: usize,
    max_rank: usize,
    limit: &mut usize,
    shared: Option<&Reservoir>,
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
    let mut buf = Buf::with_capacity(0);
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
        // The numbers of one innermost array.
        loop {
            let (n, q) = number(b, p)?;
            total += 1;
            if total > *limit {
                *limit += shared?.take(*limit)?;
            }
            match n {
                Num::Int(i) => buf.push_i64(i),
                Num::Float(v) => buf.push_f64(v),
            }
            counts[open - 1] += 1;
            p = ws(b, q);
            match at(b, p) {
                b',' => p = ws(b, p + 1),
                b']' => break,
                _ => return None,
            }
        }
        // Close arrays until one goes on.
        loop {
            p += 1;
            let k = open - 1;
            if sizes[k] == UNSET {
                sizes[k] = counts[k];
            } else if sizes[k] != counts[k] {
                return None;
            }
            open = k;
            if open == 0 {
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
    let (shape, buf, count, end) = numbers(b, p, 1, n, None)?;
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
