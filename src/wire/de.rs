//! Decoding tensors: nested arrays, `{shape, data}` and `{shape, dtype, base64}`.
//!
//! A [`Tensor`] field deserializes through [`TensorVisitor`]; nested arrays are walked with a
//! [`DeserializeSeed`] per level that pushes numbers into one flat buffer and infers the shape
//! as it goes (ragged arrays are refused at the first element that disagrees). Integers stay
//! `i64` until the first non-integer arrives; the caller converts to the compute dtype once.
//!
//! Limits live in a thread-local [`Budget`] installed for the duration of one decode: every
//! element spends one unit, a declared shape is checked against what is left before anything
//! is allocated for it, and arrays may not nest deeper than the rank limit. Running out of
//! elements is not an error inside the decode: from then on nothing more is stored, the rest of
//! the request is still checked, and the caller answers 413 only if the request is otherwise
//! valid (a malformed request gets its 422, whatever its size).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The element storage of a decoded tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Integers (JSON integers, or base64 `int64`).
    I64(Vec<i64>),
    /// Floats from JSON, or base64 `float64`.
    F64(Vec<f64>),
    /// Base64 `float32`.
    F32(Vec<f32>),
}

impl Data {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::I64(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::F32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which of the three encodings a tensor came in (for error pointers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A number or nested arrays.
    Nested,
    /// `{shape, data}`.
    Flat,
    /// `{shape, dtype, base64}`.
    Base64,
}

/// A decoded tensor: row-major data and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The shape (`[]` for a 0-d tensor).
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: Data,
    /// The encoding it arrived in.
    pub form: Form,
}

/// The limits of one decode: elements left to spend and the deepest rank allowed.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Elements all tensors of the request may hold together.
    pub elements: usize,
    /// The highest tensor rank.
    pub rank: usize,
}

thread_local! {
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    static MAX_RANK: Cell<usize> = const { Cell::new(16) };
    static OVER: Cell<bool> = const { Cell::new(false) };
}

impl Budget {
    /// Runs `f` (a decode) under this budget on this thread, and deducts what it spent.
    /// Returns `f`'s result and whether the element budget was exceeded: then the tensors `f`
    /// decoded are incomplete and must not be used; answer 413.
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> (R, bool) {
        LEFT.with(|c| c.set(self.elements));
        MAX_RANK.with(|c| c.set(self.rank));
        OVER.with(|c| c.set(false));
        let r = f();
        let over = OVER.with(|c| c.replace(false));
        self.elements = LEFT.with(|c| c.replace(usize::MAX));
        (r, over)
    }

    /// Spends `n` elements; false (and the budget marked as exceeded) when they are not left.
    pub(crate) fn spend(n: usize) -> bool {
        LEFT.with(|c| {
            let left = c.get();
            if n > left {
                OVER.with(|o| o.set(true));
                c.set(0);
                false
            } else {
                c.set(left - n);
                true
            }
        })
    }

    /// Elements left.
    pub(crate) fn left() -> usize {
        LEFT.with(Cell::get)
    }

    /// The highest tensor rank.
    pub(crate) fn max_rank() -> usize {
        MAX_RANK.with(Cell::get)
    }
}

/// Parses the strings docs/api.md allows for non-finite floats.
fn non_finite(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The room a buffer not sized by its caller starts with, in numbers: a short row's.
pub(crate) const FIRST_ROOM: usize = 32;

/// A flat buffer that stays `i64` until a non-integer arrives.
#[derive(Debug)]
pub(crate) enum Buf {
    I(Vec<i64>),
    F(Vec<f64>),
}

impl Buf {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Buf::I(Vec::with_capacity(n))
    }

    #[inline]
    pub(crate) fn push_i64(&mut self, v: i64) {
        match self {
            Buf::I(b) => b.push(v),
            Buf::F(b) => b.push(v as f64),
        }
    }

    #[inline]
    pub(crate) fn push_f64(&mut self, v: f64) {
        match self {
            Buf::F(b) => b.push(v),
            Buf::I(_) => self.promote(v),
        }
    }

    /// The first non-integer: the integers so far become floats.
    #[cold]
    #[inline(never)]
    fn promote(&mut self, v: f64) {
        if let Buf::I(b) = self {
            // Collected in place: the integers' allocation (same size and alignment) holds
            // the floats, so the buffer keeps its capacity without a second one.
            let mut f: Vec<f64> = std::mem::take(b).into_iter().map(|i| i as f64).collect();
            f.push(v);
            *self = Buf::F(f);
        }
    }

    /// Gives back room left over past the length, when it is more than the length and more
    /// than a short row's.
    pub(crate) fn trim(&mut self) {
        fn trim<T>(b: &mut Vec<T>) {
            if b.capacity() - b.len() > b.len().max(FIRST_ROOM) {
                b.shrink_to_fit();
            }
        }
        match self {
            Buf::I(b) => trim(b),
            Buf::F(b) => trim(b),
        }
    }

    /// Makes room for `n` numbers in all (no more than asked: `n` is an estimate).
    pub(crate) fn reserve_total(&mut self, n: usize) {
        match self {
            Buf::I(b) => b.reserve_exact(n.saturating_sub(b.len())),
            Buf::F(b) => b.reserve_exact(n.saturating_sub(b.len())),
        }
    }

    pub(crate) fn into_data(self) -> Data {
        match self {
            Buf::I(b) => Data::I64(b),
            Buf::F(b) => Data::F64(b),
        }
    }
}

