//! `l1_loss` (`nn.L1Loss`): `ℓ = |input − target|`, docs/losses.md.

use ndarray::ArrayViewD;

use super::{Args, WeightedMean, distance_loss, sign};
use crate::{LossError, LossOutput, Real, Reduction};

/// `F.l1_loss(input, target, reduction, weight)`.
///
/// Weighted mean divides by `Σ weight`. Gradient `sign(input − target)` with `sign(0) = 0`.
pub fn l1_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    distance_loss(
        Args {
            input,
            target,
            weight,
            reduction,
            grad,
        },
        WeightedMean::SumOfWeights,
        1.0,
        |d| (d.abs(), sign(d)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example: x=[[1,-0.5],[0.25,2]], y=[[0.5,-0.5],[1.25,0]].
        let x = array![[1.0, -0.5], [0.25, 2.0]].into_dyn();
        let y = array![[0.5, -0.5], [1.25, 0.0]].into_dyn();
        let out = l1_loss(x.view(), y.view(), None, Reduction::Mean, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.875));
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.25, 0.0, -0.25, 0.25]
        );
        let out = l1_loss(x.view(), y.view(), None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.5, 0.0, 1.0, 2.0]);
        assert_eq!(
            out.grad("target").unwrap().as_slice().unwrap(),
            &[-1.0, 0.0, 1.0, -1.0]
        );
    }

    #[test]
    fn weighted_mean_divides_by_the_sum_of_weights() {
        let x = array![1.0, 2.0].into_dyn();
        let y = array![0.0, 0.0].into_dyn();
        let w = array![1.0, 3.0].into_dyn();
        let out = l1_loss(x.view(), y.view(), Some(w.view()), Reduction::Mean, false).unwrap();
        assert_eq!(out.loss.first(), Some(&(7.0 / 4.0)));
    }

    #[test]
    fn broadcasting_warns_and_empty_mean_is_nan() {
        let x = array![[1.0, 2.0], [3.0, 4.0]].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let out = l1_loss(x.view(), y.view(), None, Reduction::Sum, false).unwrap();
        assert_eq!(out.loss.first(), Some(&6.0));
        assert_eq!(out.warnings.len(), 1);
        let e = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[0]));
        let out = l1_loss(e.view(), e.view(), None, Reduction::Mean, false).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        let out = l1_loss(e.view(), e.view(), None, Reduction::Sum, false).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_rejected() {
        let x = array![[1.0, 2.0], [3.0, 4.0]].into_dyn();
        let y = array![1.0, 2.0, 3.0].into_dyn();
        let e = l1_loss(x.view(), y.view(), None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (crate::ErrorKind::Shape, "target"));
        let w = array![1.0].into_dyn();
        let e = l1_loss(x.view(), x.view(), Some(w.view()), Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (crate::ErrorKind::Shape, "weight"));
    }

    #[test]
    fn the_gradient_at_a_nan_difference_is_zero_as_in_pytorch() {
        let x = array![f64::NAN, f64::INFINITY].into_dyn();
        let y = array![0.0, f64::INFINITY].into_dyn();
        let out = l1_loss(x.view(), y.view(), None, Reduction::Sum, true).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0, 0.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        super::super::tests::check_gradients(&|x, y, w, r, g| l1_loss(x, y, w, r, g), true);
    }
}
