//! A large array's end and its commas in one pass over its bytes, 32 at a step (AVX2).
//!
//! A large array is looked over before it is decoded: its end, to find what follows it (and
//! to decode the arrays of a body in parallel), and its commas, to size its buffer once.
//! Done apart ([`super::array_end`] with memchr, then [`super::commas`]) that was two passes
//! over the bytes, 5 % of the CPU time of a 1M + 1M-float request; here it is one.

use std::arch::x86_64::*;

/// Whether this CPU has the instructions [`span`] uses.
pub(super) fn supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt")
}

/// The array starting at `p`: the position after it by its brackets alone and the commas in
/// it; `None` when a string (or an unbalanced bracket) is met first. What
/// [`super::array_end`] and [`super::commas`] give together.
#[target_feature(enable = "avx2,popcnt")]
pub(super) fn span(b: &[u8], p: usize) -> Option<(usize, usize)> {
    let bytes = b.get(p..)?;
    let (open, close, quote, comma) = (
        _mm256_set1_epi8(b'[' as i8),
        _mm256_set1_epi8(b']' as i8),
        _mm256_set1_epi8(b'"' as i8),
        _mm256_set1_epi8(b',' as i8),
    );
    let mut depth = 0usize;
    let mut commas = 0usize;
    // Commas of chunks without brackets, counted in byte lanes (a match is -1, subtracted);
    // summed before a lane can overflow.
    let mut lanes = _mm256_setzero_si256();
    let mut steps = 0;
    let mut chunks = bytes.chunks_exact(32);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        // SAFETY: `chunk` holds 32 bytes; the load needs no alignment.
        let v = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) };
        let is_comma = _mm256_cmpeq_epi8(v, comma);
        let marks = _mm256_or_si256(
            _mm256_or_si256(_mm256_cmpeq_epi8(v, open), _mm256_cmpeq_epi8(v, close)),
            _mm256_cmpeq_epi8(v, quote),
        );
        let mut marked = _mm256_movemask_epi8(marks) as u32;
        if marked == 0 {
            lanes = _mm256_sub_epi8(lanes, is_comma);
            steps += 1;
            if steps == 255 {
                commas += lane_sum(lanes);
                (lanes, steps) = (_mm256_setzero_si256(), 0);
            }
        } else {
            let comma_bits = _mm256_movemask_epi8(is_comma) as u32;
            while marked != 0 {
                let i = marked.trailing_zeros();
                match chunk[i as usize] {
                    b'[' => depth += 1,
                    b']' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            let before = comma_bits & ((1u32 << i) - 1);
                            let total = commas + lane_sum(lanes) + before.count_ones() as usize;
                            return Some((p + at + i as usize + 1, total));
                        }
                    }
                    _ => return None,
                }
                marked &= marked - 1;
            }
            commas += comma_bits.count_ones() as usize;
        }
        at += 32;
    }
    commas += lane_sum(lanes);
    for (i, &c) in chunks.remainder().iter().enumerate() {
        match c {
            b'[' => depth += 1,
            b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some((p + at + i + 1, commas));
                }
            }
            b']' | b'"' => return None,
            b',' => commas += 1,
            _ => {}
        }
    }
    None
}

/// The sum of 32 byte lanes.
#[target_feature(enable = "avx2")]
fn lane_sum(lanes: __m256i) -> usize {
    let sums = _mm256_sad_epu8(lanes, _mm256_setzero_si256());
    let halves = _mm_add_epi64(
        _mm256_castsi256_si128(sums),
        _mm256_extracti128_si256(sums, 1),
    );
    (_mm_cvtsi128_si64(halves) + _mm_extract_epi64(halves, 1)) as usize
}