/// State of a nested-array decode: the flat buffer, the size seen at each depth, the rank,
/// and the count of numbers (which goes on when the buffer stops, over the element budget).
struct Nest {
    buf: Buf,
    sizes: Vec<Option<usize>>,
    rank: Option<usize>,
    count: usize,
    keep: bool,
}

impl Nest {
    fn new(capacity: usize) -> Self {
        Self {
            buf: Buf::with_capacity(capacity),
            sizes: Vec::new(),
            rank: None,
            count: 0,
            keep: true,
        }
    }

    #[inline]
    fn push_i64(&mut self, v: i64) {
        if self.keep {
            self.buf.push_i64(v);
        }
    }

    #[inline]
    fn push_f64(&mut self, v: f64) {
        if self.keep {
            self.buf.push_f64(v);
        }
    }

    /// A number at `depth`.
    #[inline]
    fn leaf<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        match self.rank {
            Some(r) if r == depth => {}
            Some(r) => {
                return Err(E::custom(format_args!(
                    "ragged tensor: a number at depth {depth} where the other elements have depth {r}"
                )));
            }
            None => self.rank = Some(depth),
        }
        self.count += 1;
        if self.keep && !Budget::spend(1) {
            // Over the element budget: stop storing (and free what is stored), keep checking.
            self.keep = false;
            self.buf = Buf::with_capacity(0);
        }
        Ok(())
    }

    /// An array opening at `depth`.
    fn open<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        if let Some(r) = self.rank
            && depth >= r
        {
            return Err(E::custom(format_args!(
                "ragged tensor: an array at depth {depth} where the other elements are numbers"
            )));
        }
        if depth >= Budget::max_rank() {
            return Err(E::custom(format_args!(
                "the tensor has more than {} dimensions (the rank limit)",
                Budget::max_rank()
            )));
        }
        if self.sizes.len() <= depth {
            self.sizes.resize(depth + 1, None);
        }
        Ok(())
    }

    /// The size already seen at `depth`, to fail a ragged array at its first extra element.
    fn expected(&self, depth: usize) -> Option<usize> {
        self.sizes.get(depth).copied().flatten()
    }

    /// An array at `depth` closing with `count` elements.
    fn close<E: de::Error>(&mut self, depth: usize, count: usize) -> Result<(), E> {
        match self.sizes[depth] {
            Some(n) if n != count => {
                return Err(E::custom(format_args!(
                    "ragged tensor: this array has {count} elements but the arrays before it at the same depth have {n}"
                )));
            }
            Some(_) => {}
            None => self.sizes[depth] = Some(count),
        }
        if count == 0 {
            match self.rank {
                None => self.rank = Some(depth + 1),
                Some(r) if r != depth + 1 => {
                    return Err(E::custom(format_args!(
                        "ragged tensor: an empty array at depth {depth} where the other elements have depth {r}"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The shape, the data (incomplete when over the budget) and the count of numbers.
    fn finish(self) -> (Vec<usize>, Data, usize) {
        let rank = self.rank.unwrap_or(0);
        let shape = self.sizes[..rank].iter().map(|s| s.unwrap_or(0)).collect();
        (shape, self.buf.into_data(), self.count)
    }
}

/// One level of a nested array: a number or a deeper array.
struct Level<'a> {
    nest: &'a mut Nest,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"Infinity\", \"-Infinity\" or an array")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.nest.leaf(self.depth)?;
        self.nest.push_i64(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.nest.leaf(self.depth)?;
        match i64::try_from(v) {
            Ok(i) => self.nest.push_i64(i),
            Err(_) => self.nest.push_f64(v as f64),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.nest.leaf(self.depth)?;
        self.nest.push_f64(v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let Some(v) = non_finite(s) else {
            return Err(E::invalid_value(de::Unexpected::Str(s), &self));
        };
        self.visit_f64(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (nest, depth) = (self.nest, self.depth);
        nest.open(depth)?;
        let limit = nest.expected(depth);
        let mut count = 0usize;
        while seq
            .next_element_seed(Level {
                nest: &mut *nest,
                depth: depth + 1,
            })?
            .is_some()
        {
            count += 1;
            if limit.is_some_and(|n| count > n) {
                return Err(de::Error::custom(format_args!(
                    "ragged tensor: this array has more elements than the {} of the arrays before it at the same depth",
                    limit.unwrap_or(0)
                )));
            }
        }
        nest.close(depth, count)
    }
}

/// The `data` of `{shape, data}`: a flat array of numbers (and non-finite strings).
struct FlatData<'a>(&'a mut Nest);

impl<'de> DeserializeSeed<'de> for FlatData<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FlatData<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`data`: a flat array of numbers, row-major")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let nest = self.0;
        // Numbers only, one level deep: an array inside `data` is refused as ragged.
        nest.rank = Some(1);
        nest.open(0)?;
        let mut count = 0usize;
        while seq
            .next_element_seed(Level {
                nest: &mut *nest,
                depth: 1,
            })?
            .is_some()
        {
            count += 1;
        }
        nest.close(0, count)
    }
}

/// Decodes any tensor encoding.
pub struct TensorVisitor;

impl<'de> serde::Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = d.deserialize_any(TensorVisitor)?;
        crate::compute::note_shape(&t.shape);
        Ok(t)
    }
}

impl TensorVisitor {
    fn scalar<E: de::Error>(data: Data) -> Result<Tensor, E> {
        Budget::spend(1);
        Ok(Tensor {
            shape: Vec::new(),
            data,
            form: Form::Nested,
        })
    }
}

impl<'de> Visitor<'de> for TensorVisitor {
    type Value = Tensor;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a tensor: a number, nested arrays of numbers, {\"shape\", \"data\"} or {\"shape\", \"dtype\", \"base64\"}",
        )
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Tensor, E> {
        Self::scalar(Data::I64(vec![v]))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Tensor, E> {
        match i64::try_from(v) {
            Ok(i) => Self::scalar(Data::I64(vec![i])),
            Err(_) => Self::scalar(Data::F64(vec![v as f64])),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Tensor, E> {
        Self::scalar(Data::F64(vec![v]))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Tensor, E> {
        if let Some(t) = super::fast::take(s) {
            return Ok(t);
        }
        match non_finite(s) {
            Some(v) => Self::scalar(Data::F64(vec![v])),
            None => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Tensor, A::Error> {
        let mut nest = Nest::new(0);
        Level {
            nest: &mut nest,
            depth: 0,
        }
        .visit_seq(seq)?;
        let (shape, data, _) = nest.finish();
        Ok(Tensor {
            shape,
            data,
            form: Form::Nested,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tensor, A::Error> {
        let mut shape: Option<Vec<usize>> = None;
        let mut dtype: Option<Dtype> = None;
        let mut data: Option<(Data, usize)> = None;
        let mut b64: Option<Text<'de>> = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.as_str() {
                "shape" => {
                    if shape.is_some() {
                        return Err(de::Error::duplicate_field("shape"));
                    }
                    shape = Some(map.next_value_seed(ShapeSeed)?);
                }
                "dtype" => {
                    if dtype.is_some() {
                        return Err(de::Error::duplicate_field("dtype"));
                    }
                    dtype = Some(map.next_value()?);
                }
                "data" => {
                    if data.is_some() || b64.is_some() {
                        return Err(de::Error::custom("give exactly one of `data` and `base64`"));
                    }
                    // The numbers are counted against the budget as they arrive; a declared
                    // shape only sizes the buffer, and never past what the budget has left.
                    let declared = shape.as_deref().and_then(product).unwrap_or(0);
                    let mut nest = Nest::new(declared.min(Budget::left()));
                    map.next_value_seed(FlatData(&mut nest))?;
                    let (_, d, count) = nest.finish();
                    data = Some((d, count));
                }
                "base64" => {
                    if data.is_some() || b64.is_some() {
                        return Err(de::Error::custom("give exactly one of `data` and `base64`"));
                    }
                    b64 = Some(map.next_value()?);
                }
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["shape", "data", "dtype", "base64"],
                    ));
                }
            }
        }
        let Some(shape) = shape else {
            return Err(de::Error::missing_field("shape"));
        };
        let Some(n) = product(&shape) else {
            return Err(de::Error::custom(format_args!(
                "shape {shape:?} holds more elements than any request can (the product overflows)"
            )));
        };
        if let Some((data, count)) = data {
            if count != n {
                return Err(de::Error::custom(format_args!(
                    "shape {shape:?} holds {n} elements but `data` has {count}"
                )));
            }
            let data = match (dtype, data) {
                (Some(Dtype::Int64), Data::F64(_)) => {
                    return Err(de::Error::custom(
                        "dtype is int64 but `data` holds numbers that are not integers",
                    ));
                }
                (Some(Dtype::Float32 | Dtype::Float64), Data::I64(v)) => {
                    Data::F64(v.into_iter().map(|i| i as f64).collect())
                }
                (_, d) => d,
            };
            return Ok(Tensor {
                shape,
                data,
                form: Form::Flat,
            });
        }
        let Some(b64) = b64 else {
            return Err(de::Error::custom("give one of `data` and `base64`"));
        };
        let Some(dtype) = dtype else {
            return Err(de::Error::missing_field("dtype"));
        };
        check_base64_length(b64.as_str().len(), n, dtype).map_err(de::Error::custom)?;
        if !Budget::spend(n) {
            return Ok(Tensor {
                shape,
                data: Data::F64(Vec::new()),
                form: Form::Base64,
            });
        }
        let data = decode_base64(b64.as_str().as_bytes(), n, dtype).map_err(de::Error::custom)?;
        Ok(Tensor {
            shape,
            data,
            form: Form::Base64,
        })
    }
}

/// The dtypes a base64 tensor may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Dtype {
    Float32,
    Float64,
    Int64,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::Float32 => "float32",
            Dtype::Float64 => "float64",
            Dtype::Int64 => "int64",
        }
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Dtype::Float32 => 4,
            Dtype::Float64 | Dtype::Int64 => 8,
        }
    }
}

/// The product of a shape, or `None` when it overflows.
fn product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d))
}

