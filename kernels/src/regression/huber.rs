//! `huber_loss` (`nn.HuberLoss`), docs/losses.md.

use std::hint::select_unpredictable;

use ndarray::ArrayViewD;

use super::{Args, WeightedMean, distance_loss};
use crate::{LossError, LossOutput, Real, Reduction};

/// `F.huber_loss(input, target, reduction, delta, weight)`.
///
/// `ℓ = ½ d²` where `|d| < δ`, else `δ (|d| − ½ δ)`; `δ <= 0` is rejected as PyTorch does.
/// The weighted mean divides by the element count (not `Σ weight`), as PyTorch 2.15 does.
pub fn huber_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    delta: f64,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    if delta <= 0.0 || delta.is_nan() {
        return Err(LossError::option(
            "delta",
            format!("huber_loss does not support non-positive values for delta (got {delta})"),
        ));
    }
    let dl = T::of(delta);
    let half = T::of(0.5);
    distance_loss(
        Args {
            input,
            target,
            weight,
            reduction,
            grad,
        },
        WeightedMean::Count,
        1.0,
        |d| {
            // Both branches computed and one selected: no branch in the loop, so it vectorises.
            let z = d.abs();
            let l = select_unpredictable(z < dl, half * z * z, dl * (z - half * dl));
            let g = select_unpredictable(d < -dl, -dl, select_unpredictable(d > dl, dl, d));
            (l, g)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        let x = array![[1.0, -0.5], [0.25, 2.0]].into_dyn();
        let y = array![[0.5, -0.5], [1.25, 0.0]].into_dyn();
        let out = huber_loss(x.view(), y.view(), None, Reduction::None, 0.5, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.125, 0.0, 0.375, 0.875]);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.5, 0.0, -0.5, 0.5]
        );
    }

    #[test]
    fn weighted_mean_divides_by_the_count() {
        let x = array![1.0, 2.0].into_dyn();
        let y = array![0.0, 0.0].into_dyn();
        let w = array![1.0, 3.0].into_dyn();
        let out = huber_loss(
            x.view(),
            y.view(),
            Some(w.view()),
            Reduction::Mean,
            5.0,
            false,
        )
        .unwrap();
        assert_eq!(out.loss.first(), Some(&((0.5 + 3.0 * 2.0) / 2.0)));
    }

    #[test]
    fn non_positive_delta_is_rejected() {
        let x = array![1.0].into_dyn();
        for delta in [0.0, -1.0, f64::NAN] {
            let e =
                huber_loss(x.view(), x.view(), None, Reduction::Mean, delta, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (crate::ErrorKind::Option, "delta"));
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for delta in [0.5, 1.0, 3.0] {
            super::super::tests::check_gradients(
                &move |x, y, w, r, g| huber_loss(x, y, w, r, delta, g),
                true,
            );
        }
    }
}
