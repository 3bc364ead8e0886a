//! Short decimal floats (`-0.373170205`: a sign, digits, a point, digits, at most 16 bytes)
//! parsed without a byte loop, on CPUs with AVX2 and BMI.
//!
//! The byte-at-a-time parse of [`super::number`] spends a loop step and a branch on every
//! byte, and each number's end is only known once its last byte was looked at, so the next
//! number waits for it. Here a bitmap of the separators in the next 64 bytes (whitespace, `,` and
//! `]`) gives each number's end with one bit scan, and the digits of one number are read
//! at once: 16 bytes compared in one step for the shape check, one shuffle (chosen by the
//! point's position and the length) to drop the point and right-align the digits, and three
//! multiply-adds to sum them. With at most 15 digits the significand is below 2^53 and the
//! power of ten at most 10^15, so one division rounds correctly (Clinger's fast path, as in
//! [`super::number`]): the same bits as serde_json's `float_roundtrip` parse.
//!
//! Anything else (integers, exponents, longer numbers, bad text, the last 64 bytes of a
//! body) is left to [`super::number`]: a number taken here is one it takes the same way, to
//! the same float and the same end.

use std::arch::x86_64::*;

use super::POW10;

/// 10^0 to 10^15, then the same negated.
static DIVISORS: [f64; 32] = {
    let mut d = [0.0; 32];
    let mut k = 0;
    while k < 16 {
        d[k] = POW10[k];
        d[16 + k] = -POW10[k];
        k += 1;
    }
    d
};

/// Whether this CPU has the instructions [`Tokens::float`] uses.
pub(super) fn supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("bmi1")
        && is_x86_feature_detected!("bmi2")
}

/// Which byte of a 16-byte number goes where: entry `len * 16 + point` lists, for each of 16
/// digit lanes (the last one the units), the byte of a number of `len` bytes with its point
/// at `point` that holds that digit, or 0x80 (a zero) where the number has no digit left.
static SHUFFLES: [[u8; 16]; 17 * 16] = shuffles();

const fn shuffles() -> [[u8; 16]; 17 * 16] {
    let mut table = [[0x80u8; 16]; 17 * 16];
    let mut len = 0;
    while len <= 16 {
        let mut point = 0;
        while point < 16 {
            let fraction = len as isize - 1 - point as isize;
            let mut lane = 0;
            while lane < 16 {
                // The lane's digit, counted from the last; the point sits between the
                // fraction's digits and the integer's.
                let k = 15 - lane as isize;
                let byte = if k < fraction {
                    len as isize - 1 - k
                } else {
                    len as isize - 2 - k
                };
                if byte >= 0 {
                    table[len * 16 + point][lane] = byte as u8;
                }
                lane += 1;
            }
            point += 1;
        }
        len += 1;
    }
    table
}

/// The map's bytes a number [`Tokens::float`] takes may start at: the rest (18 bytes) holds
/// the longest such number, 16 bytes, and the [`AFTER`] bytes [`Tokens::floats`] reads after
/// it; a number starting there is read after mapping the bytes from it.
const STARTS: usize = 64 - 16 - AFTER + 1;

/// The bytes [`Tokens::floats`] reads from a number's end: the separator and two more.
const AFTER: usize = 3;

/// Where the separators are in the 64 bytes from `base`: a set bit for each.
pub(super) struct Tokens {
    base: usize,
    seps: u64,
}

impl Tokens {
    pub(super) fn new() -> Self {
        Self { base: 0, seps: 0 }
    }

