//! `multilabel_margin_loss` (`nn.MultiLabelMarginLoss`): the multi-label hinge
//! `ℓ_n = (1/C)·Σ_{j ∈ J} Σ_{i ∉ J} max(0, 1 − (x_j − x_i))`, docs/losses.md.
//!
//! `J` is the prefix of the sample's target row before its first negative entry; duplicates in
//! it count with multiplicity (each occurrence adds its terms again). As in ATen's
//! `LossMultiLabelMargin.cpp`, every entry of the whole target tensor must lie in `[−1, C − 1]`,
//! even after the first −1, and a hinge at exactly 0 contributes nothing. lossd decision
//! (docs/differences.md item 1): an empty batch `(0, C)` gives `sum = 0` and `mean = NaN` where
//! PyTorch 2.15 returns uninitialised memory. Sums accumulate in `f64`; the gradient counts
//! active pairs exactly instead of adding `±1/C` repeatedly.

use ndarray::ArrayViewD;

use super::multi_margin::samples_and_classes;
use crate::broadcast::unravel;
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{Sum8, reduce};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// Work (pairs visited) between two cancellation checkpoints.
const WORK: usize = 1 << 16;

/// `F.multilabel_margin_loss(input, target, reduction)`.
///
/// `input` is `(N, C)`, `(C)` or 0-d (one sample with `C = 1`); `N = 0` is allowed, `C = 0`
/// and 3-D+ are not (`Shape` error on `"input"`). `target` holds class indices: `(N, C)` for a
/// 2-D input; for a 1-D or 0-d input, at most one dimension with `C` elements (so `(C)`, or
/// `()`/`(1,)` when `C = 1`, as ATen accepts); else a `Shape` error on `"target"`. Every entry
/// must lie in `[−1, C − 1]`, else a `Value` error on `"target"` at the first bad entry.
///
/// The unreduced loss is `(N)` for a 2-D input and 0-d otherwise; `mean` divides by `N`.
/// Gradient: `"input"` only (`target` is integer).
pub fn multilabel_margin_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, i64>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let shape = input.shape().to_vec();
    let (n, c) = samples_and_classes(&shape)?;
    let target_ok = if shape.len() == 2 {
        target.shape() == shape.as_slice()
    } else {
        target.ndim() <= 1 && target.len() == c
    };
    if !target_ok {
        return Err(LossError::shape(
            "target",
            format!(
                "target has shape {} but input has shape {}: the target must have the input's shape",
                fmt_shape(target.shape()),
                fmt_shape(&shape)
            ),
        ));
    }
    let t = contiguous(&target, target.shape());
    if let Some(k) = t.iter().position(|&v| v < -1 || v >= c as i64) {
        let at = unravel(k, target.shape());
        return Err(LossError::value(
            "target",
            format!(
                "target{at:?} = {} is out of range: entries must be class indices in [0, {}] or -1",
                t[k],
                c - 1
            ),
        )
        .at(&at));
    }
    let x = contiguous(&input, &shape);

    let one = T::one();
    let classes = T::of(c as f64);
    let g = if reduction == Reduction::Mean {
        1.0 / (n as f64 * c as f64)
    } else {
        1.0 / c as f64
    };
    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { n } else { 0 });
    let mut dx = Vec::with_capacity(if grad { n * c } else { 0 });
    // Per row, reused: which classes are targets, and each class's net count of active pairs.
    let mut is_target = vec![false; c];
    let mut count = vec![0i64; if grad { c } else { 0 }];
    let mut raw_total = Sum8::new();
    let mut terms = vec![0.0f64; if grad { 0 } else { c }];
    let mut work = 0usize;
    for r in 0..n {
        let row = &x[r * c..(r + 1) * c];
        let labels = &t[r * c..(r + 1) * c];
        // In [0, C) before the first −1: checked above.
        let prefix = labels.iter().position(|&v| v < 0).unwrap_or(c);
        let labels = &labels[..prefix];
        is_target.iter_mut().for_each(|b| *b = false);
        labels.iter().for_each(|&j| is_target[j as usize] = true);
        count.iter_mut().for_each(|k| *k = 0);
        work += (prefix * c).max(c);
        if work >= WORK {
            checkpoint()?;
            work = 0;
        }
        let mut s = 0.0f64;
        if grad {
            for &j in labels {
                let j = j as usize;
                let xj = row[j];
                for (i, &xi) in row.iter().enumerate() {
                    if is_target[i] {
                        continue;
                    }
                    let z = one - xj + xi;
                    if z > T::zero() {
                        s += z.f64();
                        count[j] -= 1;
                        count[i] += 1;
                    }
                }
            }
        } else {
            // The forward alone without branches on the data (as `multi_margin_loss`'s): each
            // label's terms into a scratch row, inactive pairs as +0.0, then summed in the
            // order above, which the +0.0 terms leave as it was (the sum is never −0.0).
            for &j in labels {
                let xj = row[j as usize];
                for ((h, &xi), &skip) in terms.iter_mut().zip(row).zip(&is_target) {
                    let z = one - xj + xi;
                    *h = if z > T::zero() && !skip { z.f64() } else { 0.0 };
                }
                for &h in terms.iter() {
                    s += h;
                }
            }
        }
        raw_total.add(s);
        if keep {
            losses.push(T::of(s) / classes);
        }
        if grad {
            dx.extend(count.iter().map(|&k| T::of(k as f64 * g)));
        }
    }

    let out_shape: &[usize] = if shape.len() == 2 { &[n] } else { &[] };
    let total = raw_total.total() / c as f64;
    let mut out = LossOutput::new(reduce(reduction, out_shape, losses, total, n));
    if grad {
        out.push_grad("input", &shape, dx);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
    use ndarray::{ArrayD, IxDyn, array};

    fn mlm(
        x: &ArrayD<f64>,
        t: &ArrayD<i64>,
        reduction: Reduction,
        grad: bool,
    ) -> Result<LossOutput<f64>, LossError> {
        multilabel_margin_loss(x.view(), t.view(), reduction, grad)
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        let x = array![[0.1, 0.2, 0.4, 0.8]].into_dyn();
        let t = array![[3, 0, -1, 1]].into_dyn();
        let out = mlm(&x, &t, Reduction::Mean, true).unwrap();
        assert_close("loss", out.loss.as_slice().unwrap(), &[0.85], 1e-15, 0.0);
        assert_array_close(
            "grad",
            out.grad("input").unwrap(),
            &[-0.5, 0.5, 0.5, -0.5],
            1e-15,
            0.0,
        );
    }

    #[test]
    fn duplicate_targets_count_with_multiplicity() {
        // docs/losses.md (verified on torch 2.15): x=[.5,−.3,.2,.9], y=[1,1,−1,2] → 2.75.
        let x = array![0.5, -0.3, 0.2, 0.9].into_dyn();
        let t = array![1, 1, -1, 2].into_dyn();
        let out = mlm(&x, &t, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_close("loss", out.loss.as_slice().unwrap(), &[2.75], 1e-15, 0.0);
        // J = [1, 1], I = {0, 2, 3}: every pair is active, and counted twice.
        assert_array_close(
            "grad",
            out.grad("input").unwrap(),
            &[0.5, -1.5, 0.5, 0.5],
            1e-15,
            0.0,
        );
    }

    #[test]
    fn entries_after_the_first_minus_one_are_ignored_but_checked() {
        let x = array![[0.1, 0.2, 0.4, 0.8]].into_dyn();
        let a = mlm(&x, &array![[3, 0, -1, 1]].into_dyn(), Reduction::Sum, false).unwrap();
        let b = mlm(&x, &array![[3, 0, -1, 2]].into_dyn(), Reduction::Sum, false).unwrap();
        assert_eq!(a.loss, b.loss);
        let e = mlm(&x, &array![[3, 0, -1, 4]].into_dyn(), Reduction::Sum, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Value, "target"));
        assert_eq!(e.index, Some(vec![0, 3]));
        let e = mlm(
            &x,
            &array![[3, -2, -1, 0]].into_dyn(),
            Reduction::Sum,
            false,
        )
        .unwrap_err();
        assert_eq!((e.arg, e.index), ("target", Some(vec![0, 1])));
    }

    #[test]
    fn no_targets_or_all_targets_give_zero() {
        let x = array![[0.1, 0.2, 0.4], [0.3, -0.2, 0.0]].into_dyn();
        let t = array![[-1, 0, 1], [2, 0, 1]].into_dyn();
        let out = mlm(&x, &t, Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.0, 0.0]);
        assert!(out.grad("input").unwrap().iter().all(|&g| g == 0.0));
    }

    #[test]
    fn a_hinge_at_exactly_zero_contributes_nothing() {
        // 1 − x_0 + x_1 = 1 − 1 + 0 = 0.
        let x = array![1.0, 0.0].into_dyn();
        let t = array![0, -1].into_dyn();
        let out = mlm(&x, &t, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0, 0.0]);
    }

    #[test]
    fn unbatched_shapes_accepted_by_aten_are_accepted() {
        // Checked on torch 2.15: a (1,) input with a 0-d target, a 0-d input with a (1,)
        // target and a 0-d input with a 0-d target all give a 0-d zero.
        let one = array![0.3].into_dyn();
        let s = ndarray::arr0(0.3).into_dyn();
        let t0 = ndarray::arr0(0i64).into_dyn();
        let t1 = array![0i64].into_dyn();
        for (x, t) in [(&one, &t0), (&s, &t1), (&s, &t0)] {
            let out = mlm(x, t, Reduction::None, true).unwrap();
            assert_eq!(out.loss.shape(), &[] as &[usize]);
            assert_eq!(out.loss.first(), Some(&0.0));
            assert_eq!(out.grad("input").unwrap().shape(), x.shape());
        }
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let x = array![[0.1, 0.2], [0.3, 0.4]].into_dyn();
        let cases: Vec<(ArrayD<f64>, ArrayD<i64>, &str)> = vec![
            (
                ArrayD::zeros(IxDyn(&[5, 0])),
                ArrayD::zeros(IxDyn(&[5, 0])),
                "input",
            ),
            (
                ArrayD::zeros(IxDyn(&[0])),
                ArrayD::zeros(IxDyn(&[0])),
                "input",
            ),
            (
                ArrayD::zeros(IxDyn(&[1, 2, 2])),
                ArrayD::zeros(IxDyn(&[1, 2, 2])),
                "input",
            ),
            (x.clone(), ArrayD::zeros(IxDyn(&[2])), "target"),
            (x.clone(), ArrayD::zeros(IxDyn(&[])), "target"),
            (x.clone(), ArrayD::zeros(IxDyn(&[2, 1])), "target"),
            (
                array![0.1, 0.2].into_dyn(),
                ArrayD::zeros(IxDyn(&[1, 2])),
                "target",
            ),
        ];
        for (x, t, arg) in cases {
            let e = mlm(&x, &t, Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
        }
    }

    #[test]
    fn an_empty_batch_sums_to_zero_and_averages_to_nan() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let t = ArrayD::<i64>::zeros(IxDyn(&[0, 3]));
        let out = mlm(&x, &t, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert_eq!(out.grad("input").unwrap().shape(), &[0, 3]);
        assert!(
            mlm(&x, &t, Reduction::Mean, false)
                .unwrap()
                .loss
                .first()
                .unwrap()
                .is_nan()
        );
        assert_eq!(
            mlm(&x, &t, Reduction::None, false).unwrap().loss.shape(),
            &[0]
        );
    }

    #[test]
    fn the_forward_alone_gives_the_bits_of_the_forward_with_gradient() {
        let mut rng = Rng::new(12);
        let mut x = rng.randn(&[64, 7]);
        x[[3, 2]] = f64::NAN;
        x[[5, 0]] = f64::INFINITY;
        x[[6, 4]] = f64::NEG_INFINITY;
        x[[7, 1]] = 1e200;
        x[[8, 3]] = x[[8, 1]] + 1.0; // a hinge at exactly 0
        // Rows with 0 to 7 labels (some repeated), then −1 and filler.
        let t = ndarray::Array2::from_shape_fn((64, 7), |(r, i)| {
            let labels = r % 8;
            if i < labels {
                ((r * 3 + i * 5) % 7) as i64
            } else if i == labels {
                -1
            } else {
                (i % 7) as i64
            }
        })
        .into_dyn();
        let bits = |o: LossOutput<f64>| o.loss.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let a = multilabel_margin_loss(x.view(), t.view(), Reduction::None, false).unwrap();
        let b = multilabel_margin_loss(x.view(), t.view(), Reduction::None, true).unwrap();
        assert_eq!(bits(a), bits(b));
        let x32 = x.mapv(|v| v as f32);
        let run = |grad| {
            multilabel_margin_loss(x32.view(), t.view(), Reduction::None, grad)
                .unwrap()
                .loss
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(19);
        let t = array![
            [3, 0, -1, 1, 2],
            [1, 2, 4, -1, 0],
            [0, -1, 2, 2, 2],
            [4, 3, 2, 1, 0]
        ]
        .into_dyn();
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let x = rng.randn(&[4, 5]);
            let out = mlm(&x, &t, reduction, true).unwrap();
            assert_grad(
                &format!("{reduction:?}"),
                &x,
                out.grad("input").unwrap(),
                |x| scalar(&mlm(x, &t, reduction, false).unwrap()),
            );
        }
    }
}
