//! `smooth_l1_loss` (`nn.SmoothL1Loss`), docs/losses.md.

use std::hint::select_unpredictable;

use ndarray::ArrayViewD;

use super::{Args, WeightedMean, distance_loss, sign};
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
    // Every form is unweighted.
    let args = Args {
        input,
        target,
        weight: None,
        reduction,
        grad,
    };
    if beta == 0.0 {
        return distance_loss(args, WeightedMean::Count, 1.0, |d| (d.abs(), sign(d)));
    }
    if beta == 1.0 {
        // PyTorch's default. `x / 1` is `x` exactly, so without the division (the slowest
        // instruction of the loop) the values are the same bits as `general`'s.
        let (one, half) = (T::one(), T::of(0.5));
        return distance_loss(args, WeightedMean::Count, 1.0, |d| {
            let z = d.abs();
            let l = select_unpredictable(z < one, half * z * z, z - half);
            let g = select_unpredictable(d < -one, -one, select_unpredictable(d > one, one, d));
            (l, g)
        });
    }
    let b = T::of(beta);
    if b == T::zero() {
        // A β that rounds to 0 in `T` (1e-300 in float32): ATen keeps its β > 0 kernel with
        // β = 0 in `T`, so the loss is |d| − ½·0 and the gradient ±1 off zero, d itself at
        // d = 0 or NaN (its scalar loop; `d / β` would be 0/0 here).
        return distance_loss(args, WeightedMean::Count, 1.0, |d| {
            let one = T::one();
            let g = select_unpredictable(
                d < T::zero(),
                -one,
                select_unpredictable(d > T::zero(), one, d),
            );
            (d.abs(), g)
        });
    }
    general(args.input, args.target, reduction, b, grad)
}

/// Any `β > 0`.
fn general<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    reduction: Reduction,
    b: T,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let half = T::of(0.5);
    let args = Args {
        input,
        target,
        weight: None,
        reduction,
        grad,
    };
    distance_loss(args, WeightedMean::Count, 1.0, |d| {
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
    })
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

    /// torch 2.15 (issue 28): a β of 1e-300 is 0 in float32; `x = y` gives loss 0 and
    /// gradients 0, not 0/0; off zero the gradient is ±1 and a NaN difference stays NaN.
    #[test]
    fn a_beta_that_rounds_to_zero_in_float32_gives_pytorchs_gradients() {
        let x = array![0.5f32].into_dyn();
        let out = smooth_l1_loss(x.view(), x.view(), Reduction::Mean, 1e-300, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0]);
        assert_eq!(out.grad("target").unwrap().as_slice().unwrap(), &[0.0]);
        let x = array![0.5f32, 0.5, f32::NAN, 1e-45, -1e-45, f32::INFINITY].into_dyn();
        let y = array![0.5f32, 0.0, 0.0, 0.0, 0.0, 0.0].into_dyn();
        let out = smooth_l1_loss(x.view(), y.view(), Reduction::None, 1e-300, true).unwrap();
        let l = out.loss.as_slice().unwrap();
        assert_eq!(l[..2], [0.0, 0.5]);
        assert!(l[2].is_nan());
        assert_eq!(l[3..], [1e-45, 1e-45, f32::INFINITY]);
        let g = out.grad("input").unwrap().as_slice().unwrap();
        assert_eq!(g[..2], [0.0, 1.0]);
        assert!(g[2].is_nan());
        assert_eq!(g[3..], [1.0, -1.0, 1.0]);
        // In float64 the same β is not 0: d / β at d = 0 is 0.
        let x = array![0.5f64].into_dyn();
        let out = smooth_l1_loss(x.view(), x.view(), Reduction::Sum, 1e-300, true).unwrap();
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0]);
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

    /// The `β = 1` path without the division gives the same bits as the general one.
    #[test]
    fn beta_one_is_the_general_formula_bit_for_bit() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 6.0 - 3.0
        };
        let mut x: Vec<f64> = (0..3000).map(|_| next()).collect();
        let y: Vec<f64> = (0..3000).map(|_| next()).collect();
        // |d| exactly at 1, around it, zero, huge and infinite (no NaN: its sign bit in a sum is
        // not specified).
        x[..8].copy_from_slice(&[
            y[0] + 1.0,
            y[1] - 1.0,
            y[2],
            1e300,
            f64::INFINITY,
            f64::NAN,
            y[6] + 0.999_999_999,
            -0.0,
        ]);
        let xd = ndarray::ArrayD::from_shape_vec(vec![3000], x).unwrap();
        let yd = ndarray::ArrayD::from_shape_vec(vec![3000], y).unwrap();
        let bits = |o: &LossOutput<f64>| {
            let mut v: Vec<u64> = o.loss.iter().map(|f| f.to_bits()).collect();
            v.extend(o.grad("input").unwrap().iter().map(|f| f.to_bits()));
            v
        };
        for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let fast = smooth_l1_loss(xd.view(), yd.view(), r, 1.0, true).unwrap();
            let slow = general(xd.view(), yd.view(), r, 1.0, true).unwrap();
            assert_eq!(bits(&fast), bits(&slow), "{r:?}");
            let (x32, y32) = (xd.mapv(|v| v as f32), yd.mapv(|v| v as f32));
            let fast = smooth_l1_loss(x32.view(), y32.view(), r, 1.0, true).unwrap();
            let slow = general(x32.view(), y32.view(), r, 1.0, true).unwrap();
            let b32 = |o: &LossOutput<f32>| -> Vec<u32> {
                o.loss
                    .iter()
                    .chain(o.grad("input").unwrap().iter())
                    .map(|f| f.to_bits())
                    .collect()
            };
            assert_eq!(b32(&fast), b32(&slow), "{r:?} f32");
        }
    }
}