/// Checks that base64 text has the length `n` elements of `dtype` need (before decoding).
pub(crate) fn check_base64_length(len: usize, n: usize, dtype: Dtype) -> Result<(), String> {
    let want = n
        .checked_mul(dtype.size())
        .map(|bytes| bytes.div_ceil(3).saturating_mul(4));
    if want != Some(len) {
        return Err(format!(
            "base64 text has {len} characters but {n} {} elements need {}",
            dtype.name(),
            want.map_or_else(|| "more than fit in memory".to_string(), |w| w.to_string())
        ));
    }
    Ok(())
}

/// Decodes standard base64 (with padding) holding `n` little-endian elements of `dtype`
/// (the length was checked) straight into the element buffer, with SIMD where the CPU has it.
pub(crate) fn decode_base64(text: &[u8], n: usize, dtype: Dtype) -> Result<Data, String> {
    fn into<T: bytemuck::Pod>(text: &[u8], n: usize) -> Result<Vec<T>, String> {
        let mut v: Vec<T> = Vec::with_capacity(n);
        let want = n * std::mem::size_of::<T>();
        // Decoded straight into the vector's spare capacity: zeroing it first (`vec![0; n]`)
        // cost a fifth of the decode of a 1M-element tensor.
        // SAFETY: the spare capacity is at least `n` elements of `T`, i.e. `want` bytes, all
        // ours; `MaybeUninit<u8>` has alignment 1 and no validity requirement.
        let out: &mut [std::mem::MaybeUninit<u8>] = unsafe {
            std::slice::from_raw_parts_mut(v.spare_capacity_mut().as_mut_ptr().cast(), want)
        };
        decode_into(text, out).map_err(|got| match got {
            Some(said) => format!(
                "base64 text decodes to {said} bytes (its padding is wrong) but {n} elements need {want}"
            ),
            None => "invalid base64 (standard alphabet, with padding)".to_string(),
        })?;
        // SAFETY: `decode_into` succeeded, so every one of the `want` bytes (`n` elements) was
        // written; every bit pattern is a valid `T` (`Pod`).
        unsafe { v.set_len(n) };
        Ok(v)
    }
    Ok(match dtype {
        Dtype::Float64 => {
            let mut v: Vec<f64> = into(text, n)?;
            if cfg!(target_endian = "big") {
                v.iter_mut()
                    .for_each(|x| *x = f64::from_bits(u64::from_le(x.to_bits())));
            }
            Data::F64(v)
        }
        Dtype::Float32 => {
            let mut v: Vec<f32> = into(text, n)?;
            if cfg!(target_endian = "big") {
                v.iter_mut()
                    .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
            }
            Data::F32(v)
        }
        Dtype::Int64 => {
            let mut v: Vec<i64> = into(text, n)?;
            if cfg!(target_endian = "big") {
                v.iter_mut().for_each(|x| *x = i64::from_le(*x));
            }
            Data::I64(v)
        }
    })
}

