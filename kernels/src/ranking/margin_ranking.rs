//! `margin_ranking_loss` (`nn.MarginRankingLoss`): `ℓ = max(0, −y·(x1 − x2) + margin)`,
//! LOSSES.md §2.20.
//!
//! `input1`, `input2` and `target` must have the same number of dimensions (PyTorch's Python
//! check), then broadcast silently. All three are differentiable (a floating target is, in
//! PyTorch). The hinge has derivative 0 where `z = 0` (§1.6).
//!
//! This file also holds the small pieces the other ranking kernels share: the hinge as ATen's
//! `clamp_min(z, 0)` computes it, its backward, and the reduction of a loss vector.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{Sum8, mean, upstream};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// Elements processed between two cancellation checkpoints.
pub(crate) const CHUNK: usize = 1 << 16;

/// `max(0, z)` as ATen's `clamp_min(z, 0)`: a NaN `z` stays NaN (`f64::max` would drop it).
#[inline(always)]
pub(crate) fn hinge<T: Real>(z: T) -> T {
    if z > T::zero() || z.is_nan() {
        z
    } else {
        T::zero()
    }
}

/// The backward of [`hinge`] for upstream gradient `g`: `g` where `z > 0`, else exactly 0
/// (also at `z = 0` and for NaN `z`, as `clamp_min`'s backward in torch 2.15).
#[inline(always)]
pub(crate) fn hinge_grad<T: Real>(z: T, g: T) -> T {
    if z > T::zero() { g } else { T::zero() }
}

/// The returned loss: the unreduced `losses` (shape `shape`) for `none`, else the 0-d sum or
/// mean of `count` elements (the mean of nothing is NaN).
pub(crate) fn reduce<T: Real>(
    reduction: Reduction,
    shape: &[usize],
    losses: Vec<T>,
    total: &Sum8,
    count: usize,
) -> ArrayD<T> {
    match reduction {
        Reduction::None => ArrayD::from_shape_vec(IxDyn(shape), losses).expect("count elements"),
        Reduction::Sum => ndarray::arr0(T::of(total.total())).into_dyn(),
        Reduction::Mean => ndarray::arr0(T::of(mean(total.total(), count))).into_dyn(),
    }
}

