//! `hinge_embedding_loss` (`nn.HingeEmbeddingLoss`), LOSSES.md §2.18.
//!
//! `ℓ = 1[y ≠ 1]·max(0, margin − x) + 1[y ≠ −1]·x`, ATen's formula, so a target other than
//! ±1 (0, 2, 0.5, NaN, ...) gives `x + max(0, margin − x)` (LOSSES.md §4 item 13: mirrored).
//! Input and target broadcast both ways without a warning; the margin is not validated.
//! Only `input` gets a gradient (the target is used in comparisons only).

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::margin_ranking::{CHUNK, hinge, hinge_grad, reduce};
use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::cancel::checkpoint;
use crate::reduction::{Sum8, upstream};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// `F.hinge_embedding_loss(input, target, margin, reduction)`.
///
/// `input` and `target` may have any shapes that broadcast (`none` returns the broadcast
/// shape). Gradient with respect to `input` only: `1[y ≠ −1] − 1[y ≠ 1]·1[margin − x > 0]`,
/// summed back to the input's shape.
///
/// Errors: [`LossError::shape`] naming `target` when the shapes do not broadcast.
pub fn hinge_embedding_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    margin: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (xs, ys) = (input.shape(), target.shape());
    let shape = broadcast_pair("input", xs, "target", ys)?;
    let n: usize = shape.iter().product();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let m = T::of(margin);
    let up = T::of(upstream(reduction, n));
    let (one, zero) = (T::one(), T::zero());

    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { n } else { 0 });
    let mut dx = Vec::with_capacity(if grad { n } else { 0 });
    let mut total = Sum8::new();
    let mut start = 0;
    while start < n {
        checkpoint()?;
        let end = (start + CHUNK).min(n);
        for i in start..end {
            let (xi, yi) = (x[i], y[i]);
            let z = m - xi;
            let hinge_part = if yi != one { hinge(z) } else { zero };
            let self_part = if yi != -one { xi } else { zero };
            let l = hinge_part + self_part;
            total.add(l.f64());
            if keep {
                losses.push(l);
            }
            if grad {
                let g_self = if yi != -one { up } else { zero };
                let g_hinge = if yi != one { up } else { zero };
                dx.push(g_self - hinge_grad(z, g_hinge));
            }
        }
        start = end;
    }
    let mut out = LossOutput::new(reduce(reduction, &shape, losses, &total, n));
    if grad {
        let dx = ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n elements");
        out.grads.push(("input", unbroadcast(dx, xs)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::array;

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // §5: margin 1, none, output [0.3, 0.0, 1.2, 1.0], gradient [1, 0, −1, 0]; the row
        // notes target 0 → x + max(0, 1 − x). Inputs reconstructed from those values.
        let x = array![0.3, 1.0, -0.2, 0.5].into_dyn();
        let y = array![1.0, -1.0, -1.0, 0.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &[0.3, 0.0, 1.2, 1.0],
            1e-15,
            0.0,
        );
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[1.0, 0.0, -1.0, 0.0]
        );
    }

    #[test]
    fn targets_other_than_plus_or_minus_one_add_both_terms() {
        let x = array![2.0, 0.25, -1.0].into_dyn();
        let y = array![0.0, 2.0, f64::NAN].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[2.0, 1.0, 1.0]);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn the_hinge_has_zero_gradient_at_the_margin() {
        let x = array![1.0, 0.5].into_dyn();
        let y = array![-1.0, -1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.5));
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0, -1.0]);
    }

    #[test]
    fn a_negative_margin_is_accepted() {
        let x = array![-2.0].into_dyn();
        let y = array![-1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), -1.0, Reduction::Mean, false).unwrap();
        assert_eq!(out.loss.first(), Some(&1.0));
    }

    #[test]
    fn nan_input_propagates() {
        let x = array![f64::NAN, f64::NAN].into_dyn();
        let y = array![1.0, -1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert!(out.loss.iter().all(|v| v.is_nan()));
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[1.0, 0.0]);
    }

    #[test]
    fn input_and_target_broadcast_both_ways() {
        let x = array![[0.5], [2.0]].into_dyn();
        let y = array![1.0, -1.0, 1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[2, 3]);
        assert_eq!(
            out.loss.as_slice().unwrap(),
            &[0.5, 0.5, 0.5, 2.0, 0.0, 2.0]
        );
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[1.0, 2.0]);
        let e = hinge_embedding_loss(
            x.view(),
            array![[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]].into_dyn().view(),
            1.0,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn empty_input_gives_nan_mean_and_zero_sum() {
        let x = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
        let mean = hinge_embedding_loss(x.view(), x.view(), 1.0, Reduction::Mean, true).unwrap();
        assert!(mean.loss.first().unwrap().is_nan());
        assert_eq!(mean.grad("input").unwrap().shape(), &[0, 3]);
        let sum = hinge_embedding_loss(x.view(), x.view(), 1.0, Reduction::Sum, false).unwrap();
        assert_eq!(sum.loss.first(), Some(&0.0));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(5);
        let cases: [(&[usize], &[usize]); 3] = [(&[3, 4], &[3, 4]), (&[3, 1], &[4]), (&[], &[])];
        for (xs, ys) in cases {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let x = rng.randn(xs).mapv(|v| v * 2.0);
                // Targets ±1 and one "other" value, as PyTorch allows.
                let y = rng.randn(ys).mapv(|v| {
                    if v > 0.5 {
                        1.0
                    } else if v > -0.5 {
                        -1.0
                    } else {
                        0.5
                    }
                });
                let out = hinge_embedding_loss(x.view(), y.view(), 0.7, reduction, true).unwrap();
                assert_grad(
                    &format!("{xs:?} {reduction:?}"),
                    &x,
                    out.grad("input").unwrap(),
                    |x| {
                        scalar(
                            &hinge_embedding_loss(x.view(), y.view(), 0.7, reduction, false)
                                .unwrap(),
                        )
                    },
                );
            }
        }
    }
}
