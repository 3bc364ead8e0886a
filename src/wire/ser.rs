//! Encoding tensors into response JSON, by hand into one byte buffer: numbers with `zmij`
//! (shortest text that reads back to the same float, as ryu wrote it), non-finite values as the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"`, or whole tensors as base64.

use lossd_kernels::Real;
use lossd_kernels::ndarray::ArrayD;
use serde::Deserialize;

/// How tensors are written in a response (`encoding` in the request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Nested JSON arrays.
    #[default]
    Json,
    /// `{"shape", "dtype", "base64"}` objects (raw little-endian bytes).
    Base64,
}

/// A float that can be written to the wire.
pub trait WireFloat: Real + lossd_zmij::Float {
    /// Appends the JSON text of `self`.
    fn write_json(self, out: &mut Vec<u8>) {
        out.reserve(Self::SCRATCH);
        // SAFETY: the spare capacity holds SCRATCH bytes, the most `write_json_at` writes, and
        // the text's bytes are initialised by it before the length takes them in.
        unsafe {
            let n = self.write_json_at(out.as_mut_ptr().add(out.len()));
            out.set_len(out.len() + n);
        }
    }
    /// Writes the JSON text of `self` at `dst` and returns its length (at most
    /// [`WireFloat::MAX_JSON`]); the bytes after the text, up to [`WireFloat::SCRATCH`], may
    /// be overwritten.
    ///
    /// # Safety
    /// `dst` must be valid for writing [`WireFloat::SCRATCH`] bytes.
    unsafe fn write_json_at(self, dst: *mut u8) -> usize;
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
    /// The little-endian bytes of `data`: the slice itself, reinterpreted, on a little-endian
    /// machine (no copy), else a copy.
    fn le_bytes(data: &[Self]) -> std::borrow::Cow<'_, [u8]>;
    /// The longest JSON text [`WireFloat::write_json`] writes for one value.
    const MAX_JSON: usize;
    /// The bytes [`WireFloat::write_json_at`] may write: its text, then scratch (the float
    /// writer moves digits in whole blocks).
    const SCRATCH: usize = lossd_zmij::SCRATCH;
}

macro_rules! wire_float {
    ($t:ty) => {
        impl WireFloat for $t {
            #[inline]
            unsafe fn write_json_at(self, dst: *mut u8) -> usize {
                let text: &[u8] = if self.is_finite() {
                    // Written in place: the text is not copied out of a buffer (reading it
                    // back right after its digits were stored stalled).
                    // SAFETY: `dst` holds SCRATCH bytes, what the writer may use.
                    let n = unsafe { lossd_zmij::write_finite_at(self, dst) };
                    // zmij writes a positive exponent with a sign (`1e+300`), ryu without
                    // (`1e300`), and lossd has always written ryu's form: the `+` is dropped.
                    // Below [`NO_PLUS`] there is no `+` to look for.
                    if plain(&[self]) {
                        return n;
                    }
                    // SAFETY: the writer initialised `dst[..n]`.
                    let written = unsafe { std::slice::from_raw_parts(dst, n) };
                    return match written.iter().position(|&b| b == b'+') {
                        None => n,
                        Some(p) => {
                            // SAFETY: within `dst[..n]`.
                            unsafe { std::ptr::copy(dst.add(p + 1), dst.add(p), n - p - 1) };
                            n - 1
                        }
                    };
                } else if self.is_nan() {
                    b"\"NaN\""
                } else if self > 0.0 {
                    b"\"Infinity\""
                } else {
                    b"\"-Infinity\""
                };
                // SAFETY: `dst` holds SCRATCH bytes; the strings are shorter and static.
                unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), dst, text.len()) };
                text.len()
            }

            #[inline]
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }

            fn le_bytes(data: &[Self]) -> std::borrow::Cow<'_, [u8]> {
                if cfg!(target_endian = "little") {
                    bytemuck::cast_slice(data).into()
                } else {
                    let mut raw = Vec::with_capacity(std::mem::size_of_val(data));
                    data.iter().for_each(|v| v.write_le(&mut raw));
                    raw.into()
                }
            }

            // The longest text: at most 17 significant digits (9 for f32), in decimal
            // notation only between 1e-5 and 1e16, so at most `-0.0000` and 17 digits
            // (24 bytes), or 16 integer digits with `-` and `.0` (19); the exponent form
            // (`-2.2250738585072014e-308`, 24) is no longer, and `"-Infinity"` is 11. The
            // same 24 bounds f32's texts. A bound, not an estimate: `write_json_at` and
            // `write_row`'s groups rely on it (tested on random values).
            const MAX_JSON: usize = 24;
        }
    };
}

