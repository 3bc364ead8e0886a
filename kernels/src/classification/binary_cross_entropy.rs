//! `binary_cross_entropy` (`nn.BCELoss`): `ℓ = −w·[y·log x + (1 − y)·log(1 − x)]` on
//! probabilities, docs/losses.md.
//!
//! lossd mirrors ATen exactly (docs/differences.md item 8): each log is clamped at −100 *before* it is
//! multiplied, so `x ∈ {0, 1}` never gives NaN; the input gradient divides by
//! `max(x(1 − x), EPS12)` (ATen's float32 `1e-12`) instead of differentiating the clamped
//! logs; the target gradient `−w·logit(x)` is not clamped (±inf at `x ∈ {0, 1}`). Input and
//! target values outside [0, 1] (NaN too) are rejected, element by element in row-major order,
//! input before target, as ATen checks them. The weighted mean divides by the element count,
//! not by `Σ w`. `weight` is not differentiable (PyTorch raises if it requires grad).

use ndarray::ArrayViewD;

use crate::broadcast::{expands_to, unravel};
use crate::error::fmt_shape;
use crate::reduction::{blocked_checked, reduce};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// ATen's `EPSILON` in `Loss.cpp`: `1e-12` stored as a float32, widened to `T`
/// (9.99999996e-13 in `f64`).
#[inline(always)]
pub(crate) fn eps12<T: Real>() -> T {
    T::of(f64::from(1e-12f32))
}

/// Checks that the optional tensor `arg` broadcasts to the input's `shape` without enlarging
/// it (PyTorch multiplies it in place into a tensor of that shape).
pub(crate) fn check_expands_to(
    arg: &'static str,
    given: &[usize],
    shape: &[usize],
) -> Result<(), LossError> {
    if expands_to(given, shape) {
        Ok(())
    } else {
        Err(LossError::shape(
            arg,
            format!(
                "{arg} has shape {} but must broadcast to the input's shape {} without enlarging it",
                fmt_shape(given),
                fmt_shape(shape)
            ),
        ))
    }
}

/// Checks that `target` has exactly the input's shape (PyTorch's functional raises otherwise).
pub(crate) fn check_same_shape(input: &[usize], target: &[usize]) -> Result<(), LossError> {
    if input == target {
        Ok(())
    } else {
        Err(LossError::shape(
            "target",
            format!(
                "target has shape {} but input has shape {}: they must have the same size",
                fmt_shape(target),
                fmt_shape(input)
            ),
        ))
    }
}

/// `F.binary_cross_entropy(input, target, weight, reduction)`.
///
/// `input` (probabilities) and `target` must have the same shape, any rank (else a `Shape`
/// error on `"target"`); `weight` must broadcast to that shape without enlarging it (else a
/// `Shape` error on `"weight"`). Every input and target element must lie in [0, 1] (NaN fails):
/// a `Value` error on `"input"` or `"target"` pointing at the first bad element (row-major,
/// input checked before target at each position, as ATen does). The unreduced loss has the
/// input's shape; `mean` divides by the element count (weights are not in the denominator).
///
/// Gradients: `"input"` `w·(x − y) / max(x(1 − x), EPS12)` and `"target"` `−w·logit(x)`
/// (unclamped).
pub fn binary_cross_entropy<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let shape = input.shape().to_vec();
    check_same_shape(&shape, target.shape())?;
    if let Some(w) = &weight {
        check_expands_to("weight", w.shape(), &shape)?;
    }
    let n = input.len();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let in_unit = |v: T| v >= T::zero() && v <= T::one();
    // A branch-free scan first (it vectorises); the element-wise search for the first bad
    // element only when there is one.
    let bad = |s: &[T]| s.iter().fold(false, |acc, &v| acc | !in_unit(v));
    let any_bad = vectorised!(bad(&x) | bad(&y));
    for i in 0..if any_bad { n } else { 0 } {
        if !in_unit(x[i]) {
            return Err(LossError::value(
                "input",
                format!(
                    "all elements of input should be between 0 and 1, but input{:?} = {}",
                    unravel(i, &shape),
                    x[i]
                ),
            )
            .at(&unravel(i, &shape)));
        }
        if !in_unit(y[i]) {
            return Err(LossError::value(
                "target",
                format!(
                    "all elements of target should be between 0 and 1, but target{:?} = {}",
                    unravel(i, &shape),
                    y[i]
                ),
            )
            .at(&unravel(i, &shape)));
        }
    }
    let w = weight.as_ref().map(|w| contiguous(w, &shape));

    let mut outputs = Outputs::new(reduction, n, grad);
    let (keep, div) = (outputs.keep, outputs.div);
    let ws: &[T] = w.as_deref().unwrap_or(&[]);
    let (l, gx, gy) = (
        &mut outputs.losses[..],
        &mut outputs.dx[..],
        &mut outputs.dy[..],
    );
    macro_rules! go {
        ($($w:literal $k:literal $g:literal),*) => {
            match (w.is_some(), keep, grad) {
                $(($w, $k, $g) => vectorised!(pass::<T, $w, $k, $g>(&x, &y, ws, div, l, gx, gy)),)*
            }
        };
    }
    let total = go!(
        false false false, false false true, false true false, false true true,
        true false false, true false true, true true false, true true true
    )?;

    Ok(outputs.finish(reduction, &shape, total))
}

