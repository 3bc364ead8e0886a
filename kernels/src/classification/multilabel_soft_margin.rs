//! `multilabel_soft_margin_loss` (`nn.MultiLabelSoftMarginLoss`): per-class logistic loss
//! averaged over the classes, `ℓ_n = (1/C)·Σ_c w_c·e_{n,c}` with
//! `e = −[y·logσ(x) + (1 − y)·logσ(−x)]`, docs/losses.md.
//!
//! lossd mirrors PyTorch's functional exactly: input, target and weight broadcast together
//! (no value is checked; targets need not be 0/1), the loss is summed over dimension
//! `input.dim() − 1` of the broadcast tensor — the last dimension unless target or weight
//! add leading dimensions — and divided by `C = input.size(−1)`. `logσ` is computed stably, so
//! large logits never overflow. All three tensors are differentiable, as under autograd.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::cancel::checkpoint;
use crate::reduction::{Sum8, add_to_lanes, lanes_total, reduce, upstream};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// Elements between two cancellation checkpoints.
const WORK: usize = 1 << 16;

/// `F.multilabel_soft_margin_loss(input, target, weight, reduction)`.
///
/// `input` is `(N, C)`, `(C)` or any `(…, C)`: the class dimension is the last one, and a 0-d
/// input is a `Shape` error on `"input"`. `target` (usually the input's shape) and `weight`
/// (usually `(C,)`, `(N, 1)` also works) broadcast with it, else a `Shape` error on
/// `"target"` / `"weight"`. The unreduced loss has the input's shape without its last
/// dimension (0-d for a 1-D input); `mean` divides by the number of samples.
///
/// Gradients: `"input"` `ĝ·w·(σ(x) − y)/C`, `"target"` `−ĝ·w·x/C` and `"weight"` `ĝ·e/C`
/// when a weight is given, each summed back to its argument's shape. Input and target follow
/// autograd's steps (with `t = −ĝ·w/C`: target `t·logσ(x) − t·logσ(−x)`, input
/// `(t·y)·logσ'(x) − (t·(1 − y))·logσ'(−x)`), so that they round and overflow as PyTorch's do.
pub fn multilabel_soft_margin_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    weight: Option<ArrayViewD<'_, T>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let xs = input.shape().to_vec();
    let Some(&c) = xs.last() else {
        return Err(LossError::shape(
            "input",
            "input must have at least one dimension (its last dimension holds the classes), \
             got a 0-d tensor",
        ));
    };
    let ys = target.shape().to_vec();
    let mut shape = broadcast_pair("input", &xs, "target", &ys)?;
    if let Some(w) = &weight {
        let name = if shape == xs {
            "input"
        } else {
            "the broadcast of input and target"
        };
        shape = broadcast_pair(name, &shape, "weight", w.shape())?;
    }
    // PyTorch sums over dimension `input.dim() − 1` of the broadcast loss.
    let axis = xs.len() - 1;
    let outer: usize = shape[..axis].iter().product();
    let along = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .filter(|&(d, _)| d != axis)
        .map(|(_, &s)| s)
        .collect();
    let m = outer * inner;
    let len = m * along;

    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let w = weight.as_ref().map(|w| contiguous(w, &shape));

    let classes = T::of(c as f64);
    let coef = T::of(upstream(reduction, m)) / classes;
    let keep = reduction == Reduction::None;
    let mut losses = if keep { vec![T::zero(); m] } else { Vec::new() };
    let zeros = |on: bool| if on { vec![T::zero(); len] } else { Vec::new() };
    let (mut dx, mut dy, mut dw) = (zeros(grad), zeros(grad), zeros(grad && w.is_some()));
    let ws: &[T] = w.as_deref().unwrap_or(&[]);
    let dims = Dims {
        outer,
        along,
        inner,
        classes,
        coef,
    };
    let (l, gx, gy, gw) = (&mut losses[..], &mut dx[..], &mut dy[..], &mut dw[..]);
    macro_rules! go {
        ($($k:literal $g:literal $w:literal),*) => {
            match (keep, grad, w.is_some()) {
                $(($k, $g, $w) => vectorised!(pass::<T, $k, $g, $w>(&x, &y, ws, dims, l, [gx, gy, gw])),)*
            }
        };
    }
    let total = go!(
        false false false, false false true, false true false, false true true,
        true false false, true false true, true true false, true true true
    )?;

    let mut out = LossOutput::new(reduce(reduction, &out_shape, losses, total, m));
    if grad {
        let full = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("len elements");
        let (gx, gy) = if xs == shape && ys == shape {
            (full(dx), full(dy))
        } else {
            broadcast_grads(&input, (&x, &y, ws), coef, [&shape, &xs, &ys], (dx, dy))
        };
        out.grads.push(("input", gx));
        out.grads.push(("target", gy));
        if let Some(wt) = &weight {
            out.grads
                .push(("weight", unbroadcast(full(dw), wt.shape())));
        }
    }
    Ok(out)
}

