//! `multi_margin_loss` (`nn.MultiMarginLoss`): the multi-class hinge
//! `ℓ_n = (1/C)·Σ_{i ≠ t} w_t·max(0, margin − x_t + x_i)^p`, docs/losses.md.
//!
//! Shapes, checks and arithmetic follow ATen's `LossMultiMargin.cpp`: the weight of the
//! **target** class multiplies every term, a hinge at exactly 0 contributes nothing (and no
//! gradient), `margin` is not validated. lossd decision (docs/differences.md item 1): an empty batch
//! `(0, C)` gives `sum = 0` and `mean = NaN` where PyTorch 2.15 returns uninitialised memory.
//! The per-sample sums accumulate in `f64`.

use ndarray::ArrayViewD;

use crate::broadcast::unravel;
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{Sum8, reduce};
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

    let out_shape: &[usize] = if target.ndim() == 0 { &[] } else { &[n] };
    let mut out = LossOutput::new(reduce(reduction, out_shape, losses, total.total(), n));
    if grad {
        out.push_grad("input", &shape, dx);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
