//! `multi_margin_loss` (`nn.MultiMarginLoss`): the multi-class hinge
//! `ℓ_n = (1/C)·Σ_{i ≠ t} w_t·max(0, margin − x_t + x_i)^p`, LOSSES.md §2.11.
//!
//! Shapes, checks and arithmetic follow ATen's `LossMultiMargin.cpp`: the weight of the
//! **target** class multiplies every term, a hinge at exactly 0 contributes nothing (and no
//! gradient), `margin` is not validated. lossd decision (LOSSES.md §4 item 1): an empty batch
//! `(0, C)` gives `sum = 0` and `mean = NaN` where PyTorch 2.15 returns uninitialised memory.
//! The per-sample sums accumulate in `f64`.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::binary_cross_entropy::unravel;
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{Sum8, mean};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// Work (elements visited) between two cancellation checkpoints.
const WORK: usize = 1 << 16;

/// The `(N, C)` layout of a margin loss's input: `(N, C)`, `(C)` (one sample) or 0-d (one
/// sample, one class). Rejects 3-D and larger inputs and an empty class dimension, with
/// ATen's message.
pub(crate) fn samples_and_classes(shape: &[usize]) -> Result<(usize, usize), LossError> {
    match *shape {
        [] => Ok((1, 1)),
        [c] if c > 0 => Ok((1, c)),
        [n, c] if c > 0 => Ok((n, c)),
        _ => Err(LossError::shape(
            "input",
            format!(
                "Expected non-empty vector or matrix with optional 0-dim batch size, but got input of shape {}",
                fmt_shape(shape)
            ),
        )),
    }
}

