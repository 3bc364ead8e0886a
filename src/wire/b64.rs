//! Standard base64 decoding: base64_simd's, with the whole 64-character blocks at the front
//! decoded 64 at a time with AVX-512 VBMI where the CPU has it (base64_simd stops at AVX2).
//!
//! A block is taken only when all its 64 characters are of the alphabet (no padding, no
//! other byte), and such a block decodes to the same 48 bytes whichever decoder reads it; the
//! first block that is not, and everything after it, goes to base64_simd. So the bytes
//! written and the errors are base64_simd's own, for any text.
//!
//! The block decode is the one of Muła and Lemire's "Base64 encoding and decoding at almost
//! the speed of a memory copy": one two-table byte permute maps the characters to their six
//! bits (and the other bytes to a value with the top bit set), two multiply-adds join four
//! six-bit values into 24 bits, and one more byte permute packs the 16 groups into 48 bytes.

use std::mem::MaybeUninit;

/// Decodes `text` into the front of `out` as `base64_simd::STANDARD.decode` does, and returns
/// the decoded bytes.
pub(crate) fn decode<'o>(
    text: &[u8],
    out: &'o mut [MaybeUninit<u8>],
) -> Result<&'o mut [u8], base64_simd::Error> {
    #[allow(unused_mut)]
    let (mut read, mut written) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if vbmi::supported() {
        // SAFETY: the CPU has the instructions (checked just above).
        (read, written) = unsafe { vbmi::blocks(text, out) };
    }
    let rest = base64_simd::STANDARD.decode(
        &text[read..],
        base64_simd::Out::from_uninit_slice(&mut out[written..]),
    )?;
    let len = written + rest.len();
    // SAFETY: the blocks wrote `out[..written]`, base64_simd the `rest.len()` bytes after.
    Ok(unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), len) })
}

#[cfg(target_arch = "x86_64")]
mod vbmi {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Whether this CPU has the instructions [`blocks`] uses.
    pub(super) fn supported() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi")
    }

    /// Each ASCII character's six bits, or 0x80 when it is not of the alphabet.
    static VALUES: [u8; 128] = {
        let mut t = [0x80u8; 128];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut k = 0;
        while k < 64 {
            t[alphabet[k] as usize] = k as u8;
            k += 1;
        }
        t
    };

    /// Where each output byte is in the 16 joined groups: group `g`'s 24 bits are the low
    /// three bytes of its 32-bit lane, most significant (the first byte out) highest.
    static PACK: [u8; 64] = {
        let mut t = [0u8; 64];
        let mut g = 0;
        while g < 16 {
            let mut k = 0;
            while k < 3 {
                t[3 * g + k] = (4 * g + 2 - k) as u8;
                k += 1;
            }
            g += 1;
        }
        t
    };

    /// Decodes the whole blocks of 64 alphabet characters at the front of `text` into `out`
    /// (48 bytes each, while they fit), stopping at the first block that holds any other
    /// byte; returns the characters read and the bytes written.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VBMI ([`supported`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn blocks(text: &[u8], out: &mut [MaybeUninit<u8>]) -> (usize, usize) {
        // SAFETY: the tables hold 128 and 64 bytes; the loads need no alignment.
        let (lo, hi, pack) = unsafe {
            (
                _mm512_loadu_si512(VALUES.as_ptr().cast()),
                _mm512_loadu_si512(VALUES.as_ptr().add(64).cast()),
                _mm512_loadu_si512(PACK.as_ptr().cast()),
            )
        };
        let (mut read, mut written) = (0, 0);
        while text.len() - read >= 64 && out.len() - written >= 48 {
            // SAFETY: 64 bytes of `text` from `read` (the loop's condition).
            let chars = unsafe { _mm512_loadu_si512(text.as_ptr().add(read).cast()) };
            // The index's seventh bit picks the table half; a byte with its eighth bit set
            // is no character of the alphabet, and neither is one that maps to 0x80.
            let six = _mm512_permutex2var_epi8(lo, chars, hi);
            if _mm512_movepi8_mask(_mm512_or_si512(six, chars)) != 0 {
                break;
            }
            // Pairs to 12 bits (a·64 + b), then pairs of those to 24 (ab·4096 + cd).
            let twelve = _mm512_maddubs_epi16(six, _mm512_set1_epi32(0x0140_0140));
            let joined = _mm512_madd_epi16(twelve, _mm512_set1_epi32(0x0001_1000));
            let bytes = _mm512_permutexvar_epi8(pack, joined);
            // SAFETY: 48 bytes of `out` from `written` (the loop's condition); the mask
            // stores only those.
            unsafe {
                _mm512_mask_storeu_epi8(
                    out.as_mut_ptr().add(written).cast(),
                    0x0000_FFFF_FFFF_FFFF,
                    bytes,
                );
            }
            read += 64;
            written += 48;
        }
        (read, written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(text: &[u8], room: usize) -> Result<Vec<u8>, ()> {
        let mut out = vec![MaybeUninit::new(0xAAu8); room];
        decode(text, &mut out).map(|b| b.to_vec()).map_err(|_| ())
    }

    fn theirs(text: &[u8], room: usize) -> Result<Vec<u8>, ()> {
        let mut out = vec![MaybeUninit::new(0xAAu8); room];
        base64_simd::STANDARD
            .decode(text, base64_simd::Out::from_uninit_slice(&mut out))
            .map(|b| b.to_vec())
            .map_err(|_| ())
    }

    /// The same bytes or the same refusal as base64_simd, for texts of every length up to a
    /// few blocks, whole and with a byte replaced anywhere (by a character of the alphabet,
    /// padding, another ASCII byte or one with the eighth bit set).
    #[test]
    fn decodes_as_base64_simd() {
        let mut s = 0x853c_49e6_748f_ea9b_u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut blocks_taken = 0;
        for len in 0..400 {
            let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let text = base64_simd::STANDARD.encode_to_string(&raw).into_bytes();
            let room = len + 3;
            assert_eq!(ours(&text, room), Ok(raw.clone()), "{len}");
            if text.len() >= 64 {
                blocks_taken += 1;
            }
            for _ in 0..8 {
                if text.is_empty() {
                    break;
                }
                let mut bad = text.clone();
                let at = next() as usize % bad.len();
                bad[at] = match next() % 4 {
                    0 => b"A/+z9"[next() as usize % 5],
                    1 => b'=',
                    2 => b"\n .-_*"[next() as usize % 6],
                    _ => 0x80 | next() as u8,
                };
                assert_eq!(ours(&bad, room), theirs(&bad, room), "{len} at {at}");
            }
        }
        assert!(blocks_taken > 300);
        #[cfg(target_arch = "x86_64")]
        if vbmi::supported() {
            // The block decoder itself takes whole valid blocks and stops at a bad one.
            let raw: Vec<u8> = (0..480).map(|_| next() as u8).collect();
            let mut text = base64_simd::STANDARD.encode_to_string(&raw).into_bytes();
            let mut out = vec![MaybeUninit::new(0u8); 480];
            // SAFETY: checked just above.
            assert_eq!(unsafe { vbmi::blocks(&text, &mut out) }, (640, 480));
            text[200] = b'=';
            // SAFETY: as above.
            assert_eq!(unsafe { vbmi::blocks(&text, &mut out) }, (192, 144));
        }
    }
}
