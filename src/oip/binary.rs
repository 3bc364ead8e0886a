//! The binary tensor data extension: a body that is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the raw tensors, each input's bytes
//! (`binary_data_size` of them) in input order; and raw little-endian tensor bytes (HTTP
//! binary data, gRPC `raw_input_contents`) into the decoders' buffers.
//!
//! Every size comes from the client, so every one is checked against the bytes that are
//! really there before it is used: sizes that disagree with the body are a client error,
//! never a panic.

use crate::error::ApiError;
use crate::wire::Data;

use super::Datatype;

/// Splits a body into its JSON header and the binary data after it. Without a header length
/// the whole body is the header.
pub fn split<'a>(
    body: &'a [u8],
    header_len: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(text) = header_len else {
        return Ok((body, &[]));
    };
    let n = header_length(text)?;
    if n > body.len() {
        return Err(ApiError::tensor(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// The value of `Inference-Header-Content-Length`.
pub fn header_length(text: &str) -> Result<usize, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::tensor(format!(
            "Inference-Header-Content-Length must be a byte count (got `{text}`)"
        ))
    })
}

/// Cuts `data` into consecutive pieces of the given sizes (`None`: that input has its data
/// in the JSON), which must use up exactly all of it.
pub fn pieces<'a>(
    data: &'a [u8],
    sizes: &[Option<usize>],
) -> Result<Vec<Option<&'a [u8]>>, ApiError> {
    let mut rest = data;
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        match size {
            None => out.push(None),
            Some(n) => {
                if n > rest.len() {
                    return Err(ApiError::tensor(format!(
                        "the inputs' binary_data_size add up to more than the {} bytes of binary \
                         data after the header",
                        data.len()
                    )));
                }
                let (piece, tail) = rest.split_at(n);
                out.push(Some(piece));
                rest = tail;
            }
        }
    }
    if !rest.is_empty() {
        return Err(ApiError::tensor(format!(
            "{} bytes of binary data after the header belong to no input (the inputs' \
             binary_data_size add up to {})",
            rest.len(),
            data.len() - rest.len()
        )));
    }
    Ok(out)
}

/// Decodes `count` elements of `datatype` from their raw little-endian bytes, which must be
/// exactly that many: one copy into the tensor's buffer (floats and 64-bit integers are
/// copied as they are on a little-endian machine; `INT32` is widened).
pub fn decode(
    name: &str,
    bytes: &[u8],
    datatype: Datatype,
    count: usize,
) -> Result<Data, ApiError> {
    let want = count.checked_mul(datatype.size());
    if want != Some(bytes.len()) {
        return Err(ApiError::tensor(format!(
            "input `{name}` has {} bytes of data, but its shape and datatype {} make {} bytes",
            bytes.len(),
            datatype.as_str(),
            want.map_or_else(|| "too many".to_string(), |n| n.to_string())
        )));
    }
    Ok(match datatype {
        Datatype::Fp64 => Data::F64(copy_le(bytes, count, f64::from_le_bytes)),
        Datatype::Fp32 => Data::F32(copy_le(bytes, count, f32::from_le_bytes)),
        Datatype::Int64 => Data::I64(copy_le(bytes, count, i64::from_le_bytes)),
        Datatype::Int32 => Data::I64(
            bytes
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
    })
}

/// `count` elements from exactly `count * N` little-endian bytes, written once into a
/// buffer that is not zeroed first. `from` is a closure or function item, not a function
/// pointer, so that it inlines: the loop then compiles to a plain copy on a little-endian
/// machine, from any alignment of the body (through a pointer it was a call per element,
/// a fifth of a gRPC request's CPU time).
fn copy_le<T, const N: usize>(bytes: &[u8], count: usize, from: impl Fn([u8; N]) -> T) -> Vec<T> {
    let mut v = Vec::with_capacity(count);
    v.extend(
        bytes
            .chunks_exact(N)
            .map(|c| from(c.try_into().expect("chunks of N bytes"))),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_cuts() {
        let body = b"{\"a\":1}\x01\x02\x03";
        let (h, d) = split(body, Some("7")).unwrap();
        assert_eq!((h, d), (&b"{\"a\":1}"[..], &b"\x01\x02\x03"[..]));
        assert_eq!(split(body, None).unwrap().1, b"");
        assert!(split(body, Some("11")).is_err());
        assert!(split(body, Some("-1")).is_err());
        assert!(split(body, Some("x")).is_err());
        let p = pieces(d, &[Some(1), None, Some(2)]).unwrap();
        assert_eq!(p, [Some(&b"\x01"[..]), None, Some(&b"\x02\x03"[..])]);
        assert!(pieces(d, &[Some(1), Some(1)]).is_err(), "a byte left over");
        assert!(pieces(d, &[Some(2), Some(2)]).is_err(), "past the end");
        assert!(pieces(d, &[Some(usize::MAX)]).is_err());
    }

    #[test]
    fn decodes_little_endian() {
        let x = [1.5f64, -0.0, f64::NAN];
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Unaligned on purpose: the copy does not care.
        let mut off = vec![0u8];
        off.extend_from_slice(&bytes);
        let Data::F64(v) = decode("x", &off[1..], Datatype::Fp64, 3).unwrap() else {
            panic!()
        };
        assert_eq!(v[0], 1.5);
        assert!(v[1] == 0.0 && v[1].is_sign_negative() && v[2].is_nan());
        let i: Vec<u8> = [-3i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode("t", &i, Datatype::Int32, 2).unwrap(),
            Data::I64(vec![-3, 7])
        );
        assert!(decode("t", &i, Datatype::Int64, 2).is_err());
        assert!(decode("t", &i, Datatype::Fp64, usize::MAX).is_err());
    }
}