/// Base64 text of at least this many characters is decoded in chunks of
/// [`BASE64_CHUNK`] on rayon's pool (the cores), smaller text on the calling thread.
const BASE64_PARALLEL: usize = 2 << 20;
/// The characters of one parallel chunk: a multiple of 4, so each chunk but the last
/// decodes to exactly three quarters of its length, without padding.
const BASE64_CHUNK: usize = 256 << 10;

/// Decodes `text` into all of `out`: `Err(None)` for invalid base64, `Err(Some(len))` when
/// its length and padding say `len` bytes rather than `out.len()` (checked first: the decoder
/// panics when they do not fit, and a text of the right length with too little padding,
/// `...wA=}` where `...wA==` belongs, says 66 bytes for 64; found by fuzzing). On success
/// every byte of `out` was written.
fn decode_into(text: &[u8], out: &mut [std::mem::MaybeUninit<u8>]) -> Result<(), Option<usize>> {
    let one = |text: &[u8], out: &mut [std::mem::MaybeUninit<u8>]| {
        let want = out.len();
        let got = super::b64::decode(text, out).map_err(|_| None)?.len();
        if got == want { Ok(()) } else { Err(Some(got)) }
    };
    // The precondition, checked: a whole number of 4-character groups whose padding says
    // exactly `out.len()` bytes (so no chunk's decode can overrun its part of `out`).
    if !text.len().is_multiple_of(4) {
        return Err(None);
    }
    let pad = text
        .iter()
        .rev()
        .take(2)
        .take_while(|&&c| c == b'=')
        .count();
    let said = (text.len() / 4 * 3).saturating_sub(pad);
    if said != out.len() {
        return Err(Some(said));
    }
    if text.len() < BASE64_PARALLEL {
        return one(text, out);
    }
    use rayon::prelude::*;
    // Every part of `out` must meet a chunk of text (the callers' length check makes it so;
    // this keeps a text of the wrong length from leaving part of `out` unwritten).
    if text.len().div_ceil(BASE64_CHUNK) != out.len().div_ceil(BASE64_CHUNK / 4 * 3) {
        return Err(None);
    }
    // A chunk that decodes short (padding in the middle of the text) is invalid base64.
    text.par_chunks(BASE64_CHUNK)
        .zip(out.par_chunks_mut(BASE64_CHUNK / 4 * 3))
        .try_for_each(|(t, o)| one(t, o).map_err(|_| None))
}

