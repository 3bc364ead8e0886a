//! `smooth_l1_loss` (`nn.SmoothL1Loss`), LOSSES.md §2.4.

use std::hint::select_unpredictable;

use ndarray::ArrayViewD;

use super::{WeightedMean, distance_loss, sign};
use crate::{LossError, LossOutput, Real, Reduction};

/// `F.smooth_l1_loss(input, target, reduction, beta)`.
///
/// `ℓ = ½ d² / β` where `|d| < β`, else `|d| − ½ β`; `β = 0` is exactly `l1_loss`.
/// `β < 0` is rejected as PyTorch does.
pub fn smooth_l1_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    reduction: Reduction,
    beta: f64,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    if beta < 0.0 || beta.is_nan() {
        return Err(LossError::option(
            "beta",
            format!("smooth_l1_loss does not support negative values for beta (got {beta})"),
        ));
    }
    let b = T::of(beta);
    let half = T::of(0.5);
    if beta == 0.0 {
        return distance_loss(
            input,
            target,
            None,
            reduction,
            grad,
            WeightedMean::Count,
            1.0,
            |d| (d.abs(), sign(d)),
        );
    }
    distance_loss(
        input,
        target,
        None,
        reduction,
        grad,
        WeightedMean::Count,
        1.0,
        |d| {
            // Both branches computed and one selected: no branch in the loop, so it vectorises.
            let z = d.abs();
            let l = select_unpredictable(z < b, half * z * z / b, z - half * b);
            // ATen's backward branches on d itself: exactly ±1 at |d| = β.
            let g = select_unpredictable(
                d < -b,
                -T::one(),
                select_unpredictable(d > b, T::one(), d / b),
            );
            (l, g)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn x_y() -> (ndarray::ArrayD<f64>, ndarray::ArrayD<f64>) {
        (
            array![[1.0, -0.5], [0.25, 2.0]].into_dyn(),
            array![[0.5, -0.5], [1.25, 0.0]].into_dyn(),
        )
    }

    #[test]
    fn matches_the_worked_examples_of_losses_md() {
        let (x, y) = x_y();
        let out = smooth_l1_loss(x.view(), y.view(), Reduction::Mean, 1.0, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.53125));
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.125, 0.0, -0.25, 0.25]
        );
        let out = smooth_l1_loss(x.view(), y.view(), Reduction::None, 0.5, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.25, 0.0, 0.75, 1.75]);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[1.0, 0.0, -1.0, 1.0]
        );
    }

    #[test]
    fn zero_beta_is_l1_and_negative_beta_is_rejected() {
        let (x, y) = x_y();
        let a = smooth_l1_loss(x.view(), y.view(), Reduction::Sum, 0.0, true).unwrap();
        let b =
            crate::regression::l1::l1_loss(x.view(), y.view(), None, Reduction::Sum, true).unwrap();
        assert_eq!(a, b);
        let e = smooth_l1_loss(x.view(), y.view(), Reduction::Sum, -1.0, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (crate::ErrorKind::Option, "beta"));
    }

    #[test]
    fn gradient_at_beta_is_one() {
        let x = array![1.0, -1.0].into_dyn();
        let y = array![0.0, 0.0].into_dyn();
        let out = smooth_l1_loss(x.view(), y.view(), Reduction::Sum, 1.0, true).unwrap();
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[1.0, -1.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for beta in [0.0, 0.7, 2.0] {
            super::super::tests::check_gradients(
                &move |x, y, _w, r, g| smooth_l1_loss(x, y, r, beta, g),
                false,
            );
        }
    }
}