    /// Maps the separators of the 64 bytes from `p`; `None` when fewer are left.
    #[target_feature(enable = "avx2,bmi1,bmi2")]
    #[inline]
    fn refill(&mut self, b: &[u8], p: usize) -> Option<()> {
        let block = b.get(p..p.checked_add(64)?)?;
        let half = |q: &[u8]| {
            // SAFETY: `q` holds 32 bytes (a half of `block`); the load needs no alignment.
            let v = unsafe { _mm256_loadu_si256(q.as_ptr().cast()) };
            // Whitespace is among the bytes up to 0x20 (the others are refused in a number
            // anyway), and a number ends at a comma or a closing bracket.
            let low = _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x20)), v);
            let comma = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b',' as i8));
            let close = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b']' as i8));
            let seps = _mm256_or_si256(low, _mm256_or_si256(comma, close));
            u64::from(_mm256_movemask_epi8(seps) as u32)
        };
        self.seps = half(&block[..32]) | (half(&block[32..]) << 32);
        self.base = p;
        Some(())
    }

    /// Short floats from `p` on, each but the last followed by a comma and any whitespace,
    /// into `out`'s spare capacity (at most `max` of them): how many were taken, where the
    /// walk goes on, and whether a number starts there (one this does not take, or one past
    /// `max` or the capacity) rather than whatever followed the last number taken (not a
    /// comma). One loop for a whole array of short floats: what [`Self::float`] costs, and
    /// little more.
    #[target_feature(enable = "avx2,bmi1,bmi2")]
    #[inline]
    pub(super) fn floats(
        &mut self,
        b: &[u8],
        mut p: usize,
        out: &mut Vec<f64>,
        max: usize,
    ) -> (usize, usize, bool) {
        let spare = out.spare_capacity_mut();
        let room = spare.len().min(max);
        let mut n = 0;
        let mut at_number = true;
        while n < room {
            let Some((v, q)) = self.float(b, p) else {
                break;
            };
            spare[n].write(v);
            n += 1;
            // SAFETY: a number `float` takes ends at least `AFTER` bytes before the end of
            // the map, which lies in `b`.
            let after = unsafe { b.get_unchecked(q..q + AFTER) };
            if after[0] != b',' {
                (p, at_number) = (q, false);
                break;
            }
            // The common separator (a comma, one space, then no more whitespace) without
            // the byte loop.
            if after[1] == b' ' && after[2] > b' ' {
                p = q + 2;
                continue;
            }
            p = q + 1;
            while matches!(b.get(p), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                p += 1;
            }
        }
        // SAFETY: the first `n` elements of the spare capacity were written above.
        unsafe { out.set_len(out.len() + n) };
        (n, p, at_number)
    }

    /// The short float at `p` (positions only grow from one call to the next) and the
    /// position after it; `None` when the number there is not one (or not only one).
    #[target_feature(enable = "avx2,bmi1,bmi2")]
    #[inline]
    pub(super) fn float(&mut self, b: &[u8], p: usize) -> Option<(f64, usize)> {
        let off = p.wrapping_sub(self.base);
        let mut rest = if off < STARTS { self.seps >> off } else { 0 };
        if rest == 0 {
            self.refill(b, p)?;
            rest = self.seps;
        }
        // A separator is in the map: the number is whole in it.
        let len = rest.trailing_zeros() as usize;
        if !(3..=16).contains(&len) {
            return None;
        }
        // SAFETY: `p` is among the first `STARTS` bytes of the map (or its first, after the
        // refill), so the 16 bytes from it lie in the map, which lies in `b`.
        let bytes: &[u8; 16] = unsafe { &*b.as_ptr().add(p).cast() };
        // SAFETY: as above; the load needs no alignment.
        let v = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
        let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
        let is_digit = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
        let others = !(_mm_movemask_epi8(is_digit) as u32) & ((1 << len) - 1);
        let neg = usize::from(bytes[0] == b'-');
        // Past the sign, exactly one byte that is not a digit, the point, with a digit on
        // each side of it, and no leading zero before it (JSON's rules).
        let point_bit = others & !(neg as u32);
        let point = point_bit.trailing_zeros() as usize;
        if point_bit & point_bit.wrapping_sub(1) != 0
            || point <= neg
            || point + 1 >= len
            || bytes[point] != b'.'
            || (point - neg > 1 && bytes[neg] == b'0')
        {
            return None;
        }
        // The digits right-aligned in 16 lanes (the sign and the point zeroed), then summed
        // in pairs, fours and eights.
        // SAFETY: a table entry holds 16 bytes; the load needs no alignment.
        let order = unsafe { _mm_loadu_si128(SHUFFLES[len * 16 + point].as_ptr().cast()) };
        let digits = _mm_shuffle_epi8(_mm_and_si128(d, is_digit), order);
        let pairs = _mm_maddubs_epi16(digits, _mm_set1_epi16(0x010A));
        let fours = _mm_madd_epi16(pairs, _mm_set1_epi32(0x0001_0064));
        let fours = _mm_packus_epi32(fours, fours);
        let eights = _mm_madd_epi16(fours, _mm_set1_epi32(0x0001_2710));
        let both = _mm_cvtsi128_si64(eights) as u64;
        let sig = (both & 0xFFFF_FFFF) * 100_000_000 + (both >> 32);
        // Divided by -10^k for a negative number: the same rounding, mirrored (and -0 for
        // zero), with no step to set the sign.
        // The index is below 32 already (the mask spares a bounds check).
        let x = sig as f64 / DIVISORS[(neg * 16 + len - 1 - point) & 31];
        Some((x, p + len))
    }
}
