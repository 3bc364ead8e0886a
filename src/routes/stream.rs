//! A large JSON body read with its base64 tensors decoded as they arrive.
//!
//! `{"input": {"shape": [1000000], "dtype": "float64", "base64": "..."}, ...}` is almost all
//! base64 text. Read whole, each of its bytes was copied from the connection's frames into one
//! buffer, scanned for the memory estimate, then read back from memory by the decode: together
//! more server CPU than the decode itself. [`Reader`] follows the body's top-level object as
//! the frames arrive and hands the text of each `{shape, dtype, base64}` member (`shape` and
//! `dtype` written before `base64`) to a [`Base64Stream`], which decodes it while the frame is
//! still in cache; the text is never stored. The rest of the body is kept as it came, each
//! streamed text left out (its string empty), and [`Read`] makes of it the body the request is
//! decoded from: the kept bytes with each streamed tensor's object replaced by the placeholder
//! the fast path's decode takes a tensor from ([`crate::wire::fast::with_tensors`]).
//!
//! The reader is only ever a shortcut. Anything it does not follow (arrays, escapes, keys in
//! another order, a text the decoder refuses, more tensors than it keeps) turns it off, and
//! from there the body is kept whole; [`Read::whole`] then gives back the body exactly as sent.
//! No escapes are let through in what it keeps, so a client cannot forge a placeholder.

use std::borrow::Cow;
use std::ops::Range;

use crate::wire::de::{Base64Stream, Dtype};
use crate::wire::{Budget, Data, Form, Tensor};

/// Tensors streamed per body at the most (each is a placeholder in the kept body).
const MAX_STREAMED: usize = 16;

/// The bytes the reader follows at a time outside a text.
const STEP: usize = 4 << 10;

/// A value of the body this large and still unfinished turns the reader off: it is parsed
/// again from its start as each frame arrives, so it must stay small.
const MAX_VALUE: usize = 64 << 10;

/// A tensor whose text was decoded as it arrived.
struct Streamed {
    /// The member's key.
    key: Vec<u8>,
    /// Where the text was, in the kept bytes: just after its opening quote.
    text_at: usize,
    /// Its object `{...}` in the kept bytes (the end is 0 until its `}` has come).
    object: Range<usize>,
    tensor: Tensor,
}

/// A text being decoded.
struct Open {
    key: Vec<u8>,
    object: usize,
    shape: Vec<usize>,
    stream: Base64Stream,
}

/// Where the reader is in the body's top-level object; everything before `pos` in the kept
/// bytes has been followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Before the opening brace.
    Start,
    /// At a member's key (`first`: just after the opening brace, where `}` may come).
    Member { first: bool },
    /// After a member's value: `,` or `}`.
    AfterValue,
    /// At the closing quote of a streamed text: the object's `}` follows.
    AfterText,
    /// After the closing brace: whitespace only.
    End,
    /// Not a body the reader follows: the rest is kept as it comes.
    Off,
}

/// Follows a body frame by frame; see the module documentation.
pub struct Reader {
    kept: Vec<u8>,
    scan: Scan,
    pos: usize,
    open: Option<Box<Open>>,
    streamed: Vec<Streamed>,
    /// Characters of text streamed so far (the kept bytes' offset from the body's).
    text_chars: usize,
    /// The body's declared length: no text may reach past it.
    declared: usize,
    /// Elements left in the request's budget, and its highest rank.
    elements: usize,
    max_rank: usize,
}

/// What a [`Reader`] made of a whole body.
pub struct Read {
    kept: Vec<u8>,
    streamed: Vec<Streamed>,
    /// Whether the reader followed the body to its end.
    clean: bool,
}

impl Reader {
    /// A reader for a body of `declared` bytes whose tensors may hold the elements and ranks
    /// `budget` allows.
    ///
    /// Every text streamed lies within the declared body and decodes to three quarters of
    /// its length, so the elements allocated for it are within what the body's reservation
    /// covers ([`crate::memory::read_admitted`] reserves for the declared length first).
    pub fn new(declared: usize, budget: Budget) -> Self {
        Self {
            kept: Vec::with_capacity(STEP),
            scan: Scan::Start,
            pos: 0,
            open: None,
            streamed: Vec::new(),
            text_chars: 0,
            declared,
            elements: budget.elements,
            max_rank: budget.rank,
        }
    }

