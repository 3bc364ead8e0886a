//! `linear_cross_entropy` (`nn.LinearCrossEntropyLoss`): `cross_entropy(input · Wᵀ + b, target)`
//! without ever holding the whole `(N, C, d1..dK)` logits, LOSSES.md §2.7.
//!
//! The point of the fused loss is memory: with a large vocabulary `C`, the logits (and their
//! gradient) dwarf everything else. Samples (rows of `input`) are processed in chunks sized so
//! that a chunk's logits hold about a million elements (16 to 1024 rows): one matrix product
//! gives the chunk's logits `(rows, C·D)` (`D = d1·…·dK`, 1 for a 2-D `linear_weight`), the
//! cross-entropy row math of [`super::cross_entropy`] turns each position `(n, d)` (its `C`
//! logits) into its loss and the gradient with respect to those logits, written back in place
//! over the chunk's logits, and two more products fold that gradient into the gradients of
//! `input` (the chunk's rows) and `linear_weight`; the bias gradient is the column sum. Peak
//! extra memory is one chunk buffer (plus a few rows of scratch), whatever `N`.
//!
//! With a K-dimensional `linear_weight` `(C, d1..dK, in_features)` the `C` logits of a position
//! are `D` apart in a sample's row of logits (the layout of PyTorch's
//! `logits.reshape(N, C, d1..dK)`); tiles of positions are transposed into contiguous rows of
//! `C`, and their gradient rows transposed back, as `cross_entropy` does for a K-dimensional
//! input.
//!
//! The mean's denominator (the summed class weights of the non-ignored positions) is known
//! before the first chunk: the targets are checked, and the denominator summed, up front. So
//! each chunk's gradient is final when it is computed and nothing is rescaled at the end.
//!
//! lossd's decisions: `ignore_index` defaults to −100 and, with a probability target, any other
//! value is rejected (PyTorch rejects an explicit `ignore_index` there); `label_smoothing` must
//! lie in `[0, 1]` as for `cross_entropy`. Gradients are returned for `input`, `linear_weight`
//! and `linear_bias`, not for a probability target or the class weights (PyTorch's chunked path
//! does not give them either).

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, IxDyn, s};

use super::cross_entropy::{
    CeTarget, IndexTotals, RowMath, check_label_smoothing, finish_loss, gather,
    indices_shape_error, probs_shape_error, reduce_probs, scatter, tile_positions,
};
use super::nll::{check_class_weight, check_index_target};
use crate::error::fmt_shape;
use crate::matmul::matmul;
use crate::reduction::Sum8;
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// About how many logits one chunk holds.
const CHUNK_ELEMS: usize = 1 << 20;

/// The most logits one chunk may hold (a chunk has at least 16 samples, or all of them).
const MAX_CHUNK_LOGITS: usize = 1 << 28;

