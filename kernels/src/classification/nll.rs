//! `nll_loss` (`nn.NLLLoss`): `ℓ_n = −w_{t_n} · input[n, t_n]`, LOSSES.md §2.5.
//!
//! The input is used as given (log-probabilities are expected, never checked). The class
//! dimension is 0 for a `(C)` input and 1 otherwise; batch and spatial positions are flattened.
//! `mean` is the weighted mean `Σ ℓ_n / Σ w_{t_n}` over the non-ignored positions, so all
//! ignored (or zero total weight) gives `0/0 = NaN`, and the gradient then holds NaN/±inf at
//! the target entries exactly as PyTorch's does (LOSSES.md §4 item 6).
//!
//! lossd accepts a `(1,)` target for a `(C)` input (§4 item 17). PyTorch 2.15 computes the
//! forward for it but its backward fails ("size mismatch"); lossd returns the gradient of the
//! `()` target case.
//!
//! The shape and target checks here ([`check_index_target`]) are shared with the class-index
//! mode of `cross_entropy` and `linear_cross_entropy`, which PyTorch runs through the same
//! `nll_loss` checks.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::fmt_shape;
use crate::reduction::Sum8;
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
            // branch per target was ~15 % of a (100000, 100) forward pass), then, only when
            // some target is out of range, the scan that finds the first one.
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

