//! `nll_loss` (`nn.NLLLoss`): `ℓ_n = −w_{t_n} · input[n, t_n]`, docs/losses.md.
//!
//! The input is used as given (log-probabilities are expected, never checked). The class
//! dimension is 0 for a `(C)` input and 1 otherwise; batch and spatial positions are flattened.
//! `mean` is the weighted mean `Σ ℓ_n / Σ w_{t_n}` over the non-ignored positions, so all
//! ignored (or zero total weight) gives `0/0 = NaN`, and the gradient then holds NaN/±inf at
//! the target entries exactly as PyTorch's does (docs/differences.md item 6).
//!
//! lossd accepts a `(1,)` target for a `(C)` input (docs/differences.md item 17). PyTorch 2.15 computes the
//! forward for it but its backward fails ("size mismatch"); lossd returns the gradient of the
//! `()` target case.
//!
//! The shape and target checks here ([`check_index_target`]) are shared with the class-index
//! mode of `cross_entropy` and `linear_cross_entropy`, which PyTorch runs through the same
//! `nll_loss` checks.

use std::borrow::Cow;

use ndarray::ArrayViewD;

use crate::broadcast::unravel;
use crate::error::fmt_shape;
use crate::reduction::{Sum8, finish};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// Where the classes sit in an input of shape `(C)`, `(N, C)` or `(N, C, d1..dK)`: the element
/// of position `(n, s)` and class `c` is at `n·C·S + c·S + s` (row-major, `S = Π d_i`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClassLayout {
    /// `N` (1 for an unbatched `(C)` input).
    pub batch: usize,
    /// `C`.
    pub classes: usize,
    /// `S = d1·…·dK` (1 without spatial dimensions).
    pub spatial: usize,
    /// The shape of the unreduced loss: `()`, `(N)` or `(N, d1..dK)`.
    pub out_shape: Vec<usize>,
}

impl ClassLayout {
    /// The layout of an input of this shape, which must have at least one dimension.
    pub fn of(input: &[usize]) -> Result<Self, LossError> {
        match input {
            [] => Err(LossError::shape(
                "input",
                "input is 0-d but must have at least 1 dimension (the classes): expected shape (C), (N, C) or (N, C, d1, ...)",
            )),
            [c] => Ok(Self {
                batch: 1,
                classes: *c,
                spatial: 1,
                out_shape: Vec::new(),
            }),
            [n, c, rest @ ..] => {
                // The input exists, so Π dims fits in memory; with zero classes it may not,
                // and a 'none' output of that many positions could not be allocated.
                let spatial = rest
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .filter(|s| {
                        s.checked_mul(*n)
                            .is_some_and(|p| p <= isize::MAX as usize / 16)
                    })
                    .ok_or_else(|| {
                        LossError::shape(
                            "input",
                            format!("input has shape {}: too many positions", fmt_shape(input)),
                        )
                    })?;
                let mut out_shape = vec![*n];
                out_shape.extend_from_slice(rest);
                Ok(Self {
                    batch: *n,
                    classes: *c,
                    spatial,
                    out_shape,
                })
            }
        }
    }

    /// The number of positions (rows of classes): `N·S`.
    pub fn positions(&self) -> usize {
        self.batch * self.spatial
    }
}

/// Checks that `weight` is 1-D with one value per class; returns its values.
pub(crate) fn check_class_weight<'a, T: Real>(
    weight: &'a Option<ArrayViewD<'a, T>>,
    classes: usize,
) -> Result<Option<Cow<'a, [T]>>, LossError> {
    let Some(w) = weight else {
        return Ok(None);
    };
    if w.ndim() != 1 || w.len() != classes {
        return Err(LossError::shape(
            "weight",
            format!(
                "weight has shape {} but the input has {classes} classes: weight must have shape [{classes}] (one value per class)",
                fmt_shape(w.shape())
            ),
        ));
    }
    Ok(Some(contiguous(w, w.shape())))
}

/// Class-index targets (and class weights) that passed PyTorch's `nll_loss` checks.
pub(crate) struct IndexTargets<'a, T: Clone> {
    /// Where the classes sit in the input.
    pub layout: ClassLayout,
    /// The class weights, one per class.
    pub weight: Option<Cow<'a, [T]>>,
    /// The targets, one per position, row-major.
    pub targets: Cow<'a, [i64]>,
    /// `Σ w_{t_n}` over the non-ignored positions (their count when unweighted): the
    /// denominator of the weighted mean.
    pub total_weight: f64,
}

