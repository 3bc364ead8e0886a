//! `mse_loss` (`nn.MSELoss`): `ℓ = (input − target)²`, docs/losses.md.

use ndarray::ArrayViewD;

use super::{Args, WeightedMean, distance_loss};
use crate::{LossError, LossOutput, Real, Reduction};

/// `F.mse_loss(input, target, reduction, weight)`.
///
/// Weighted mean divides by `Σ weight`. Gradient `2 (input − target)`.
pub fn mse_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    // Without a weight ATen's backward, (x − y) · (2/N), finite up to |x − y| = max; with one,
    // autograd's order (w / Σw) · (2d).
    let (dx_factor, k) = if weight.is_none() {
        (2.0, T::one())
    } else {
        (1.0, T::one() + T::one())
    };
    distance_loss(
        Args {
            input,
            target,
            weight,
            reduction,
            grad,
        },
        WeightedMean::SumOfWeights,
        dx_factor,
        |d| (d * d, k * d),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn the_mean_gradient_does_not_overflow_where_pytorchs_does_not() {
        // torch 2.15: input [-1e308, 0, 0, 0], target 0, mean: input grad [-5e307, 0, 0, 0].
        let x = array![-1e308, 0.0, 0.0, 0.0].into_dyn();
        let y = array![0.0, 0.0, 0.0, 0.0].into_dyn();
        let out = mse_loss(x.view(), y.view(), None, Reduction::Mean, true).unwrap();
        assert_eq!(out.grad("input").unwrap().iter().next(), Some(&-5e307));
        assert_eq!(out.grad("target").unwrap().iter().next(), Some(&5e307));
    }

    /// torch 2.15: a weight of 1e308 over Σw ≈ 1e308 (mean): autograd scales the weight by
    /// 1/Σw before it meets 2d, so the gradient is finite (w·2d alone overflows).
    #[test]
    fn a_huge_weight_with_the_mean_gives_autograds_finite_gradient() {
        let x = array![[-0.1706], [-1.0024]].into_dyn();
        let y = array![[1.5454], [-0.4773]].into_dyn();
        let w = array![[1e308], [0.5932]].into_dyn();
        let out = mse_loss(x.view(), y.view(), Some(w.view()), Reduction::Mean, true).unwrap();
        let g: Vec<f64> = out.grad("input").unwrap().iter().copied().collect();
        crate::testing::assert_close("input", &g, &[-3.432, -6.229786399999996e-309], 1e-12, 0.0);
        let out = mse_loss(x.view(), y.view(), Some(w.view()), Reduction::Sum, true).unwrap();
        let g: Vec<f64> = out.grad("input").unwrap().iter().copied().collect();
        crate::testing::assert_close(
            "input",
            &g,
            &[f64::NEG_INFINITY, -0.6229786399999998],
            1e-12,
            0.0,
        );
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        let x = array![[1.0, -0.5], [0.25, 2.0]].into_dyn();
        let y = array![[0.5, -0.5], [1.25, 0.0]].into_dyn();
        let out = mse_loss(x.view(), y.view(), None, Reduction::Mean, true).unwrap();
        assert_eq!(out.loss.first(), Some(&1.3125));
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.25, 0.0, -0.5, 1.0]
        );
        let out = mse_loss(x.view(), y.view(), None, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&5.25));
        assert_eq!(
            out.grad("target").unwrap().as_slice().unwrap(),
            &[-1.0, 0.0, 2.0, -4.0]
        );
    }

    #[test]
    fn float32_computes_in_float32() {
        let x = array![0.1f32, 0.2].into_dyn();
        let y = array![0.0f32, 0.0].into_dyn();
        let out = mse_loss(x.view(), y.view(), None, Reduction::Sum, false).unwrap();
        let want = (0.1f32 * 0.1f32) as f64 + (0.2f32 * 0.2f32) as f64;
        assert_eq!(out.loss.first(), Some(&(want as f32)));
    }

    #[test]
    fn gradients_match_finite_differences() {
        super::super::tests::check_gradients(&|x, y, w, r, g| mse_loss(x, y, w, r, g), true);
    }
}