/// The row-major multi-index of flat position `i` in `shape`.
pub(crate) fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
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
    let loss = match reduction {
        Reduction::None => {
            ArrayD::from_shape_vec(IxDyn(&layout.out_shape), losses).expect("one per position")
        }
        Reduction::Sum => ndarray::arr0(T::of(total.total())).into_dyn(),
        Reduction::Mean => ndarray::arr0(T::of(total.total() / checked.total_weight)).into_dyn(),
    };
    let mut out = LossOutput::new(loss);
    if grad {
        out.grads.push((
            "input",
            ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("input's size"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::{Array, array};

    fn t1(v: &[i64]) -> ArrayD<i64> {
        Array::from_vec(v.to_vec()).into_dyn()
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // LOSSES.md §5: NLLLoss weight=[1,2,0.5] mean on the CE example's x, t=[2,0,1].
        let x = array![[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]].into_dyn();
        let w = array![1.0, 2.0, 0.5].into_dyn();
        let t = t1(&[2, 0, 1]);
        let out = nll_loss(
            x.view(),
            t.view(),
            Some(w.view()),
            -100,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert_close("loss", &[out.loss[[]]], &[-1.2142857143], 1e-10, 0.0);
        assert_close(
            "grad",
            out.grad("input").unwrap().as_slice().unwrap(),
            &[
                0.0,
                0.0,
                -0.1428571429,
                -0.2857142857,
                0.0,
                0.0,
                0.0,
                -0.5714285714,
                0.0,
            ],
            1e-9,
            0.0,
        );
    }

    #[test]
    fn every_reduction_picks_the_target_entries() {
        let x = array![[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]].into_dyn();
        let t = t1(&[1, 0, 1]);
        let none = nll_loss(x.view(), t.view(), None, -100, Reduction::None, false).unwrap();
        assert_eq!(none.loss.as_slice().unwrap(), &[2.0, 3.0, 6.0]);
        let sum = nll_loss(x.view(), t.view(), None, -100, Reduction::Sum, false).unwrap();
        assert_eq!(sum.loss[[]], 11.0);
        let mean = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, false).unwrap();
        assert_eq!(mean.loss[[]], 11.0 / 3.0);
        assert!(mean.grads.is_empty());
    }

    #[test]
    fn ignored_positions_count_neither_in_the_loss_nor_in_the_mean() {
        let x = array![[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]].into_dyn();
        let w = array![2.0, 0.5].into_dyn();
        let t = t1(&[1, 7, 0]);
        // ignore_index may lie outside [0, C).
        let out = nll_loss(x.view(), t.view(), Some(w.view()), 7, Reduction::Mean, true).unwrap();
        assert_eq!(out.loss[[]], (0.5 * 2.0 + 2.0 * 5.0) / 2.5);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.0, -0.2, 0.0, 0.0, -0.8, 0.0]
        );
        let none = nll_loss(
            x.view(),
            t.view(),
            Some(w.view()),
            7,
            Reduction::None,
            false,
        )
        .unwrap();
        assert_eq!(none.loss.as_slice().unwrap(), &[1.0, 0.0, 10.0]);
    }

    #[test]
    fn all_ignored_mean_is_nan_with_a_zero_gradient() {
        let x = array![[-1.0f64, -2.0], [-3.0, -4.0]].into_dyn();
        let t = t1(&[-100, -100]);
        let out = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
        assert!(out.loss[[]].is_nan());
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0; 4]);
        let sum = nll_loss(x.view(), t.view(), None, -100, Reduction::Sum, false).unwrap();
        assert_eq!(sum.loss[[]], 0.0);
    }

    #[test]
    fn zero_total_weight_gives_nan_and_infinite_gradients_as_pytorch() {
        // Checked on torch 2.15: weight [0,0,1], t=[0,1] → NaN, grad NaN at the targets;
        // weight [1,-1,1] → inf, grad −inf / +inf at the targets.
        let x = array![[0.1f64, 0.5, -0.3], [1.0, 2.0, 0.0]].into_dyn();
        let t = t1(&[0, 1]);
        let w = array![0.0, 0.0, 1.0].into_dyn();
        let out = nll_loss(
            x.view(),
            t.view(),
            Some(w.view()),
            -100,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert!(out.loss[[]].is_nan());
        let g = out.grad("input").unwrap();
        assert!(g[[0, 0]].is_nan() && g[[1, 1]].is_nan());
        assert_eq!((g[[0, 1]], g[[1, 0]]), (0.0, 0.0));
        let w = array![1.0, -1.0, 1.0].into_dyn();
        let out = nll_loss(
            x.view(),
            t.view(),
            Some(w.view()),
            -100,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert_eq!(out.loss[[]], f64::INFINITY);
        let g = out.grad("input").unwrap();
        assert_eq!((g[[0, 0]], g[[1, 1]]), (f64::NEG_INFINITY, f64::INFINITY));
    }

    #[test]
    fn unbatched_input_takes_a_0d_or_a_one_element_target() {
        let x = array![-0.5, -1.5, -2.5].into_dyn();
        for t in [ndarray::arr0(1i64).into_dyn(), t1(&[1])] {
            let out = nll_loss(x.view(), t.view(), None, -100, Reduction::None, true).unwrap();
            assert_eq!(out.loss.shape(), &[] as &[usize]);
            assert_eq!(out.loss[[]], 1.5);
            assert_eq!(
                out.grad("input").unwrap().as_slice().unwrap(),
                &[0.0, -1.0, 0.0]
            );
        }
    }

    #[test]
    fn k_dimensional_input_reads_the_class_dimension_with_a_stride() {
        let mut rng = Rng::new(1);
        let x = rng.randn(&[2, 3, 2, 2]);
        let t = ndarray::arr3(&[[[0i64, 1], [2, 0]], [[1, 1], [2, -100]]]).into_dyn();
        let out = nll_loss(x.view(), t.view(), None, -100, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[2, 2, 2]);
        for n in 0..2 {
            for i in 0..2 {
                for j in 0..2 {
                    let tt = t[[n, i, j]];
                    let want = if tt < 0 {
                        0.0
                    } else {
                        -x[[n, tt as usize, i, j]]
                    };
                    assert_eq!(out.loss[[n, i, j]], want);
                }
            }
        }
        let g = out.grad("input").unwrap();
        assert_eq!(g.iter().filter(|v| **v == -1.0).count(), 7);
    }

    #[test]
    fn empty_batches_give_nan_mean_zero_sum_and_empty_none() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let t = t1(&[]);
        let mean = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
        assert!(mean.loss[[]].is_nan());
        assert_eq!(mean.grad("input").unwrap().shape(), &[0, 3]);
        let sum = nll_loss(x.view(), t.view(), None, -100, Reduction::Sum, false).unwrap();
        assert_eq!(sum.loss[[]], 0.0);
        let none = nll_loss(x.view(), t.view(), None, -100, Reduction::None, false).unwrap();
        assert_eq!(none.loss.shape(), &[0]);
    }

    #[test]
    fn targets_out_of_range_are_rejected_with_their_position() {
        let x = array![[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]].into_dyn();
        for bad in [3i64, -2, i64::MIN, i64::MAX] {
            let t = t1(&[0, bad]);
            let e = nll_loss(x.view(), t.view(), None, -100, Reduction::None, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Value, "target"));
            assert_eq!(e.index, Some(vec![1]));
            assert!(e.message.contains(&bad.to_string()), "{}", e.message);
        }
        // Zero classes: every target is out of bounds.
        let x = ArrayD::<f64>::zeros(IxDyn(&[1, 0]));
        let e = nll_loss(x.view(), t1(&[0]).view(), None, -100, Reduction::Sum, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Value);
    }

    #[test]
    fn the_branch_free_count_finds_the_first_bad_target_as_the_scalar_scan() {
        // Unweighted targets go through `count_targets`; weighted ones through the scalar
        // loop. Both must count the same targets and point at the same first bad one.
        let mut rng = Rng::new(11);
        let x = ArrayD::<f64>::zeros(IxDyn(&[300, 5]));
        let w = ArrayD::<f64>::ones(IxDyn(&[5]));
        for case in 0..200 {
            let ignore = [-100i64, 2, 7, -1][case % 4];
            let pool = [0i64, 1, 2, 3, 4, ignore, ignore, 5, -1, i64::MIN, i64::MAX];
            // Good targets (some ignored), and in four cases of five one bad target somewhere.
            let bad_at = (rng.uniform() * 300.0) as usize;
            let t: Vec<i64> = (0..300)
                .map(|i| {
                    if i == bad_at && case % 5 != 0 {
                        pool[7 + (case / 4) % 4]
                    } else {
                        pool[(rng.uniform() * 7.0) as usize]
                    }
                })
                .collect();
            let t = t1(&t);
            let plain = nll_loss(x.view(), t.view(), None, ignore, Reduction::Sum, false);
            let weighted = nll_loss(
                x.view(),
                t.view(),
                Some(w.view()),
                ignore,
                Reduction::Sum,
                false,
            );
            match (plain, weighted) {
                (Ok(a), Ok(b)) => assert_eq!(a.loss, b.loss),
                (Err(a), Err(b)) => {
                    assert_eq!((a.index, a.message), (b.index, b.message));
                }
                (a, b) => panic!("case {case}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
            let mean = |w: Option<ArrayViewD<'_, f64>>| {
                nll_loss(x.view(), t.view(), w, ignore, Reduction::Mean, true).map(|o| o.grads)
            };
            if let (Ok(a), Ok(b)) = (mean(None), mean(Some(w.view()))) {
                assert_eq!(
                    a, b,
                    "case {case}: the count is the denominator of the mean"
                );
            }
        }
    }

    #[test]
    fn shapes_pytorch_rejects_are_rejected() {
        let x2 = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
        let x1 = ArrayD::<f64>::zeros(IxDyn(&[3]));
        let x4 = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 4, 4]));
        let x0 = ndarray::arr0(0.0).into_dyn();
        let cases: Vec<(&ArrayD<f64>, ArrayD<i64>, &str)> = vec![
            (&x2, t1(&[0, 1, 2]), "target"),
            (&x2, ndarray::arr0(0).into_dyn(), "target"),
            (&x2, ArrayD::zeros(IxDyn(&[4, 1])), "target"),
            (&x1, t1(&[0, 1]), "target"),
            (&x1, ArrayD::zeros(IxDyn(&[1, 1])), "target"),
            (&x4, ArrayD::zeros(IxDyn(&[2, 4, 5])), "target"),
            (&x4, ArrayD::zeros(IxDyn(&[2, 4])), "target"),
            (&x0, ndarray::arr0(0).into_dyn(), "input"),
        ];
        for (x, t, arg) in cases {
            let e = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, false).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
        }
        let t = t1(&[0, 1, 2, 0]);
        for w in [
            ArrayD::<f64>::ones(IxDyn(&[4])),
            ArrayD::<f64>::ones(IxDyn(&[1, 3])),
        ] {
            let e = nll_loss(
                x2.view(),
                t.view(),
                Some(w.view()),
                -100,
                Reduction::Mean,
                false,
            )
            .unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "weight"));
            assert!(e.message.contains("[4]") || e.message.contains("[1, 3]"));
        }
    }

    /// The forward-only sum (no weight, no unreduced losses, no gradient) takes a path of its
    /// own; it gives the bits of the general path, ignored positions anywhere in the blocks,
    /// for (N, C) and K-dimensional inputs.
    #[test]
    fn the_plain_forward_gives_the_bits_of_the_general_path() {
        fn check<T: Real>(shape: &[usize], rng: &mut Rng) {
            let x: Vec<T> = (0..shape.iter().product::<usize>())
                .map(|_| T::of(rng.range(-3.0, 1.0)))
                .collect();
            let x = ArrayD::from_shape_vec(IxDyn(shape), x).unwrap();
            let mut tshape = shape.to_vec();
            let c = tshape.remove(1);
            let n: usize = tshape.iter().product();
            let t: Vec<i64> = (0..n)
                .map(|i| {
                    if i % 7 == 3 || (250..262).contains(&(i % 512)) {
                        -100
                    } else {
                        (rng.next_u64() % c as u64) as i64
                    }
                })
                .collect();
            let t = ArrayD::from_shape_vec(IxDyn(&tshape), t).unwrap();
            for reduction in [Reduction::Sum, Reduction::Mean] {
                let fast = nll_loss(x.view(), t.view(), None, -100, reduction, false).unwrap();
                let general = nll_loss(x.view(), t.view(), None, -100, reduction, true).unwrap();
                let bits = |o: &LossOutput<T>| {
                    o.loss.iter().map(|v| v.f64().to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(bits(&fast), bits(&general), "{shape:?} {reduction:?}");
            }
        }
        let mut rng = Rng::new(21);
        for shape in [&[1000, 10][..], &[3, 5, 301], &[517, 1], &[0, 4]] {
            check::<f32>(shape, &mut rng);
            check::<f64>(shape, &mut rng);
        }
    }

    #[test]
    fn float32_matches_float64() {
        let mut rng = Rng::new(5);
        let x = rng.randn(&[6, 4]);
        let t = t1(&[0, 1, 2, 3, 0, 1]);
        let a = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
        let xf = x.mapv(|v| v as f32);
        let b = nll_loss(xf.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
        assert!((a.loss[[]] - f64::from(b.loss[[]])).abs() < 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(9);
        let w = rng.uniform_tensor(&[4], 0.5, 2.0);
        for shape in [&[5, 4][..], &[2, 4, 3], &[4]] {
            let x = rng.randn(shape);
            let tshape: Vec<usize> = match shape.len() {
                1 => vec![],
                _ => [&shape[..1], &shape[2..]].concat(),
            };
            let n: usize = tshape.iter().product();
            let t = ArrayD::from_shape_vec(
                IxDyn(&tshape),
                (0..n)
                    .map(|i| if i == 1 { -100 } else { rng.below(4) as i64 })
                    .collect(),
            )
            .unwrap();
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for use_w in [false, true] {
                    let wv = use_w.then_some(&w);
                    let out = nll_loss(
                        x.view(),
                        t.view(),
                        wv.map(|w| w.view()),
                        -100,
                        reduction,
                        true,
                    )
                    .unwrap();
                    assert_grad(
                        &format!("{shape:?} {reduction:?} weight={use_w}"),
                        &x,
                        out.grad("input").unwrap(),
                        |x| {
                            scalar(
                                &nll_loss(
                                    x.view(),
                                    t.view(),
                                    wv.map(|w| w.view()),
                                    -100,
                                    reduction,
                                    false,
                                )
                                .unwrap(),
                            )
                        },
                    );
                }
            }
        }
    }
}