/// `F.multi_margin_loss(input, target, p, margin, weight, reduction)`.
///
/// `input` is `(N, C)`, `(C)` or 0-d (one sample with `C = 1`); `N = 0` is allowed, `C = 0`
/// and 3-D+ are not (`Shape` error on `"input"`). `target` holds class indices, has at most
/// one dimension and `N` elements (`N = 1` for an unbatched input), else a `Shape` error on
/// `"target"`; each index must be in `[0, C)`, else a `Value` error on `"target"` at that
/// element. `p` must be 1 or 2 (`Option` error on `"p"`); `weight` must be 1-D with `C`
/// elements (`Shape` error on `"weight"`).
///
/// The unreduced loss is `(N)` when `target` is 1-D and 0-d when it is 0-d; `mean` divides by
/// `N`. Gradient: `"input"` only (`target` is integer, `weight` is not differentiable).
pub fn multi_margin_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, i64>,
    p: f64,
    margin: f64,
    weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    if p != 1.0 && p != 2.0 {
        return Err(LossError::option("p", format!("p must be 1 or 2, got {p}")));
    }
    if let Some(w) = &weight
        && w.ndim() != 1
    {
        return Err(LossError::shape(
            "weight",
            format!(
                "weight must be one-dimensional, got shape {}",
                fmt_shape(w.shape())
            ),
        ));
    }
    let shape = input.shape().to_vec();
    let (n, c) = samples_and_classes(&shape)?;
    if target.ndim() > 1 || target.len() != n {
        return Err(LossError::shape(
            "target",
            format!(
                "target should be 1-D with size equal to the number of input samples: expected \
                 target shape [{n}], but got {} for input of shape {}",
                fmt_shape(target.shape()),
                fmt_shape(&shape)
            ),
        ));
    }
    if let Some(w) = &weight
        && w.len() != c
    {
        return Err(LossError::shape(
            "weight",
            format!(
                "weight must have one element per class: expected shape [{c}], but got {} for \
                 input of shape {}",
                fmt_shape(w.shape()),
                fmt_shape(&shape)
            ),
        ));
    }
    let t = contiguous(&target, target.shape());
    if let Some(k) = t.iter().position(|&v| v < 0 || v as u64 >= c as u64) {
        let at = unravel(k, target.shape());
        return Err(LossError::value(
            "target",
            format!(
                "target{at:?} = {} is out of range: class indices must be in [0, {}]",
                t[k],
                c - 1
            ),
        )
        .at(&at));
    }
    let x = contiguous(&input, &shape);
    let w = weight.as_ref().map(|w| contiguous(w, w.shape()));

    let squared = p == 2.0;
    let margin = T::of(margin);
    let classes = T::of(c as f64);
    // ATen's per-term gradient scale, computed in f64 and rounded once.
    let g = T::of(if reduction == Reduction::Mean {
        1.0 / (n as f64 * c as f64)
    } else {
        1.0 / c as f64
    });
    let two_g = T::of(2.0) * g;
    let mut losses = Vec::with_capacity(n);
    let mut dx = if grad {
        vec![T::zero(); n * c]
    } else {
        Vec::new()
    };
    let mut total = Sum8::new();
    let mut work = 0usize;
    let mut terms = vec![0.0f64; if grad { 0 } else { c }];
    for r in 0..n {
        work += c;
        if work >= WORK {
            checkpoint()?;
            work = 0;
        }
        let row = &x[r * c..(r + 1) * c];
        // In range: checked above.
        let k = t[r] as usize;
        let (xt, wt) = (row[k], w.as_ref().map(|w| w[k]));
        let hinge = |z: T| {
            let mut h = if squared { z * z } else { z };
            if let Some(wt) = wt {
                h *= wt;
            }
            h
        };
        let mut s = 0.0f64;
        if grad {
            let mut gt = 0.0f64;
            for (d, &xd) in row.iter().enumerate() {
                if d == k {
                    continue;
                }
                let z = margin - xt + xd;
                if z > T::zero() {
                    s += hinge(z).f64();
                    let mut hg = if squared { two_g * z } else { g };
                    if let Some(wt) = wt {
                        hg *= wt;
                    }
                    dx[r * c + d] = hg;
                    gt -= hg.f64();
                }
            }
            dx[r * c + k] = T::of(gt);
        } else {
            // The forward alone without branches on the data (a hinge is active at random on
            // random inputs, so a branch mispredicts about every other class): the row's terms
            // first, inactive ones as +0.0, in a loop the vectoriser takes (written as one sum,
            // the f32 build kept a branch per class); then their sum in the order above, which
            // +0.0 terms leave as it was (the sum is never −0.0).
            for (h, &xd) in terms.iter_mut().zip(row) {
                let z = margin - xt + xd;
                let v = hinge(z).f64();
                *h = if z > T::zero() { v } else { 0.0 };
            }
            terms[k] = 0.0;
            for &h in terms.iter() {
                s += h;
            }
        }
        let l = T::of(s) / classes;
        total.add(l.f64());
        losses.push(l);
    }

    let loss = match reduction {
        Reduction::None => {
            let out_shape: &[usize] = if target.ndim() == 0 { &[] } else { &[n] };
            ArrayD::from_shape_vec(IxDyn(out_shape), losses).expect("n elements")
        }
        Reduction::Sum => ndarray::arr0(T::of(total.total())).into_dyn(),
        Reduction::Mean => ndarray::arr0(T::of(mean(total.total(), n))).into_dyn(),
    };
    let mut out = LossOutput::new(loss);
    if grad {
        out.grads.push((
            "input",
            ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n·c elements"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::array;

    fn mm(
        x: &ArrayD<f64>,
        t: &ArrayD<i64>,
        p: f64,
        margin: f64,
        w: Option<&ArrayD<f64>>,
        reduction: Reduction,
        grad: bool,
    ) -> Result<LossOutput<f64>, LossError> {
        multi_margin_loss(
            x.view(),
            t.view(),
            p,
            margin,
            w.map(|w| w.view()),
            reduction,
            grad,
        )
    }

    #[test]
    fn matches_the_worked_examples_of_losses_md() {
        let x = array![[0.1, 0.2, 0.4, 0.8]].into_dyn();
        let t = array![3].into_dyn();
        let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Mean, true).unwrap();
        assert_close("loss", out.loss.as_slice().unwrap(), &[0.325], 1e-15, 0.0);
        assert_close(
            "grad",
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.25, 0.25, 0.25, -0.75],
            1e-15,
            0.0,
        );
        let w = array![1.0, 2.0, 3.0, 4.0].into_dyn();
        let t = array![1].into_dyn();
        let out = mm(&x, &t, 2.0, 1.0, Some(&w), Reduction::Mean, true).unwrap();
        assert_close("loss", out.loss.as_slice().unwrap(), &[2.405], 1e-15, 0.0);
        assert_close(
            "grad",
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.9, -3.7, 1.2, 1.6],
            1e-15,
            0.0,
        );
    }

    #[test]
    fn the_output_shape_follows_the_target_rank() {
        // Checked on torch 2.15: (1, 2) input with 0-d target → 0-d; (2) input with (1,)
        // target → (1,); 0-d input with (1,) target → (1,) holding 0.
        let x = array![[0.3, 0.1]].into_dyn();
        let t0 = ndarray::arr0(0i64).into_dyn();
        let out = mm(&x, &t0, 1.0, 1.0, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert!((out.loss.first().unwrap() - 0.4).abs() < 1e-15);
        let x1 = array![0.3, 0.1].into_dyn();
        let t1 = array![0i64].into_dyn();
        let out = mm(&x1, &t1, 1.0, 1.0, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[1]);
        assert_eq!(out.grad("input").unwrap().shape(), &[2]);
        let s = ndarray::arr0(0.3).into_dyn();
        let out = mm(&s, &t1, 1.0, 1.0, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.0]);
        assert_eq!(out.grad("input").unwrap().shape(), &[] as &[usize]);
        let out = mm(&s, &t0, 1.0, 1.0, None, Reduction::None, false).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
    }

    #[test]
    fn a_hinge_at_exactly_zero_contributes_nothing() {
        // z = margin − x_t + x_i = 1 − 1 + 0 = 0 for class 0.
        let x = array![[0.0, 1.0, 0.5]].into_dyn();
        let t = array![1].into_dyn();
        let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Sum, true).unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &[0.5 / 3.0],
            1e-15,
            0.0,
        );
        assert_close(
            "grad",
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.0, -1.0 / 3.0, 1.0 / 3.0],
            1e-15,
            0.0,
        );
    }

    #[test]
    fn a_nan_margin_gives_zero_as_in_pytorch() {
        let x = array![[0.3, 0.1]].into_dyn();
        let t = array![0].into_dyn();
        let out = mm(&x, &t, 1.0, f64::NAN, None, Reduction::None, false).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.0]);
    }

    #[test]
    fn an_empty_batch_sums_to_zero_and_averages_to_nan() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let t = ArrayD::<i64>::zeros(IxDyn(&[0]));
        let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert_eq!(out.grad("input").unwrap().shape(), &[0, 3]);
        let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Mean, true).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        let out = mm(&x, &t, 1.0, 1.0, None, Reduction::None, false).unwrap();
        assert_eq!(out.loss.shape(), &[0]);
    }

    #[test]
    fn p_must_be_one_or_two() {
        let x = array![[0.1, 0.2, 0.3]].into_dyn();
        let t = array![1].into_dyn();
        for p in [3.0, 0.0, 1.5, f64::NAN] {
            let e = mm(&x, &t, p, 1.0, None, Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Option, "p"));
        }
        assert!(mm(&x, &t, 2.0, 1.0, None, Reduction::Mean, false).is_ok());
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let x = array![[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]].into_dyn();
        type Case = (ArrayD<f64>, ArrayD<i64>, Option<ArrayD<f64>>, &'static str);
        let cases: Vec<Case> = vec![
            (
                ArrayD::zeros(IxDyn(&[5, 0])),
                ArrayD::zeros(IxDyn(&[5])),
                None,
                "input",
            ),
            (
                ArrayD::zeros(IxDyn(&[0])),
                ArrayD::zeros(IxDyn(&[1])),
                None,
                "input",
            ),
            (
                ArrayD::zeros(IxDyn(&[2, 3, 1])),
                ArrayD::zeros(IxDyn(&[2])),
                None,
                "input",
            ),
            (x.clone(), ArrayD::zeros(IxDyn(&[3])), None, "target"),
            (x.clone(), ArrayD::zeros(IxDyn(&[2, 1])), None, "target"),
            (
                x.clone(),
                ArrayD::zeros(IxDyn(&[2])),
                Some(ArrayD::ones(IxDyn(&[2]))),
                "weight",
            ),
            (
                x.clone(),
                ArrayD::zeros(IxDyn(&[2])),
                Some(ArrayD::ones(IxDyn(&[1, 3]))),
                "weight",
            ),
            (
                x.clone(),
                ArrayD::zeros(IxDyn(&[2])),
                Some(ArrayD::ones(IxDyn(&[]))),
                "weight",
            ),
        ];
        for (x, t, w, arg) in cases {
            let e = mm(&x, &t, 1.0, 1.0, w.as_ref(), Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
        }
    }

    #[test]
    fn class_indices_out_of_range_are_rejected_at_their_position() {
        let x = array![[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]].into_dyn();
        for bad in [3, -1, i64::MIN, i64::MAX] {
            let t = array![0, bad].into_dyn();
            let e = mm(&x, &t, 1.0, 1.0, None, Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Value, "target"));
            assert_eq!(e.index, Some(vec![1]));
        }
        let s = ndarray::arr0(0.5).into_dyn();
        let t = ndarray::arr0(1i64).into_dyn();
        let e = mm(&s, &t, 1.0, 1.0, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.arg, e.index), ("target", Some(vec![])));
    }

    /// The forward alone (branch-free) gives the bits of the forward computed with the
    /// gradient (one branch per class), with and without weights (negative and zero ones
    /// too), both powers, non-finite inputs, f32 and f64.
    #[test]
    fn the_forward_alone_gives_the_bits_of_the_forward_with_gradient() {
        let mut rng = Rng::new(11);
        let mut x = rng.randn(&[64, 7]);
        x[[3, 2]] = f64::NAN;
        x[[5, 0]] = f64::INFINITY;
        x[[6, 4]] = f64::NEG_INFINITY;
        x[[7, 1]] = 1e200;
        let t = ndarray::Array1::from_iter((0..64).map(|i| (i * 5 % 7) as i64)).into_dyn();
        let mut w = rng.uniform_tensor(&[7], -1.0, 2.0);
        w[[2]] = 0.0;
        w[[3]] = -0.0;
        for (p, margin) in [(1.0, 1.0), (2.0, 0.5), (1.0, -0.25)] {
            for weight in [None, Some(&w)] {
                let a = mm(&x, &t, p, margin, weight, Reduction::None, false).unwrap();
                let b = mm(&x, &t, p, margin, weight, Reduction::None, true).unwrap();
                let bits =
                    |o: &LossOutput<f64>| o.loss.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "p={p} margin={margin} weighted={}",
                    weight.is_some()
                );
                let (x32, w32) = (x.mapv(|v| v as f32), w.mapv(|v| v as f32));
                let run = |grad| {
                    multi_margin_loss(
                        x32.view(),
                        t.view(),
                        p,
                        margin,
                        weight.map(|_| w32.view()),
                        Reduction::None,
                        grad,
                    )
                    .unwrap()
                    .loss
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
                };
                assert_eq!(run(false), run(true), "f32 p={p} margin={margin}");
            }
        }
    }

    #[test]
    fn float32_matches_float64() {
        let mut rng = Rng::new(2);
        let x = rng.randn(&[4, 5]);
        let t = array![0, 4, 2, 2].into_dyn();
        let w = rng.uniform_tensor(&[5], 0.5, 2.0);
        let a = mm(&x, &t, 2.0, 0.7, Some(&w), Reduction::Mean, true).unwrap();
        let (x32, w32) = (x.mapv(|v| v as f32), w.mapv(|v| v as f32));
        let b = multi_margin_loss(
            x32.view(),
            t.view(),
            2.0,
            0.7,
            Some(w32.view()),
            Reduction::Mean,
            true,
        )
        .unwrap();
        let got: Vec<f64> = b.grad("input").unwrap().iter().map(|&v| v.into()).collect();
        assert_close(
            "grad",
            &got,
            a.grad("input").unwrap().as_slice().unwrap(),
            1e-5,
            1e-6,
        );
        assert!((f64::from(*b.loss.first().unwrap()) - a.loss.first().unwrap()).abs() < 1e-5);
    }

    #[test]
    fn a_raised_cancellation_flag_stops_a_long_computation() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let x = ArrayD::<f64>::zeros(IxDyn(&[100, 1000]));
        let t = ArrayD::<i64>::zeros(IxDyn(&[100]));
        let flag = Arc::new(AtomicBool::new(true));
        let r = crate::cancel::with_flag(flag, || mm(&x, &t, 1.0, 1.0, None, Reduction::Sum, true));
        assert_eq!(r.unwrap_err().kind, ErrorKind::Cancelled);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(17);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (p, margin, weighted) in [(1.0, 1.0, false), (2.0, 0.5, true), (1.0, 2.0, true)] {
                let x = rng.randn(&[4, 5]);
                let t = ndarray::arr1(&[0i64, 3, 4, 1]).into_dyn();
                let w = rng.uniform_tensor(&[5], 0.5, 2.0);
                let w = weighted.then_some(&w);
                let out = mm(&x, &t, p, margin, w, reduction, true).unwrap();
                let what = format!("{reduction:?} p={p} margin={margin} weight={weighted}");
                assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                    scalar(&mm(x, &t, p, margin, w, reduction, false).unwrap())
                });
            }
        }
    }
}