/// The input and target gradients when either was broadcast. Autograd sums each product
/// (`t·logσ(x)`, `t·logσ(−x)` for the target; `t·y`, `t·(1 − y)` for the input) back to its
/// operand's shape before combining them, and applies `logσ'` to the input's own elements
/// after that sum; combining per element first rounds differently and can meet ∞ − ∞ where
/// autograd does not (or the reverse). `x`, `y` and `w` are broadcast to `shape`; `dx`, `dy`
/// are [`pass`]'s per-element gradients, kept where an argument has the full shape.
fn broadcast_grads<T: Real>(
    input: &ArrayViewD<'_, T>,
    (x, y, w): (&[T], &[T], &[T]),
    coef: T,
    [shape, xs, ys]: [&[usize]; 3],
    (dx, dy): (Vec<T>, Vec<T>),
) -> (ArrayD<T>, ArrayD<T>) {
    let (zero, one) = (T::zero(), T::one());
    let n = x.len();
    let full = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(shape), v).expect("len elements");
    let mut parts = [vec![zero; n], vec![zero; n], vec![zero; n], vec![zero; n]];
    let [ta, tb, ya, yb] = &mut parts;
    for j in 0..n {
        let (xv, yv) = (x[j], y[j]);
        let l1 = (-xv.abs()).vexp().vln_1p();
        let (lp, ln) = (xv.min(zero) - l1, (-xv).min(zero) - l1);
        let t = -(if w.is_empty() { coef } else { coef * w[j] });
        (ta[j], tb[j], ya[j], yb[j]) = (t * lp, t * ln, t * yv, t * (one - yv));
    }
    let [ta, tb, ya, yb] = parts.map(full);
    let gy = if ys == shape {
        full(dy)
    } else {
        unbroadcast(ta, ys) - unbroadcast(tb, ys)
    };
    let gx = if xs == shape {
        full(dx)
    } else {
        let (ua, ub) = (unbroadcast(ya, xs), unbroadcast(yb, xs));
        let mut gx = ua;
        for ((g, &b), &xv) in gx.iter_mut().zip(ub.iter()).zip(input.iter()) {
            let (ma, mb) = log_sigmoid_slopes(xv, (-xv.abs()).vexp());
            *g = *g * ma - b * mb;
        }
        gx
    };
    (gx, gy)
}

/// The derivatives of `logσ(x)` and `logσ(−x)` as ATen's `log_sigmoid_backward` computes
/// them from `ex = exp(−|x|)`: `z/(1 + z)` on the side of the kink that saturates, one minus
/// it on the other.
#[inline(always)]
fn log_sigmoid_slopes<T: Real>(x: T, ex: T) -> (T, T) {
    let (zero, one) = (T::zero(), T::one());
    let q = ex / (one + ex);
    if x < zero {
        (one - q, q)
    } else if x > zero {
        (q, one - q)
    } else {
        (q, q)
    }
}

