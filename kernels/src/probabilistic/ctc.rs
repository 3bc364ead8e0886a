//! `ctc_loss` (`nn.CTCLoss`): the negative log-likelihood of a target sequence under every
//! alignment of it to the input frames, docs/losses.md.
//!
//! The forward–backward recursions run in log space exactly as ATen's CPU kernel does (same
//! log-sum-exp order, same handling of `−inf`), so results agree with PyTorch to the last bits
//! in most cases. lossd's decisions (docs/differences.md items 2 and 3):
//!
//! - the gradient is PyTorch's value `exp(log_probs) − γ`, which is the gradient with respect
//!   to the *logits* when `log_probs = log_softmax(logits)`, not the partial derivative with
//!   respect to `log_probs` (that is `−γ`);
//! - target labels equal to `blank` or outside `[0, C)` are rejected (PyTorch reads garbage).
//!
//! Memory: `O(T_b · (2 L_b + 1))` for the forward variables of one sequence at a time (only
//! two rows without gradient), reused across the batch; at most [`MAX_ALPHA_VALUES`].

use ndarray::ArrayViewD;

use crate::broadcast::unravel;
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{Reduction, Sum8, finish};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real};

/// The largest number of forward variables (`T_b · (2 L_b + 1)`, one sequence) the gradient
/// may keep; beyond it the request is refused rather than exhausting memory.
pub const MAX_ALPHA_VALUES: usize = 1 << 26;

/// State updates between two cancellation checkpoints inside one long sequence.
const CHECK_EVERY: usize = 1 << 16;

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

/// The options of [`ctc_loss`]; the defaults are `nn.CTCLoss()`'s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtcOptions {
    /// The blank label, in `[0, C)`.
    pub blank: i64,
    /// Replace infinite losses (infeasible alignments) and their gradients by 0.
    pub zero_infinity: bool,
    /// How the per-sequence losses are reduced.
    pub reduction: Reduction,
    /// Whether to return the gradient.
    pub grad: bool,
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
pub fn ctc_loss<T: Real>(
    log_probs: ArrayViewD<'_, T>,
    targets: ArrayViewD<'_, i64>,
    input_lengths: ArrayViewD<'_, i64>,
    target_lengths: ArrayViewD<'_, i64>,
    options: CtcOptions,
) -> Result<LossOutput<T>, LossError> {
    let (blank, zero_infinity) = (options.blank, options.zero_infinity);
    let (reduction, grad) = (options.reduction, options.grad);
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
    let value = match reduction {
        Reduction::None => 0.0,
        Reduction::Sum => crate::reduction::sum(&losses),
        Reduction::Mean => {
            let mut total = Sum8::new();
            for (l, &len) in losses.iter().zip(&tl) {
                total.add((*l / T::of(len.max(1) as f64)).f64());
            }
            total.total() / n as f64
        }
    };
    let out_shape: &[usize] = if batched { &[n] } else { &[] };
    let mut out = LossOutput::new(finish(reduction, out_shape, losses, value));
    if grad {
        out.push_grad("log_probs", &lp_shape, grads);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