/// Standard base64 text of `n` little-endian elements of `dtype` decoded piece by piece as
/// it arrives (a request body's frames), straight into the element buffer: for a text the
/// length check passes, what [`decode_base64`] gives for the whole text, without the text
/// ever being held. Each piece is decoded while it is still in cache, where holding the text
/// meant copying a 21 MB body into one buffer and reading it back from memory.
///
/// The groups before the last are decoded as they come, strictly (four characters of the
/// alphabet to three bytes: no padding); the last group, which may be padded, when the text
/// ends ([`Base64Stream::finish`]). Every group decoded so far encodes back to exactly the
/// characters it came from, so [`Base64Stream::text`] gives back the text received when the
/// caller needs it after all (a piece the decoder refuses, a body it cannot use).
pub(crate) struct Base64Stream {
    /// The elements, `n` of them allocated; bytes are written into the spare capacity.
    data: Data,
    /// The elements.
    n: usize,
    /// Bytes written.
    filled: usize,
    /// Bytes the `n` elements take.
    want: usize,
    /// Characters the text must have, and those received.
    text_len: usize,
    seen: usize,
    /// Characters of a group not yet decoded (the last group waits here for the end).
    carry: [u8; 4],
    held: usize,
}

impl Base64Stream {
    /// A decoder for the text of `n` elements of `dtype` (`n` > 0), allocating their buffer;
    /// `None` when the sizes overflow.
    pub(crate) fn new(n: usize, dtype: Dtype) -> Option<Self> {
        let text_len = Self::text_len_of(n, dtype)?;
        if n == 0 {
            return None;
        }
        let want = n * dtype.size();
        let data = match dtype {
            Dtype::Float64 => Data::F64(Vec::with_capacity(n)),
            Dtype::Float32 => Data::F32(Vec::with_capacity(n)),
            Dtype::Int64 => Data::I64(Vec::with_capacity(n)),
        };
        Some(Self {
            data,
            n,
            filled: 0,
            want,
            text_len,
            seen: 0,
            carry: [0; 4],
            held: 0,
        })
    }

    /// The characters of the text of `n` elements of `dtype`; `None` when that overflows.
    pub(crate) fn text_len_of(n: usize, dtype: Dtype) -> Option<usize> {
        n.checked_mul(dtype.size())?.div_ceil(3).checked_mul(4)
    }

    /// The characters the whole text has.
    pub(crate) fn text_len(&self) -> usize {
        self.text_len
    }

    /// The characters received so far.
    pub(crate) fn seen(&self) -> usize {
        self.seen
    }

    /// The element buffer's first byte.
    fn base(&mut self) -> *mut u8 {
        match &mut self.data {
            Data::F64(v) => v.as_mut_ptr().cast(),
            Data::F32(v) => v.as_mut_ptr().cast(),
            Data::I64(v) => v.as_mut_ptr().cast(),
        }
    }

    /// Decodes whole groups of the middle of the text (no padding) after what is written.
    fn middle(&mut self, text: &[u8]) -> bool {
        let len = text.len() / 4 * 3;
        debug_assert!(text.len().is_multiple_of(4) && self.filled + len <= self.want);
        let filled = self.filled;
        // SAFETY: the buffer has room for `want` bytes (capacity `n` elements, see `new`); the
        // callers keep the characters decoded within the text's length, so `filled + len` ≤
        // `want`. `MaybeUninit<u8>` has alignment 1 and no validity requirement.
        let out: &mut [std::mem::MaybeUninit<u8>] =
            unsafe { std::slice::from_raw_parts_mut(self.base().add(filled).cast(), len) };
        let ok = super::b64::decode(text, out).is_ok_and(|got| got.len() == len);
        if ok {
            self.filled += len;
        }
        ok
    }

    /// Decodes the next piece of the text (which ends at its closing quote, not in this
    /// piece). `Err(at)` when the text is not what the length check and the alphabet allow:
    /// `piece[..at]` was taken (see [`Base64Stream::text`]), `piece[at..]` was not.
    pub(crate) fn push(&mut self, piece: &[u8]) -> Result<(), usize> {
        if piece.len() > self.text_len - self.seen {
            return Err(0);
        }
        self.seen += piece.len();
        // Characters before the last group.
        let middle = self.text_len - 4;
        let mut text = piece;
        while !text.is_empty() {
            let at = piece.len() - text.len();
            let done = self.filled / 3 * 4;
            if self.held > 0 || done == middle || text.len() < 4 {
                let k = (4 - self.held).min(text.len());
                self.carry[self.held..self.held + k].copy_from_slice(&text[..k]);
                self.held += k;
                text = &text[k..];
                if self.held == 4 && done < middle {
                    let group = self.carry;
                    if !self.middle(&group) {
                        return Err(at + k);
                    }
                    self.held = 0;
                }
                continue;
            }
            let take = (text.len() / 4 * 4).min(middle - done);
            if !self.middle(&text[..take]) {
                return Err(at);
            }
            text = &text[take..];
        }
        Ok(())
    }