wire_float!(f32);
wire_float!(f64);

/// Below this magnitude zmij writes no exponent sign (`1e+16`), so its text needs no fix:
/// f64 writes fixed notation below 1e16 and f32 below 1e13, and one bound below both serves
/// both with room for rounding up (tested). An f32 (just under 1e12), so that it converts
/// exactly to either type.
const NO_PLUS: f32 = 1e12;

/// Whether zmij's own texts of `v` are the JSON texts: all finite (NaN fails the comparison)
/// and below [`NO_PLUS`].
#[inline]
fn plain<T: WireFloat>(v: &[T]) -> bool {
    let bound = T::from(NO_PLUS).unwrap_or_else(T::zero);
    v.iter().all(|x| x.abs() < bound)
}

/// The texts of `v` with commas between, one [`WireFloat::write_json_at`] each.
///
/// # Safety
/// `dst` must be valid for writing the texts, the commas and [`WireFloat::SCRATCH`] bytes.
#[cold]
unsafe fn one_at_a_time<T: WireFloat>(v: &[T], dst: *mut u8) -> usize {
    let mut at = 0;
    for (k, x) in v.iter().enumerate() {
        // SAFETY: the caller's: each text and comma lies within what `dst` holds.
        unsafe {
            if k > 0 {
                *dst.add(at) = b',';
                at += 1;
            }
            at += x.write_json_at(dst.add(at));
        }
    }
    at
}

/// Appends `[d0, d1, ...]`.
pub fn write_shape(out: &mut Vec<u8>, shape: &[usize]) {
    out.push(b'[');
    let mut b = itoa::Buffer::new();
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b.format(*d).as_bytes());
    }
    out.push(b']');
}

/// Appends a JSON string literal (escaping what JSON requires).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct and fast; a &str always serializes.
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Appends a tensor: a number when 0-d, else nested arrays or a base64 object.
pub fn write_tensor<T: WireFloat>(out: &mut Vec<u8>, a: &ArrayD<T>, encoding: Encoding) {
    if a.ndim() == 0 {
        a.iter().next().copied().unwrap_or(T::nan()).write_json(out);
        return;
    }
    let data: std::borrow::Cow<'_, [T]> = match a.as_slice() {
        Some(s) => s.into(),
        None => a.iter().copied().collect::<Vec<T>>().into(),
    };
    match encoding {
        Encoding::Json => {
            out.reserve(json_len_bound::<T>(a.shape()));
            write_nested(out, &data, a.shape());
        }
        Encoding::Base64 => {
            out.extend_from_slice(b"{\"shape\":");
            write_shape(out, a.shape());
            out.extend_from_slice(b",\"dtype\":\"");
            out.extend_from_slice(T::DTYPE.as_bytes());
            out.extend_from_slice(b"\",\"base64\":\"");
            base64_simd::STANDARD.encode_append(&*T::le_bytes(&data), out);
            out.extend_from_slice(b"\"}");
        }
    }
}

/// An upper bound of the length of the nested-array text of a tensor of `shape` (rank >= 1),
/// so that the buffer is grown once: each value and its comma, plus two brackets and a comma
/// per (sub)array.
fn json_len_bound<T: WireFloat>(shape: &[usize]) -> usize {
    let mut arrays = 1usize;
    let mut rows = 1usize;
    for &d in &shape[..shape.len() - 1] {
        rows = rows.saturating_mul(d);
        arrays = arrays.saturating_add(rows);
    }
    let n: usize = shape.iter().product();
    n.saturating_mul(T::MAX_JSON + 1)
        .saturating_add(arrays.saturating_mul(3))
        .saturating_add(T::SCRATCH)
}