/// What an element-wise pass over input and target writes: the unreduced losses (kept only
/// for `none`) and, with `grad`, the gradients of input and target, each already divided by
/// `div` (the count for `mean`, else 1). Shared with `binary_cross_entropy_with_logits`.
pub(super) struct Outputs<T> {
    pub(super) keep: bool,
    pub(super) div: T,
    pub(super) losses: Vec<T>,
    pub(super) dx: Vec<T>,
    pub(super) dy: Vec<T>,
    n: usize,
    grad: bool,
}

impl<T: Real> Outputs<T> {
    /// Buffers for `n` elements.
    pub(super) fn new(reduction: Reduction, n: usize, grad: bool) -> Self {
        let keep = reduction == Reduction::None;
        let buffer = |on: bool| if on { vec![T::zero(); n] } else { Vec::new() };
        Self {
            keep,
            // The mean's gradient divides by the count; dividing by 1 otherwise is exact.
            div: T::of(if reduction == Reduction::Mean {
                n as f64
            } else {
                1.0
            }),
            losses: buffer(keep),
            dx: buffer(grad),
            dy: buffer(grad),
            n,
            grad,
        }
    }

    /// The loss from `total` (`Σ ℓ`) or the kept losses, with the gradients when asked for.
    pub(super) fn finish(self, reduction: Reduction, shape: &[usize], total: f64) -> LossOutput<T> {
        let mut out = LossOutput::new(reduce(reduction, shape, self.losses, total, self.n));
        if self.grad {
            out.push_grad("input", shape, self.dx);
            out.push_grad("target", shape, self.dy);
        }
        out
    }
}

