//! `ctc_loss` (`nn.CTCLoss`): the negative log-likelihood of a target sequence under every
//! alignment of it to the input frames, LOSSES.md §2.17.
//!
//! The forward–backward recursions run in log space exactly as ATen's CPU kernel does (same
//! log-sum-exp order, same handling of `−inf`), so results agree with PyTorch to the last bits
//! in most cases. lossd's decisions (LOSSES.md §4 items 2 and 3):
//!
//! - the gradient is PyTorch's value `exp(log_probs) − γ`, which is the gradient with respect
//!   to the *logits* when `log_probs = log_softmax(logits)`, not the partial derivative with
//!   respect to `log_probs` (that is `−γ`);
//! - target labels equal to `blank` or outside `[0, C)` are rejected (PyTorch reads garbage).
//!
//! Memory: `O(T_b · (2 L_b + 1))` for the forward variables of one sequence at a time (only
//! two rows without gradient), reused across the batch; at most [`MAX_ALPHA_VALUES`].

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{Reduction, Sum8};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real};

/// The largest number of forward variables (`T_b · (2 L_b + 1)`, one sequence) the gradient
/// may keep; beyond it the request is refused rather than exhausting memory.
pub const MAX_ALPHA_VALUES: usize = 1 << 26;

/// State updates between two cancellation checkpoints inside one long sequence.
const CHECK_EVERY: usize = 1 << 16;

/// The row-major multi-index of the `k`-th element of a tensor of `shape`.
fn unravel(mut k: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = k % d;
            k /= d;
        }
    }
    idx
}

/// `std::max` as ATen uses it: `b` if `a < b`, else `a` (so a NaN `a` wins).
#[inline(always)]
fn cmax<T: Real>(a: T, b: T) -> T {
    if a < b { b } else { a }
}

/// `x.exp()`, short-cutting its exact cases `exp(0) = 1` (the maximum of every log-sum-exp)
/// and `exp(−inf) = 0` (unreachable states): same bits, fewer calls.
#[inline(always)]
fn exp<T: Real>(x: T) -> T {
    if x == T::zero() {
        T::one()
    } else if x == T::neg_infinity() {
        T::zero()
    } else {
        x.exp()
    }
}

/// `x.ln()`, short-cutting its exact cases `ln(1) = 0` and `ln(0) = −inf`.
#[inline(always)]
fn ln<T: Real>(x: T) -> T {
    if x == T::one() {
        T::zero()
    } else if x == T::zero() {
        T::neg_infinity()
    } else {
        x.ln()
    }
}

/// One sequence's view of the problem.
struct Seq<'a, T> {
    /// All of `log_probs`, row-major `(T, N, C)`.
    lp: &'a [T],
    /// The distance between two time steps in `lp` (`N · C`).
    row: usize,
    /// The offset of this sequence's classes in a time step (`b · C`).
    base: usize,
    /// The number of classes.
    classes: usize,
    /// The input length `T_b`.
    frames: usize,
    /// The extended labels `l' = (blank, l_1, blank, …, l_L, blank)`.
    ext: &'a [usize],
    /// `jump[s]`: whether state `s` can be reached from `s − 2` (`l'_s ≠ l'_{s−2}`).
    jump: &'a [bool],
}

