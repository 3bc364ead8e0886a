//! `cross_entropy` (`nn.CrossEntropyLoss`): `log_softmax` over the class dimension followed by
//! the negative log-likelihood of class indices, or by the cross entropy with class
//! probabilities; docs/losses.md.
//!
//! lossd's decisions (docs/differences.md):
//! - The mode is decided by shape (item 5): a target with exactly the input's shape holds
//!   probabilities, anything else class indices. The caller (the service, which decodes targets
//!   generically) picks [`CeTarget::Probs`] exactly when the shapes are equal; this kernel
//!   checks that it did.
//! - `label_smoothing` must lie in `[0, 1]` (item 4): PyTorch silently ignores negative values,
//!   lossd rejects them.
//! - Weighted means are mirrored (items 6, 7): class-index mode divides by the summed weights of
//!   the non-ignored positions (NaN when that is 0/0, with PyTorch's NaN/±inf gradients),
//!   probability mode by the number of positions. With label smoothing the class-index mean is
//!   PyTorch's `(1−ε)·(Σ nll / W) + (ε/C)·(Σ smooth / W)`, term by term: when every
//!   non-ignored target has weight 0, `Σ nll / W` is `0/0` and the mean is NaN (not `±inf`).
//!
//! The log-softmax subtracts the row maximum, so logits of any magnitude give finite results
//! wherever PyTorch's are finite. Each row (the classes of one position) is visited once for
//! forward and gradient together: its maximum, then `exp(x − max)` stored straight into the
//! gradient buffer, then the gradient in place. For a K-dimensional input the classes of a
//! position are strided (`S = d1·…·dK` apart); tiles of positions are transposed into
//! contiguous rows so the row math only ever sees contiguous slices.
//!
//! The row math lives in [`crate::softmax`], shared with `linear_cross_entropy`.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::nll::{ClassLayout, check_class_weight, check_index_target};
use crate::error::fmt_shape;
use crate::reduction::{Sum8, finish};
use crate::regression::contiguous;
use crate::softmax::{IndexLoss, IndexRowBatch, IndexTotals, RowMath, for_each_row, reduce_probs};
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// The `target` of [`cross_entropy`]: class indices or class probabilities.
///
/// The caller must pick `Probs` exactly when the target has the input's shape (PyTorch's rule,
/// docs/differences.md item 5), `Indices` otherwise; the kernel rejects the other combinations.
#[derive(Clone, Debug)]
pub enum CeTarget<'a, T> {
    /// Class indices: `()` or `(1,)` for a `(C)` input, `(N)` for `(N, C)`, `(N, d1..dK)` for
    /// `(N, C, d1..dK)`. Values in `[0, C)` or equal to `ignore_index`.
    Indices(ArrayViewD<'a, i64>),
    /// Class probabilities with exactly the input's shape (values are not checked).
    Probs(ArrayViewD<'a, T>),
}

/// The options of [`cross_entropy`] and `linear_cross_entropy`; the defaults are
/// `nn.CrossEntropyLoss()`'s.
#[derive(Clone, Debug)]
pub struct CrossEntropyOptions<'a, T> {
    /// A weight per class, shape `(C)`.
    pub weight: Option<ArrayViewD<'a, T>>,
    /// Class-index targets equal to this contribute nothing (class-index mode only).
    pub ignore_index: i64,
    /// `ε` in `[0, 1]`: the target is mixed with the uniform distribution over the classes.
    pub label_smoothing: f64,
    /// How the per-position losses are reduced.
    pub reduction: Reduction,
    /// Whether to return the gradients.
    pub grad: bool,
}

impl<T> Default for CrossEntropyOptions<'_, T> {
    fn default() -> Self {
        Self {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
            grad: false,
        }
    }
}

/// Rejects a `label_smoothing` outside `[0, 1]` (or NaN), docs/differences.md item 4.
pub(crate) fn check_label_smoothing(eps: f64) -> Result<(), LossError> {
    if (0.0..=1.0).contains(&eps) {
        Ok(())
    } else {
        Err(LossError::option(
            "label_smoothing",
            format!("label_smoothing must be between 0.0 and 1.0, got {eps}"),
        ))
    }
}