    /// Whether the reader has stopped following the body (all it gets is kept from then on).
    pub fn is_off(&self) -> bool {
        self.scan == Scan::Off
    }

    /// The kept bytes so far.
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// Room for `additional` more bytes kept (the rest of a body the reader no longer
    /// follows), on huge pages when that is large.
    pub fn reserve(&mut self, additional: usize) {
        self.kept.reserve(additional);
        lossd_kernels::alloc::huge_pages(&mut self.kept);
    }

    /// Takes the next piece of the body.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.open.is_some() {
                data = self.text(data);
                continue;
            }
            if self.scan == Scan::Off {
                self.kept.extend_from_slice(data);
                return;
            }
            // Followed a little at a time, so that a text's first characters, which may come
            // in the same frame as its key, are not copied into the kept bytes first.
            let k = data.len().min(STEP);
            let start = self.kept.len();
            self.kept.extend_from_slice(&data[..k]);
            self.advance();
            if self.open.is_some() {
                // The text starts at `pos`, within this step: what follows is the text's.
                let at = self.pos.max(start) - start;
                self.kept.truncate(start + at);
                data = &data[at..];
            } else {
                data = &data[k..];
                if self.scan != Scan::Off && self.kept.len() - self.pos > MAX_VALUE {
                    self.scan = Scan::Off;
                }
            }
        }
    }

    /// Takes the characters of the open text in `data`, as many as its shape says it has, and
    /// returns the rest (from where its closing quote must be; all of it when the decoder
    /// refuses the text, which is then kept as it came). The text is not searched for its
    /// quote: a quote or a backslash inside it is not base64, and the decoder refuses it.
    fn text<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let open = self.open.as_mut().expect("a text is open");
        let end = data.len().min(open.stream.text_len() - open.stream.seen());
        if let Err(at) = open.stream.push(&data[..end]) {
            let mut open = self.open.take().expect("open");
            self.kept.extend_from_slice(&open.stream.text());
            self.scan = Scan::Off;
            return &data[at..];
        }
        if open.stream.seen() < open.stream.text_len() {
            return &[];
        }
        let open = self.open.take().expect("open");
        let chars = open.stream.text_len();
        match open.stream.finish() {
            Ok(elements) => {
                self.text_chars += chars;
                self.pos = self.kept.len();
                self.streamed.push(Streamed {
                    key: open.key,
                    text_at: self.kept.len(),
                    object: open.object..0,
                    tensor: Tensor {
                        shape: open.shape,
                        data: elements,
                        form: Form::Base64,
                    },
                });
                self.scan = Scan::AfterText;
            }
            Err(mut stream) => {
                self.kept.extend_from_slice(&stream.text());
                self.scan = Scan::Off;
            }
        }
        &data[end..]
    }

    /// Follows the kept bytes from `pos` as far as they go.
    fn advance(&mut self) {
        loop {
            let b = &self.kept[..];
            let p = ws(b, self.pos);
            if p == b.len() {
                return;
            }
            let step = match self.scan {
                Scan::Start => (b[p] == b'{').then(|| {
                    self.pos = p + 1;
                    Scan::Member { first: true }
                }),
                Scan::Member { first } if first && b[p] == b'}' => {
                    self.pos = p + 1;
                    Some(Scan::End)
                }
                Scan::Member { .. } => match self.member(p) {
                    Step::More => return,
                    Step::Off => None,
                    Step::Done(q) => {
                        self.pos = q;
                        Some(Scan::AfterValue)
                    }
                    Step::Text => return,
                },
                Scan::AfterValue => match b[p] {
                    b',' => {
                        self.pos = p + 1;
                        Some(Scan::Member { first: false })
                    }
                    b'}' => {
                        self.pos = p + 1;
                        Some(Scan::End)
                    }
                    _ => None,
                },
                Scan::AfterText if b[self.pos] != b'"' => None, // a longer text
                Scan::AfterText => {
                    // `pos` is at the closing quote.
                    let q = ws(b, self.pos + 1);
                    if q == b.len() {
                        return;
                    }
                    if b[q] == b'}' {
                        let last = self.streamed.last_mut().expect("a streamed text");
                        last.object.end = q + 1;
                        self.pos = q + 1;
                        Some(Scan::AfterValue)
                    } else {
                        None
                    }
                }
                Scan::End | Scan::Off => None,
            };
            match step {
                Some(next) => self.scan = next,
                None => {
                    self.scan = Scan::Off;
                    return;
                }
            }
        }
    }

    /// A member at `p`: its key, and a value the reader skips, or a tensor whose text it
    /// opens.
    fn member(&mut self, p: usize) -> Step {
        let b = &self.kept[..];
        let k = match key(b, p) {
            Ok(k) => k,
            Err(s) => return s,
        };
        let q = ws(b, k);
        match b.get(q) {
            None => return Step::More,
            Some(b':') => {}
            Some(_) => return Step::Off,
        }
        let q = ws(b, q + 1);
        match b.get(q) {
            None => Step::More,
            Some(b'{') => {
                let key = b[p + 1..k - 1].to_vec();
                self.object(key, q)
            }
            Some(b'"') => match key(b, q) {
                Ok(end) => Step::Done(end),
                Err(s) => s,
            },
            Some(b'[') => Step::Off,
            Some(_) => {
                // A number or a literal: serde checks it; its end is all that matters here.
                match b[q..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                {
                    Some(n) => Step::Done(q + n),
                    None => Step::More,
                }
            }
        }
    }

    /// A tensor object at `p` whose `shape` and `dtype` come before `base64`: opens its text.
    fn object(&mut self, key_name: Vec<u8>, p: usize) -> Step {
        let b = &self.kept[..];
        let mut shape: Option<Vec<usize>> = None;
        let mut dtype: Option<Dtype> = None;
        let mut q = ws(b, p + 1);
        loop {
            let k = match key(b, q) {
                Ok(end) => end,
                Err(s) => return s,
            };
            let name = match &b[q + 1..k - 1] {
                b"shape" => Key::Shape,
                b"dtype" => Key::Dtype,
                b"base64" => Key::Base64,
                _ => return Step::Off,
            };
            q = ws(b, k);
            match b.get(q) {
                None => return Step::More,
                Some(b':') => {}
                Some(_) => return Step::Off,
            }
            q = ws(b, q + 1);
            if q == b.len() {
                return Step::More;
            }
            match name {
                Key::Shape if shape.is_none() => match shape_array(b, q, self.max_rank) {
                    Ok((s, end)) => {
                        shape = Some(s);
                        q = end;
                    }
                    Err(s) => return s,
                },
                Key::Dtype if dtype.is_none() => {
                    let end = match key(b, q) {
                        Ok(end) => end,
                        Err(s) => return s,
                    };
                    dtype = Some(match &b[q + 1..end - 1] {
                        b"float64" => Dtype::Float64,
                        b"float32" => Dtype::Float32,
                        b"int64" => Dtype::Int64,
                        _ => return Step::Off,
                    });
                    q = end;
                }
                Key::Base64 if b[q] == b'"' => {
                    let (Some(shape), Some(dtype)) = (shape, dtype) else {
                        return Step::Off;
                    };
                    return self.open(key_name, p, q + 1, shape, dtype);
                }
                _ => return Step::Off,
            }
            q = ws(b, q);
            match b.get(q) {
                None => return Step::More,
                Some(b',') => q = ws(b, q + 1),
                Some(_) => return Step::Off,
            }
        }
    }

    /// Opens the text at `text_at` of the tensor whose object starts at `object`, when the
    /// request's limits and the declared body allow it.
    fn open(
        &mut self,
        key: Vec<u8>,
        object: usize,
        text_at: usize,
        shape: Vec<usize>,
        dtype: Dtype,
    ) -> Step {
        let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return Step::Off;
        };
        if n == 0 || n > self.elements || self.streamed.len() == MAX_STREAMED {
            return Step::Off;
        }
        // The text and its closing quote within the declared body, as the body counts;
        // checked before anything is allocated for it.
        let end = Base64Stream::text_len_of(n, dtype)
            .and_then(|len| (text_at + self.text_chars).checked_add(len))
            .and_then(|e| e.checked_add(1));
        if end.is_none_or(|e| e > self.declared) {
            return Step::Off;
        }
        crate::memory::reclaim_freed();
        let Some(stream) = Base64Stream::new(n, dtype) else {
            return Step::Off;
        };
        self.elements -= n;
        self.pos = text_at;
        self.open = Some(Box::new(Open {
            key,
            object,
            shape,
            stream,
        }));
        Step::Text
    }

    /// The body as read.
    pub fn finish(mut self) -> Read {
        if self.open.is_some() {
            // The body ended inside a text: keep that text as it came.
            let mut open = self.open.take().expect("open");
            self.kept.extend_from_slice(&open.stream.text());
            self.scan = Scan::Off;
        }
        let clean = self.scan == Scan::End && ws(&self.kept, self.pos) == self.kept.len();
        Read {
            kept: self.kept,
            streamed: self.streamed,
            clean,
        }
    }
}