impl<T: Real> Seq<'_, T> {
    /// The log-probabilities of every class at time `t`.
    #[inline(always)]
    fn at(&self, t: usize) -> &[T] {
        let start = t * self.row + self.base;
        &self.lp[start..start + self.classes]
    }

    /// Runs the forward recursion into `alpha` and returns the negative log-likelihood.
    ///
    /// With `keep_all`, row `t` of α lives at `alpha[t·S'..]` (for the backward pass);
    /// otherwise two rows alternate.
    fn forward(&self, alpha: &mut [T], keep_all: bool, work: &mut usize) -> Result<T, LossError> {
        let neg_inf = T::neg_infinity();
        let sp = self.ext.len();
        let l = sp / 2;
        if self.frames == 0 {
            return Ok(if l == 0 { T::zero() } else { T::infinity() });
        }
        let first = self.at(0);
        let a0 = &mut alpha[..sp];
        a0.fill(neg_inf);
        a0[0] = first[self.ext[0]];
        if sp > 1 {
            a0[1] = first[self.ext[1]];
        }
        for t in 1..self.frames {
            let (prev, cur) = rows(alpha, sp, t, keep_all, true);
            let lp_t = self.at(t);
            for s in 0..sp {
                let la1 = prev[s];
                let mut lamax = la1;
                let la2 = if s > 0 { prev[s - 1] } else { neg_inf };
                if la2 > lamax {
                    lamax = la2;
                }
                let la3 = if self.jump[s] { prev[s - 2] } else { neg_inf };
                if la3 > lamax {
                    lamax = la3;
                }
                if lamax == neg_inf {
                    lamax = T::zero();
                }
                // Absent terms are exp(−inf) = 0 in ATen: leaving them out is exact.
                let mut sum = exp(la1 - lamax);
                if s > 0 {
                    sum += exp(la2 - lamax);
                }
                if self.jump[s] {
                    sum += exp(la3 - lamax);
                }
                cur[s] = ln(sum) + lamax + lp_t[self.ext[s]];
            }
            tick(work, sp)?;
        }
        let last_row = if keep_all {
            (self.frames - 1) * sp
        } else {
            ((self.frames - 1) % 2) * sp
        };
        let last = &alpha[last_row..last_row + sp];
        if l == 0 {
            return Ok(-last[0]);
        }
        let (l1, l2) = (last[2 * l], last[2 * l - 1]);
        let mut m = cmax(l1, l2);
        if m == neg_inf {
            m = T::zero();
        }
        Ok(-(ln(exp(l1 - m) + exp(l2 - m)) + m))
    }

    /// Runs the backward recursion and writes `(exp(lp) − γ) · upstream` into the rows
    /// `t < T_b` of this sequence in `grad` (laid out like `log_probs`).
    fn backward(
        &self,
        alpha: &[T],
        beta: &mut [T],
        nll: T,
        upstream: T,
        grad: &mut [T],
        work: &mut usize,
    ) -> Result<(), LossError> {
        let neg_inf = T::neg_infinity();
        let sp = self.ext.len();
        if self.frames == 0 {
            return Ok(());
        }
        let last = self.frames - 1;
        {
            let lp_t = self.at(last);
            let b_last = &mut beta[(last % 2) * sp..(last % 2) * sp + sp];
            b_last.fill(neg_inf);
            let g = self.grad_row(grad, last);
            g.fill(neg_inf);
            let a = &alpha[last * sp..last * sp + sp];
            b_last[sp - 1] = lp_t[self.ext[sp - 1]];
            g[self.ext[sp - 1]] = a[sp - 1] + b_last[sp - 1];
            if sp > 1 {
                // A blank and a label: different classes, so no log-add is needed.
                b_last[sp - 2] = lp_t[self.ext[sp - 2]];
                g[self.ext[sp - 2]] = a[sp - 2] + b_last[sp - 2];
            }
            finish_row(g, lp_t, nll, upstream);
        }
        for t in (0..last).rev() {
            let (next, cur) = rows(beta, sp, t, false, false);
            let lp_t = self.at(t);
            let a = &alpha[t * sp..t * sp + sp];
            let g = self.grad_row(grad, t);
            g.fill(neg_inf);
            for s in (0..sp).rev() {
                let lb1 = next[s];
                let mut lbmax = lb1;
                let has2 = s + 1 < sp;
                let has3 = s + 2 < sp && self.jump[s + 2];
                let lb2 = if has2 { next[s + 1] } else { neg_inf };
                if lb2 > lbmax {
                    lbmax = lb2;
                }
                let lb3 = if has3 { next[s + 2] } else { neg_inf };
                if lb3 > lbmax {
                    lbmax = lb3;
                }
                if lbmax == neg_inf {
                    lbmax = T::zero();
                }
                let mut sum = exp(lb1 - lbmax);
                if has2 {
                    sum += exp(lb2 - lbmax);
                }
                if has3 {
                    sum += exp(lb3 - lbmax);
                }
                let class = self.ext[s];
                cur[s] = ln(sum) + lbmax + lp_t[class];
                // γ's numerator, collected per class: "log+=" α_t(s) + β_t(s).
                let ab = a[s] + cur[s];
                let acc = &mut g[class];
                if *acc == neg_inf {
                    *acc = ab;
                } else {
                    let m = cmax(*acc, ab);
                    *acc = ln(exp(*acc - m) + exp(ab - m)) + m;
                }
            }
            finish_row(g, lp_t, nll, upstream);
            tick(work, sp)?;
        }
        Ok(())
    }

    /// This sequence's gradient row at time `t`.
    #[inline(always)]
    fn grad_row<'g>(&self, grad: &'g mut [T], t: usize) -> &'g mut [T] {
        let start = t * self.row + self.base;
        &mut grad[start..start + self.classes]
    }
}

/// The previous and the current row of a recursion over `buf` (rows of `sp` values) at time
/// `t`: stored rows `t ∓ 1` and `t` with `keep_all`, else the two alternating rows. `forward`
/// chooses whether the previous row is `t − 1` (α) or `t + 1` (β).
#[inline(always)]
fn rows<T>(buf: &mut [T], sp: usize, t: usize, keep_all: bool, forward: bool) -> (&[T], &mut [T]) {
    if keep_all {
        // Only α keeps every row, and α runs forward.
        let (head, tail) = buf.split_at_mut(t * sp);
        (&head[(t - 1) * sp..], &mut tail[..sp])
    } else {
        let (r0, rest) = buf.split_at_mut(sp);
        let r1 = &mut rest[..sp];
        let other = if forward { t - 1 } else { t + 1 };
        if other % 2 == 0 { (r0, r1) } else { (r1, r0) }
    }
}

/// Turns a row of collected `log Σ α·β` into PyTorch's gradient `(exp(lp) − γ) · upstream`.
#[inline(always)]
fn finish_row<T: Real>(g: &mut [T], lp_t: &[T], nll: T, upstream: T) {
    for (res, &lp) in g.iter_mut().zip(lp_t) {
        *res = (lp.exp() - (*res + nll - lp).exp()) * upstream;
    }
}

/// Counts `n` state updates and checks for cancellation every [`CHECK_EVERY`].
#[inline(always)]
fn tick(work: &mut usize, n: usize) -> Result<(), LossError> {
    *work += n;
    if *work >= CHECK_EVERY {
        *work = 0;
        checkpoint()?;
    }
    Ok(())
}

