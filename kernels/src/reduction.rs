//! [`Reduction`], and the one place where sums and means are taken and the returned loss is
//! built from them.
//!
//! Every sum over a tensor goes through [`Sum8`]: eight independent `f64` accumulators filled
//! in a fixed order, so results are deterministic (independent of threads and load) and a
//! reduction over millions of `f32` elements keeps `f64` accuracy.

use std::ops::Range;

use ndarray::{ArrayD, IxDyn};

use crate::cancel::checkpoint;
use crate::error::LossError;
use crate::real::Real;

/// PyTorch's `reduction` argument (`'batchmean'` belongs to `kl_div` alone and lives there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// The unreduced loss tensor.
    None,
    /// The mean over the loss's elements (or the loss's own denominator, see each kernel).
    #[default]
    Mean,
    /// The sum over the loss's elements.
    Sum,
}

impl Reduction {
    /// The name PyTorch uses (`"none"`, `"mean"`, `"sum"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
        }
    }
}

/// A deterministic `f64` sum with eight lanes, filled round-robin.
///
/// Several independent accumulators let the compiler keep the adds in flight (as ndarray's
/// `unrolled_fold` does) while the order of additions stays fixed by the input order.
#[derive(Clone, Debug, Default)]
pub struct Sum8 {
    lanes: [f64; 8],
    next: usize,
}

impl Sum8 {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value.
    #[inline(always)]
    pub fn add(&mut self, x: f64) {
        self.lanes[self.next] += x;
        self.next = (self.next + 1) & 7;
    }

    /// Adds the values in order: the same lanes, the same bits as calling [`Sum8::add`] on
    /// each, but whole groups of eight go to the eight lanes without the rotating index
    /// (which keeps the lanes in memory and each add waiting on the last).
    #[inline]
    pub fn extend(&mut self, xs: &[f64]) {
        let mut xs = xs;
        while self.next != 0 {
            let Some((&x, rest)) = xs.split_first() else {
                return;
            };
            self.add(x);
            xs = rest;
        }
        let chunks = xs.chunks_exact(8);
        let rest = chunks.remainder();
        let mut lanes = self.lanes;
        for c in chunks {
            for k in 0..8 {
                lanes[k] += c[k];
            }
        }
        self.lanes = lanes;
        for &x in rest {
            self.add(x);
        }
    }

    /// The total.
    pub fn total(&self) -> f64 {
        lanes_total(&self.lanes)
    }
}

/// The `f64` sum of a slice, deterministic, vectorisable.
pub fn sum<T: Real>(xs: &[T]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            lanes[k] += c[k].f64();
        }
    }
    for (k, x) in rest.iter().enumerate() {
        lanes[k] += x.f64();
    }
    lanes_total(&lanes)
}

/// Adds a block of values to eight `f64` lanes, element `k` of the block to lane `k mod 8`:
/// the order of [`Sum8`] when the block starts at a multiple of 8. Blocked kernels fill a
/// block element-wise (a loop the vectoriser takes), then sum it with this.
#[inline(always)]
pub(crate) fn add_to_lanes<T: Real>(lanes: &mut [f64; 8], block: &[T]) {
    let chunks = block.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (lane, v) in lanes.iter_mut().zip(c) {
            *lane += v.f64();
        }
    }
    for (lane, v) in lanes.iter_mut().zip(rest) {
        *lane += v.f64();
    }
}

/// The total of eight lanes, in the order of [`Sum8::total`].
///
/// Where that order overflows (lanes near the largest float whose exact sum is finite), the
/// lanes are added again scaled by 1/8, which cannot overflow, and the sum scaled back: the
/// finite sum, as a sequential order gives it. Infinite or NaN lanes give the same non-finite
/// result either way.
#[inline(always)]
pub(crate) fn lanes_total(l: &[f64; 8]) -> f64 {
    let t = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    if t.is_finite() { t } else { rescaled_total(l) }
}

#[cold]
#[inline(never)]
fn rescaled_total(l: &[f64; 8]) -> f64 {
    let s = l.map(|v| v * 0.125);
    (((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))) * 8.0
}

/// Length of the blocks of blocked kernels (a multiple of 8, see [`add_to_lanes`]).
pub(crate) const BLOCK: usize = 512;

/// The pass of a blocked element-wise kernel: for each block of at most [`BLOCK`] elements,
/// `fill(range, block)` writes the block's losses into `block` (and whatever else the kernel
/// writes for `range`, element-wise, so the loop vectorises); then the losses are kept in
/// `losses` when `KEEP` and added to eight lanes, element `i` to lane `i mod 8` (the order of
/// [`Sum8`]). Returns `Σ ℓ`.
#[inline(always)]
pub(crate) fn blocked<T: Real, const KEEP: bool>(
    n: usize,
    losses: &mut [T],
    fill: impl FnMut(Range<usize>, &mut [T]),
) -> f64 {
    blocked_in::<T, KEEP, false>(n, losses, fill).expect("no checkpoint, no error")
}