/// `F.margin_ranking_loss(input1, input2, target, margin, reduction)`.
///
/// The three tensors must have the same number of dimensions, then broadcast (`none` returns
/// the broadcast shape). `margin` is not validated (PyTorch accepts any value). Gradients:
/// `input1` `−y·a`, `input2` `y·a`, `target` `−(x1 − x2)·a` with `a = 1[z > 0]`, each summed
/// back to its argument's shape.
///
/// Errors: [`LossError::shape`] naming `input2` or `target` when the ranks differ or the
/// shapes do not broadcast.
pub fn margin_ranking_loss<T: Real>(
    input1: ArrayViewD<'_, T>,
    input2: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    margin: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (s1, s2, st) = (input1.shape(), input2.shape(), target.shape());
    if s1.len() != s2.len() || s1.len() != st.len() {
        let arg = if s1.len() != s2.len() {
            "input2"
        } else {
            "target"
        };
        return Err(LossError::shape(
            arg,
            format!(
                "margin_ranking_loss: all input tensors should have the same number of dimensions, \
                 but got input1 {}, input2 {} and target {}",
                fmt_shape(s1),
                fmt_shape(s2),
                fmt_shape(st)
            ),
        ));
    }
    let s12 = broadcast_pair("input1", s1, "input2", s2)?;
    let shape = broadcast_pair("the broadcast of input1 and input2", &s12, "target", st)?;
    let n: usize = shape.iter().product();
    let x1 = contiguous(&input1, &shape);
    let x2 = contiguous(&input2, &shape);
    let y = contiguous(&target, &shape);
    let m = T::of(margin);
    let up = T::of(upstream(reduction, n));

    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { n } else { 0 });
    let cap = if grad { n } else { 0 };
    let (mut d1, mut d2, mut dt) = (
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
    );
    let mut total = Sum8::new();
    let mut start = 0;
    while start < n {
        checkpoint()?;
        let end = (start + CHUNK).min(n);
        for i in start..end {
            let d = x1[i] - x2[i];
            let z = -y[i] * d + m;
            let l = hinge(z);
            total.add(l.f64());
            if keep {
                losses.push(l);
            }
            if grad {
                // Autograd's chain for `(−y)·(x1 − x2) + margin`, so that a masked (zero)
                // gradient times an infinite difference is NaN, as in PyTorch.
                let gz = hinge_grad(z, up);
                let g = gz * -y[i];
                d1.push(g);
                d2.push(-g);
                dt.push(-(gz * d));
            }
        }
        start = end;
    }
    let mut out = LossOutput::new(reduce(reduction, &shape, losses, &total, n));
    if grad {
        let full = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("n elements");
        out.grads.push(("input1", unbroadcast(full(d1), s1)));
        out.grads.push(("input2", unbroadcast(full(d2), s2)));
        out.grads.push(("target", unbroadcast(full(dt), st)));
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
        // LOSSES.md §5 gives the outputs but not the inputs: x1 − x2 = [0.2, −1, −1] with
        // y = [1, 1, −1] and margin 0.5 reproduce every listed value and sign of zero.
        let x1 = array![0.7, 0.0, 0.0].into_dyn();
        let x2 = array![0.5, 1.0, 1.0].into_dyn();
        let y = array![1.0, 1.0, -1.0].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::None, true)
            .unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &[0.3, 1.5, 0.0],
            1e-15,
            0.0,
        );
        let g = |k| out.grad(k).unwrap().as_slice().unwrap().to_vec();
        assert_eq!(g("input1"), vec![-1.0, -1.0, 0.0]);
        assert_eq!(g("input2"), vec![1.0, 1.0, -0.0]);
        assert!(g("input2")[2].is_sign_negative());
        assert_close("target", &g("target"), &[-0.2, 1.0, 0.0], 1e-15, 0.0);
    }

    #[test]
    fn reductions_sum_and_average() {
        let x1 = array![1.0, 2.0].into_dyn();
        let x2 = array![2.0, 0.0].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let run = |r| {
            margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.0, r, false)
                .unwrap()
                .loss
        };
        assert_eq!(run(Reduction::Sum).first(), Some(&1.0));
        assert_eq!(run(Reduction::Mean).first(), Some(&0.5));
        assert_eq!(run(Reduction::None).shape(), &[2]);
    }

    #[test]
    fn the_hinge_has_zero_gradient_at_its_kink() {
        let x1 = array![1.0].into_dyn();
        let x2 = array![0.5].into_dyn();
        let y = array![1.0].into_dyn();
        let out =
            margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        for k in ["input1", "input2", "target"] {
            assert_eq!(out.grad(k).unwrap().first(), Some(&0.0), "{k}");
        }
    }

    #[test]
    fn a_zero_target_gives_the_clamped_margin() {
        let x = array![3.0, -3.0].into_dyn();
        let y = array![0.0, 0.0].into_dyn();
        let out = margin_ranking_loss(x.view(), x.view(), y.view(), 0.25, Reduction::None, false)
            .unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.25, 0.25]);
    }

    #[test]
    fn nan_propagates_and_a_masked_infinite_difference_gives_a_nan_target_gradient() {
        let x1 = array![f64::NAN, f64::INFINITY].into_dyn();
        let x2 = array![0.0, 0.0].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        let l = out.loss.as_slice().unwrap();
        assert!(l[0].is_nan());
        assert_eq!(l[1], 0.0);
        let dt = out.grad("target").unwrap();
        // PyTorch: clamp_min's masked gradient 0 times −(x1 − x2) = −inf is NaN.
        assert!(dt[[1]].is_nan());
        assert_eq!(out.grad("input1").unwrap()[[0]], 0.0);
    }

    #[test]
    fn inputs_broadcast_once_their_ranks_agree() {
        let x1 = array![[1.0], [2.0]].into_dyn();
        let x2 = array![[0.0, 1.0, 2.0]].into_dyn();
        let y = array![[1.0]].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 1.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.shape(), &[2, 3]);
        assert_eq!(out.grad("input1").unwrap().shape(), &[2, 1]);
        assert_eq!(out.grad("input2").unwrap().shape(), &[1, 3]);
        assert_eq!(out.grad("target").unwrap().shape(), &[1, 1]);
    }

    #[test]
    fn different_ranks_are_rejected() {
        let a = array![1.0, 2.0, 3.0].into_dyn();
        let b = array![[1.0], [2.0], [3.0]].into_dyn();
        let e = margin_ranking_loss(a.view(), b.view(), a.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
        assert!(e.message.contains("[3, 1]"), "{}", e.message);
        let e = margin_ranking_loss(a.view(), a.view(), b.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_rejected() {
        let a = array![1.0, 2.0, 3.0].into_dyn();
        let b = array![1.0, 2.0].into_dyn();
        let e = margin_ranking_loss(a.view(), b.view(), a.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
        let e = margin_ranking_loss(a.view(), a.view(), b.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn empty_and_zero_dimensional_inputs_work() {
        let e = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let out =
            margin_ranking_loss(e.view(), e.view(), e.view(), 1.0, Reduction::Mean, true).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        assert_eq!(out.grad("input1").unwrap().shape(), &[0]);
        let s =
            margin_ranking_loss(e.view(), e.view(), e.view(), 1.0, Reduction::Sum, false).unwrap();
        assert_eq!(s.loss.first(), Some(&0.0));
        let x = ndarray::arr0(1.0).into_dyn();
        let y = ndarray::arr0(-1.0).into_dyn();
        let out =
            margin_ranking_loss(x.view(), x.view(), y.view(), 0.5, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.loss.first(), Some(&0.5));
    }

    #[test]
    fn float32_works() {
        let x1 = array![1.0f32, -1.0].into_dyn();
        let x2 = array![0.0f32, 0.0].into_dyn();
        let y = array![-1.0f32, 1.0].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::Mean, true)
            .unwrap();
        assert_eq!(out.loss.first(), Some(&1.5));
        assert_eq!(
            out.grad("input1").unwrap().as_slice().unwrap(),
            &[0.5, -0.5]
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        let cases: [[&[usize]; 3]; 3] = [
            [&[6], &[6], &[6]],
            [&[2, 3], &[1, 3], &[2, 1]],
            [&[], &[], &[]],
        ];
        for [s1, s2, st] in cases {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let x1 = rng.randn(s1);
                let x2 = rng.randn(s2);
                let y = rng.randn(st);
                let run = |x1: &ArrayD<f64>, x2: &ArrayD<f64>, y: &ArrayD<f64>| {
                    margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.3, reduction, true)
                        .unwrap()
                };
                let out = run(&x1, &x2, &y);
                let what = format!("{s1:?} {reduction:?}");
                assert_grad(&what, &x1, out.grad("input1").unwrap(), |v| {
                    scalar(&run(v, &x2, &y))
                });
                assert_grad(&what, &x2, out.grad("input2").unwrap(), |v| {
                    scalar(&run(&x1, v, &y))
                });
                assert_grad(&what, &y, out.grad("target").unwrap(), |v| {
                    scalar(&run(&x1, &x2, v))
                });
            }
        }
    }
}
