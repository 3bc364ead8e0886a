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
pub trait WireFloat: Real {
    /// Appends the JSON text of `self`.
    fn write_json(self, out: &mut Vec<u8>);
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
    /// The little-endian bytes of `data`: the slice itself, reinterpreted, on a little-endian
    /// machine (no copy), else a copy.
    fn le_bytes(data: &[Self]) -> std::borrow::Cow<'_, [u8]>;
    /// The longest JSON text [`WireFloat::write_json`] writes for one value.
    const MAX_JSON: usize;
}

macro_rules! wire_float {
    ($t:ty) => {
        impl WireFloat for $t {
            #[inline]
            fn write_json(self, out: &mut Vec<u8>) {
                if self.is_finite() {
                    let mut buf = zmij::Buffer::new();
                    let text = buf.format_finite(self);
                    if self.abs() < 1.0 {
                        // A negative exponent or none: no `+` to drop, nothing to scan.
                        out.extend_from_slice(text.as_bytes());
                    } else {
                        write_finite(out, text.as_bytes());
                    }
                } else if self.is_nan() {
                    out.extend_from_slice(b"\"NaN\"");
                } else if self > 0.0 {
                    out.extend_from_slice(b"\"Infinity\"");
                } else {
                    out.extend_from_slice(b"\"-Infinity\"");
                }
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

            // ryu's longest output ("-1.2345678901234567e-308", 24 bytes for f64; 15 for
            // f32) is longer than `"-Infinity"` (11).
            const MAX_JSON: usize = if std::mem::size_of::<$t>() == 8 {
                24
            } else {
                15
            };
        }
    };
}

/// Appends zmij's text of a finite float in the form ryu wrote, which lossd always has: zmij
/// writes a positive exponent with a sign (`1e+300`), ryu without (`1e300`). zmij takes about
/// half ryu's time per float (BENCHMARKS.md), which is most of writing a gradient.
#[inline]
fn write_finite(out: &mut Vec<u8>, text: &[u8]) {
    match text.iter().position(|&b| b == b'+') {
        None => out.extend_from_slice(text),
        Some(plus) => {
            out.extend_from_slice(&text[..plus]);
            out.extend_from_slice(&text[plus + 1..]);
        }
    }
}

wire_float!(f32);
wire_float!(f64);

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
}

/// Writes row-major `data` of `shape` (rank >= 1) as nested arrays.
fn write_nested<T: WireFloat>(out: &mut Vec<u8>, data: &[T], shape: &[usize]) {
    out.push(b'[');
    if shape.len() == 1 {
        for (i, v) in data.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            v.write_json(out);
        }
    } else {
        let inner: usize = shape[1..].iter().product();
        for i in 0..shape[0] {
            if i > 0 {
                out.push(b',');
            }
            write_nested(out, &data[i * inner..(i + 1) * inner], &shape[1..]);
        }
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
        check(-1.175_494_4e-38_f32);
        check(f64::NEG_INFINITY);
        assert_eq!(
            ryu::Buffer::new()
                .format(-2.225_073_858_507_201_4e-308_f64)
                .len(),
            24
        );
        assert_eq!(ryu::Buffer::new().format(-1.175_494_4e-38_f32).len(), 14);
    }

    #[test]
    fn base64_bytes_are_little_endian() {
        let v = [1.0f32, -2.0];
        assert_eq!(&*f32::le_bytes(&v), &[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    }
}

#[cfg(test)]
mod same_text_as_ryu {
    /// zmij (with [`super::write_finite`]) writes exactly what ryu wrote before it, digits and
    /// form, for random bit patterns and for values across the exponent range.
    #[test]
    fn floats_are_written_as_ryu_wrote_them() {
        fn check<F: zmij::Float + ryu::Float + Copy>(v: F) {
            let mut ours = Vec::new();
            super::write_finite(&mut ours, zmij::Buffer::new().format_finite(v).as_bytes());
            assert_eq!(ours, ryu::Buffer::new().format_finite(v).as_bytes());
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