    /// The elements, once the whole text has arrived; otherwise (a text too short, a last
    /// group whose padding does not say the bytes the elements need) the decoder back.
    pub(crate) fn finish(mut self) -> Result<Data, Self> {
        if self.seen != self.text_len || self.held != 4 {
            return Err(self);
        }
        let last = self.want - self.filled;
        let mut out = [std::mem::MaybeUninit::<u8>::uninit(); 3];
        let mut bytes = [0u8; 3];
        match base64_simd::STANDARD
            .decode(&self.carry, base64_simd::Out::from_uninit_slice(&mut out))
        {
            Ok(got) if got.len() == last => bytes[..last].copy_from_slice(got),
            _ => return Err(self),
        }
        let filled = self.filled;
        // SAFETY: `last` more bytes fill the buffer's `want` bytes exactly (its room, see
        // `middle`); then every byte of the `n` elements has been written, and every bit
        // pattern is a valid element, so the vector may hold them all.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base().add(filled), last);
            match &mut self.data {
                Data::F64(v) => v.set_len(self.n),
                Data::F32(v) => v.set_len(self.n),
                Data::I64(v) => v.set_len(self.n),
            }
        }
        let mut data = self.data;
        if cfg!(target_endian = "big") {
            match &mut data {
                Data::F64(v) => v
                    .iter_mut()
                    .for_each(|x| *x = f64::from_bits(u64::from_le(x.to_bits()))),
                Data::F32(v) => v
                    .iter_mut()
                    .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits()))),
                Data::I64(v) => v.iter_mut().for_each(|x| *x = i64::from_le(*x)),
            }
        }
        Ok(data)
    }

    /// The text taken so far, exactly as it arrived: the groups decoded, encoded again, and
    /// the characters not yet decoded.
    pub(crate) fn text(&mut self) -> Vec<u8> {
        let filled = self.filled;
        // SAFETY: the first `filled` bytes of the buffer were written by the decode.
        let written = unsafe { std::slice::from_raw_parts(self.base().cast_const(), filled) };
        let mut text = base64_simd::STANDARD.encode_to_string(written).into_bytes();
        text.extend_from_slice(&self.carry[..self.held]);
        text
    }
}

/// A string borrowed from the request when it has no escapes.
pub(crate) enum Text<'de> {
    /// Borrowed from the input.
    Borrowed(&'de str),
    /// Unescaped into a new string.
    Owned(String),
}

impl Text<'_> {
    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A shape: at most the rank limit of non-negative integers whose product fits in `usize`.