/// Appends `[v0,v1,...]`, writing into the reserved capacity directly (no length or capacity
/// check per number).
fn write_row<T: WireFloat>(out: &mut Vec<u8>, row: &[T]) {
    out.reserve(
        row.len()
            .saturating_mul(T::MAX_JSON + 1)
            .saturating_add(2 + T::SCRATCH),
    );
    let base = out.as_mut_ptr();
    let mut at = out.len();
    // SAFETY: reserved above: each number's text is at most MAX_JSON bytes after its comma,
    // plus two brackets, and the last number's scratch; every byte up to `at` is written
    // before the length takes it in.
    // Four at a time (then two, then one): the writer computes the digits of four numbers
    // side by side.
    unsafe {
        *base.add(at) = b'[';
        at += 1;
        let first = at;
        // A comma before every group but the first.
        let comma = |at: &mut usize| {
            if *at != first {
                *base.add(*at) = b',';
                *at += 1;
            }
        };
        // A group goes through zmij when its texts are JSON texts ([`plain`]), else one
        // value at a time (each text at most MAX_JSON bytes, the reserve's unit).
        let mut fours = row.chunks_exact(4);
        for c in &mut fours {
            comma(&mut at);
            at += if plain(c) {
                lossd_zmij::write_finite4_at([c[0], c[1], c[2], c[3]], b',', base.add(at))
            } else {
                one_at_a_time(c, base.add(at))
            };
        }
        let mut rest = fours.remainder();
        if let [a, b, tail @ ..] = rest {
            comma(&mut at);
            at += if plain(&[*a, *b]) {
                lossd_zmij::write_finite2_at([*a, *b], b',', base.add(at))
            } else {
                one_at_a_time(&[*a, *b], base.add(at))
            };
            rest = tail;
        }
        if let [v] = rest {
            comma(&mut at);
            at += v.write_json_at(base.add(at));
        }
        *base.add(at) = b']';
        out.set_len(at + 1);
    }
}

