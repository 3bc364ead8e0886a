//! `binary_cross_entropy_with_logits` (`nn.BCEWithLogitsLoss`): binary cross-entropy on logits,
//! `ℓ = −w·[pw·y·log σ(x) + (1 − y)·log(1 − σ(x))]`, docs/losses.md.
//!
//! Computed in ATen's stable form `ℓ = w·[(1 − y)·x − (1 + (pw − 1)·y)·logσ(x)]` with
//! `logσ(x) = min(x, 0) − log1p(exp(−|x|))`, so logits of any size are exact in `f32` and `f64`
//! (`x = ±1e4` gives `1e4`-sized losses, never `inf`). As in PyTorch, nothing is
//! value-checked (targets outside [0, 1] and any `pos_weight` are accepted), the weighted mean
//! divides by the element count, and `weight`/`pos_weight` are not differentiable. lossd
//! computes in one dtype per request, so PyTorch's "result follows the target's dtype" quirk
//! does not arise.

use ndarray::ArrayViewD;

use super::binary_cross_entropy::{Outputs, check_expands_to, check_same_shape};
use super::soft_margin::sigmoid;
use crate::reduction::blocked_checked;
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// `log σ(x)` as ATen's `log_sigmoid` computes it: `min(x, 0) − log1p(exp(−|x|))`, finite for
/// every finite `x`.
#[inline(always)]
pub(crate) fn log_sigmoid<T: Real>(x: T) -> T {
    x.min(T::zero()) - (-x.abs()).vexp().vln_1p()
}

/// `F.binary_cross_entropy_with_logits(input, target, weight, pos_weight, reduction)`.
///
/// `input` (logits) and `target` must have the same shape, any rank (else a `Shape` error on
/// `"target"`); `weight` and `pos_weight` must broadcast to that shape without enlarging it
/// (else a `Shape` error on `"weight"` / `"pos_weight"`); `pos_weight` is typically `(C,)`
/// along the last dimension, or `(C, 1, 1)` for `(N, C, H, W)`. The unreduced loss has the
/// input's shape; `mean` divides by the element count.
///
/// Gradients: `"input"` `w·[(pw·y + 1 − y)·σ(x) − pw·y]` (`w·(σ(x) − y)` without
/// `pos_weight`) and `"target"` `w·[logσ(−x) − pw·logσ(x)]` (`−w·x` without `pos_weight`).
pub fn binary_cross_entropy_with_logits<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    weight: Option<ArrayViewD<'_, T>>,
    pos_weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let shape = input.shape().to_vec();
    check_same_shape(&shape, target.shape())?;
    if let Some(w) = &weight {
        check_expands_to("weight", w.shape(), &shape)?;
    }
    if let Some(pw) = &pos_weight {
        check_expands_to("pos_weight", pw.shape(), &shape)?;
    }
    let n = input.len();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let w = weight.as_ref().map(|w| contiguous(w, &shape));
    let pw = pos_weight.as_ref().map(|p| contiguous(p, &shape));

    let mut outputs = Outputs::new(reduction, n, grad);
    let (keep, div) = (outputs.keep, outputs.div);
    let ws: &[T] = w.as_deref().unwrap_or(&[]);
    let pws: &[T] = pw.as_deref().unwrap_or(&[]);
    let (l, gx, gy) = (
        &mut outputs.losses[..],
        &mut outputs.dx[..],
        &mut outputs.dy[..],
    );
    macro_rules! go {
        ($($w:literal $p:literal $k:literal $g:literal),*) => {
            match (w.is_some(), pw.is_some(), keep, grad) {
                $(($w, $p, $k, $g) => vectorised!(pass::<T, $w, $p, $k, $g>(
                    &x, &y, ws, pws, div, l, [gx, gy]
                )),)*
            }
        };
    }
    let total = go!(
        false false false false, false false false true, false false true false,
        false false true true, false true false false, false true false true,
        false true true false, false true true true, true false false false,
        true false false true, true false true false, true false true true,
        true true false false, true true false true, true true true false,
        true true true true
    )?;

    Ok(outputs.finish(reduction, &shape, total))
}