/// PyTorch's `nll_loss` checks of a class-index `target` against an input of shape
/// `input_shape` (`(C)`, `(N, C)` or `(N, C, d1..dK)`), in PyTorch's order: the input's rank,
/// the batch size, the target's shape, the weight, then every target value not equal to
/// `ignore_index` must be in `[0, C)`.
///
/// Errors: `input` ([`Shape`](crate::ErrorKind::Shape)) for a 0-d input, `target`
/// ([`Shape`](crate::ErrorKind::Shape)) for a target of the wrong shape, `weight`
/// ([`Shape`](crate::ErrorKind::Shape)) unless it has shape `(C)`, `target`
/// ([`Value`](crate::ErrorKind::Value), pointing at the element) for a class out of range.
pub(crate) fn check_index_target<'a, T: Real>(
    input_shape: &[usize],
    target: &'a ArrayViewD<'a, i64>,
    weight: &'a Option<ArrayViewD<'a, T>>,
    ignore_index: i64,
) -> Result<IndexTargets<'a, T>, LossError> {
    let layout = ClassLayout::of(input_shape)?;
    let ts = target.shape();
    let mismatch = |why: String| {
        LossError::shape(
            "target",
            format!(
                "target has shape {} but input has shape {}: {why}",
                fmt_shape(ts),
                fmt_shape(input_shape)
            ),
        )
    };
    if input_shape.len() == 1 {
        if ts.len() >= 2 {
            return Err(mismatch(
                "a (C) input takes a 0-d target (or shape [1]); multi-target not supported".into(),
            ));
        }
        if ts.len() == 1 && ts[0] != 1 {
            return Err(mismatch(format!(
                "for a 1-D input, a 1-D target must have size 1, but got target size: {}",
                ts[0]
            )));
        }
    } else {
        let tb = ts.first().copied().unwrap_or(0);
        if tb != input_shape[0] {
            return Err(mismatch(format!(
                "expected input batch_size ({}) to match target batch_size ({tb})",
                input_shape[0]
            )));
        }
        if input_shape.len() == 2 && ts.len() != 1 {
            return Err(mismatch(
                "an (N, C) input takes an (N) target; multi-target not supported".into(),
            ));
        }
        if input_shape.len() > 2 && ts != layout.out_shape.as_slice() {
            return Err(mismatch(format!(
                "expected target size {}",
                fmt_shape(&layout.out_shape)
            )));
        }
    }
    let c = layout.classes;
    let w = check_class_weight(weight, c)?;
    let targets = contiguous(target, ts);
    // Σ weights of the counted targets; without weights that is their count (the same bits:
    // a sum of ones is exact in any order).
    let out_of_range = |i: usize, t: i64| {
        LossError::value(
            "target",
            format!(
                "target value {t} is out of bounds: class indices must be in [0, {c}) \
                 (or equal ignore_index = {ignore_index})"
            ),
        )
        .at(&unravel(i, ts))
    };
    let total_weight = match w.as_deref() {
        Some(w) => {
            let mut total = Sum8::new();
            for (i, &t) in targets.iter().enumerate() {
                if t == ignore_index {
                    continue;
                }
                if t < 0 || t as u64 >= c as u64 {
                    return Err(out_of_range(i, t));
                }
                total.add(w[t as usize].f64());
            }
            total.total()
        }
        None => {
            // Without weights: a branch-free count and range check that vectorises (a
            // branch per target is a noticeable part of a large forward pass), then, only
            // when some target is out of range, the scan that finds the first one.
            let (counted, bad) = vectorised!(count_targets(&targets, ignore_index, c));
            if bad {
                let (i, &t) = targets
                    .iter()
                    .enumerate()
                    .find(|&(_, &t)| t != ignore_index && (t < 0 || t as u64 >= c as u64))
                    .expect("an out-of-range target was counted");
                return Err(out_of_range(i, t));
            }
            counted as f64
        }
    };
    Ok(IndexTargets {
        layout,
        weight: w,
        targets,
        total_weight,
    })
}

/// The number of targets not equal to `ignore_index`, and whether any of those is outside
/// `[0, classes)`: one branch-free pass (vectorised where called through `vectorised!`).
#[inline(always)]
fn count_targets(targets: &[i64], ignore_index: i64, classes: usize) -> (usize, bool) {
    let mut counted = 0u64;
    let mut bad = 0u64;
    for &t in targets {
        let kept = u64::from(t != ignore_index);
        counted += kept;
        // A negative t is a huge u64: one unsigned comparison checks both ends.
        bad |= kept & u64::from(t as u64 >= classes as u64);
    }
    (counted as usize, bad != 0)
}