/// Writes row-major `data` of `shape` (rank >= 1) as nested arrays.
fn write_nested<T: WireFloat>(out: &mut Vec<u8>, data: &[T], shape: &[usize]) {
    if shape.len() == 1 {
        return write_row(out, data);
    }
    out.push(b'[');
    let inner: usize = shape[1..].iter().product();
    for i in 0..shape[0] {
        if i > 0 {
            out.push(b',');
        }
        write_nested(out, &data[i * inner..(i + 1) * inner], &shape[1..]);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use lossd_kernels::ndarray::{IxDyn, arr0};

    fn text<T: WireFloat>(a: &ArrayD<T>, e: Encoding) -> String {
        let mut out = Vec::new();
        write_tensor(&mut out, a, e);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tensors_are_written_as_nested_arrays_with_strings_for_non_finite_values() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, f64::NAN, f64::INFINITY, -0.5])
            .unwrap();
        assert_eq!(
            text(&a, Encoding::Json),
            r#"[[1.0,"NaN"],["Infinity",-0.5]]"#
        );
        assert_eq!(text(&arr0(0.1f32).into_dyn(), Encoding::Json), "0.1");
        let e = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        assert_eq!(text(&e, Encoding::Json), "[[],[]]");
    }

    #[test]
    fn base64_is_little_endian_with_shape_and_dtype() {
        let a = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f64, -2.0]).unwrap();
        assert_eq!(
            text(&a, Encoding::Base64),
            r#"{"shape":[2],"dtype":"float64","base64":"AAAAAAAA8D8AAAAAAAAAwA=="}"#
        );
    }

    /// The reserve is an upper bound, so the buffer grows once: the longest values ryu
    /// writes, in shapes with many short rows.
    #[test]
    fn the_json_length_bound_holds_for_the_longest_values() {
        fn check<T: WireFloat>(v: T) {
            for shape in [&[1][..], &[7], &[3, 1, 2], &[2, 1, 1, 1], &[4, 0], &[1, 5]] {
                let n: usize = shape.iter().product();
                let a = ArrayD::from_elem(IxDyn(shape), v);
                let mut out = Vec::new();
                write_tensor(&mut out, &a, Encoding::Json);
                assert!(out.len() <= json_len_bound::<T>(shape), "{shape:?} {n}");
            }
        }
        check(-2.225_073_858_507_201_4e-308_f64);
        check(-1.234_567_890_123_456_7e-5_f64);
        check(-1_234_567_890_123_456.0_f64);
        check(-1.175_494_4e-38_f32);
        check(-1.234_567_8e-5_f32);
        check(-2_029_712_700_000.0_f32);
        check(f64::NEG_INFINITY);
        assert_eq!(
            ryu::Buffer::new()
                .format(-2.225_073_858_507_201_4e-308_f64)
                .len(),
            24
        );
        assert_eq!(ryu::Buffer::new().format(-1.175_494_4e-38_f32).len(), 14);
        assert_eq!(
            ryu::Buffer::new().format(-2_029_712_700_000.0_f32).len(),
            16
        );
        assert_eq!(
            ryu::Buffer::new().format(-1.234_567_890_123_456_7e-5).len(),
            24
        );
    }

    #[test]
    fn base64_bytes_are_little_endian() {
        let v = [1.0f32, -2.0];
        assert_eq!(&*f32::le_bytes(&v), &[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    }
}

#[cfg(test)]
mod same_text_as_ryu {
    /// zmij (through [`super::WireFloat::write_json`]) writes exactly what ryu wrote before it,
    /// digits and form, for random bit patterns and for values across the exponent range.
    #[test]
    fn floats_are_written_as_ryu_wrote_them() {
        fn check<F: super::WireFloat + ryu::Float + Copy>(v: F) {
            let mut ours = Vec::new();
            v.write_json(&mut ours);
            assert_eq!(ours, ryu::Buffer::new().format_finite(v).as_bytes());
            assert!(ours.len() <= F::MAX_JSON);
            // And within a row, after a comma.
            let mut row = Vec::new();
            super::write_row(&mut row, &[v, v]);
            let text = ryu::Buffer::new().format_finite(v).to_owned();
            assert_eq!(row, format!("[{text},{text}]").as_bytes());
            // Four at a time, then two, then one.
            let mut row = Vec::new();
            super::write_row(&mut row, &[v; 7]);
            assert_eq!(
                row,
                format!("[{}]", [text.as_str(); 7].join(",")).as_bytes()
            );
        }
        let mut s = 1u64;
        for i in 0..200_000u64 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let scaled = (s >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((i % 40) as i32 - 20);
            for v in [f64::from_bits(s), scaled, -scaled] {
                if v.is_finite() {
                    check(v);
                }
            }
            let f = f32::from_bits(s as u32);
            if f.is_finite() {
                check(f);
                check(scaled as f32);
            }
        }
        for v in [
            -9_999_999_999_999_998.0,
            -1.234_567_890_123_456_7e-5,
            0.0,
            -0.0,
            1.0,
            1e16,
            1e-7,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            check(v);
        }
    }
}

#[cfg(test)]
mod same_text_as_upstream_zmij {
    /// vendor/zmij (fixed-size moves in fixed notation) writes exactly what upstream zmij
    /// writes: random bit patterns, and values of every magnitude with few and many digits,
    /// each branch of fixed notation included.
    #[test]
    fn the_vendored_writer_matches_upstream() {
        fn check(v: f64) {
            if v.is_finite() {
                assert_eq!(
                    lossd_zmij::Buffer::new().format_finite(v),
                    zmij::Buffer::new().format_finite(v),
                    "{v:e}"
                );
                let mut at = [0u8; lossd_zmij::SCRATCH];
                // SAFETY: `at` holds SCRATCH bytes.
                let n = unsafe { lossd_zmij::write_finite_at(v, at.as_mut_ptr()) };
                assert_eq!(&at[..n], zmij::Buffer::new().format_finite(v).as_bytes());
            }
            let f = v as f32;
            if f.is_finite() {
                assert_eq!(
                    lossd_zmij::Buffer::new().format_finite(f),
                    zmij::Buffer::new().format_finite(f),
                    "{f:e}"
                );
            }
        }
        let mut s = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..300_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            check(f64::from_bits(s));
            let e = (s % 40) as i32 - 12;
            let m = (s >> 20) as f64 / (1u64 << 44) as f64;
            check(m * 10f64.powi(e));
            check(-(m * 10f64.powi(e)));
            check((s >> 40) as f64 * 10f64.powi(e));
            check((s >> 58) as f64 / 10f64.powi((s % 8) as i32));
        }
        for k in -330..310 {
            for m in [1.0, 1.5, 123_456_789.0, 9_007_199_254_740_991.0] {
                check(m * 10f64.powi(k));
            }
        }
    }

    /// Four and two numbers written side by side come out as upstream writes each.
    #[test]
    fn numbers_written_side_by_side_match_upstream() {
        fn up<F: zmij::Float>(v: F) -> String {
            zmij::Buffer::new().format_finite(v).to_owned()
        }
        fn check<F: lossd_zmij::Float + zmij::Float + Copy>(v: [F; 4]) {
            let mut at = [0u8; 4 * 25 + lossd_zmij::SCRATCH];
            // SAFETY: `at` holds four texts of at most 24 bytes, three separators and SCRATCH.
            let n = unsafe { lossd_zmij::write_finite4_at(v, b';', at.as_mut_ptr()) };
            let want = v.map(up).join(";");
            assert_eq!(std::str::from_utf8(&at[..n]).unwrap(), want);
            // SAFETY: as above.
            let n = unsafe { lossd_zmij::write_finite2_at([v[2], v[3]], b';', at.as_mut_ptr()) };
            assert_eq!(
                std::str::from_utf8(&at[..n]).unwrap(),
                format!("{};{}", up(v[2]), up(v[3]))
            );
        }
        let mut s = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let specials = [
            0.0,
            -0.0,
            5e-324,
            -2.225_073_858_507_201e-308,
            1e16,
            9_999_999_999_999_998.0,
            1e-5,
            9.9e-6,
            0.1,
            1.0,
        ];
        for i in 0..250_000 {
            let mut v = [0.0f64; 4];
            for x in &mut v {
                let r = next();
                *x = match r % 4 {
                    0 => f64::from_bits(r),
                    1 => {
                        (r >> 11) as f64 / (1u64 << 53) as f64
                            * 10f64.powi(((r >> 8) % 44) as i32 - 22)
                    }
                    2 => specials[(r >> 3) as usize % specials.len()],
                    _ => -((r >> 30) as f64 / 1e6),
                };
                if !x.is_finite() {
                    *x = 1.5;
                }
            }
            check(v);
            if i % 2 == 0 {
                check(v.map(|x| {
                    let f = x as f32;
                    if f.is_finite() { f } else { -3.25 }
                }));
            }
        }
    }
}