struct ShapeSeed;

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Vec<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<usize>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Vec<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shape: an array of non-negative integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
        let mut shape = Vec::new();
        while let Some(d) = seq.next_element::<u64>()? {
            if shape.len() == Budget::max_rank() {
                return Err(de::Error::custom(format_args!(
                    "the shape has more than {} dimensions (the rank limit)",
                    Budget::max_rank()
                )));
            }
            let d =
                usize::try_from(d).map_err(|_| de::Error::custom("a dimension is too large"))?;
            shape.push(d);
        }
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<Tensor, String> {
        let (r, _) = Budget {
            elements: 1000,
            rank: 4,
        }
        .run(|| serde_json::from_str::<Tensor>(json).map_err(|e| e.to_string()));
        r
    }

    #[test]
    fn nested_arrays_infer_their_shape() {
        let t = decode("[[1, 2.5, 3], [4, 5, 6]]").unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.data, Data::F64(vec![1.0, 2.5, 3.0, 4.0, 5.0, 6.0]));
        let t = decode("[[1, 2], [3, 4]]").unwrap();
        assert_eq!(t.data, Data::I64(vec![1, 2, 3, 4]));
        assert_eq!(decode("7").unwrap().shape, Vec::<usize>::new());
        assert_eq!(decode("[]").unwrap().shape, vec![0]);
        assert_eq!(decode("[[], []]").unwrap().shape, vec![2, 0]);
    }

    #[test]
    fn ragged_arrays_are_refused() {
        for bad in [
            "[[1, 2], [3]]",
            "[[1], [2, 3]]",
            "[[1, 2], 3]",
            "[1, [2]]",
            "[[], [1]]",
            "[[[1]], []]",
        ] {
            assert!(decode(bad).unwrap_err().contains("ragged"), "{bad}");
        }
    }

    #[test]
    fn non_finite_strings_are_floats() {
        let t = decode(r#"["NaN", "Infinity", "-Infinity", 1]"#).unwrap();
        let Data::F64(v) = t.data else { panic!() };
        assert!(v[0].is_nan() && v[1] == f64::INFINITY && v[2] == f64::NEG_INFINITY);
        assert!(decode(r#"["one"]"#).is_err());
    }

    #[test]
    fn floats_parse_to_the_nearest_double() {
        let t = decode("[0.1, 2.2250738585072011e-308, 9007199254740993]").unwrap();
        assert_eq!(
            t.data,
            Data::F64(vec![
                0.1,
                f64::from_bits(0x000f_ffff_ffff_ffff),
                9007199254740992.0
            ])
        );
    }

    #[test]
    fn flat_data_is_a_flat_array() {
        assert!(decode(r#"{"shape": [], "data": 0}"#).is_err());
        assert!(decode(r#"{"shape": [2, 1], "data": [[1], [2]]}"#).is_err());
        assert_eq!(
            decode(r#"{"shape": [], "data": [5]}"#).unwrap().shape,
            Vec::<usize>::new()
        );
        assert_eq!(
            decode(r#"{"shape": [0], "data": []}"#).unwrap().shape,
            vec![0]
        );
    }

    #[test]
    fn flat_and_base64_forms_decode() {
        let t = decode(r#"{"shape": [2, 2], "data": [1, 2, 3, 4.5]}"#).unwrap();
        assert_eq!((t.shape.clone(), t.form), (vec![2, 2], Form::Flat));
        // 1.0 and -2.0 as little-endian float64.
        let t =
            decode(r#"{"dtype": "float64", "base64": "AAAAAAAA8D8AAAAAAAAAwA==", "shape": [2]}"#)
                .unwrap();
        assert_eq!(t.data, Data::F64(vec![1.0, -2.0]));
        assert!(
            decode(r#"{"shape": [3], "dtype": "float64", "base64": "AAAAAAAA8D8AAAAAAAAAwA=="}"#)
                .is_err()
        );
        assert!(decode(r#"{"shape": [2], "dtype": "float64", "base64": "!!!"}"#).is_err());
        assert!(decode(r#"{"shape": [3], "data": [1, 2]}"#).is_err());
    }

    /// The fuzzer's reproducer (`fuzz/` target `tensor_decode`): a text of the right length
    /// whose padding is short made the base64 decoder panic.
    #[test]
    fn base64_with_wrong_padding_is_refused_not_a_panic() {
        let crash = r#"{"shape":[2,2,2],"dtype":"float64","base64":"TfOOU3Qk9j/BqKROQBPwv/jCZKpgVOI'L9VokGB2z0+xUGuaw5dDwFK4HoXrUcg/cF8HzhlR8b+OdXEbDeAAwA=}"}"#;
        assert!(decode(crash).unwrap_err().contains("padding"));
        // Every element count and dtype, with the padding dropped, changed or doubled.
        for dtype in ["float64", "float32", "int64"] {
            for n in 0..12usize {
                let bytes = n * if dtype.ends_with("64") { 8 } else { 4 };
                let len = bytes.div_ceil(3) * 4;
                let pad = (3 - bytes % 3) % 3;
                let good = format!("{}{}", "A".repeat(len - pad), "=".repeat(pad));
                let body =
                    |b64: &str| format!(r#"{{"shape":[{n}],"dtype":"{dtype}","base64":"{b64}"}}"#);
                if let Err(e) = decode(&body(&good)) {
                    panic!("{dtype} {n}: {e}");
                }
                for bad in [
                    "A".repeat(len),
                    format!("{}=A", "A".repeat(len.saturating_sub(2))),
                    format!("{}==", "A".repeat(len.saturating_sub(2))),
                    format!("{}}}", "A".repeat(len.saturating_sub(1))),
                ] {
                    if bad.len() == len && bad != good {
                        assert!(decode(&body(&bad)).is_err(), "{dtype} {n} {bad}");
                    }
                }
            }
        }
    }

    #[test]
    fn base64_in_pieces_of_any_length_decodes_as_the_whole_text_does() {
        // Element counts whose text ends with 0, 1 and 2 padding characters, for each dtype.
        for (dtype, n) in [
            (Dtype::Float64, 7),
            (Dtype::Float64, 3),
            (Dtype::Float32, 5),
            (Dtype::Float32, 6),
            (Dtype::Int64, 4),
            (Dtype::Float32, 1),
        ] {
            let raw: Vec<u8> = (0..n * dtype.size()).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_simd::STANDARD.encode_to_string(&raw).into_bytes();
            let whole = decode_base64(&text, n, dtype).unwrap();
            for piece in 1..=text.len() {
                let mut s = Base64Stream::new(n, dtype).unwrap();
                assert_eq!(s.text_len(), text.len());
                for p in text.chunks(piece) {
                    s.push(p).unwrap();
                }
                match s.finish() {
                    Ok(got) => assert_eq!(got, whole, "{dtype:?} × {n} in pieces of {piece}"),
                    Err(_) => panic!("{dtype:?} × {n} in pieces of {piece} refused"),
                }
            }
        }
    }

    #[test]
    fn base64_in_pieces_refuses_what_the_whole_decode_refuses_and_gives_the_text_back() {
        // 32 bytes: a text that ends with one padding character.
        let (dtype, n) = (Dtype::Float64, 4);
        let raw: Vec<u8> = (0..n * 8).map(|i| (i * 13) as u8).collect();
        let good = base64_simd::STANDARD.encode_to_string(&raw).into_bytes();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for at in [0, 1, 5, 27, good.len() - 5, good.len() - 2, good.len() - 1] {
            for c in [b'!', b'=', b'\\', b'\0'] {
                let mut bad = good.clone();
                bad[at] = c;
                if bad != good {
                    cases.push(bad);
                }
            }
        }
        cases.push(good[..good.len() - 4].to_vec()); // short
        cases.push([good.as_slice(), b"AAAA"].concat()); // long
        // The last group's padding saying a byte too few.
        let mut short = good.clone();
        let end = short.len();
        short[end - 2..].copy_from_slice(b"==");
        cases.push(short);
        for bad in cases {
            assert!(
                decode_base64(&bad, n, dtype).is_err() || bad.len() != good.len(),
                "{bad:?}"
            );
            assert!(check_base64_length(bad.len(), n, dtype).is_err() || bad.len() == good.len());
            for piece in [1, 3, 4, 5, 8, 13, bad.len()] {
                let mut s = Base64Stream::new(n, dtype).unwrap();
                let mut taken = Vec::new();
                let mut refused = false;
                for p in bad.chunks(piece) {
                    if let Err(at) = s.push(p) {
                        // What it took, and then the rest as it was: the text again.
                        taken = [s.text(), p[at..].to_vec()].concat();
                        let rest = bad.len() - taken.len();
                        taken.extend_from_slice(&bad[bad.len() - rest..]);
                        refused = true;
                        break;
                    }
                }
                if !refused {
                    match s.finish() {
                        Ok(_) => panic!("{bad:?} in pieces of {piece} taken"),
                        Err(mut s) => taken = s.text(),
                    }
                }
                assert_eq!(taken, bad, "in pieces of {piece}");
            }
        }
    }

    #[test]
    fn large_base64_decodes_in_parallel_chunks_to_the_same_bytes() {
        // Lengths around the chunk boundaries, above the parallel threshold, with 0, 1 and 2
        // padding characters: the same elements as a whole-text decode, and any damage in any
        // chunk (a bad character, padding in the middle, a cut) refused.
        let base = BASE64_PARALLEL / 4 * 3;
        let chunk = BASE64_CHUNK / 4 * 3;
        for bytes in [
            base,
            base + 1,
            base + 2,
            base + chunk,
            base + chunk - 1,
            3 * base + 5,
        ] {
            let raw: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect();
            let text = base64_simd::STANDARD.encode_to_string(&raw);
            assert!(text.len() >= BASE64_PARALLEL);
            let n = bytes;
            // int64 elements need bytes % 8 == 0: decode as raw bytes through `decode_into`.
            let mut out = vec![std::mem::MaybeUninit::new(0u8); n];
            decode_into(text.as_bytes(), &mut out).unwrap();
            // SAFETY: initialised above (and every byte rewritten by the decode).
            let got: Vec<u8> = out.iter().map(|b| unsafe { b.assume_init() }).collect();
            assert!(got == raw, "{bytes} bytes decoded wrong");
            let mut bad = text.clone().into_bytes();
            for at in [
                0,
                BASE64_CHUNK - 1,
                BASE64_CHUNK,
                text.len() / 2,
                text.len() - 5,
            ] {
                let keep = bad[at];
                bad[at] = b'!';
                assert_eq!(
                    decode_into(&bad, &mut out),
                    Err(None),
                    "{bytes} bad at {at}"
                );
                bad[at] = b'=';
                assert!(decode_into(&bad, &mut out).is_err(), "{bytes} '=' at {at}");
                bad[at] = keep;
            }
            assert!(decode_into(&bad[..bad.len() - 4], &mut out).is_err());
            assert!(decode_into(&bad[4..], &mut out).is_err());
        }
        // A text that says more or fewer bytes than the output has is refused, not a panic.
        let mut three = vec![std::mem::MaybeUninit::new(0u8); 3];
        for text in [&b"AAAAAAAA"[..], b"AA==", b"AAA", b"AAAAA", b""] {
            assert!(decode_into(text, &mut three).is_err(), "{text:?}");
        }
        // Through `decode_base64`, as the service calls it: the same f64s either way.
        let n = BASE64_PARALLEL / 8 + 3;
        let v: Vec<f64> = (0..n).map(|i| i as f64 * 0.37 - 1e5).collect();
        let text = base64_simd::STANDARD.encode_to_string(bytemuck::cast_slice::<f64, u8>(&v));
        check_base64_length(text.len(), n, Dtype::Float64).unwrap();
        match decode_base64(text.as_bytes(), n, Dtype::Float64).unwrap() {
            Data::F64(got) => assert!(got == v),
            _ => panic!("not f64"),
        }
    }

    #[test]
    fn limits_hold_before_allocation() {
        // Over the budget: nothing more is stored, the decode goes on, and `over` says so.
        let (r, over) = Budget {
            elements: 3,
            rank: 4,
        }
        .run(|| serde_json::from_str::<Tensor>("[1, 2, 3, 4]").map_err(|e| e.to_string()));
        assert!(r.is_ok() && over);
        // A malformed tensor is an error whatever its size.
        let (r, over) = Budget {
            elements: 3,
            rank: 4,
        }
        .run(|| serde_json::from_str::<Tensor>("[[1, 2, 3, 4], [5]]").map_err(|e| e.to_string()));
        assert!(r.unwrap_err().contains("ragged") && over);
        let (r, over) = Budget {
            elements: 3,
            rank: 4,
        }
        .run(|| {
            serde_json::from_str::<Tensor>(
                r#"{"shape": [1000000, 1000000], "dtype": "float64", "base64": ""}"#,
            )
            .map_err(|e| e.to_string())
        });
        // A declared shape is checked before anything is allocated: its base64 is too short.
        assert!(r.unwrap_err().contains("base64") && !over);
        // Four float64 elements, consistent, one more than the budget: over, nothing decoded.
        let (r, over) = Budget {
            elements: 3,
            rank: 4,
        }
        .run(|| {
            serde_json::from_str::<Tensor>(
                r#"{"shape": [4], "dtype": "float64", "base64": "AAAAAAAA8D8AAAAAAAAAwAAAAAAAAPA/AAAAAAAAAMA="}"#,
            )
            .map_err(|e| e.to_string())
        });
        assert!(r.unwrap().data.is_empty() && over);
        assert!(decode("[[[[[1]]]]]").unwrap_err().contains("rank"));
        assert!(decode(r#"{"shape": [4294967296, 4294967296, 4294967296], "data": []}"#).is_err());
    }
}