/// The keys of a tensor object the reader follows.
enum Key {
    Shape,
    Dtype,
    Base64,
}

/// The body as sent but for its streamed texts, each replaced by one of the same length that
/// decodes to zeros. Decoding a request never looks at its tensors' values (the computation
/// does), so this body decodes, or fails to, as the one sent does: it stands in for it when
/// the tensors have gone into a decode that failed, to give that failure's error.
pub struct StandIn {
    kept: Vec<u8>,
    /// Where each text was in `kept`, and the bytes it decoded to.
    texts: Vec<(usize, usize)>,
}

impl StandIn {
    /// The body.
    pub fn body(&self) -> Vec<u8> {
        let chars: usize = self.texts.iter().map(|&(_, b)| b.div_ceil(3) * 4).sum();
        let mut body = Vec::with_capacity(self.kept.len() + chars);
        let mut at = 0;
        for &(text_at, bytes) in &self.texts {
            body.extend_from_slice(&self.kept[at..text_at]);
            let pad = (3 - bytes % 3) % 3;
            body.resize(body.len() + bytes.div_ceil(3) * 4 - pad, b'A');
            body.resize(body.len() + pad, b'=');
            at = text_at;
        }
        body.extend_from_slice(&self.kept[at..]);
        body
    }
}

/// How far [`Reader`] got with a value.
enum Step {
    /// It ends before this position.
    Done(usize),
    /// It goes on past the bytes kept so far.
    More,
    /// Not something the reader follows.
    Off,
    /// A text was opened.
    Text,
}