#[cfg(test)]
mod rows {
    use super::{WireFloat, write_row};

    /// A row comes out as its values written one by one with commas between, whatever its
    /// length and whichever values (non-finite ones, and ones on each side of the bound below
    /// which no exponent sign needs dropping) fall in a group of four or two.
    #[test]
    fn rows_are_their_values_one_by_one() {
        fn one_by_one<T: WireFloat>(row: &[T]) -> Vec<u8> {
            let mut out = vec![b'['];
            for (k, v) in row.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                v.write_json(&mut out);
            }
            out.push(b']');
            out
        }
        let pool = [
            0.5,
            -0.029_868_083_554_128_445,
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e12,
            0.999_999_9e12,
            1.000_000_1e12,
            1e13,
            9.999_999e12,
            1e15,
            1e16,
            9_999_999_999_999_998.0,
            1e17,
            -1e300,
            5e-324,
            123.456,
            3.0e-8,
        ];
        let mut s = 7u64;
        for _ in 0..20_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (s >> 60) as usize;
            let row: Vec<f64> = (0..len)
                .map(|k| pool[((s >> (4 * k % 56)) as usize + k) % pool.len()])
                .collect();
            let mut out = Vec::new();
            write_row(&mut out, &row);
            assert_eq!(out, one_by_one(&row), "{row:?}");
            let row32: Vec<f32> = row.iter().map(|&x| x as f32).collect();
            let mut out = Vec::new();
            write_row(&mut out, &row32);
            assert_eq!(out, one_by_one(&row32), "{row32:?}");
        }
    }
}