/// `F.nll_loss(input, target, weight, ignore_index, reduction)`.
///
/// Shapes: input `(C)` with target `()` or `(1,)`; `(N, C)` with `(N)`; `(N, C, d1..dK)` with
/// `(N, d1..dK)`. `weight`, when given, has shape `(C)`. `'none'` returns the target's shape
/// (`()` for an unbatched input). `mean` divides by the summed weights of the non-ignored
/// positions (NaN when that is 0/0).
///
/// Gradient with respect to `input` only: `−w_{t_n} · ĝ_n` at each non-ignored target entry,
/// 0 elsewhere (`ĝ_n = 1/Σw` for mean, 1 otherwise).
///
/// Errors: `input` (shape) when 0-d; `target` (shape) when it does not fit the input;
/// `weight` (shape) unless it has `C` elements in one dimension; `target` (value) for a class
/// outside `[0, C)` that is not `ignore_index`.
pub fn nll_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, i64>,
    weight: Option<ArrayViewD<'_, T>>,
    ignore_index: i64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let shape = input.shape().to_vec();
    let checked = check_index_target(&shape, &target, &weight, ignore_index)?;
    let layout = &checked.layout;
    let w = checked.weight.as_deref();
    let (c, s) = (layout.classes, layout.spatial);
    let x = contiguous(&input, &shape);
    let positions = checked.targets.len();
    let g_hat = match reduction {
        Reduction::Mean => T::of(1.0 / checked.total_weight),
        Reduction::Sum | Reduction::None => T::one(),
    };

    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { positions } else { 0 });
    let mut dx = if grad {
        vec![T::zero(); x.len()]
    } else {
        Vec::new()
    };
    let mut total = Sum8::new();
    // Blocks of positions: first each position's address (counters, no division), then a
    // loop that only loads (so many cache misses are in flight at once: at 1e7 elements each
    // target entry sits on its own cache line), then the losses in position order.
    const BLOCK: usize = 256;
    const IGNORED: usize = usize::MAX;
    let mut at = [0usize; BLOCK];
    let mut vals = [T::zero(); BLOCK];
    let mut sums = [0.0f64; BLOCK];
    let (mut base, mut sp) = (0usize, 0usize);
    let targets = &checked.targets[..];
    for (b, start) in (0..positions).step_by(BLOCK).enumerate() {
        if b % 16 == 0 {
            crate::cancel::checkpoint()?;
        }
        let ts = &targets[start..(start + BLOCK).min(positions)];
        let len = ts.len();
        if s == 1 {
            // (N, C): position i's entry is at i·C + t, no counters to carry.
            for (k, (a, &t)) in at.iter_mut().zip(ts).enumerate() {
                let row = (start + k) * c;
                *a = if t == ignore_index {
                    IGNORED
                } else {
                    row + t as usize
                };
            }
        } else {
            for (a, &t) in at.iter_mut().zip(ts) {
                *a = if t == ignore_index {
                    IGNORED
                } else {
                    base + t as usize * s + sp
                };
                sp += 1;
                if sp == s {
                    sp = 0;
                    base += c * s;
                }
            }
        }
        for (v, &a) in vals.iter_mut().zip(&at[..len]) {
            if a != IGNORED {
                *v = x[a];
            }
        }
        // The block's losses, in order, for the ordered sum (one `extend` per block).
        let mut counted = 0;
        if w.is_none() && !keep && !grad {
            // The plain forward: nothing but the sum (the same values as below).
            for (&a, &v) in at[..len].iter().zip(&vals[..len]) {
                sums[counted] = (-v).f64();
                counted += usize::from(a != IGNORED);
            }
            total.extend(&sums[..counted]);
            continue;
        }
        for k in 0..len {
            if at[k] == IGNORED {
                if keep {
                    losses.push(T::zero());
                }
                continue;
            }
            let t = ts[k] as usize;
            let l = match w {
                Some(w) => -w[t] * vals[k],
                None => -vals[k],
            };
            sums[counted] = l.f64();
            counted += 1;
            if keep {
                losses.push(l);
            }
            if grad {
                // PyTorch scales first, then weights: 0 · (−1/0) = NaN when Σw = 0.
                let wt = w.map_or(T::one(), |w| w[t]);
                dx[at[k]] = wt * -g_hat;
            }
        }
        total.extend(&sums[..counted]);
    }
    // The mean divides by the summed weights of the counted targets, not by their number.
    let value = match reduction {
        Reduction::Mean => total.total() / checked.total_weight,
        Reduction::Sum | Reduction::None => total.total(),
    };
    let mut out = LossOutput::new(finish(reduction, &layout.out_shape, losses, value));
    if grad {
        out.push_grad("input", &shape, dx);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
