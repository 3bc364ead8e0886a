//! `linear_cross_entropy` (`nn.LinearCrossEntropyLoss`): `cross_entropy(input · Wᵀ + b, target)`
//! without ever holding the whole `(N, C, d1..dK)` logits, docs/losses.md.
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
    CeTarget, CrossEntropyOptions, check_label_smoothing, indices_shape_error, probs_shape_error,
};
use super::nll::{check_class_weight, check_index_target};
use crate::error::fmt_shape;
use crate::matmul::matmul;
use crate::reduction::{Sum8, finish};
use crate::regression::contiguous;
use crate::softmax::{IndexTotals, RowMath, gather, reduce_probs, scatter, tile_positions};
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
pub fn linear_cross_entropy<T: Real>(
    input: ArrayViewD<'_, T>,
    linear_weight: ArrayViewD<'_, T>,
    target: CeTarget<'_, T>,
    linear_bias: Option<ArrayViewD<'_, T>>,
    options: CrossEntropyOptions<'_, T>,
) -> Result<LossOutput<T>, LossError> {
    let (weight, ignore_index) = (options.weight, options.ignore_index);
    let (label_smoothing, reduction, grad) =
        (options.label_smoothing, options.reduction, options.grad);
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
    let loss = finish(reduction, &layout.out_shape, losses, reduced);
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
mod tests;