/// [`blocked`] with a cancellation checkpoint every [`CHUNK`] elements.
#[inline(always)]
pub(crate) fn blocked_checked<T: Real, const KEEP: bool>(
    n: usize,
    losses: &mut [T],
    fill: impl FnMut(Range<usize>, &mut [T]),
) -> Result<f64, LossError> {
    blocked_in::<T, KEEP, true>(n, losses, fill)
}

/// Elements between two cancellation checkpoints of [`blocked_checked`].
pub(crate) const CHUNK: usize = 1 << 16;

#[inline(always)]
fn blocked_in<T: Real, const KEEP: bool, const CHECK: bool>(
    n: usize,
    losses: &mut [T],
    mut fill: impl FnMut(Range<usize>, &mut [T]),
) -> Result<f64, LossError> {
    const { assert!(CHUNK.is_multiple_of(BLOCK)) };
    let losses = if KEEP { &mut losses[..n] } else { losses };
    let mut lanes = [0.0f64; 8];
    let mut buf = [T::zero(); BLOCK];
    for start in (0..n).step_by(BLOCK) {
        if CHECK && start % CHUNK == 0 {
            checkpoint()?;
        }
        let end = (start + BLOCK).min(n);
        let block = &mut buf[..end - start];
        fill(start..end, block);
        if KEEP {
            losses[start..end].copy_from_slice(block);
        }
        add_to_lanes(&mut lanes, block);
    }
    Ok(lanes_total(&lanes))
}

/// `total / count` as PyTorch takes a mean: the mean of nothing is NaN.
pub fn mean(total: f64, count: usize) -> f64 {
    if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }
}

/// The loss a kernel returns: the unreduced `losses` (of shape `shape`) for `none`, else the
/// 0-d `value` (the already reduced sum or mean).
pub(crate) fn finish<T: Real>(
    reduction: Reduction,
    shape: &[usize],
    losses: Vec<T>,
    value: f64,
) -> ArrayD<T> {
    match reduction {
        Reduction::None => {
            ArrayD::from_shape_vec(IxDyn(shape), losses).expect("one loss per position")
        }
        Reduction::Sum | Reduction::Mean => ndarray::arr0(T::of(value)).into_dyn(),
    }
}

/// [`finish`] for a loss whose `mean` is its sum `total` over `count` elements (the mean of
/// nothing is NaN).
pub(crate) fn reduce<T: Real>(
    reduction: Reduction,
    shape: &[usize],
    losses: Vec<T>,
    total: f64,
    count: usize,
) -> ArrayD<T> {
    let value = match reduction {
        Reduction::Mean => mean(total, count),
        Reduction::Sum | Reduction::None => total,
    };
    finish(reduction, shape, losses, value)
}

/// The upstream gradient each element of the unreduced loss receives when the reduced loss
/// has gradient 1: `1/count` for a mean, 1 otherwise.
pub fn upstream(reduction: Reduction, count: usize) -> f64 {
    match reduction {
        Reduction::Mean => 1.0 / count as f64,
        Reduction::Sum | Reduction::None => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_of_a_slice_matches_the_streaming_sum() {
        let xs: Vec<f64> = (0..1000).map(|i| (i as f64).sin()).collect();
        let mut s = Sum8::new();
        xs.iter().for_each(|&x| s.add(x));
        assert_eq!(sum(&xs), s.total());
    }

    #[test]
    fn extend_gives_the_bits_of_adding_one_by_one_from_any_start() {
        let xs: Vec<f64> = (0..203).map(|i| (i as f64 * 0.37).sin() * 1e3).collect();
        for before in 0..10 {
            for cut in [0, 1, 5, 8, 13, 64, 203] {
                let (mut a, mut b) = (Sum8::new(), Sum8::new());
                for &x in &xs[..before] {
                    a.add(x);
                    b.add(x);
                }
                let tail = &xs[before..];
                let (p, q) = tail.split_at(cut.min(tail.len()));
                b.extend(p);
                b.extend(q);
                tail.iter().for_each(|&x| a.add(x));
                assert_eq!(a.lanes.map(f64::to_bits), b.lanes.map(f64::to_bits));
                assert_eq!(a.next, b.next);
            }
        }
    }

    /// Issue 28: lanes near the largest float whose plain total overflows.
    #[test]
    fn lanes_that_overflow_together_give_the_finite_sum() {
        let big = 1.3482698511467367e308;
        let xs = [big, -2.0, -2.0, -f64::MAX, 1.0, -big, big];
        assert_eq!(sum(&xs), -4.49423283715579e307);
        let mut s = Sum8::new();
        xs.iter().for_each(|&x| s.add(x));
        assert_eq!(s.total(), -4.49423283715579e307);
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum(&[f64::MAX, f64::MAX, f64::NEG_INFINITY, f64::NAN]).is_nan());
    }

    #[test]
    fn mean_of_nothing_is_nan() {
        assert!(mean(0.0, 0).is_nan());
        assert_eq!(mean(6.0, 3), 2.0);
    }

    #[test]
    fn float32_sums_accumulate_in_float64() {
        let xs = vec![0.1f32; 10_000_000];
        let want = 10_000_000.0 * f64::from(0.1f32);
        assert!((sum(&xs) - want).abs() / want < 1e-12);
    }
}