/// The pass over the elements in blocks of [`BLOCK`](crate::reduction::BLOCK), specialised on the weight (`W`) and on
/// what it writes (`KEEP`: `losses`; `GRAD`: `dx`, `dy`), so the element-wise loop
/// (vectorisable `ln`/`ln_1p`) has no branches. Each block's losses go to the eight lanes
/// (element `i` to lane `i mod 8`, the order of [`crate::reduction::Sum8`]); a cancellation
/// checkpoint every [`CHUNK`](crate::reduction::CHUNK) elements. Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const W: bool, const KEEP: bool, const GRAD: bool>(
    x: &[T],
    y: &[T],
    w: &[T],
    div: T,
    losses: &mut [T],
    dx: &mut [T],
    dy: &mut [T],
) -> Result<f64, LossError> {
    let (one, floor, eps) = (T::one(), T::of(-100.0), eps12::<T>());
    let n = x.len();
    let y = &y[..n];
    let w = if W { &w[..n] } else { w };
    let (dx, dy) = if GRAD {
        (&mut dx[..n], &mut dy[..n])
    } else {
        (dx, dy)
    };

    blocked_checked::<T, KEEP>(
        n,
        losses,
        #[inline(always)]
        |r, block| {
            let (start, end) = (r.start, r.end);
            let (xs, ys) = (&x[start..end], &y[start..end]);
            let ws = if W { &w[start..end] } else { w };
            let (gxs, gys) = if GRAD {
                (&mut dx[start..end], &mut dy[start..end])
            } else {
                (&mut dx[..0], &mut dy[..0])
            };
            for k in 0..block.len() {
                let (xi, yi) = (xs[k], ys[k]);
                // ATen's expression and operation order: `(y − 1)·max(log1p(−x), −100) − y·max(log x, −100)`.
                let mut l = (yi - one) * (-xi).vln_1p().max(floor) - yi * xi.vln().max(floor);
                if W {
                    l *= ws[k];
                }
                block[k] = l;
                if GRAD {
                    let mut gx = (xi - yi) / ((one - xi) * xi).max(eps);
                    let mut gy = -(xi / (one - xi)).vln();
                    if W {
                        gx *= ws[k];
                        gy *= ws[k];
                    }
                    gxs[k] = gx / div;
                    gys[k] = gy / div;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
    use ndarray::{ArrayD, IxDyn, array};
    use std::f64::consts::LN_2;

    fn bce(
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        w: Option<&ArrayD<f64>>,
        reduction: Reduction,
        grad: bool,
    ) -> Result<LossOutput<f64>, LossError> {
        binary_cross_entropy(x.view(), y.view(), w.map(|w| w.view()), reduction, grad)
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example: p=[0,.25,.5,1], y=[0,1,.5,0], none.
        let x = array![0.0, 0.25, 0.5, 1.0].into_dyn();
        let y = array![0.0, 1.0, 0.5, 0.0].into_dyn();
        let out = bce(&x, &y, None, Reduction::None, true).unwrap();
        assert_array_close(
            "loss",
            &out.loss,
            &[0.0, 2.0 * LN_2, LN_2, 100.0],
            1e-15,
            0.0,
        );
        assert_array_close(
            "input grad",
            out.grad("input").unwrap(),
            &[0.0, -4.0, 0.0, 1000000003995.8029],
            1e-15,
            0.0,
        );
        let gy = out.grad("target").unwrap();
        assert_close(
            "target grad",
            gy.as_slice().unwrap(),
            &[f64::INFINITY, 1.0986122886681098, 0.0, f64::NEG_INFINITY],
            1e-15,
            0.0,
        );
        // PyTorch's −logit(0.5) is −0.0.
        assert!(gy[[2]].is_sign_negative());
    }

    #[test]
    fn clamped_logs_give_one_hundred_at_the_wrong_extreme_and_zero_at_the_right_one() {
        let x = array![0.0, 1.0, 0.0, 1.0].into_dyn();
        let y = array![0.0, 1.0, 1.0, 0.0].into_dyn();
        let out = bce(&x, &y, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.0, 0.0, 100.0, 100.0]);
        // x=1, y=1 gives −0.0, as in PyTorch.
        assert!(out.loss[[1]].is_sign_negative());
        let gx = out.grad("input").unwrap();
        let big = 1.0 / f64::from(1e-12f32);
        assert_eq!(gx.as_slice().unwrap(), &[0.0, 0.0, -big, big]);
    }

    #[test]
    fn float32_uses_the_float32_epsilon() {
        let x = array![0.0f32].into_dyn();
        let y = array![1.0f32].into_dyn();
        let out = binary_cross_entropy(x.view(), y.view(), None, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&100.0f32));
        assert_eq!(out.grad("input").unwrap().first(), Some(&(-1.0 / 1e-12f32)));
    }

    #[test]
    fn weighted_mean_divides_by_the_element_count() {
        // Checked on torch 2.15: x=[.3,.9], y=[.2,1], w=[2,3], mean.
        let x = array![0.3, 0.9].into_dyn();
        let y = array![0.2, 1.0].into_dyn();
        let w = array![2.0, 3.0].into_dyn();
        let out = bce(&x, &y, Some(&w), Reduction::Mean, true).unwrap();
        assert_array_close("loss", &out.loss, &[0.6841752895029125], 1e-14, 0.0);
        assert_array_close(
            "input grad",
            out.grad("input").unwrap(),
            &[0.4761904761904761, -1.6666666666666667],
            1e-14,
            0.0,
        );
        assert_array_close(
            "target grad",
            out.grad("target").unwrap(),
            &[0.8472978603872036, -3.295836866004329],
            1e-14,
            0.0,
        );
        assert!(out.grad("weight").is_none());
    }

    #[test]
    fn weight_broadcasts_to_the_input_but_may_not_enlarge_it() {
        let x = array![[0.2, 0.4], [0.6, 0.8]].into_dyn();
        let w = array![1.0, 2.0].into_dyn();
        let out = bce(&x, &x, Some(&w), Reduction::None, false).unwrap();
        let plain = bce(&x, &x, None, Reduction::None, false).unwrap();
        assert_eq!(out.loss[[1, 1]], 2.0 * plain.loss[[1, 1]]);
        for bad in [
            ArrayD::<f64>::ones(IxDyn(&[2, 2, 2])),
            ArrayD::<f64>::ones(IxDyn(&[3])),
        ] {
            let e = bce(&x, &x, Some(&bad), Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "weight"));
        }
    }

    #[test]
    fn target_must_have_the_input_shape() {
        let x = array![[0.2, 0.4], [0.6, 0.8]].into_dyn();
        let y = array![0.2, 0.4].into_dyn();
        let e = bce(&x, &y, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        assert!(e.message.contains("[2]") && e.message.contains("[2, 2]"));
    }

    #[test]
    fn values_outside_the_unit_interval_are_rejected_at_the_first_bad_element() {
        let x = array![[0.5, 0.5], [1.5, 0.5]].into_dyn();
        let y = array![[0.5, 0.5], [0.5, 0.5]].into_dyn();
        let e = bce(&x, &y, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Value, "input"));
        assert_eq!(e.index, Some(vec![1, 0]));
        assert!(e.message.contains("1.5"));

        // At the same position the input is checked first; earlier positions come first.
        let x = array![0.5, 0.5, 1.5].into_dyn();
        let y = array![0.5, 2.0, 0.5].into_dyn();
        let e = bce(&x, &y, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.arg, e.index), ("target", Some(vec![1])));

        let x = array![0.5, f64::NAN].into_dyn();
        let y = array![0.5, 0.5].into_dyn();
        let e = bce(&x, &y, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.arg, e.index), ("input", Some(vec![1])));
        let e = bce(&y, &x, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.arg, e.index), ("target", Some(vec![1])));
    }

    #[test]
    fn empty_and_scalar_inputs_follow_the_default_reductions() {
        let e = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        assert!(
            bce(&e, &e, None, Reduction::Mean, true)
                .unwrap()
                .loss
                .first()
                .unwrap()
                .is_nan()
        );
        let out = bce(&e, &e, None, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert_eq!(out.grad("input").unwrap().shape(), &[0, 3]);
        let x = ndarray::arr0(0.25).into_dyn();
        let y = ndarray::arr0(1.0).into_dyn();
        let out = bce(&x, &y, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.grad("input").unwrap().first(), Some(&-4.0));
    }

    #[test]
    fn a_raised_cancellation_flag_stops_the_computation() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let x = ArrayD::<f64>::from_elem(IxDyn(&[1000]), 0.5);
        let flag = Arc::new(AtomicBool::new(true));
        let r = crate::cancel::with_flag(flag, || bce(&x, &x, None, Reduction::Sum, false));
        assert_eq!(r.unwrap_err().kind, ErrorKind::Cancelled);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for weighted in [false, true] {
                let x = rng.uniform_tensor(&[3, 4], 0.05, 0.95);
                let y = rng.uniform_tensor(&[3, 4], 0.05, 0.95);
                let w = rng.uniform_tensor(&[4], 0.5, 2.0);
                let w = weighted.then_some(&w);
                let out = bce(&x, &y, w, reduction, true).unwrap();
                let what = format!("{reduction:?} weighted={weighted}");
                assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                    scalar(&bce(x, &y, w, reduction, false).unwrap())
                });
                assert_grad(&what, &y, out.grad("target").unwrap(), |y| {
                    scalar(&bce(&x, y, w, reduction, false).unwrap())
                });
            }
        }
    }
}