/// The pass over the elements in blocks of [`BLOCK`](crate::reduction::BLOCK), specialised on the optional tensors
/// (`W`, `PW`) and on what it writes (`KEEP`: `losses`; `GRAD`: `dx`, `dy`), so the
/// element-wise loop has no branches and vectorises (one `exp(−|x|)` per element serves
/// `logσ(x)`, `logσ(−x)` and `σ(x)`). Each block's losses go to the eight lanes (element `i`
/// to lane `i mod 8`, the order of [`crate::reduction::Sum8`]); a cancellation checkpoint
/// every [`CHUNK`](crate::reduction::CHUNK) elements. Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const W: bool, const PW: bool, const KEEP: bool, const GRAD: bool>(
    x: &[T],
    y: &[T],
    w: &[T],
    pw: &[T],
    div: T,
    losses: &mut [T],
    [dx, dy]: [&mut [T]; 2],
) -> Result<f64, LossError> {
    let one = T::one();
    let n = x.len();
    let y = &y[..n];
    let w = if W { &w[..n] } else { w };
    let pw = if PW { &pw[..n] } else { pw };
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
            let len = end - start;
            let (xs, ys) = (&x[start..end], &y[start..end]);
            let ws = if W { &w[start..end] } else { w };
            let pws = if PW { &pw[start..end] } else { pw };
            let (gxs, gys) = if GRAD {
                (&mut dx[start..end], &mut dy[start..end])
            } else {
                (&mut dx[..0], &mut dy[..0])
            };
            for k in 0..len {
                let (xi, yi) = (xs[k], ys[k]);
                let ls = log_sigmoid(xi);
                // ATen: `(1 − y)·x − logσ(x)·((pw − 1)·y + 1)`, then `·w`.
                let mut l = if PW {
                    (one - yi) * xi - ls * ((pws[k] - one) * yi + one)
                } else {
                    (one - yi) * xi - ls
                };
                if W {
                    l *= ws[k];
                }
                block[k] = l;
                if GRAD {
                    let (mut gx, mut gy) = if PW {
                        let t = pws[k] * yi;
                        (
                            (t + one - yi) * sigmoid(xi) - t,
                            log_sigmoid(-xi) - ls * pws[k],
                        )
                    } else {
                        (sigmoid(xi) - yi, -xi)
                    };
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

    type Opt<'a> = Option<&'a ArrayD<f64>>;

    fn bcel(
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        w: Opt<'_>,
        pw: Opt<'_>,
        reduction: Reduction,
        grad: bool,
    ) -> Result<LossOutput<f64>, LossError> {
        binary_cross_entropy_with_logits(
            x.view(),
            y.view(),
            w.map(|w| w.view()),
            pw.map(|p| p.view()),
            reduction,
            grad,
        )
    }

    /// The textbook formula, for moderate logits.
    fn naive(x: f64, y: f64, pw: f64) -> f64 {
        let s = 1.0 / (1.0 + (-x).exp());
        -(pw * y * s.ln() + (1.0 - y) * (1.0 - s).ln())
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example gives the outputs for pos_weight=2, none, but not x and y; these are
        // the values its gradients solve for.
        let x = array![-3.0, 0.0, 1.5, 50.0].into_dyn();
        let y = array![0.0, 1.0, 0.5, 0.0].into_dyn();
        let pw = ndarray::arr1(&[2.0]).into_dyn();
        let out = bcel(&x, &y, None, Some(&pw), Reduction::None, true).unwrap();
        assert_array_close(
            "loss",
            &out.loss,
            &[0.0485873516, 1.3862943611, 1.052119917, 50.0],
            1e-9,
            0.0,
        );
        assert_array_close(
            "input grad",
            out.grad("input").unwrap(),
            &[0.0474258732, -1.0, 0.2263617143, 1.0],
            1e-9,
            0.0,
        );
        assert_array_close(
            "target grad",
            out.grad("target").unwrap(),
            &[6.0485873516, std::f64::consts::LN_2, -1.298586722, -50.0],
            1e-9,
            0.0,
        );
        let want: Vec<f64> = (0..3).map(|i| naive(x[[i]], y[[i]], 2.0)).collect();
        assert_close(
            "textbook",
            &out.loss.as_slice().unwrap()[..3],
            &want,
            1e-12,
            0.0,
        );
    }

    #[test]
    fn without_pos_weight_the_gradients_are_sigmoid_minus_target_and_minus_input() {
        let x = array![[0.5, -1.5], [2.0, 0.0]].into_dyn();
        let y = array![[1.0, 0.0], [0.25, 0.5]].into_dyn();
        let out = bcel(&x, &y, None, None, Reduction::Sum, true).unwrap();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want: Vec<f64> = x.iter().zip(y.iter()).map(|(&a, &b)| sig(a) - b).collect();
        assert_array_close(
            "input grad",
            out.grad("input").unwrap(),
            &want,
            1e-15,
            1e-16,
        );
        assert_eq!(
            out.grad("target").unwrap().as_slice().unwrap(),
            &[-0.5, 1.5, -2.0, -0.0]
        );
        let want: f64 = x
            .iter()
            .zip(y.iter())
            .map(|(&a, &b)| naive(a, b, 1.0))
            .sum();
        assert_close("loss", out.loss.as_slice().unwrap(), &[want], 1e-14, 0.0);
    }

    #[test]
    fn huge_logits_are_exact_in_both_dtypes() {
        // Checked on torch 2.15 (float32 and float64), pos_weight=2.
        let xs = [200.0, -200.0, 1e4, -1e4];
        let ys = [0.3, 0.3, 0.3, 0.3];
        let loss = [140.0, 120.0, 7000.0, 6000.0];
        let gy = [-200.0, 400.0, -10000.0, 20000.0];
        let x = ndarray::arr1(&xs).into_dyn();
        let y = ndarray::arr1(&ys).into_dyn();
        let pw = ndarray::arr1(&[2.0]).into_dyn();
        let out = bcel(&x, &y, None, Some(&pw), Reduction::None, true).unwrap();
        assert_close("loss f64", out.loss.as_slice().unwrap(), &loss, 1e-15, 0.0);
        assert_array_close(
            "input grad f64",
            out.grad("input").unwrap(),
            &[0.7, -0.6, 0.7, -0.6],
            1e-15,
            0.0,
        );
        assert_array_close(
            "target grad f64",
            out.grad("target").unwrap(),
            &gy,
            1e-15,
            0.0,
        );
        let x32 = x.mapv(|v| v as f32);
        let y32 = y.mapv(|v| v as f32);
        let pw32 = pw.mapv(|v| v as f32);
        let out = binary_cross_entropy_with_logits(
            x32.view(),
            y32.view(),
            None,
            Some(pw32.view()),
            Reduction::None,
            true,
        )
        .unwrap();
        let got: Vec<f64> = out.loss.iter().map(|&v| f64::from(v)).collect();
        assert_close("loss f32", &got, &loss, 1e-7, 0.0);
        let got: Vec<f64> = out
            .grad("target")
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_close("target grad f32", &got, &gy, 1e-7, 0.0);
        let out = binary_cross_entropy_with_logits(
            x32.view(),
            y32.view(),
            None,
            None,
            Reduction::Sum,
            true,
        )
        .unwrap();
        assert!(out.loss.first().unwrap().is_finite());
    }

    #[test]
    fn weight_and_pos_weight_broadcast_to_the_input_without_enlarging_it() {
        let x = array![[0.5, -1.5, 2.0], [0.0, 1.0, -3.0]].into_dyn();
        let y = array![[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]].into_dyn();
        let pw = array![1.0, 2.0, 3.0].into_dyn();
        let w = array![[2.0], [0.5]].into_dyn();
        let out = bcel(&x, &y, Some(&w), Some(&pw), Reduction::None, false).unwrap();
        for r in 0..2 {
            for c in 0..3 {
                let want = w[[r, 0]] * naive(x[[r, c]], y[[r, c]], pw[[c]]);
                assert!((out.loss[[r, c]] - want).abs() < 1e-14 * (1.0 + want));
            }
        }
        let big = ArrayD::<f64>::ones(IxDyn(&[2, 2, 3]));
        let bad = ArrayD::<f64>::ones(IxDyn(&[4]));
        for (w, pw, arg) in [
            (Some(&big), None, "weight"),
            (None, Some(&big), "pos_weight"),
            (Some(&bad), None, "weight"),
            (None, Some(&bad), "pos_weight"),
        ] {
            let e = bcel(&x, &y, w, pw, Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg));
        }
    }

    #[test]
    fn ones_in_pos_weight_are_the_same_as_none() {
        let mut rng = Rng::new(5);
        let x = rng.randn(&[3, 4]);
        let y = rng.uniform_tensor(&[3, 4], 0.0, 1.0);
        let pw = ArrayD::<f64>::ones(IxDyn(&[4]));
        let a = bcel(&x, &y, None, None, Reduction::Mean, true).unwrap();
        let b = bcel(&x, &y, None, Some(&pw), Reduction::Mean, true).unwrap();
        assert_array_close("loss", &a.loss, b.loss.as_slice().unwrap(), 1e-15, 0.0);
        assert_array_close(
            "input grad",
            a.grad("input").unwrap(),
            b.grad("input").unwrap().as_slice().unwrap(),
            1e-14,
            1e-16,
        );
        assert_array_close(
            "target grad",
            a.grad("target").unwrap(),
            b.grad("target").unwrap().as_slice().unwrap(),
            1e-14,
            1e-16,
        );
    }

    #[test]
    fn target_must_have_the_input_shape_and_empty_mean_is_nan() {
        let x = array![[0.5, -1.5]].into_dyn();
        let y = array![0.5, 1.0].into_dyn();
        let e = bcel(&x, &y, None, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        let e = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let out = bcel(&e, &e, None, None, Reduction::Mean, true).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        assert_eq!(out.grad("input").unwrap().shape(), &[0]);
        let out = bcel(&e, &e, None, None, Reduction::Sum, false).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
    }

    #[test]
    fn targets_outside_the_unit_interval_are_accepted() {
        let x = array![0.5].into_dyn();
        let y = array![2.0].into_dyn();
        let out = bcel(&x, &y, None, None, Reduction::Sum, false).unwrap();
        assert_array_close("loss", &out.loss, &[naive(0.5, 2.0, 1.0)], 1e-14, 0.0);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(13);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (weighted, positive) in [(false, false), (true, false), (false, true), (true, true)]
            {
                let x = rng.randn(&[3, 4]).mapv(|v| 2.0 * v);
                let y = rng.uniform_tensor(&[3, 4], 0.0, 1.0);
                let w = rng.uniform_tensor(&[3, 1], 0.5, 2.0);
                let pw = rng.uniform_tensor(&[4], 0.5, 3.0);
                let w = weighted.then_some(&w);
                let pw = positive.then_some(&pw);
                let out = bcel(&x, &y, w, pw, reduction, true).unwrap();
                let what = format!("{reduction:?} weight={weighted} pos_weight={positive}");
                assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                    scalar(&bcel(x, &y, w, pw, reduction, false).unwrap())
                });
                assert_grad(&what, &y, out.grad("target").unwrap(), |y| {
                    scalar(&bcel(&x, y, w, pw, reduction, false).unwrap())
                });
            }
        }
    }
}
