//! `soft_margin_loss` (`nn.SoftMarginLoss`): `ℓ = log(1 + exp(−target · input))`,
//! docs/losses.md.
//!
//! Computed stably as `softplus(z)` with `z = −y·x` (docs/differences.md item 9): equal to PyTorch
//! wherever PyTorch is finite, and finite where PyTorch's literal formula overflows to `inf`.

use ndarray::ArrayViewD;

use crate::broadcast::expands_to;
use crate::error::fmt_shape;
use crate::reduction::{blocked, reduce};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// `log(1 + exp(z))` without overflow (vectorisable, see [`crate::vmath::softplus`]).
pub(crate) use crate::vmath::softplus;

/// `1 / (1 + exp(−z))` without overflow (vectorisable, see [`crate::vmath::sigmoid`]).
pub(crate) use crate::vmath::sigmoid;

/// `F.soft_margin_loss(input, target, reduction)`.
///
/// `target` must broadcast to `input`'s shape without enlarging it. Gradient with respect to
/// `input` only (PyTorch refuses a gradient for `target`): `−y·σ(−y·x)`.
pub fn soft_margin_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let shape = input.shape().to_vec();
    if !expands_to(target.shape(), &shape) {
        return Err(LossError::shape(
            "target",
            format!(
                "target has shape {} but must broadcast to the input's shape {} without enlarging it",
                fmt_shape(target.shape()),
                fmt_shape(&shape)
            ),
        ));
    }
    let n = input.len();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let keep = reduction == Reduction::None;
    let mut losses = if keep { vec![T::zero(); n] } else { Vec::new() };
    let mut dx = if grad { vec![T::zero(); n] } else { Vec::new() };
    let (l, d) = (&mut losses[..], &mut dx[..]);
    let total = vectorised!(match (keep, grad) {
        (false, false) => pass::<T, false, false>(&x, &y, l, d),
        (false, true) => pass::<T, false, true>(&x, &y, l, d),
        (true, false) => pass::<T, true, false>(&x, &y, l, d),
        (true, true) => pass::<T, true, true>(&x, &y, l, d),
    });
    let mut out = LossOutput::new(reduce(reduction, &shape, losses, total, n));
    if grad {
        if reduction == Reduction::Mean {
            let s = T::of(1.0 / n as f64);
            dx.iter_mut().for_each(|g| *g *= s);
        }
        out.push_grad("input", &shape, dx);
    }
    Ok(out)
}

/// The pass over the elements, in blocks of [`BLOCK`](crate::reduction::BLOCK): `ℓ = softplus(−y·x)` and, when
/// `GRAD`, `−y·σ(−y·x)` element-wise (vectorised), then the block's losses added to the
/// eight lanes (element `i` to lane `i mod 8`, the order of [`crate::reduction::Sum8`]).
/// Returns `Σ ℓ`; fills `losses` when `KEEP` and `dx` when `GRAD`.
#[inline(always)]
fn pass<T: Real, const KEEP: bool, const GRAD: bool>(
    x: &[T],
    y: &[T],
    losses: &mut [T],
    dx: &mut [T],
) -> f64 {
    let n = x.len();
    let y = &y[..n];
    let dx = if GRAD { &mut dx[..n] } else { dx };
    blocked::<T, KEEP>(
        n,
        losses,
        #[inline(always)]
        |r, block| {
            let (xs, ys) = (&x[r.clone()], &y[r.clone()]);
            for ((l, &xv), &yv) in block.iter_mut().zip(xs).zip(ys) {
                *l = softplus(-yv * xv);
            }
            if GRAD {
                for ((g, &xv), &yv) in dx[r].iter_mut().zip(xs).zip(ys) {
                    *g = -yv * sigmoid(-yv * xv);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduction::BLOCK;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::array;

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example gives loss and gradient, but not x and y: reconstruct from the formula.
        let x = array![0.5, -1.5, 0.3, -0.5].into_dyn();
        let y = array![1.0, 1.0, -1.0, -1.0].into_dyn();
        let out = soft_margin_loss(x.view(), y.view(), Reduction::None, true).unwrap();
        let want: Vec<f64> = x
            .iter()
            .zip(y.iter())
            .map(|(x, y): (&f64, &f64)| (1.0 + (-y * x).exp()).ln())
            .collect();
        assert_close("loss", out.loss.as_slice().unwrap(), &want, 1e-15, 0.0);
    }

    #[test]
    fn large_margins_stay_finite_and_exact() {
        let x = array![-1000.0f32, 1000.0, -100.0].into_dyn();
        let y = array![1.0f32, 1.0, 1.0].into_dyn();
        let out = soft_margin_loss(x.view(), y.view(), Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[1000.0, 0.0, 100.0]);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[-1.0, -0.0, -1.0]
        );
    }

    #[test]
    fn target_may_not_enlarge_the_input() {
        let x = array![[1.0], [2.0]].into_dyn();
        let y = array![[1.0, 1.0], [1.0, 1.0]].into_dyn();
        let e = soft_margin_loss(x.view(), y.view(), Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (crate::ErrorKind::Shape, "target"));
        let y = array![1.0].into_dyn();
        assert!(soft_margin_loss(x.view(), y.view(), Reduction::Mean, false).is_ok());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(3);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let x = rng.randn(&[3, 4]);
            let y = rng.randn(&[4]).mapv(|v| v.signum());
            let out = soft_margin_loss(x.view(), y.view(), reduction, true).unwrap();
            assert_grad("input", &x, out.grad("input").unwrap(), |x| {
                scalar(&soft_margin_loss(x.view(), y.view(), reduction, false).unwrap())
            });
        }
    }

    /// The vector-compiled pass (AVX-512 or AVX2, the widest the CPU has) gives the same bits as
    /// the baseline one (loss sum, losses and gradients), f32 and f64, over a length that is not a
    /// multiple of the block.
    #[test]
    fn avx2_and_baseline_passes_are_bit_identical() {
        fn run<T: Real>(x: &[T], y: &[T], avx2: bool) -> (u64, Vec<T>, Vec<T>) {
            let n = x.len();
            let (mut l, mut d) = (vec![T::zero(); n], vec![T::zero(); n]);
            let t = crate::vmath::dispatch_with(
                avx2,
                #[inline(always)]
                || pass::<T, true, true>(x, y, &mut l, &mut d),
            );
            (t.to_bits(), l, d)
        }
        let mut rng = Rng::new(17);
        let n = 3 * BLOCK + 77;
        let x: Vec<f64> = (0..n).map(|_| rng.range(-200.0, 200.0)).collect();
        let y: Vec<f64> = (0..n).map(|_| rng.range(-2.0, 2.0)).collect();
        let (a, b) = (run(&x, &y, true), run(&x, &y, false));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(a.0, b.0);
        assert_eq!(bits(&a.1), bits(&b.1));
        assert_eq!(bits(&a.2), bits(&b.2));
        let (x, y): (Vec<f32>, Vec<f32>) = (
            x.iter().map(|&v| v as f32).collect(),
            y.iter().map(|&v| v as f32).collect(),
        );
        let (a, b) = (run(&x, &y, true), run(&x, &y, false));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(a.0, b.0);
        assert_eq!(bits(&a.1), bits(&b.1));
        assert_eq!(bits(&a.2), bits(&b.2));
    }
}