/// The class-index targets or probabilities of the whole batch.
enum Targets<'a, T: Clone> {
    Indices(std::borrow::Cow<'a, [i64]>),
    Probs(std::borrow::Cow<'a, [T]>),
}

/// `F.linear_cross_entropy(input, linear_weight, target, linear_bias=, weight=, reduction=,
/// ignore_index=, label_smoothing=)`: [`cross_entropy`](super::cross_entropy::cross_entropy)
/// of the logits `(input · linear_weightᵀ + linear_bias).reshape(*batch, C, d1..dK)`, computed
/// in chunks of rows.
///
/// Shapes: `input` `(in_features)` or `(N, in_features)`; `linear_weight` `(C, in_features)`
/// or, K-dimensional, `(C, d1..dK, in_features)` (then `input` must be `(N, in_features)`);
/// `linear_bias` `linear_weight`'s shape without `in_features`: `(C)` or `(C, d1..dK)`;
/// `weight` `(C)`. The logits are `(C)`, `(N, C)` or `(N, C, d1..dK)`, and `target` is as for
/// `cross_entropy` with those logits: class indices `()`/`(1,)`, `(N)` or `(N, d1..dK)`, or
/// probabilities of the logits' shape (the caller picks [`CeTarget::Probs`] exactly when the
/// shapes are equal). `'none'` returns `()`, `(N)` or `(N, d1..dK)`.
///
/// Gradients: `input`, `linear_weight`, and `linear_bias` when given, each of its own shape.
///
/// Errors: `label_smoothing` (option) outside `[0, 1]`; `input` (shape) unless 1-D or 2-D;
/// `linear_weight` (shape) unless at least 2-D with `in_features` in its last dimension;
/// `linear_bias` (shape) unless it has `linear_weight`'s shape without the last dimension;
/// `input` (shape) when 1-D with a K-dimensional `linear_weight`; `ignore_index` (option)
/// other than −100 with probabilities; then those of `cross_entropy` for `target` and `weight`.
#[allow(clippy::too_many_arguments)]
pub fn linear_cross_entropy<T: Real>(
    input: ArrayViewD<'_, T>,
    linear_weight: ArrayViewD<'_, T>,
    target: CeTarget<'_, T>,
    linear_bias: Option<ArrayViewD<'_, T>>,
    weight: Option<ArrayViewD<'_, T>>,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    check_label_smoothing(label_smoothing)?;
    let in_shape = input.shape().to_vec();
    let w_shape = linear_weight.shape().to_vec();
    // PyTorch's order: input, linear_weight, linear_bias, the batch a K-dim weight needs.
    if !(1..=2).contains(&in_shape.len()) {
        return Err(LossError::shape(
            "input",
            format!(
                "input has shape {}: expected (in_features) or (N, in_features)",
                fmt_shape(&in_shape)
            ),
        ));
    }
    let in_features = in_shape[in_shape.len() - 1];
    if w_shape.len() < 2 || w_shape[w_shape.len() - 1] != in_features {
        return Err(LossError::shape(
            "linear_weight",
            format!(
                "linear_weight has shape {} but input has shape {}: expected (C, {in_features}) or (C, d1, ..., dK, {in_features}), in_features = {in_features} last",
                fmt_shape(&w_shape),
                fmt_shape(&in_shape)
            ),
        ));
    }
    // (C, d1..dK): the logits of one sample, and the linear_bias's shape.
    let per_sample_shape = &w_shape[..w_shape.len() - 1];
    let classes = per_sample_shape[0];
    let out_features = &per_sample_shape[1..];
    if let Some(b) = &linear_bias
        && b.shape() != per_sample_shape
    {
        return Err(LossError::shape(
            "linear_bias",
            format!(
                "linear_bias has shape {} but linear_weight has shape {}: expected {}",
                fmt_shape(b.shape()),
                fmt_shape(&w_shape),
                fmt_shape(per_sample_shape)
            ),
        ));
    }
    if !out_features.is_empty() && in_shape.len() == 1 {
        return Err(LossError::shape(
            "input",
            format!(
                "input has shape {} but linear_weight has shape {}: a K-dimensional linear_weight needs a batched input (N, {in_features})",
                fmt_shape(&in_shape),
                fmt_shape(&w_shape)
            ),
        ));
    }
    // C·D logits per sample (D = d1·…·dK): the product of linear_weight's dimensions but its
    // last, so it fits (ndarray's shapes do).
    let per_sample: usize = per_sample_shape.iter().product();
    let logits_shape: Vec<usize> = [&in_shape[..in_shape.len() - 1], per_sample_shape].concat();

    // Targets, class weights and the mean's denominator, all checked before any product.
    let (layout, targets, class_w, denominator) = match &target {
        CeTarget::Indices(t) => {
            if t.shape() == logits_shape.as_slice() {
                return Err(indices_shape_error(t.shape(), &logits_shape));
            }
            let checked = check_index_target(&logits_shape, t, &weight, ignore_index)?;
            (
                checked.layout,
                Targets::Indices(checked.targets),
                checked.weight,
                checked.total_weight,
            )
        }
        CeTarget::Probs(p) => {
            if ignore_index != -100 {
                return Err(LossError::option(
                    "ignore_index",
                    format!(
                        "ignore_index cannot be specified when target contains probabilities (got {ignore_index})"
                    ),
                ));
            }
            if p.shape() != logits_shape.as_slice() {
                return Err(probs_shape_error(p.shape(), &logits_shape));
            }
            let layout = super::nll::ClassLayout::of(&logits_shape)?;
            let w = check_class_weight(&weight, classes)?;
            let numel = layout.positions() * classes;
            let denominator = if numel == 0 {
                f64::NAN
            } else {
                layout.positions() as f64
            };
            (
                layout,
                Targets::Probs(contiguous(p, &logits_shape)),
                w,
                denominator,
            )
        }
    };
    // Samples (1 for an unbatched input) and positions per sample.
    let (rows, spatial) = (layout.batch, layout.spatial);
    debug_assert_eq!(classes * spatial, per_sample);
    let g_hat = match reduction {
        Reduction::Mean => T::of(1.0 / denominator),
        Reduction::Sum | Reduction::None => T::one(),
    };
    let math = RowMath::new(
        classes,
        class_w.as_deref(),
        ignore_index,
        label_smoothing,
        g_hat,
    );

    let x = contiguous(&input, &in_shape);
    let x = ArrayView2::from_shape((rows, in_features), &x).expect("input is (N, in_features)");
    let wl = contiguous(&linear_weight, &w_shape);
    let wl = ArrayView2::from_shape((per_sample, in_features), &wl).expect("checked shape");
    let bias = linear_bias
        .as_ref()
        .map(|b| contiguous(b, per_sample_shape));

    let chunk = (CHUNK_ELEMS / per_sample.max(1))
        .clamp(16, 1024)
        .min(rows.max(1));
    // With in_features = 0 linear_weight holds no element however many logits it makes: refuse
    // a chunk PyTorch could not allocate either, rather than abort on it.
    if chunk
        .checked_mul(per_sample)
        .is_none_or(|n| n > MAX_CHUNK_LOGITS)
    {
        return Err(LossError::too_large(
            "linear_weight",
            format!(
                "linear_weight has shape {}: {per_sample} logits per sample, too many to compute even {chunk} samples at a time (at most {MAX_CHUNK_LOGITS} logits)",
                fmt_shape(&w_shape)
            ),
        ));
    }
    // The chunk's logits, overwritten in place by their gradient.
    let mut logits = vec![T::zero(); chunk * per_sample];
    // Scratch rows: a tile of positions' logits (and probabilities, and gradient rows) as
    // contiguous rows of C; without spatial positions only one row of logits, copied so the
    // gradient can be written over the chunk's own.
    let tile = if spatial == 1 {
        1
    } else {
        tile_positions(classes, spatial).max(1)
    };
    let scratch = |on: bool| vec![T::zero(); if on { tile * classes } else { 0 }];
    let mut xt = scratch(spatial > 1 || grad);
    let mut pt = scratch(spatial > 1 && matches!(targets, Targets::Probs(_)));
    let mut gxt = scratch(spatial > 1 && grad);
    let mut dx = if grad {
        Array2::<T>::zeros((rows, in_features))
    } else {
        Array2::zeros((0, 0))
    };
    let mut dw = if grad {
        Array2::<T>::zeros((per_sample, in_features))
    } else {
        Array2::zeros((0, 0))
    };
    let db_len = if grad && bias.is_some() {
        per_sample
    } else {
        0
    };
    let mut db = vec![0.0f64; db_len];

    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { layout.positions() } else { 0 });
    let mut index_totals = IndexTotals::default();
    // Probability mode sums −ℓ and negates at the end, as in `cross_entropy`.
    let mut prob_total = Sum8::new();
    // One position: its logits `x` (and probabilities `p`), the gradient row to fill.
    let mut position = |pos: usize, x: &[T], p: Option<&[T]>, g: Option<&mut [T]>| match &targets {
        Targets::Indices(t) => {
            let l = math.index_row(x, t[pos], g);
            index_totals.add(&l);
            if keep {
                losses.push(l.loss);
            }
        }
        Targets::Probs(_) => {
            let l = math.prob_row(x, p.unwrap_or(&[]), g, None, None);
            prob_total.add(-l.f64());
            if keep {
                losses.push(l);
            }
        }
    };
    let probs = match &targets {
        Targets::Probs(p) => Some(&p[..]),
        Targets::Indices(_) => None,
    };
    for r0 in (0..rows).step_by(chunk) {
        crate::cancel::checkpoint()?;
        let m = chunk.min(rows - r0);
        let xs = x.slice(s![r0..r0 + m, ..]);
        let lg = &mut logits[..m * per_sample];
        {
            let mut lgv = ArrayViewMut2::from_shape((m, per_sample), &mut *lg).expect("chunk");
            matmul(xs, wl.t(), &mut lgv, false);
        }
        if let Some(b) = &bias {
            for row in lg.chunks_exact_mut(per_sample.max(1)) {
                row.iter_mut().zip(b.iter()).for_each(|(l, &bc)| *l += bc);
            }
        }
        for i in 0..m {
            let row = &mut lg[i * per_sample..(i + 1) * per_sample];
            let n = r0 + i;
            let base = n * per_sample;
            if spatial == 1 {
                let p = probs.map(|p| &p[base..base + classes]);
                if grad {
                    xt.copy_from_slice(row);
                    position(n, &xt, p, Some(row));
                } else {
                    position(n, row, p, None);
                }
                continue;
            }
            for d0 in (0..spatial).step_by(tile) {
                let bb = tile.min(spatial - d0);
                gather(row, 0, classes, spatial, d0, bb, &mut xt);
                if let Some(p) = probs {
                    gather(p, base, classes, spatial, d0, bb, &mut pt);
                }
                for j in 0..bb {
                    let r = j * classes..(j + 1) * classes;
                    let p = probs.map(|_| &pt[r.clone()]);
                    let g = if grad {
                        Some(&mut gxt[r.clone()])
                    } else {
                        None
                    };
                    position(n * spatial + d0 + j, &xt[r], p, g);
                }
                if grad {
                    scatter(&gxt, row, 0, classes, spatial, d0, bb);
                }
            }
        }
        if grad {
            let glv = ArrayView2::from_shape((m, per_sample), &*lg).expect("chunk");
            let mut dxs = dx.slice_mut(s![r0..r0 + m, ..]);
            matmul(glv, wl, &mut dxs, false);
            matmul(glv.t(), xs, &mut dw.view_mut(), true);
            if !db.is_empty() {
                for row in lg.chunks_exact(per_sample) {
                    db.iter_mut().zip(row).for_each(|(acc, &g)| *acc += g.f64());
                }
            }
        }
    }

    let reduced = match targets {
        Targets::Indices(_) => math.reduce_index(&index_totals, reduction, denominator),
        Targets::Probs(_) => reduce_probs(reduction, prob_total.total(), denominator),
    };
    let loss = finish_loss(reduction, &layout.out_shape, losses, reduced);
    let mut out = LossOutput::new(loss);
    if grad {
        let dx = dx
            .into_shape_with_order(IxDyn(&in_shape))
            .expect("input's size");
        out.grads.push(("input", dx));
        let dw = dw
            .into_shape_with_order(IxDyn(&w_shape))
            .expect("linear_weight's size");
        out.grads.push(("linear_weight", dw));
        if bias.is_some() {
            let db: Vec<T> = db.into_iter().map(T::of).collect();
            out.grads.push((
                "linear_bias",
                ArrayD::from_shape_vec(IxDyn(per_sample_shape), db).expect("C·D logits"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::classification::cross_entropy::cross_entropy;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::{Array, Ix2, array};

    fn flat(a: &ArrayD<f64>) -> Vec<f64> {
        a.iter().copied().collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn lce(
        x: &ArrayD<f64>,
        wl: &ArrayD<f64>,
        t: &CeTarget<'_, f64>,
        b: Option<&ArrayD<f64>>,
        w: Option<&ArrayD<f64>>,
        eps: f64,
        reduction: Reduction,
        grad: bool,
    ) -> LossOutput<f64> {
        linear_cross_entropy(
            x.view(),
            wl.view(),
            t.clone(),
            b.map(|b| b.view()),
            w.map(|w| w.view()),
            -100,
            eps,
            reduction,
            grad,
        )
        .unwrap()
    }

    /// The unfused computation, as PyTorch's reference path: the logits
    /// `(input · linear_weight.reshape(C·D, in)ᵀ + linear_bias).reshape(N, C, d1..dK)`,
    /// `cross_entropy`, and the chain rule by hand. `x` must be 2-D.
    fn unfused(
        x: &ArrayD<f64>,
        wl: &ArrayD<f64>,
        t: &CeTarget<'_, f64>,
        b: Option<&ArrayD<f64>>,
        w: Option<&ArrayD<f64>>,
        eps: f64,
        reduction: Reduction,
    ) -> (ArrayD<f64>, Vec<(&'static str, ArrayD<f64>)>) {
        let x2 = x.view().into_dimensionality::<Ix2>().unwrap();
        let per_sample = &wl.shape()[..wl.ndim() - 1];
        let cd: usize = per_sample.iter().product();
        let w2 = wl
            .view()
            .into_shape_with_order((cd, wl.shape()[wl.ndim() - 1]))
            .unwrap();
        let mut logits = x2.dot(&w2.t());
        if let Some(b) = b {
            logits += &b.view().into_shape_with_order(cd).unwrap();
        }
        let shape = [&[x2.nrows()][..], per_sample].concat();
        let logits = logits.into_shape_with_order(IxDyn(&shape)).unwrap();
        let out = cross_entropy(
            logits.view(),
            t.clone(),
            w.map(|w| w.view()),
            -100,
            eps,
            reduction,
            true,
        )
        .unwrap();
        let gl = out
            .grad("input")
            .unwrap()
            .view()
            .into_shape_with_order((x2.nrows(), cd))
            .unwrap()
            .to_owned();
        let mut grads = vec![
            ("input", gl.dot(&w2).into_dyn()),
            (
                "linear_weight",
                gl.t()
                    .dot(&x2)
                    .into_shape_with_order(wl.shape())
                    .unwrap()
                    .into_dyn(),
            ),
        ];
        if b.is_some() {
            let db = gl.sum_axis(ndarray::Axis(0));
            grads.push((
                "linear_bias",
                db.into_shape_with_order(per_sample).unwrap().into_dyn(),
            ));
        }
        (out.loss, grads)
    }

    #[test]
    fn chunked_result_equals_the_unfused_computation_over_several_chunks() {
        // 2100 rows of 4 classes: three chunks of at most 1024 rows.
        let mut rng = Rng::new(31);
        let (n, k, c) = (2100, 3, 4);
        let x = rng.randn(&[n, k]);
        let wl = rng.randn(&[c, k]);
        let b = rng.randn(&[c]);
        let w = rng.uniform_tensor(&[c], 0.5, 2.0);
        let t = Array::from_iter((0..n).map(|i| {
            if i % 9 == 0 {
                -100
            } else {
                rng.below(c) as i64
            }
        }))
        .into_dyn();
        let p = rng.uniform_tensor(&[n, c], 0.0, 1.0);
        for target in [CeTarget::Indices(t.view()), CeTarget::Probs(p.view())] {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (use_b, use_w, eps) in [(false, false, 0.0), (true, true, 0.2)] {
                    let (bv, wv) = (use_b.then_some(&b), use_w.then_some(&w));
                    let got = lce(&x, &wl, &target, bv, wv, eps, reduction, true);
                    let (loss, grads) = unfused(&x, &wl, &target, bv, wv, eps, reduction);
                    assert_close("loss", &flat(&got.loss), &flat(&loss), 1e-12, 1e-14);
                    assert_eq!(got.grads.len(), grads.len());
                    for (name, want) in &grads {
                        let g = got.grad(name).unwrap();
                        assert_eq!(g.shape(), want.shape(), "{name}");
                        assert_close(name, &flat(g), &flat(want), 1e-10, 1e-13);
                    }
                }
            }
        }
    }

    #[test]
    fn unbatched_input_takes_a_0d_or_one_element_index_or_a_probability_vector() {
        let x = array![0.5, -1.0].into_dyn();
        let wl = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].into_dyn();
        let xb = array![[0.5, -1.0]].into_dyn();
        let tb = array![2i64].into_dyn();
        let want = lce(
            &xb,
            &wl,
            &CeTarget::Indices(tb.view()),
            None,
            None,
            0.0,
            Reduction::Sum,
            true,
        );
        for t in [ndarray::arr0(2i64).into_dyn(), tb.clone()] {
            let out = lce(
                &x,
                &wl,
                &CeTarget::Indices(t.view()),
                None,
                None,
                0.0,
                Reduction::None,
                true,
            );
            assert_eq!(out.loss.shape(), &[] as &[usize]);
            assert_eq!(out.loss[[]], want.loss[[]]);
            assert_eq!(out.grad("input").unwrap().shape(), &[2]);
            assert_eq!(
                flat(out.grad("input").unwrap()),
                flat(want.grad("input").unwrap())
            );
            assert_eq!(out.grad("linear_weight"), want.grad("linear_weight"));
        }
        let p = array![0.2, 0.3, 0.5].into_dyn();
        let out = lce(
            &x,
            &wl,
            &CeTarget::Probs(p.view()),
            None,
            None,
            0.0,
            Reduction::None,
            true,
        );
        assert_eq!(out.loss.shape(), &[] as &[usize]);
    }

    #[test]
    fn all_ignored_mean_is_nan_with_zero_gradients_and_empty_batches_work() {
        let x = array![[0.5, -1.0], [1.0, 2.0]].into_dyn();
        let wl = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].into_dyn();
        let b = array![0.1, 0.2, 0.3].into_dyn();
        let t = array![-100i64, -100].into_dyn();
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            Some(&b),
            None,
            0.1,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        assert!(out.grads.iter().all(|(_, g)| g.iter().all(|&v| v == 0.0)));

        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 2]));
        let t = ArrayD::<i64>::zeros(IxDyn(&[0]));
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            Some(&b),
            None,
            0.0,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        assert_eq!(out.grad("input").unwrap().shape(), &[0, 2]);
        assert_eq!(out.grad("linear_weight").unwrap().shape(), &[3, 2]);
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            None,
            None,
            0.0,
            Reduction::None,
            false,
        );
        assert_eq!(out.loss.shape(), &[0]);

        // No input features: the logits are the bias.
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        let wl = ArrayD::<f64>::zeros(IxDyn(&[3, 0]));
        let t = array![0i64, 2].into_dyn();
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            Some(&b),
            None,
            0.0,
            Reduction::Sum,
            true,
        );
        let bl = b.clone().insert_axis(ndarray::Axis(0));
        let bl = ndarray::concatenate![ndarray::Axis(0), bl, bl].into_dyn();
        let want = cross_entropy(
            bl.view(),
            CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::Sum,
            false,
        )
        .unwrap();
        assert_close("loss", &[out.loss[[]]], &[want.loss[[]]], 1e-15, 0.0);
    }

    #[test]
    fn shapes_and_options_pytorch_rejects_are_rejected() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
        let wl = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
        let t = array![0i64, 1].into_dyn();
        let p = ArrayD::<f64>::zeros(IxDyn(&[2, 4]));
        let call = |x: &ArrayD<f64>,
                    wl: &ArrayD<f64>,
                    t: CeTarget<'_, f64>,
                    b: Option<&ArrayD<f64>>,
                    w: Option<&ArrayD<f64>>,
                    ii: i64,
                    eps: f64| {
            linear_cross_entropy(
                x.view(),
                wl.view(),
                t,
                b.map(|b| b.view()),
                w.map(|w| w.view()),
                ii,
                eps,
                Reduction::Mean,
                false,
            )
            .unwrap_err()
        };
        let idx = || CeTarget::Indices(t.view());
        let x3 = ArrayD::<f64>::zeros(IxDyn(&[1, 2, 3]));
        let wl3 = ArrayD::<f64>::zeros(IxDyn(&[4, 1, 2]));
        let wl5 = ArrayD::<f64>::zeros(IxDyn(&[4, 5]));
        let b5 = ArrayD::<f64>::zeros(IxDyn(&[5]));
        let w5 = ArrayD::<f64>::zeros(IxDyn(&[5]));
        let t3 = array![0i64, 1, 2].into_dyn();
        let t4 = array![0i64, 4].into_dyn();
        let cases = [
            (
                call(&x3, &wl, idx(), None, None, -100, 0.0),
                ErrorKind::Shape,
                "input",
            ),
            (
                call(&x, &wl3, idx(), None, None, -100, 0.0),
                ErrorKind::Shape,
                "linear_weight",
            ),
            (
                call(&x, &wl5, idx(), None, None, -100, 0.0),
                ErrorKind::Shape,
                "linear_weight",
            ),
            (
                call(&x, &wl, idx(), Some(&b5), None, -100, 0.0),
                ErrorKind::Shape,
                "linear_bias",
            ),
            (
                call(&x, &wl, idx(), None, Some(&w5), -100, 0.0),
                ErrorKind::Shape,
                "weight",
            ),
            (
                call(&x, &wl, CeTarget::Indices(t3.view()), None, None, -100, 0.0),
                ErrorKind::Shape,
                "target",
            ),
            (
                call(&x, &wl, CeTarget::Probs(x.view()), None, None, -100, 0.0),
                ErrorKind::Shape,
                "target",
            ),
            (
                call(&x, &wl, CeTarget::Indices(t4.view()), None, None, -100, 0.0),
                ErrorKind::Value,
                "target",
            ),
            (
                call(&x, &wl, CeTarget::Probs(p.view()), None, None, -5, 0.0),
                ErrorKind::Option,
                "ignore_index",
            ),
            (
                call(&x, &wl, idx(), None, None, -100, 1.5),
                ErrorKind::Option,
                "label_smoothing",
            ),
            (
                call(&x, &wl, idx(), None, None, -100, -0.5),
                ErrorKind::Option,
                "label_smoothing",
            ),
        ];
        for (e, kind, arg) in cases {
            assert_eq!((e.kind, e.arg), (kind, arg), "{}", e.message);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(32);
        let (n, k, c) = (4, 3, 5);
        let t = array![0i64, 4, -100, 2].into_dyn();
        let p = rng.uniform_tensor(&[n, c], 0.0, 1.0);
        let w = rng.uniform_tensor(&[c], 0.5, 2.0);
        for target in [CeTarget::Indices(t.view()), CeTarget::Probs(p.view())] {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let x = rng.randn(&[n, k]);
                let wl = rng.randn(&[c, k]);
                let b = rng.randn(&[c]);
                let run = |x: &ArrayD<f64>, wl: &ArrayD<f64>, b: &ArrayD<f64>, grad| {
                    lce(x, wl, &target, Some(b), Some(&w), 0.1, reduction, grad)
                };
                let out = run(&x, &wl, &b, true);
                let what = format!("{reduction:?}");
                assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                    scalar(&run(x, &wl, &b, false))
                });
                assert_grad(&what, &wl, out.grad("linear_weight").unwrap(), |wl| {
                    scalar(&run(&x, wl, &b, false))
                });
                assert_grad(&what, &b, out.grad("linear_bias").unwrap(), |b| {
                    scalar(&run(&x, &wl, b, false))
                });
            }
        }
    }

    #[test]
    fn float32_agrees_with_float64() {
        let mut rng = Rng::new(33);
        let x = rng.randn(&[40, 6]);
        let wl = rng.randn(&[7, 6]);
        let t = Array::from_iter((0..40).map(|i| (i % 7) as i64)).into_dyn();
        let a = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            None,
            None,
            0.0,
            Reduction::Mean,
            true,
        );
        let (xf, wf) = (x.mapv(|v| v as f32), wl.mapv(|v| v as f32));
        let b = linear_cross_entropy(
            xf.view(),
            wf.view(),
            CeTarget::Indices(t.view()),
            None,
            None,
            -100,
            0.0,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert!((a.loss[[]] - f64::from(b.loss[[]])).abs() < 1e-5);
        let g: Vec<f64> = b
            .grad("linear_weight")
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_close(
            "linear_weight",
            &g,
            &flat(a.grad("linear_weight").unwrap()),
            1e-4,
            1e-6,
        );
    }

    #[test]
    fn k_dimensional_weight_small_case_by_hand() {
        // x = [[1, 0], [0, 1]] through W (C = 2, d1 = 2, in = 2): the logits of sample 0 are
        // (class, d) = [[1, 0], [0, 0]], of sample 1 [[0, 0], [0, 2]]; targets [[0, 1], [1, 1]].
        let x = array![[1.0, 0.0], [0.0, 1.0]].into_dyn();
        let wl = array![[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]].into_dyn();
        let b = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
        let t = array![[0i64, 1], [1, 1]].into_dyn();
        let t = CeTarget::Indices(t.view());
        let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
        let ln2 = 2f64.ln();
        let none = lce(&x, &wl, &t, Some(&b), None, 0.0, Reduction::None, true);
        assert_eq!(none.loss.shape(), &[2, 2]);
        // ln(1 + e^{−1}), ln 2, ln 2, ln(1 + e^{−2}); torch 2.15 prints the same values.
        let want = [(-sig(1.0).ln()), ln2, ln2, -sig(2.0).ln()];
        assert_close("none", &flat(&none.loss), &want, 1e-15, 0.0);
        assert_close(
            "torch",
            &[want[0], want[3]],
            &[0.31326168751822286, 0.1269280110429726],
            1e-15,
            0.0,
        );
        // Bias gradient (C, d): Σ_n softmax − one-hot at each position.
        let s1 = sig(-1.0);
        let s2 = sig(-2.0);
        let db = [0.5 - s1, 0.5 + s2, s1 - 0.5, -0.5 - s2];
        assert_eq!(none.grad("linear_bias").unwrap().shape(), &[2, 2]);
        assert_close(
            "linear_bias",
            &flat(none.grad("linear_bias").unwrap()),
            &db,
            1e-15,
            1e-16,
        );
        // The logits' gradients g[n, c, d]: sample 0 [[−s1, 0.5], [s1, −0.5]], sample 1
        // [[0.5, s2], [−0.5, −s2]]. input: row n is Σ_{c,d} g[n,c,d]·W[c,d], and W[c,d] is e0
        // at (0,0), 2·e1 at (1,1), else 0.
        let dx = [-s1, 2.0 * -0.5, 0.5, 2.0 * -s2];
        assert_close(
            "input",
            &flat(none.grad("input").unwrap()),
            &dx,
            1e-15,
            1e-16,
        );
        // W[c, d, :] = g[0,c,d]·x0 + g[1,c,d]·x1 = [g[0,c,d], g[1,c,d]].
        let dw = [-s1, 0.5, 0.5, s2, s1, -0.5, -0.5, -s2];
        assert_eq!(none.grad("linear_weight").unwrap().shape(), &[2, 2, 2]);
        assert_close(
            "linear_weight",
            &flat(none.grad("linear_weight").unwrap()),
            &dw,
            1e-15,
            1e-16,
        );
        let sum = lce(&x, &wl, &t, Some(&b), None, 0.0, Reduction::Sum, false);
        assert_close("sum", &[sum.loss[[]]], &[want.iter().sum()], 1e-15, 0.0);
        let mean = lce(&x, &wl, &t, Some(&b), None, 0.0, Reduction::Mean, false);
        assert_close(
            "mean",
            &[mean.loss[[]]],
            &[want.iter().sum::<f64>() / 4.0],
            1e-15,
            0.0,
        );
    }

    /// The K-dimensional inputs of the torch 2.15 checks below: x (3, 2), W (3, 2, 2),
    /// b (3, 2), class weights (3).
    fn kdim_example() -> [ArrayD<f64>; 4] {
        [
            array![[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]].into_dyn(),
            array![
                [[0.3, -0.2], [1.0, 0.5]],
                [[-0.4, 0.8], [0.1, -0.6]],
                [[0.7, 0.2], [-0.9, 0.4]]
            ]
            .into_dyn(),
            array![[0.1, -0.2], [0.0, 0.3], [-0.1, 0.2]].into_dyn(),
            array![0.5, 2.0, 1.0].into_dyn(),
        ]
    }

    #[test]
    fn k_dimensional_weight_matches_pytorch() {
        let [x, wl, b, w] = kdim_example();
        let check = |out: &LossOutput<f64>, loss: f64, want: [&[f64]; 3]| {
            assert_close("loss", &[out.loss[[]]], &[loss], 1e-13, 0.0);
            for (name, want) in ["input", "linear_weight", "linear_bias"].iter().zip(want) {
                if want.is_empty() {
                    assert!(out.grad(name).is_none());
                    continue;
                }
                let g = out.grad(name).unwrap();
                let shape = match *name {
                    "input" => x.shape(),
                    "linear_weight" => wl.shape(),
                    _ => b.shape(),
                };
                assert_eq!(g.shape(), shape, "{name}");
                assert_close(name, &flat(g), want, 1e-12, 1e-15);
            }
        };
        // torch 2.15: F.linear_cross_entropy(x, W, t, linear_bias=b, weight=w, ignore_index=2,
        // label_smoothing=0.2) (mean), t = [[2, 0], [1, 2], [0, 1]]; .backward().
        let t = array![[2i64, 0], [1, 2], [0, 1]].into_dyn();
        let out = linear_cross_entropy(
            x.view(),
            wl.view(),
            CeTarget::Indices(t.view()),
            Some(b.view()),
            Some(w.view()),
            2,
            0.2,
            Reduction::Mean,
            true,
        )
        .unwrap();
        check(
            &out,
            2.167630066297596,
            [
                &[
                    -0.05773693200051267,
                    -0.06277263453780751,
                    0.2823239993065962,
                    -0.2240619398151654,
                    -0.28573320849794226,
                    0.4091327668927044,
                ],
                &[
                    0.22805694777395033,
                    -0.12644102190100817,
                    -0.06784772620929233,
                    0.1608423421350595,
                    -0.505459295619319,
                    0.08192660718044684,
                    0.27304567305907934,
                    -0.7092060760872477,
                    0.27740234784536866,
                    0.04451441472056131,
                    -0.20519794684978696,
                    0.5483637339521881,
                ],
                &[
                    0.03595524998498657,
                    -0.009961003836210382,
                    -0.21967651801656563,
                    -0.2694823037272866,
                    0.18372126803157904,
                    0.2794433075634969,
                ],
            ],
        );
        // Probabilities (3, 3, 2): weight, label_smoothing=0.1, sum.
        let p = array![
            [[0.2, 0.5], [0.3, 0.25], [0.5, 0.25]],
            [[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]],
            [[0.1, 0.6], [0.7, 0.3], [0.2, 0.1]]
        ]
        .into_dyn();
        let p = CeTarget::Probs(p.view());
        let out = lce(&x, &wl, &p, Some(&b), Some(&w), 0.1, Reduction::Sum, true);
        check(
            &out,
            9.642762035464656,
            [
                &[
                    0.3930757824269691,
                    -0.6400077537585559,
                    1.4205360113987582,
                    0.8488449223861746,
                    -0.816095312579209,
                    0.5144536959174416,
                ],
                &[
                    -0.20276380176713366,
                    -0.4805327856458008,
                    1.618305474191078,
                    0.028314045645787544,
                    -0.21602927542413694,
                    0.46012069670786154,
                    -0.45410473189042366,
                    -1.4100094393423668,
                    0.41879307719127057,
                    0.02041208893793918,
                    -1.164200742300654,
                    1.3816953936965788,
                ],
                &[
                    0.29599852015126454,
                    0.8659896230623814,
                    -0.45125383157565485,
                    -1.025843609244721,
                    0.15525531142439028,
                    0.1598539861823396,
                ],
            ],
        );
        // The same probabilities, no bias, no weight, mean (÷ 6 positions).
        let out = lce(&x, &wl, &p, None, None, 0.0, Reduction::Mean, true);
        check(
            &out,
            1.487800801500308,
            [
                &[
                    0.0036066472123842267,
                    -0.09345601445584321,
                    0.21914133323128213,
                    0.1308369055378972,
                    -0.18429835898711144,
                    0.05052636586715481,
                ],
                &[
                    -0.1501298896031826,
                    -0.08782414761751801,
                    0.23068452124517003,
                    -0.06115574511656928,
                    0.002202569601758391,
                    0.07629577433007056,
                    -0.027190626951712992,
                    -0.1524264234412345,
                    0.14792732000142425,
                    0.011528373287447446,
                    -0.20349389429345702,
                    0.21358216855780382,
                ],
                &[],
            ],
        );
    }

    #[test]
    fn k_dimensional_chunks_and_tiles_equal_the_unfused_computation() {
        // 1200 samples of 3 classes × (20, 15) positions: two chunks (1165 + 35 samples) of
        // 900 logits per sample, each sample's 300 positions in two tiles (256 + 44).
        let mut rng = Rng::new(34);
        let (n, k, c, d) = (1200, 2, 3, [20, 15]);
        let x = rng.randn(&[n, k]);
        let wl = rng.randn(&[c, d[0], d[1], k]);
        let b = rng.randn(&[c, d[0], d[1]]);
        let w = rng.uniform_tensor(&[c], 0.5, 2.0);
        let t = ArrayD::from_shape_vec(
            IxDyn(&[n, d[0], d[1]]),
            (0..n * d[0] * d[1])
                .map(|i| {
                    if i % 11 == 5 {
                        -100
                    } else {
                        rng.below(c) as i64
                    }
                })
                .collect(),
        )
        .unwrap();
        let p = rng.uniform_tensor(&[n, c, d[0], d[1]], 0.0, 1.0);
        let cases = [
            (CeTarget::Indices(t.view()), Reduction::None, true, 0.0),
            (CeTarget::Indices(t.view()), Reduction::Mean, false, 0.2),
            (CeTarget::Probs(p.view()), Reduction::Sum, true, 0.1),
        ];
        for (target, reduction, use_b, eps) in cases {
            let bv = use_b.then_some(&b);
            let got = lce(&x, &wl, &target, bv, Some(&w), eps, reduction, true);
            let (loss, grads) = unfused(&x, &wl, &target, bv, Some(&w), eps, reduction);
            assert_eq!(got.loss.shape(), loss.shape());
            assert_close("loss", &flat(&got.loss), &flat(&loss), 1e-12, 1e-14);
            assert_eq!(got.grads.len(), grads.len());
            for (name, want) in &grads {
                let g = got.grad(name).unwrap();
                assert_eq!(g.shape(), want.shape(), "{name}");
                assert_close(name, &flat(g), &flat(want), 1e-10, 1e-12);
            }
        }
    }

    #[test]
    fn k_dimensional_gradients_match_finite_differences() {
        let mut rng = Rng::new(35);
        let (n, k, c) = (3, 2, 4);
        let t = array![
            [[0i64, 3], [1, -100]],
            [[2, 2], [3, 0]],
            [[-100, 1], [0, 3]]
        ]
        .into_dyn();
        let p = rng.uniform_tensor(&[n, c, 2, 2], 0.0, 1.0);
        let w = rng.uniform_tensor(&[c], 0.5, 2.0);
        for target in [CeTarget::Indices(t.view()), CeTarget::Probs(p.view())] {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (use_w, eps) in [(false, 0.0), (true, 0.3)] {
                    let x = rng.randn(&[n, k]);
                    let wl = rng.randn(&[c, 2, 2, k]);
                    let b = rng.randn(&[c, 2, 2]);
                    let wv = use_w.then_some(&w);
                    let run = |x: &ArrayD<f64>, wl: &ArrayD<f64>, b: &ArrayD<f64>, grad| {
                        lce(x, wl, &target, Some(b), wv, eps, reduction, grad)
                    };
                    let out = run(&x, &wl, &b, true);
                    let what = format!("{reduction:?} weight={use_w} eps={eps}");
                    assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                        scalar(&run(x, &wl, &b, false))
                    });
                    assert_grad(&what, &wl, out.grad("linear_weight").unwrap(), |wl| {
                        scalar(&run(&x, wl, &b, false))
                    });
                    assert_grad(&what, &b, out.grad("linear_bias").unwrap(), |b| {
                        scalar(&run(&x, &wl, b, false))
                    });
                }
            }
        }
    }

    #[test]
    fn k_dimensional_shapes_pytorch_rejects_are_rejected() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
        let wl = ArrayD::<f64>::zeros(IxDyn(&[4, 5, 3]));
        let t = ArrayD::<i64>::zeros(IxDyn(&[2, 5]));
        let err =
            |x: &ArrayD<f64>, wl: &ArrayD<f64>, t: CeTarget<'_, f64>, b: Option<&ArrayD<f64>>| {
                let e = linear_cross_entropy(
                    x.view(),
                    wl.view(),
                    t,
                    b.map(|b| b.view()),
                    None,
                    -100,
                    0.0,
                    Reduction::Mean,
                    false,
                )
                .unwrap_err();
                (e.kind, e.arg)
            };
        let idx = || CeTarget::Indices(t.view());
        let shape = |arg| (ErrorKind::Shape, arg);
        // torch 2.15: "expected linear_weight with dimensionality at least 2, got 1".
        let w1 = ArrayD::<f64>::zeros(IxDyn(&[3]));
        let t2 = array![0i64, 1].into_dyn();
        assert_eq!(
            err(&x, &w1, CeTarget::Indices(t2.view()), None),
            shape("linear_weight")
        );
        // torch: "expected linear_bias shape (4, 5), got (4,)" (and (20,) is no better).
        for bshape in [&[4][..], &[20], &[5, 4], &[4, 5, 1]] {
            let b = ArrayD::<f64>::zeros(IxDyn(bshape));
            assert_eq!(err(&x, &wl, idx(), Some(&b)), shape("linear_bias"));
        }
        // torch: "K-dimensional loss ... requires batched input".
        let x1 = ArrayD::<f64>::zeros(IxDyn(&[3]));
        let t0 = ndarray::arr0(0i64).into_dyn();
        assert_eq!(
            err(&x1, &wl, CeTarget::Indices(t0.view()), None),
            shape("input")
        );
        // torch: "Expected target size [2, 5], got [2]" / "[2, 5, 1]".
        let t5 = ArrayD::<i64>::zeros(IxDyn(&[2, 5, 1]));
        for t in [&t2, &t5] {
            assert_eq!(
                err(&x, &wl, CeTarget::Indices(t.view()), None),
                shape("target")
            );
        }
        let p = ArrayD::<f64>::zeros(IxDyn(&[2, 5, 4]));
        assert_eq!(
            err(&x, &wl, CeTarget::Probs(p.view()), None),
            shape("target")
        );
        // Class indices with the logits' shape (2, 4, 5) would be probabilities.
        let ti = ArrayD::<i64>::zeros(IxDyn(&[2, 4, 5]));
        assert_eq!(
            err(&x, &wl, CeTarget::Indices(ti.view()), None),
            shape("target")
        );
        // A weight holding no element, whose logits would not fit in memory: too large (PyTorch
        // fails to allocate them).
        let huge = ArrayD::<f64>::zeros(IxDyn(&[isize::MAX as usize / 8, 4, 0]));
        let xe = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        let tz = ArrayD::<i64>::zeros(IxDyn(&[2, 4]));
        assert_eq!(
            err(&xe, &huge, CeTarget::Indices(tz.view()), None),
            (ErrorKind::TooLarge, "linear_weight")
        );
        let wide = ArrayD::<f64>::zeros(IxDyn(&[1 << 20, 1 << 10, 0]));
        let tz = ArrayD::<i64>::zeros(IxDyn(&[2, 1 << 10]));
        assert_eq!(
            err(&xe, &wide, CeTarget::Indices(tz.view()), None),
            (ErrorKind::TooLarge, "linear_weight")
        );
        // And what it accepts: a (C, d1) bias.
        let b = ArrayD::<f64>::zeros(IxDyn(&[4, 5]));
        let out = lce(&x, &wl, &idx(), Some(&b), None, 0.0, Reduction::None, true);
        assert_eq!(out.loss.shape(), &[2, 5]);
        assert_close("uniform", &flat(&out.loss), &[4f64.ln(); 10], 1e-15, 0.0);
    }

    #[test]
    fn k_dimensional_without_positions_or_classes_follows_pytorch() {
        // torch 2.15, x (3, 4): W (5, 0, 4) gives 'none' (3, 0), mean NaN, sum 0.0 (−0.0 with
        // probabilities), zero input gradients; W (0, 2, 4) with (3, 0, 2) probabilities gives
        // 'none' −0.0 × (3, 2), mean NaN, sum −0.0.
        let mut rng = Rng::new(36);
        let x = rng.randn(&[3, 4]);
        let w0 = ArrayD::<f64>::zeros(IxDyn(&[5, 0, 4]));
        let t0 = ArrayD::<i64>::zeros(IxDyn(&[3, 0]));
        let p0 = ArrayD::<f64>::zeros(IxDyn(&[3, 5, 0]));
        let wc = ArrayD::<f64>::zeros(IxDyn(&[0, 2, 4]));
        let pc = ArrayD::<f64>::zeros(IxDyn(&[3, 0, 2]));
        let cases = [
            (&w0, CeTarget::Indices(t0.view()), &[3, 0][..], false),
            (&w0, CeTarget::Probs(p0.view()), &[3, 0], true),
            (&wc, CeTarget::Probs(pc.view()), &[3, 2], true),
        ];
        for (wl, t, none_shape, negative_zero) in cases {
            let none = lce(&x, wl, &t, None, None, 0.0, Reduction::None, true);
            assert_eq!(none.loss.shape(), none_shape);
            assert!(none.loss.iter().all(|v| *v == 0.0 && v.is_sign_negative()));
            assert!(none.grad("input").unwrap().iter().all(|&v| v == 0.0));
            assert_eq!(none.grad("linear_weight").unwrap().shape(), wl.shape());
            let mean = lce(&x, wl, &t, None, None, 0.0, Reduction::Mean, true);
            assert!(mean.loss[[]].is_nan());
            assert!(mean.grad("input").unwrap().iter().all(|&v| v == 0.0));
            let sum = lce(&x, wl, &t, None, None, 0.0, Reduction::Sum, false);
            assert_eq!(sum.loss[[]], 0.0);
            assert_eq!(sum.loss[[]].is_sign_negative(), negative_zero);
        }
    }

    /// torch 2.15 (issue 28): label smoothing with an infinite class weight gives +inf (the
    /// logits [0, 1], `inf · logp_1`), not NaN; gradients input [[nan]], linear_weight
    /// [[inf], [nan]].
    #[test]
    fn smoothing_with_an_infinite_weight_follows_pytorch() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        let x = array![[1.0]].into_dyn();
        let wl = array![[0.0], [1.0]].into_dyn();
        let w = array![1.0, inf].into_dyn();
        let t = array![0i64].into_dyn();
        let t = CeTarget::Indices(t.view());
        for r in [Reduction::None, Reduction::Sum] {
            let out = lce(&x, &wl, &t, None, Some(&w), 0.5, r, true);
            assert_eq!(flat(&out.loss), [inf], "{r:?}");
            assert_close("input", &flat(out.grad("input").unwrap()), &[nan], 0.0, 0.0);
            let dwl = flat(out.grad("linear_weight").unwrap());
            assert_close("linear_weight", &dwl, &[inf, nan], 0.0, 0.0);
        }
    }

    #[test]
    fn smoothed_mean_with_zero_weight_targets_is_nan_as_in_pytorch() {
        // torch 2.15 (kdim_example, class weights [0, 0, 1], label_smoothing 0.2, mean): every
        // non-ignored target has weight 0, so Σ nll / W = 0/0; the loss and every gradient are
        // NaN. The 2-D form with the third sample ignored: NaN, and that sample's input
        // gradient row is 0.
        let [x, wl, b, _] = kdim_example();
        let wz = array![0.0, 0.0, 1.0].into_dyn();
        let t = array![[0i64, 1], [1, -100], [0, 0]].into_dyn();
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            Some(&b),
            Some(&wz),
            0.2,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        assert_eq!(out.grads.len(), 3);
        assert!(out.grads.iter().all(|(_, g)| g.iter().all(|v| v.is_nan())));
        let w2 = wl.slice(s![.., 0, ..]).to_owned().into_dyn();
        let t = array![0i64, 1, -100].into_dyn();
        let out = lce(
            &x,
            &w2,
            &CeTarget::Indices(t.view()),
            None,
            Some(&wz),
            0.2,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        let dx = flat(out.grad("input").unwrap());
        assert!(dx[..4].iter().all(|v| v.is_nan()));
        assert_eq!(dx[4..], [0.0, 0.0]);
        assert!(
            out.grad("linear_weight")
                .unwrap()
                .iter()
                .all(|v| v.is_nan())
        );
        // The sum is finite: only the mean divides by W = 0.
        let out = lce(
            &x,
            &w2,
            &CeTarget::Indices(t.view()),
            None,
            Some(&wz),
            0.2,
            Reduction::Sum,
            true,
        );
        assert!(out.loss[[]].is_finite());
        assert!(
            out.grads
                .iter()
                .all(|(_, g)| g.iter().all(|v| v.is_finite()))
        );
    }

    #[test]
    fn k_dimensional_float32_agrees_with_float64() {
        let mut rng = Rng::new(37);
        let x = rng.randn(&[30, 5]);
        let wl = rng.randn(&[6, 3, 2, 5]);
        let b = rng.randn(&[6, 3, 2]);
        let t = Array::from_iter((0..180).map(|i| (i % 6) as i64))
            .into_shape_with_order(IxDyn(&[30, 3, 2]))
            .unwrap();
        let a = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            Some(&b),
            None,
            0.1,
            Reduction::Mean,
            true,
        );
        let f = |a: &ArrayD<f64>| a.mapv(|v| v as f32);
        let (xf, wf, bf) = (f(&x), f(&wl), f(&b));
        let out = linear_cross_entropy(
            xf.view(),
            wf.view(),
            CeTarget::Indices(t.view()),
            Some(bf.view()),
            None,
            -100,
            0.1,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert!((a.loss[[]] - f64::from(out.loss[[]])).abs() < 1e-5);
        for name in ["input", "linear_weight", "linear_bias"] {
            let g: Vec<f64> = out.grad(name).unwrap().iter().map(|&v| v.into()).collect();
            assert_eq!(
                out.grad(name).unwrap().shape(),
                a.grad(name).unwrap().shape()
            );
            assert_close(name, &g, &flat(a.grad(name).unwrap()), 1e-4, 1e-6);
        }
    }
}