impl Read {
    /// A body read without a reader.
    pub fn plain(body: Vec<u8>) -> Self {
        Self {
            kept: body,
            streamed: Vec::new(),
            clean: true,
        }
    }

    /// The length of the body as sent.
    pub fn len(&self) -> usize {
        self.kept.len() + self.text_chars()
    }

    /// Whether the body was empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes kept (the whole body when nothing was streamed).
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// The characters of text streamed (not kept).
    pub fn text_chars(&self) -> usize {
        self.streamed
            .iter()
            .map(|s| base64_len(&s.tensor.data))
            .sum()
    }

    /// The elements of the streamed tensors.
    pub fn streamed_elements(&self) -> usize {
        self.streamed.iter().map(|s| s.tensor.data.len()).sum()
    }

    /// Whether the body is kept whole (nothing was streamed).
    pub fn is_whole(&self) -> bool {
        self.streamed.is_empty()
    }

    /// The top-level keys of the streamed tensors, in body order.
    pub fn streamed_keys(&self) -> Vec<&[u8]> {
        self.streamed.iter().map(|s| s.key.as_slice()).collect()
    }

    /// The kept body with a placeholder for each streamed tensor, the tensors in placeholder
    /// order, and what stands in for the body once they are gone; the read back unless the
    /// reader followed the whole body (then see [`Read::whole`]).
    pub fn with_placeholders(self) -> Result<(Vec<u8>, Vec<Tensor>, StandIn), Self> {
        if !self.clean || self.streamed.iter().any(|s| s.object.end == 0) {
            return Err(self);
        }
        let mut body = Vec::with_capacity(self.kept.len() + 32 * self.streamed.len());
        let mut at = 0;
        for (i, s) in self.streamed.iter().enumerate() {
            body.extend_from_slice(&self.kept[at..s.object.start]);
            body.extend_from_slice(format!("\"\\u0000lossd:{i}\"").as_bytes());
            at = s.object.end;
        }
        body.extend_from_slice(&self.kept[at..]);
        let texts = self
            .streamed
            .iter()
            .map(|s| (s.text_at, s.tensor.data.len() * elem_size(&s.tensor.data)))
            .collect();
        let tensors = self.streamed.into_iter().map(|s| s.tensor).collect();
        let stand_in = StandIn {
            kept: self.kept,
            texts,
        };
        Ok((body, tensors, stand_in))
    }