/// The lengths in `lengths` (any shape with `n` elements, as PyTorch accepts), in row-major
/// order.
fn lengths(
    arg: &'static str,
    lengths: &ArrayViewD<'_, i64>,
    n: usize,
) -> Result<Vec<i64>, LossError> {
    if lengths.len() != n {
        return Err(LossError::shape(
            arg,
            format!(
                "{arg} has shape {} ({} values) but the batch size is {n}: {arg} must have one value per sequence",
                fmt_shape(lengths.shape()),
                lengths.len()
            ),
        ));
    }
    Ok(lengths.iter().copied().collect())
}

/// A negative length, pointed at.
fn negative(arg: &'static str, shape: &[usize], k: usize, v: i64) -> LossError {
    let idx = unravel(k, shape);
    LossError::value(
        arg,
        format!("{arg}{idx:?} is {v}, but a length must not be negative"),
    )
    .at(&idx)
}

/// `F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, reduction,
/// zero_infinity)`.
///
/// Shapes: `log_probs` `(T, N, C)`, or `(T, C)` unbatched; `targets` padded `(N, S)` with
/// `S ≥ max target_lengths`, or 1-D with exactly `Σ target_lengths` labels (unbatched: `(S)`
/// with `S = target_length`, or `(1, S)`); `input_lengths` and `target_lengths` hold one
/// length per sequence (`(N)`; unbatched `()` or `(1)`; like PyTorch, any shape with `N`
/// elements). The unreduced loss is `(N)`, `()` unbatched; `Mean` averages
/// `loss_b / max(L_b, 1)`. An infeasible alignment gives `+inf` (0 with `zero_infinity`).
///
/// Errors: `TooLarge` on `"log_probs"` for a sequence whose forward variables would exceed
/// [`MAX_ALPHA_VALUES`]; `Shape` on `"log_probs"` (empty, rank not 2 or 3), `"targets"` (rank, batch size, too short,
/// wrong total), `"input_lengths"` / `"target_lengths"` (not one per sequence); `Value` on
/// `"target_lengths"` (negative), `"input_lengths"` (negative or above `T`), `"targets"` (a
/// label equal to `blank` or outside `[0, C)`, pointed at); `Option` on `"blank"` (outside
/// `[0, C)`).
///
/// Gradient: `"log_probs"` only, PyTorch's `exp(log_probs) − γ` per frame `t < T_b` (0 beyond;
/// all 0 for a zeroed infinite loss, NaN for an infinite loss without `zero_infinity`), times
/// the reduction's upstream gradient.
#[allow(clippy::too_many_arguments)]
pub fn ctc_loss<T: Real>(
    log_probs: ArrayViewD<'_, T>,
    targets: ArrayViewD<'_, i64>,
    input_lengths: ArrayViewD<'_, i64>,
    target_lengths: ArrayViewD<'_, i64>,
    blank: i64,
    zero_infinity: bool,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let lp_shape = log_probs.shape().to_vec();
    if log_probs.is_empty() {
        return Err(LossError::shape(
            "log_probs",
            format!(
                "log_probs has shape {}, but it must not be empty (T, N and C must all be positive)",
                fmt_shape(&lp_shape)
            ),
        ));
    }
    let (frames, n, classes, batched) = match lp_shape[..] {
        [t, n, c] => (t, n, c, true),
        [t, c] => (t, 1, c, false),
        _ => {
            return Err(LossError::shape(
                "log_probs",
                format!(
                    "log_probs has shape {} ({} dimensions), but it must be (T, N, C), or (T, C) unbatched",
                    fmt_shape(&lp_shape),
                    lp_shape.len()
                ),
            ));
        }
    };
    let tg_shape = targets.shape().to_vec();
    if !(1..=2).contains(&tg_shape.len()) {
        return Err(LossError::shape(
            "targets",
            format!(
                "targets has shape {} ({} dimensions), but it must be padded (N, S) or concatenated 1-D",
                fmt_shape(&tg_shape),
                tg_shape.len()
            ),
        ));
    }
    let blank_class = match usize::try_from(blank) {
        Ok(b) if b < classes => b,
        _ => {
            return Err(LossError::option(
                "blank",
                format!("blank is {blank}, but it must be a class of log_probs, in [0, {classes})"),
            ));
        }
    };
    let il = lengths("input_lengths", &input_lengths, n)?;
    let tl = lengths("target_lengths", &target_lengths, n)?;

    // Where each target starts in the flattened targets, as ATen validates it.
    let mut offsets = vec![0usize; n];
    if tg_shape.len() == 1 {
        let mut pos: u128 = 0;
        for (b, &l) in tl.iter().enumerate() {
            if l < 0 {
                return Err(negative("target_lengths", target_lengths.shape(), b, l));
            }
            offsets[b] = usize::try_from(pos).unwrap_or(usize::MAX);
            pos += l as u128;
        }
        if pos != tg_shape[0] as u128 {
            return Err(LossError::shape(
                "targets",
                format!(
                    "targets has shape {} but target_lengths sum to {pos}: concatenated targets must hold exactly one label per target position",
                    fmt_shape(&tg_shape)
                ),
            ));
        }
    } else {
        for (b, &l) in tl.iter().enumerate() {
            if l < 0 {
                return Err(negative("target_lengths", target_lengths.shape(), b, l));
            }
        }
        if tg_shape[0] != n {
            return Err(LossError::shape(
                "targets",
                format!(
                    "targets has shape {} but log_probs has shape {}: padded targets need one row per sequence ({n})",
                    fmt_shape(&tg_shape),
                    fmt_shape(&lp_shape)
                ),
            ));
        }
        let longest = tl.iter().copied().max().unwrap_or(0);
        if (tg_shape[1] as u128) < longest as u128 {
            return Err(LossError::shape(
                "targets",
                format!(
                    "targets has shape {} but the longest target length is {longest}: padded targets need at least that many columns",
                    fmt_shape(&tg_shape)
                ),
            ));
        }
        // Within the tensor: b < N rows of S labels.
        for (b, offset) in offsets.iter_mut().enumerate() {
            *offset = b * tg_shape[1];
        }
    }
    for (b, &t) in il.iter().enumerate() {
        if t < 0 {
            return Err(negative("input_lengths", input_lengths.shape(), b, t));
        }
        if t as u128 > frames as u128 {
            let idx = unravel(b, input_lengths.shape());
            return Err(LossError::value(
                "input_lengths",
                format!(
                    "input_lengths{idx:?} is {t}, but log_probs has shape {} with only {frames} time steps",
                    fmt_shape(&lp_shape)
                ),
            )
            .at(&idx));
        }
    }
    // Validated: every length fits the tensors, so these are in range.
    let il: Vec<usize> = il.iter().map(|&v| v as usize).collect();
    let tl: Vec<usize> = tl.iter().map(|&v| v as usize).collect();

    let tg = contiguous(&targets, &tg_shape);
    for b in 0..n {
        for k in offsets[b]..offsets[b] + tl[b] {
            let label = tg[k];
            if label < 0 || label as u128 >= classes as u128 || label == blank {
                let idx = unravel(k, &tg_shape);
                return Err(LossError::value(
                    "targets",
                    format!(
                        "targets{idx:?} is {label}, which is not a label: labels must be in [0, {classes}) and differ from blank ({blank})"
                    ),
                )
                .at(&idx));
            }
        }
    }

    let longest = tl.iter().copied().max().unwrap_or(0);
    let max_sp = 2 * longest + 1;
    let alpha_len = if grad {
        let mut most = 0usize;
        for b in 0..n {
            let need = il[b].saturating_mul(2 * tl[b] + 1);
            if need > MAX_ALPHA_VALUES {
                return Err(LossError::too_large(
                    "log_probs",
                    format!(
                        "sequence {b} has input length {} and target length {}: its gradient needs {} forward variables (T·(2L+1)), more than the limit of {MAX_ALPHA_VALUES}",
                        il[b],
                        tl[b],
                        il[b] as u128 * (2 * tl[b] as u128 + 1)
                    ),
                ));
            }
            most = most.max(need);
        }
        most
    } else {
        2 * max_sp
    };

    let lp = contiguous(&log_probs, &lp_shape);
    let mut alpha = vec![T::neg_infinity(); alpha_len];
    let mut beta = vec![T::neg_infinity(); if grad { 2 * max_sp } else { 0 }];
    let mut grads = vec![T::zero(); if grad { lp.len() } else { 0 }];
    let mut ext = Vec::with_capacity(max_sp);
    let mut jump = Vec::with_capacity(max_sp);
    let mut nll = Vec::with_capacity(n);
    let mut work = 0usize;
    let inv_n = T::one() / T::of(n as f64);
    for b in 0..n {
        checkpoint()?;
        ext.clear();
        jump.clear();
        ext.push(blank_class);
        for &label in &tg[offsets[b]..offsets[b] + tl[b]] {
            // Checked above: 0 <= label < C.
            ext.push(label as usize);
            ext.push(blank_class);
        }
        jump.extend((0..ext.len()).map(|s| s >= 2 && ext[s] != ext[s - 2]));
        let seq = Seq {
            lp: &lp,
            row: n * classes,
            base: b * classes,
            classes,
            frames: il[b],
            ext: &ext,
            jump: &jump,
        };
        let loss = seq.forward(&mut alpha, grad, &mut work)?;
        nll.push(loss);
        if grad && !(zero_infinity && loss == T::infinity()) {
            let upstream = match reduction {
                Reduction::Mean => inv_n / T::of(tl[b].max(1) as f64),
                Reduction::Sum | Reduction::None => T::one(),
            };
            seq.backward(&alpha, &mut beta, loss, upstream, &mut grads, &mut work)?;
        }
    }

    let losses: Vec<T> = nll
        .iter()
        .map(|&l| {
            if zero_infinity && l == T::infinity() {
                T::zero()
            } else {
                l
            }
        })
        .collect();
    let loss = match reduction {
        Reduction::None if batched => {
            ArrayD::from_shape_vec(IxDyn(&[n]), losses).expect("n losses")
        }
        Reduction::None => ndarray::arr0(losses[0]).into_dyn(),
        Reduction::Sum => ndarray::arr0(T::of(crate::reduction::sum(&losses))).into_dyn(),
        Reduction::Mean => {
            let mut total = Sum8::new();
            for (l, &len) in losses.iter().zip(&tl) {
                total.add((*l / T::of(len.max(1) as f64)).f64());
            }
            ndarray::arr0(T::of(total.total() / n as f64)).into_dyn()
        }
    };
    let mut out = LossOutput::new(loss);
    if grad {
        out.grads.push((
            "log_probs",
            ArrayD::from_shape_vec(IxDyn(&lp_shape), grads).expect("the shape of log_probs"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_close, assert_grad};
    use ndarray::{Array1, array};

    /// `log_softmax` over the last axis.
    fn log_softmax(z: &ArrayD<f64>) -> ArrayD<f64> {
        let mut out = z.clone();
        let c = *z.shape().last().unwrap();
        for row in out.as_slice_mut().unwrap().chunks_mut(c) {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
            row.iter_mut().for_each(|v| *v -= lse);
        }
        out
    }

    fn ints(v: &[i64]) -> ArrayD<i64> {
        Array1::from(v.to_vec()).into_dyn()
    }

    /// The loss by brute force: every path of length `frames` over the `C` classes that
    /// collapses (merge repeats, drop blanks) to `target`.
    fn brute_force(lp: &[Vec<f64>], frames: usize, target: &[usize], blank: usize) -> f64 {
        let c = lp[0].len();
        let mut total = 0.0;
        let paths = c.pow(frames as u32);
        for mut p in 0..paths {
            let mut path = Vec::new();
            for _ in 0..frames {
                path.push(p % c);
                p /= c;
            }
            let mut collapsed = Vec::new();
            let mut prev = None;
            for &k in &path {
                if Some(k) != prev && k != blank {
                    collapsed.push(k);
                }
                prev = Some(k);
            }
            if collapsed == target {
                total += path
                    .iter()
                    .enumerate()
                    .map(|(t, &k)| lp[t][k])
                    .sum::<f64>()
                    .exp();
            }
        }
        -total.ln()
    }

    #[test]
    fn the_loss_is_the_negative_log_of_the_summed_alignments() {
        let mut rng = Rng::new(1);
        let (t, c) = (5, 4);
        let lp = log_softmax(&rng.randn(&[t, c]));
        let rows: Vec<Vec<f64>> = lp
            .outer_iter()
            .map(|r| r.iter().copied().collect())
            .collect();
        for (target, frames, blank) in [
            (vec![1, 2], 5, 0),
            (vec![1, 1], 5, 0),
            (vec![2, 2, 2], 5, 0),
            (vec![3], 1, 0),
            (vec![], 4, 0),
            (vec![0, 1], 5, 3),
        ] {
            let tg: Vec<i64> = target.iter().map(|&v| v as i64).collect();
            let out = ctc_loss(
                lp.view(),
                ints(&tg).view(),
                ndarray::arr0(frames as i64).into_dyn().view(),
                ndarray::arr0(tg.len() as i64).into_dyn().view(),
                blank as i64,
                false,
                Reduction::None,
                false,
            )
            .unwrap();
            let want = brute_force(&rows, frames, &target, blank);
            assert_eq!(out.loss.shape(), &[] as &[usize]);
            assert_close(
                &format!("{target:?} in {frames} frames"),
                out.loss.as_slice().unwrap(),
                &[want],
                1e-12,
                0.0,
            );
        }
    }

    /// A torch 2.15 case: `lp = torch.log_softmax(z, 2)` with `z` below, targets
    /// `[[1, 2, 2], [3, 0, 0]]`, input lengths `[4, 3]`, target lengths `[3, 1]`, blank 0.
    fn torch_case() -> (ArrayD<f64>, ArrayD<i64>, ArrayD<i64>, ArrayD<i64>) {
        let z = array![
            [[0.1, 0.5, -0.2, 0.3], [1.0, -1.0, 0.0, 0.5]],
            [[0.4, -0.3, 0.8, 0.0], [0.2, 0.2, -0.5, 1.5]],
            [[-0.6, 0.1, 0.9, 0.2], [0.0, 0.3, 0.3, -0.1]],
            [[0.7, 0.0, 0.2, -0.4], [0.5, 0.5, 0.5, 0.5]],
        ]
        .into_dyn();
        (
            log_softmax(&z),
            array![[1, 2, 2], [3, 0, 0]].into_dyn(),
            ints(&[4, 3]),
            ints(&[3, 1]),
        )
    }

    /// `F.ctc_loss(lp, ..., reduction='none')` and `lp.grad` after `out.sum().backward()`.
    const TORCH_LOSS: [f64; 2] = [5.655567677004159, 1.5478919338022066];
    const TORCH_GRAD: [f64; 32] = [
        0.22451498539403927,
        -0.665062999798602,
        0.16632479199599406,
        0.27422322240856983,
        -0.14564842745347006,
        0.06414768542935739,
        0.17437148764032928,
        -0.09287074561621622,
        0.2733188803289699,
        0.13572613922008944,
        -0.5922561439935832,
        0.18321112444452448,
        0.04355178353939988,
        0.16218279957947626,
        0.08053759479891551,
        -0.28627217791779114,
        -0.8971297418982324,
        0.20715526077062038,
        0.4610325113975457,
        0.22894196973006675,
        -0.29313221261854927,
        0.2931572753168786,
        0.2931572753168786,
        -0.29318233801520743,
        0.4105112139855424,
        0.2038538359067909,
        -0.7510123625619152,
        0.13664731266958172,
        0.0,
        0.0,
        0.0,
        0.0,
    ];

    #[test]
    fn matches_pytorch_on_a_padded_batch() {
        let (lp, tg, il, tl) = torch_case();
        let out = ctc_loss(
            lp.view(),
            tg.view(),
            il.view(),
            tl.view(),
            0,
            false,
            Reduction::None,
            true,
        )
        .unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &TORCH_LOSS,
            1e-12,
            0.0,
        );
        let g = out.grad("log_probs").unwrap();
        assert_close("grad", g.as_slice().unwrap(), &TORCH_GRAD, 1e-10, 1e-12);
        // Frame 3 lies beyond input_lengths[1] = 3: its gradient is 0.
        assert!(g.slice(ndarray::s![3, 1, ..]).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn concatenated_targets_give_the_padded_result() {
        let (lp, _, il, tl) = torch_case();
        let flat = ints(&[1, 2, 2, 3]);
        let out = ctc_loss(
            lp.view(),
            flat.view(),
            il.view(),
            tl.view(),
            0,
            false,
            Reduction::None,
            false,
        )
        .unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &TORCH_LOSS,
            1e-12,
            0.0,
        );
    }

    #[test]
    fn mean_divides_each_loss_by_its_target_length() {
        let (lp, tg, il, tl) = torch_case();
        let run = |r| {
            ctc_loss(
                lp.view(),
                tg.view(),
                il.view(),
                tl.view(),
                0,
                false,
                r,
                true,
            )
            .unwrap()
        };
        let mean = run(Reduction::Mean);
        let want = (TORCH_LOSS[0] / 3.0 + TORCH_LOSS[1] / 1.0) / 2.0;
        assert_close("mean", mean.loss.as_slice().unwrap(), &[want], 1e-12, 0.0);
        let sum = run(Reduction::Sum);
        assert_close(
            "sum",
            sum.loss.as_slice().unwrap(),
            &[TORCH_LOSS[0] + TORCH_LOSS[1]],
            1e-12,
            0.0,
        );
        assert_eq!(
            sum.grad("log_probs"),
            run(Reduction::None).grad("log_probs")
        );
        // The mean's gradient for sequence b is the sum's divided by N · max(L_b, 1).
        let (gm, gs) = (
            mean.grad("log_probs").unwrap(),
            sum.grad("log_probs").unwrap(),
        );
        for ((t, b, k), &v) in gm
            .view()
            .into_dimensionality::<ndarray::Ix3>()
            .unwrap()
            .indexed_iter()
        {
            let scale = 2.0 * [3.0, 1.0][b];
            assert!((v - gs[[t, b, k]] / scale).abs() < 1e-15);
        }
    }

    #[test]
    fn an_empty_target_costs_the_blank_path() {
        let mut rng = Rng::new(2);
        let lp = log_softmax(&rng.randn(&[4, 1, 3]));
        let out = ctc_loss(
            lp.view(),
            ints(&[]).view(),
            ints(&[4]).view(),
            ints(&[0]).view(),
            0,
            false,
            Reduction::Mean,
            false,
        )
        .unwrap();
        let want: f64 = -(0..4).map(|t| lp[[t, 0, 0]]).sum::<f64>();
        // Mean clamps the target length to 1.
        assert_close("loss", out.loss.as_slice().unwrap(), &[want], 1e-14, 0.0);
    }

    #[test]
    fn infeasible_alignments_cost_infinity_with_a_nan_gradient() {
        // Checked on torch 2.15: T_b = 3 for target [1, 1, 1] (needs 5 frames) gives inf and
        // a NaN gradient for t < 3, 0 after; T_b = 0 with L > 0 gives inf and a 0 gradient;
        // T_b = 0 with L = 0 gives 0.
        let mut rng = Rng::new(3);
        let lp = log_softmax(&rng.randn(&[4, 3, 3]));
        let tg = array![[1, 2, 0], [1, 1, 1], [0, 0, 0]].into_dyn();
        let il = ints(&[0, 3, 0]);
        let tl = ints(&[2, 3, 0]);
        let out = ctc_loss(
            lp.view(),
            tg.view(),
            il.view(),
            tl.view(),
            0,
            false,
            Reduction::None,
            true,
        )
        .unwrap();
        assert_eq!(
            out.loss.as_slice().unwrap(),
            &[f64::INFINITY, f64::INFINITY, 0.0]
        );
        let g = out.grad("log_probs").unwrap();
        for t in 0..4 {
            for k in 0..3 {
                assert_eq!(g[[t, 0, k]], 0.0);
                assert_eq!(g[[t, 1, k]].is_nan(), t < 3);
                assert_eq!(g[[t, 2, k]], 0.0);
            }
        }
    }

    #[test]
    fn zero_infinity_zeroes_infinite_losses_and_their_gradients() {
        let mut rng = Rng::new(4);
        let lp = log_softmax(&rng.randn(&[3, 2, 3]));
        let tg = array![[1, 1], [1, 2]].into_dyn();
        let (il, tl) = (ints(&[3, 3]), ints(&[2, 2]));
        let run =
            |zi, r| ctc_loss(lp.view(), tg.view(), il.view(), tl.view(), 0, zi, r, true).unwrap();
        // [1, 1] needs 3 frames: feasible. Shorten to make it infeasible.
        let il2 = ints(&[2, 3]);
        let out = ctc_loss(
            lp.view(),
            tg.view(),
            il2.view(),
            tl.view(),
            0,
            true,
            Reduction::Sum,
            true,
        )
        .unwrap();
        let feasible = run(false, Reduction::None);
        assert_close(
            "sum",
            out.loss.as_slice().unwrap(),
            &[feasible.loss[[1]]],
            1e-15,
            0.0,
        );
        let g = out.grad("log_probs").unwrap();
        assert!(g.slice(ndarray::s![.., 0, ..]).iter().all(|&v| v == 0.0));
        assert_eq!(
            g.slice(ndarray::s![.., 1, ..]),
            feasible
                .grad("log_probs")
                .unwrap()
                .slice(ndarray::s![.., 1, ..])
        );
        let none = ctc_loss(
            lp.view(),
            tg.view(),
            il2.view(),
            tl.view(),
            0,
            true,
            Reduction::None,
            false,
        )
        .unwrap();
        assert_eq!(none.loss[[0]], 0.0);
        let _ = run(true, Reduction::Mean);
    }

    #[test]
    fn the_gradient_is_the_logits_gradient_through_log_softmax() {
        // PyTorch's value exp(lp) − γ is exactly d loss / d logits for lp = log_softmax(z).
        let mut rng = Rng::new(5);
        let z = rng.randn(&[5, 3, 4]);
        let tg = array![[1, 2, 2], [3, 0, 0], [2, 1, 0]].into_dyn();
        let il = ints(&[5, 4, 3]);
        let tl = ints(&[3, 1, 0]);
        for blank in [0i64, 3] {
            let tg = if blank == 0 {
                tg.clone()
            } else {
                array![[1, 2, 2], [0, 1, 1], [2, 1, 0]].into_dyn()
            };
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let run = |z: &ArrayD<f64>, grad| {
                    ctc_loss(
                        log_softmax(z).view(),
                        tg.view(),
                        il.view(),
                        tl.view(),
                        blank,
                        false,
                        reduction,
                        grad,
                    )
                    .unwrap()
                };
                let out = run(&z, true);
                assert_grad(
                    &format!("blank={blank} {reduction:?}"),
                    &z,
                    out.grad("log_probs").unwrap(),
                    |z| run(z, false).loss.sum(),
                );
            }
        }
    }

    #[test]
    fn float32_agrees_with_float64() {
        let (lp, tg, il, tl) = torch_case();
        let lp32 = lp.mapv(|v| v as f32);
        let out = ctc_loss(
            lp32.view(),
            tg.view(),
            il.view(),
            tl.view(),
            0,
            false,
            Reduction::None,
            true,
        )
        .unwrap();
        let got: Vec<f64> = out.loss.iter().map(|&v| f64::from(v)).collect();
        assert_close("loss", &got, &TORCH_LOSS, 1e-6, 1e-6);
        let g: Vec<f64> = out
            .grad("log_probs")
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_close("grad", &g, &TORCH_GRAD, 1e-5, 1e-6);
    }

    fn err(
        lp: &ArrayD<f64>,
        tg: &ArrayD<i64>,
        il: &ArrayD<i64>,
        tl: &ArrayD<i64>,
        blank: i64,
    ) -> LossError {
        ctc_loss(
            lp.view(),
            tg.view(),
            il.view(),
            tl.view(),
            blank,
            false,
            Reduction::Mean,
            true,
        )
        .unwrap_err()
    }

    #[test]
    fn malformed_shapes_are_rejected_like_pytorch() {
        let lp = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5]));
        let tg = array![[1, 2, 3], [1, 1, 0]].into_dyn();
        let (il, tl) = (ints(&[6, 6]), ints(&[3, 2]));
        let shape = |e: LossError| (e.kind, e.arg);
        let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 2, 5]));
        assert_eq!(
            shape(err(&empty, &tg, &il, &tl, 0)),
            (ErrorKind::Shape, "log_probs")
        );
        let rank4 = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5, 1]));
        assert_eq!(
            shape(err(&rank4, &tg, &il, &tl, 0)),
            (ErrorKind::Shape, "log_probs")
        );
        let tg3 = ArrayD::<i64>::ones(IxDyn(&[1, 2, 3]));
        assert_eq!(
            shape(err(&lp, &tg3, &il, &tl, 0)),
            (ErrorKind::Shape, "targets")
        );
        assert_eq!(
            shape(err(&lp, &tg, &ints(&[6, 6, 6]), &tl, 0)),
            (ErrorKind::Shape, "input_lengths")
        );
        assert_eq!(
            shape(err(&lp, &tg, &il, &ints(&[3]), 0)),
            (ErrorKind::Shape, "target_lengths")
        );
        // Padded: one row per sequence, at least max(target_lengths) columns.
        let one_row = array![[1, 2, 3]].into_dyn();
        let e = err(&lp, &one_row, &il, &tl, 0);
        assert_eq!(shape(e.clone()), (ErrorKind::Shape, "targets"));
        assert!(e.message.contains("[1, 3]"));
        let e = err(&lp, &tg, &il, &ints(&[4, 2]), 0);
        assert_eq!(shape(e.clone()), (ErrorKind::Shape, "targets"));
        assert!(e.message.contains("longest target length is 4"));
        // Concatenated: exactly Σ target_lengths labels.
        let e = err(&lp, &ints(&[1, 2, 3, 1]), &il, &tl, 0);
        assert_eq!(shape(e.clone()), (ErrorKind::Shape, "targets"));
        assert!(e.message.contains("sum to 5"));
        // Unbatched: a 1-D target must have exactly target_length labels.
        let lp2 = ArrayD::<f64>::zeros(IxDyn(&[6, 5]));
        let e = ctc_loss(
            lp2.view(),
            ints(&[1, 2, 3, 4]).view(),
            ndarray::arr0(6i64).into_dyn().view(),
            ndarray::arr0(3i64).into_dyn().view(),
            0,
            false,
            Reduction::None,
            false,
        )
        .unwrap_err();
        assert_eq!(shape(e), (ErrorKind::Shape, "targets"));
    }

    #[test]
    fn bad_lengths_and_blank_are_rejected_like_pytorch() {
        let lp = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5]));
        let tg = array![[1, 2, 3], [1, 1, 0]].into_dyn();
        let (il, tl) = (ints(&[6, 6]), ints(&[3, 2]));
        for blank in [5, -1] {
            let e = err(&lp, &tg, &il, &tl, blank);
            assert_eq!((e.kind, e.arg), (ErrorKind::Option, "blank"));
        }
        let e = err(&lp, &tg, &ints(&[7, 6]), &tl, 0);
        assert_eq!(
            (e.kind, e.arg, e.index.clone()),
            (ErrorKind::Value, "input_lengths", Some(vec![0]))
        );
        assert!(e.message.contains("7") && e.message.contains("6 time steps"));
        let e = err(&lp, &tg, &ints(&[6, -1]), &tl, 0);
        assert_eq!(
            (e.kind, e.arg, e.index),
            (ErrorKind::Value, "input_lengths", Some(vec![1]))
        );
        let e = err(&lp, &tg, &il, &ints(&[-1, 4]), 0);
        assert_eq!(
            (e.kind, e.arg, e.index),
            (ErrorKind::Value, "target_lengths", Some(vec![0]))
        );
        // PyTorch checks the targets before the input lengths.
        let e = err(&lp, &tg, &ints(&[7, 6]), &ints(&[4, 2]), 0);
        assert_eq!(e.arg, "targets");
    }

    #[test]
    fn labels_equal_to_blank_or_out_of_range_are_rejected() {
        let lp = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5]));
        let (il, tl) = (ints(&[6, 6]), ints(&[3, 2]));
        for (bad, at) in [(0i64, vec![1, 1]), (5, vec![1, 1]), (-2, vec![1, 1])] {
            let tg = array![[1, 2, 3], [1, bad, 0]].into_dyn();
            let e = err(&lp, &tg, &il, &tl, 0);
            assert_eq!((e.kind, e.arg), (ErrorKind::Value, "targets"), "{bad}");
            assert_eq!(e.index, Some(at));
            assert!(e.message.contains(&bad.to_string()));
        }
        // Padding past the target length is never read.
        let tg = array![[1, 2, 3], [1, 1, -7]].into_dyn();
        assert!(
            ctc_loss(
                lp.view(),
                tg.view(),
                il.view(),
                tl.view(),
                0,
                false,
                Reduction::Mean,
                false
            )
            .is_ok()
        );
        // Concatenated targets point at the flat position.
        let e = err(&lp, &ints(&[1, 2, 3, 4, 9]), &il, &tl, 0);
        assert_eq!(e.index, Some(vec![4]));
    }

    #[test]
    fn lengths_may_have_any_shape_with_one_value_per_sequence() {
        let (lp, tg, il, tl) = torch_case();
        let il2 = il.clone().into_shape_with_order(IxDyn(&[2, 1])).unwrap();
        let out = ctc_loss(
            lp.view(),
            tg.view(),
            il2.view(),
            tl.view(),
            0,
            false,
            Reduction::None,
            false,
        )
        .unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &TORCH_LOSS,
            1e-12,
            0.0,
        );
    }

    #[test]
    fn unbatched_inputs_give_a_0_d_loss_and_a_2_d_gradient() {
        let (lp, tg, _, _) = torch_case();
        let seq0 = lp.slice(ndarray::s![.., 0, ..]).to_owned().into_dyn();
        let targets = tg.slice(ndarray::s![0, ..]).to_owned().into_dyn();
        for (il, tl) in [
            (
                ndarray::arr0(4i64).into_dyn(),
                ndarray::arr0(3i64).into_dyn(),
            ),
            (ints(&[4]), ints(&[3])),
        ] {
            let out = ctc_loss(
                seq0.view(),
                targets.view(),
                il.view(),
                tl.view(),
                0,
                false,
                Reduction::None,
                true,
            )
            .unwrap();
            assert_eq!(out.loss.shape(), &[] as &[usize]);
            assert_close(
                "loss",
                out.loss.as_slice().unwrap(),
                &TORCH_LOSS[..1],
                1e-12,
                0.0,
            );
            assert_eq!(out.grad("log_probs").unwrap().shape(), &[4, 4]);
        }
        // A (1, S) padded target also works unbatched.
        let padded = targets.clone().insert_axis(ndarray::Axis(0));
        let out = ctc_loss(
            seq0.view(),
            padded.view(),
            ints(&[4]).view(),
            ints(&[3]).view(),
            0,
            false,
            Reduction::Mean,
            false,
        )
        .unwrap();
        assert_close(
            "mean",
            out.loss.as_slice().unwrap(),
            &[TORCH_LOSS[0] / 3.0],
            1e-12,
            0.0,
        );
    }

    #[test]
    fn huge_sequences_are_refused_before_allocating() {
        let lp = ArrayD::<f64>::zeros(IxDyn(&[1 << 14, 1, 2]));
        let tg = ArrayD::<i64>::ones(IxDyn(&[1, 1 << 13]));
        let e = ctc_loss(
            lp.view(),
            tg.view(),
            ints(&[1 << 14]).view(),
            ints(&[1 << 13]).view(),
            0,
            false,
            Reduction::Sum,
            true,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::TooLarge, "log_probs"));
    }

    #[test]
    fn a_raised_cancellation_flag_stops_the_computation() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let (lp, tg, il, tl) = torch_case();
        let flag = Arc::new(AtomicBool::new(true));
        let r = crate::cancel::with_flag(flag, || {
            ctc_loss(
                lp.view(),
                tg.view(),
                il.view(),
                tl.view(),
                0,
                false,
                Reduction::Sum,
                true,
            )
        });
        assert_eq!(r.unwrap_err().kind, ErrorKind::Cancelled);
    }
}