/// The error for a target whose mode does not match its shape.
pub(crate) fn probs_shape_error(target: &[usize], logits: &[usize]) -> LossError {
    LossError::shape(
        "target",
        format!(
            "target has shape {} but input has shape {}: a class-probability target must have exactly the input's shape",
            fmt_shape(target),
            fmt_shape(logits)
        ),
    )
}

/// The error for class indices given with the input's shape (which means probabilities).
pub(crate) fn indices_shape_error(target: &[usize], logits: &[usize]) -> LossError {
    LossError::shape(
        "target",
        format!(
            "target has shape {} and input has shape {}: a target with the input's shape holds class probabilities (floats), not class indices",
            fmt_shape(target),
            fmt_shape(logits)
        ),
    )
}

/// `F.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)`.
///
/// Shapes: input `(C)`, `(N, C)` or `(N, C, d1..dK)` (classes in dimension 0 for a 1-D input,
/// else 1); `weight` `(C)`. Target per [`CeTarget`]: class indices (shape of the input without
/// the class dimension; `()` or `(1,)` for a `(C)` input) or probabilities (the input's shape).
/// `'none'` returns one loss per position: `()`, `(N)` or `(N, d1..dK)`.
///
/// Class-index mode: `ℓ = (1−ε)·(−w_t·logp_t) + (ε/C)·(−Σ_c w_c·logp_c)`, 0 at positions equal
/// to `ignore_index`; `mean` divides by the summed `w_t` of the non-ignored positions, `W`
/// (all ignored → NaN), term by term with smoothing: `(1−ε)·(Σ nll / W) + (ε/C)·(Σ smooth / W)`
/// (so NaN, with NaN gradients at every non-ignored position, when every non-ignored target
/// has weight 0, as in PyTorch).
/// Gradient: `input` only.
///
/// Probability mode: `ℓ = −Σ_c w_c·p'_c·logp_c`, `p' = (1−ε)·p + ε/C`; `mean` divides by the
/// number of positions. `ignore_index` must be negative (it has no effect). Gradients: `input`,
/// `target`, and `weight` when given.
///
/// Errors: `label_smoothing` (option) outside `[0, 1]`; `ignore_index` (option) `>= 0` with
/// probabilities; `input` (shape) when 0-d; `target` (shape) when it does not fit the input or
/// its mode does not match its shape; `weight` (shape) unless it has shape `(C)`; `target`
/// (value) for a class index outside `[0, C)` other than `ignore_index`.
pub fn cross_entropy<T: Real>(
    input: ArrayViewD<'_, T>,
    target: CeTarget<'_, T>,
    options: CrossEntropyOptions<'_, T>,
) -> Result<LossOutput<T>, LossError> {
    let (weight, ignore_index) = (options.weight, options.ignore_index);
    let (label_smoothing, reduction, grad) =
        (options.label_smoothing, options.reduction, options.grad);
    check_label_smoothing(label_smoothing)?;
    let shape = input.shape().to_vec();
    match target {
        CeTarget::Indices(target) => {
            if target.shape() == shape.as_slice() {
                return Err(indices_shape_error(target.shape(), &shape));
            }
            let checked = check_index_target(&shape, &target, &weight, ignore_index)?;
            let layout = &checked.layout;
            let g_hat = match reduction {
                Reduction::Mean => T::of(1.0 / checked.total_weight),
                Reduction::Sum | Reduction::None => T::one(),
            };
            let math = RowMath::new(
                layout.classes,
                checked.weight.as_deref(),
                ignore_index,
                label_smoothing,
                g_hat,
            );
            let x = contiguous(&input, &shape);
            let keep = reduction == Reduction::None;
            let mut losses = Vec::with_capacity(if keep { layout.positions() } else { 0 });
            let mut totals = IndexTotals::default();
            let mut dx = if grad {
                vec![T::zero(); x.len()]
            } else {
                Vec::new()
            };
            let targets = &checked.targets;
            let mut done = |l: IndexLoss<T>| {
                totals.add(&l);
                if keep {
                    losses.push(l.loss);
                }
            };
            let mut batch = IndexRowBatch::new();
            // The whole loop of rows compiled for the widest vector instructions at once.
            vectorised!({
                let looped = for_each_row(
                    layout,
                    &x,
                    None,
                    grad.then_some(&mut dx[..]),
                    None,
                    #[inline(always)]
                    |pos, rows| {
                        let row = math.index_row_start::<false>(rows.x, targets[pos], rows.gx);
                        batch.push(row, &math, &mut done);
                    },
                );
                batch.flush(&math, &mut done);
                looped
            })?;
            let loss = finish(
                reduction,
                &layout.out_shape,
                losses,
                math.reduce_index(&totals, reduction, checked.total_weight),
            );
            let mut out = LossOutput::new(loss);
            if grad {
                out.grads.push((
                    "input",
                    ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("input's size"),
                ));
            }
            Ok(out)
        }
        CeTarget::Probs(target) => {
            if ignore_index >= 0 {
                return Err(LossError::option(
                    "ignore_index",
                    format!(
                        "ignore_index is not supported for a class-probability target (got {ignore_index}); it must be negative"
                    ),
                ));
            }
            if target.shape() != shape.as_slice() {
                return Err(probs_shape_error(target.shape(), &shape));
            }
            let layout = ClassLayout::of(&shape)?;
            let w = check_class_weight(&weight, layout.classes)?;
            let positions = layout.positions();
            let g_hat = match reduction {
                Reduction::Mean => T::of(1.0 / positions as f64),
                Reduction::Sum | Reduction::None => T::one(),
            };
            let math = RowMath::new(
                layout.classes,
                w.as_deref(),
                ignore_index,
                label_smoothing,
                g_hat,
            );
            let x = contiguous(&input, &shape);
            let p = contiguous(&target, &shape);
            let keep = reduction == Reduction::None;
            let mut losses = Vec::with_capacity(if keep { positions } else { 0 });
            // Σ(−ℓ), negated at the end: PyTorch's sum of nothing here is −0.0.
            let mut total = Sum8::new();
            let zeros = |on: bool| {
                if on {
                    vec![T::zero(); x.len()]
                } else {
                    Vec::new()
                }
            };
            let (mut dx, mut dp) = (zeros(grad), zeros(grad));
            let with_w = grad && w.is_some();
            let mut dw = vec![0.0f64; if with_w { layout.classes } else { 0 }];
            for_each_row(
                &layout,
                &x,
                Some(&p),
                grad.then_some(&mut dx[..]),
                grad.then_some(&mut dp[..]),
                |_, rows| {
                    let gw = with_w.then_some(&mut dw[..]);
                    let l = math.prob_row(rows.x, rows.p.unwrap_or(&[]), rows.gx, rows.gp, gw);
                    total.add(-l.f64());
                    if keep {
                        losses.push(l);
                    }
                },
            )?;
            let denominator = if x.is_empty() {
                f64::NAN
            } else {
                positions as f64
            };
            let loss = finish(
                reduction,
                &layout.out_shape,
                losses,
                reduce_probs(reduction, total.total(), denominator),
            );
            let mut out = LossOutput::new(loss);
            if grad {
                out.grads.push((
                    "input",
                    ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("input's size"),
                ));
                out.grads.push((
                    "target",
                    ArrayD::from_shape_vec(IxDyn(&shape), dp).expect("input's size"),
                ));
                if with_w {
                    // Without positions ĝ = 1/0 but nothing flows back: PyTorch gives zeros.
                    let neg_g = if positions == 0 { 0.0 } else { -g_hat.f64() };
                    let dw: Vec<T> = dw.iter().map(|&v| T::of(neg_g * v)).collect();
                    out.grads.push((
                        "weight",
                        ArrayD::from_shape_vec(IxDyn(&[layout.classes]), dw).expect("C classes"),
                    ));
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests;