    /// The body exactly as sent: each streamed text encoded again into its place.
    pub fn whole(self) -> Vec<u8> {
        self.rebuild(|data| base64_simd::STANDARD.encode_to_string(le_bytes(data)))
    }

    fn rebuild(self, text: impl Fn(&Data) -> String) -> Vec<u8> {
        if self.streamed.is_empty() {
            return self.kept;
        }
        let mut body = Vec::with_capacity(self.kept.len() + self.text_chars());
        let mut at = 0;
        for s in &self.streamed {
            body.extend_from_slice(&self.kept[at..s.text_at]);
            body.extend_from_slice(text(&s.tensor.data).as_bytes());
            at = s.text_at;
        }
        body.extend_from_slice(&self.kept[at..]);
        body
    }
}

fn elem_size(data: &Data) -> usize {
    match data {
        Data::F32(_) => 4,
        Data::F64(_) | Data::I64(_) => 8,
    }
}

/// The characters of the base64 text of `data`.
fn base64_len(data: &Data) -> usize {
    (data.len() * elem_size(data)).div_ceil(3) * 4
}

/// The little-endian bytes of `data`.
fn le_bytes(data: &Data) -> Cow<'_, [u8]> {
    fn of<T: bytemuck::Pod, const N: usize>(v: &[T], le: impl Fn(&T) -> [u8; N]) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(v))
        } else {
            Cow::Owned(v.iter().flat_map(le).collect())
        }
    }
    match data {
        Data::F64(v) => of(v, |x| x.to_le_bytes()),
        Data::F32(v) => of(v, |x| x.to_le_bytes()),
        Data::I64(v) => of(v, |x| x.to_le_bytes()),
    }
}

/// JSON whitespace from `p`.
fn ws(b: &[u8], mut p: usize) -> usize {
    while matches!(b.get(p), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        p += 1;
    }
    p
}

/// A string without escapes at `p` (its opening quote): the position after its closing quote.
fn key(b: &[u8], p: usize) -> Result<usize, Step> {
    match b.get(p) {
        None => return Err(Step::More),
        Some(b'"') => {}
        Some(_) => return Err(Step::Off),
    }
    match memchr::memchr2(b'"', b'\\', &b[p + 1..]) {
        None => Err(Step::More),
        Some(n) if b[p + 1 + n] == b'"' => Ok(p + n + 2),
        Some(_) => Err(Step::Off),
    }
}

/// `[d, ...]` of plain non-negative integers at `p`, at most `max_rank` of them.
fn shape_array(b: &[u8], p: usize, max_rank: usize) -> Result<(Vec<usize>, usize), Step> {
    if b[p] != b'[' {
        return Err(Step::Off);
    }
    let mut shape = Vec::new();
    let mut q = ws(b, p + 1);
    if b.get(q) == Some(&b']') {
        return Ok((shape, q + 1));
    }
    loop {
        let digits = b[q.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let end = q + digits;
        if end == b.len() {
            return Err(Step::More);
        }
        if digits == 0 || (digits > 1 && b[q] == b'0') || shape.len() == max_rank {
            return Err(Step::Off);
        }
        let d: usize = std::str::from_utf8(&b[q..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Step::Off)?;
        shape.push(d);
        q = ws(b, end);
        match b.get(q) {
            None => return Err(Step::More),
            Some(b',') => q = ws(b, q + 1),
            Some(b']') => return Ok((shape, q + 1)),
            Some(_) => return Err(Step::Off),
        }
    }
}

#[cfg(test)]
mod tests;