/// The layout and loop-invariant values of [`pass`].
#[derive(Clone, Copy)]
struct Dims<T> {
    outer: usize,
    along: usize,
    inner: usize,
    classes: T,
    /// The upstream gradient over the class count.
    coef: T,
}

/// About how many elements [`pass`] computes element-wise before summing rows.
const GROUP_ELEMS: usize = 4096;

/// The pass over the rows (`outer × inner` of them, `along` classes each, `inner` apart),
/// specialised on what it writes (`KEEP`: `losses`; `GRAD`: `dx`, `dy`, and `dw` when `W`).
/// The elements of whole `outer` slabs (about [`GROUP_ELEMS`] at a time) are computed by one
/// contiguous element-wise loop (vectorisable `exp`/`ln_1p`, no branches) into a buffer; then
/// each row's terms are added to its eight lanes (class `k` to lane `k mod 8`, the order of
/// [`Sum8`]) and the row losses to the running total in the same order as before.
/// Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const KEEP: bool, const GRAD: bool, const W: bool>(
    x: &[T],
    y: &[T],
    w: &[T],
    d: Dims<T>,
    losses: &mut [T],
    [dx, dy, dw]: [&mut [T]; 3],
) -> Result<f64, LossError> {
    let (zero, one) = (T::zero(), T::one());
    let Dims {
        outer,
        along,
        inner,
        classes,
        coef,
    } = d;
    let slab = along * inner;
    let mut total = Sum8::new();
    if slab == 0 {
        // Rows of no classes: each loss is 0/C.
        let l = T::zero() / classes;
        for _ in 0..outer * inner {
            total.add(l.f64());
        }
        if KEEP {
            losses[..outer * inner].fill(l);
        }
        return Ok(total.total());
    }
    let group = (GROUP_ELEMS / slab).max(1);
    let mut buf = vec![T::zero(); (group * slab).min(outer * slab)];
    let mut work = 0usize;
    for o0 in (0..outer).step_by(group) {
        let o1 = (o0 + group).min(outer);
        work += (o1 - o0) * slab;
        if work >= WORK {
            checkpoint()?;
            work = 0;
        }
        let (start, end) = (o0 * slab, o1 * slab);
        let b = &mut buf[..end - start];
        let (xs, ys) = (&x[start..end], &y[start..end]);
        let ws = if W { &w[start..end] } else { w };
        let (gxs, gys) = if GRAD {
            (&mut dx[start..end], &mut dy[start..end])
        } else {
            (&mut dx[..0], &mut dy[..0])
        };
        let gws = if GRAD && W {
            &mut dw[start..end]
        } else {
            &mut dw[..0]
        };
        for j in 0..b.len() {
            let (xv, yv) = (xs[j], ys[j]);
            // logσ(±x) and σ(±x) share one `exp(−|x|)` (same values as computing each with
            // `log_sigmoid` / `sigmoid`).
            let ex = (-xv.abs()).vexp();
            let log1p_ex = ex.vln_1p();
            let (lp, ln) = (xv.min(zero) - log1p_ex, (-xv).min(zero) - log1p_ex);
            let e = -(yv * lp + (one - yv) * ln);
            b[j] = if W { e * ws[j] } else { e };
            if GRAD {
                // Autograd's own steps, in its order (`t` is what reaches both products):
                // the cheaper `w·(σ(x) − y)` form rounds differently and overflows (to NaN
                // instead of ±inf) on other inputs, such as targets near the float range.
                let t = -(if W { coef * ws[j] } else { coef });
                gys[j] = t * lp - t * ln;
                let (ma, mb) = log_sigmoid_slopes(xv, ex);
                gxs[j] = (t * yv) * ma - (t * (one - yv)) * mb;
                if W {
                    gws[j] = coef * e;
                }
            }
        }
        for o in o0..o1 {
            let terms = &b[(o - o0) * slab..(o - o0 + 1) * slab];
            for i in 0..inner {
                let mut lanes = [0.0f64; 8];
                if inner == 1 {
                    add_to_lanes(&mut lanes, terms);
                } else {
                    for k in 0..along {
                        lanes[k % 8] += terms[k * inner + i].f64();
                    }
                }
                let l = T::of(lanes_total(&lanes)) / classes;
                total.add(l.f64());
                if KEEP {
                    losses[o * inner + i] = l;
                }
            }
        }
    }
    Ok(total.total())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
    use ndarray::array;

    fn mlsm(
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        w: Option<&ArrayD<f64>>,
        reduction: Reduction,
        grad: bool,
    ) -> Result<LossOutput<f64>, LossError> {
        multilabel_soft_margin_loss(x.view(), y.view(), w.map(|w| w.view()), reduction, grad)
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example (x and y solved from its gradient; checked on torch 2.15).
        let x = array![[0.5, -1.0, 2.0]].into_dyn();
        let y = array![[1.0, 0.0, 1.0]].into_dyn();
        let out = mlsm(&x, &y, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[1]);
        assert_array_close("loss", &out.loss, &[0.3047555609137673], 1e-14, 0.0);
        assert_close(
            "input grad",
            out.grad("input").unwrap().as_slice().unwrap(),
            &[
                -0.1258468895993818,
                0.08964714045666503,
                -0.03973430734070585,
            ],
            1e-14,
            0.0,
        );
        assert_array_close(
            "target grad",
            out.grad("target").unwrap(),
            &[-0.5 / 3.0, 1.0 / 3.0, -2.0 / 3.0],
            1e-14,
            0.0,
        );
        assert!(out.grad("weight").is_none());
    }

    #[test]
    fn leading_broadcast_dimensions_move_the_summed_dimension_as_in_pytorch() {
        // Checked on torch 2.15: a (3,) input with a (2, 3) target sums over dimension 0 of
        // the broadcast loss (the samples), still divides by C = 3, and returns shape (3,).
        let x = array![0.3, -0.2, 1.0].into_dyn();
        let y = array![[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]].into_dyn();
        let w = array![[2.0], [0.5]].into_dyn();
        let out = mlsm(&x, &y, Some(&w), Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[3]);
        assert_array_close(
            "loss",
            &out.loss,
            &[0.5119627037237726, 0.5317823911513265, 0.2610514062651857],
            1e-14,
            0.0,
        );
        assert_close(
            "input grad",
            out.grad("input").unwrap().as_slice().unwrap(),
            &[
                -0.18796456932361752,
                0.2084716689062684,
                -0.22411785114166258,
            ],
            1e-14,
            0.0,
        );
        assert_close(
            "target grad",
            out.grad("target").unwrap().as_slice().unwrap(),
            &[
                -0.2,
                0.1333333333333333,
                -0.6666666666666666,
                -0.05,
                0.033333333333333326,
                -0.16666666666666666,
            ],
            1e-14,
            1e-16,
        );
        assert_array_close(
            "weight grad",
            out.grad("weight").unwrap(),
            &[0.48858526712278055, 0.6552519337894473],
            1e-14,
            0.0,
        );
    }

    #[test]
    fn class_dimension_is_the_last_one_for_any_rank() {
        let mut rng = Rng::new(23);
        let x = rng.randn(&[2, 3, 4]);
        let y = rng.uniform_tensor(&[2, 3, 4], 0.0, 1.0);
        let out = mlsm(&x, &y, None, Reduction::None, false).unwrap();
        assert_eq!(out.loss.shape(), &[2, 3]);
        let row = mlsm(
            &x.slice(ndarray::s![1, 2, ..]).to_owned().into_dyn(),
            &y.slice(ndarray::s![1, 2, ..]).to_owned().into_dyn(),
            None,
            Reduction::None,
            false,
        )
        .unwrap();
        assert_eq!(row.loss.shape(), &[] as &[usize]);
        assert_eq!(out.loss[[1, 2]], row.loss[[]]);
    }

    /// torch 2.15 (autograd's order of steps): targets near the float range give finite
    /// input gradients where `w·(σ(x) − y)` overflows, and an infinite weight gives −∞ (not
    /// NaN) where the target lies outside [0, 1].
    #[test]
    fn gradients_follow_autograd_at_the_float_range() {
        let x = array![[0.5, -2.0], [3.0, 0.0]].into_dyn();
        let y = array![[1.5e308, -1.7e308], [1.7e308, 2.0]].into_dyn();
        let out = mlsm(&x, &y, None, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss[[]], f64::NEG_INFINITY);
        let gx: Vec<f64> = out.grad("input").unwrap().iter().copied().collect();
        let want = [
            -7.5e+307,
            8.499999999999999e+307,
            -8.500000000000001e+307,
            -0.75,
        ];
        assert_close("input", &gx, &want, 1e-12, 0.0);
        let gy: Vec<f64> = out.grad("target").unwrap().iter().copied().collect();
        assert_close("target", &gy, &[-0.25, 1.0, -1.5, 0.0], 1e-12, 0.0);

        let x = array![[-1.0, 0.5]].into_dyn();
        let y = array![[2.0, 0.3]].into_dyn();
        let w = array![1.0, f64::INFINITY].into_dyn();
        let out = mlsm(&x, &y, Some(&w), Reduction::Mean, true).unwrap();
        let (gx, gy) = (out.grad("input").unwrap(), out.grad("target").unwrap());
        assert_close("input", &[gx[[0, 0]]], &[-0.8655292893150024], 1e-12, 0.0);
        assert_close("target", &[gy[[0, 0]]], &[0.5], 1e-12, 0.0);
        assert!(gx[[0, 1]].is_nan() && gy[[0, 1]].is_nan());
    }

    /// torch 2.15: a broadcast target's gradient sums `t·logσ(x)` and `t·logσ(−x)` apart
    /// before subtracting them; with a float32 weight at the top of the range both sums
    /// overflow, giving NaN, where summing the differences stays finite.
    #[test]
    fn a_broadcast_target_sums_each_product_apart() {
        // The float32 inputs, written as the float64 values they convert exactly to.
        let x = array![
            [-8.221576536016073e-06],
            [-2.7536298148334026e-06],
            [-7.271033609868027e-06],
            [2.552594742155634e-05]
        ]
        .into_dyn()
        .mapv(|v: f64| v as f32);
        let y = array![0.10769999772310257]
            .into_dyn()
            .mapv(|v: f64| v as f32);
        let w = array![f32::MAX].into_dyn();
        let out =
            multilabel_soft_margin_loss(x.view(), y.view(), Some(w.view()), Reduction::Sum, true)
                .unwrap();
        assert_eq!(out.loss[[]], f32::INFINITY);
        assert!(out.grad("target").unwrap()[[0]].is_nan());
        let gx = out.grad("input").unwrap();
        let want = [
            1.3349206596883728e+38,
            1.3349252232305336e+38,
            1.334921470984757e+38,
            1.334949359297962e+38,
        ];
        for (g, w) in gx.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() <= 1e-6 * w, "{g} vs {w}");
        }
        let gw = f64::from(out.grad("weight").unwrap()[[0]]);
        assert_close("weight", &[gw], &[2.7725915908813477], 1e-6, 0.0);
    }

    /// torch 2.15: an infinite class weight gives NaN input and target gradients in its class
    /// (inf·y·σ(−x) − inf·(1 − y)·σ(x)), the others unchanged.
    #[test]
    fn an_infinite_weight_gives_nan_gradients_in_its_class() {
        let x = array![[0.5, -1.0], [2.0, 0.0]].into_dyn();
        let y = array![[1.0, 0.0], [0.3, 1.0]].into_dyn();
        let w = array![1.5, f64::INFINITY].into_dyn();
        let out = mlsm(&x, &y, Some(&w), Reduction::Mean, true).unwrap();
        let w1 = array![1.5, 1.0].into_dyn();
        let plain = mlsm(&x, &y, Some(&w1), Reduction::Mean, true).unwrap();
        for name in ["input", "target"] {
            let (g, p) = (out.grad(name).unwrap(), plain.grad(name).unwrap());
            for r in 0..2 {
                assert_eq!(g[[r, 0]], p[[r, 0]], "{name}");
                assert!(g[[r, 1]].is_nan(), "{name}");
            }
        }
    }

    #[test]
    fn weight_multiplies_each_class() {
        let x = array![[0.5, -1.0], [2.0, 0.0]].into_dyn();
        let y = array![[1.0, 0.0], [0.0, 1.0]].into_dyn();
        let w = array![3.0, 0.5].into_dyn();
        let a = mlsm(&x, &y, Some(&w), Reduction::Mean, false).unwrap();
        let sp = |v: f64| (1.0 + v.exp()).ln();
        let want =
            ((3.0 * sp(-0.5) + 0.5 * sp(-1.0)) / 2.0 + (3.0 * sp(2.0) + 0.5 * sp(0.0)) / 2.0) / 2.0;
        assert_close("loss", a.loss.as_slice().unwrap(), &[want], 1e-14, 0.0);
    }

    #[test]
    fn huge_logits_stay_finite() {
        let x = array![[1e4, -1e4, 40.0]].into_dyn();
        let y = array![[0.0, 1.0, 1.0]].into_dyn();
        let out = mlsm(&x, &y, None, Reduction::Sum, true).unwrap();
        assert_array_close("loss", &out.loss, &[2e4 / 3.0], 1e-15, 0.0);
        // Checked on torch 2.15: at x = 40, y = 1 the input gradient is −σ(−40)/C, not 0.
        let g = out.grad("input").unwrap();
        assert!(g[[0, 2]] < 0.0 && g[[0, 2]] > -1e-17);
        assert_eq!(g[[0, 0]], 1.0 / 3.0);
    }

    #[test]
    fn zero_classes_give_nan_per_sample_and_empty_batches_follow_the_defaults() {
        // Checked on torch 2.15: a (2, 0) input gives [nan, nan].
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        let out = mlsm(&x, &x, None, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[2]);
        assert!(out.loss.iter().all(|v| v.is_nan()));
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        assert!(mlsm(&x, &x, None, Reduction::Mean, false).unwrap().loss[[]].is_nan());
        assert_eq!(
            mlsm(&x, &x, None, Reduction::Sum, false).unwrap().loss[[]],
            0.0
        );
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let s = ndarray::arr0(0.3).into_dyn();
        let e = mlsm(&s, &s, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input"));
        let x = array![[0.1, 0.2, 0.3]].into_dyn();
        let y = array![0.1, 0.2].into_dyn();
        let e = mlsm(&x, &y, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        let w = array![1.0, 2.0].into_dyn();
        let e = mlsm(&x, &x, Some(&w), Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "weight"));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(29);
        let shapes: [(&[usize], &[usize], &[usize]); 3] = [
            (&[3, 4], &[3, 4], &[4]),
            (&[3, 4], &[4], &[3, 1]),
            (&[4], &[2, 4], &[4]),
        ];
        for (xs, ys, ws) in shapes {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for weighted in [false, true] {
                    let x = rng.randn(xs).mapv(|v| 2.0 * v);
                    let y = rng.uniform_tensor(ys, 0.0, 1.0);
                    let w = rng.uniform_tensor(ws, 0.5, 2.0);
                    let wo = weighted.then_some(&w);
                    let out = mlsm(&x, &y, wo, reduction, true).unwrap();
                    let what = format!("{xs:?}/{ys:?}/{ws:?} {reduction:?} weight={weighted}");
                    assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                        scalar(&mlsm(x, &y, wo, reduction, false).unwrap())
                    });
                    assert_grad(&what, &y, out.grad("target").unwrap(), |y| {
                        scalar(&mlsm(&x, y, wo, reduction, false).unwrap())
                    });
                    if weighted {
                        assert_grad(&what, &w, out.grad("weight").unwrap(), |w| {
                            scalar(&mlsm(&x, &y, Some(w), reduction, false).unwrap())
                        });
                    }
                }
            }
        }
    }
}
