//! `cross_entropy` (`nn.CrossEntropyLoss`): `log_softmax` over the class dimension followed by
//! the negative log-likelihood of class indices, or by the cross entropy with class
//! probabilities; LOSSES.md §2.6.
//!
//! lossd's decisions (LOSSES.md §4):
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
//! The row math ([`RowMath`]) is shared with `linear_cross_entropy`.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::nll::{ClassLayout, check_class_weight, check_index_target};
use crate::error::fmt_shape;
use crate::reduction::{Sum8, add_to_lanes, lanes_total};
use crate::regression::contiguous;
use crate::vmath::{ln_f64, ln_slice, vectorised};
use crate::{LossError, LossOutput, Real, Reduction};

/// The `target` of [`cross_entropy`]: class indices or class probabilities.
///
/// The caller must pick `Probs` exactly when the target has the input's shape (PyTorch's rule,
/// LOSSES.md §4 item 5), `Indices` otherwise; the kernel rejects the other combinations.
#[derive(Clone, Debug)]
pub enum CeTarget<'a, T> {
    /// Class indices: `()` or `(1,)` for a `(C)` input, `(N)` for `(N, C)`, `(N, d1..dK)` for
    /// `(N, C, d1..dK)`. Values in `[0, C)` or equal to `ignore_index`.
    Indices(ArrayViewD<'a, i64>),
    /// Class probabilities with exactly the input's shape (values are not checked).
    Probs(ArrayViewD<'a, T>),
}

/// Rejects a `label_smoothing` outside `[0, 1]` (or NaN), LOSSES.md §4 item 4.
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

/// The loss of one class-index row and its two terms, kept apart for the reductions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexLoss<T> {
    /// `ℓ = (1−ε)·nll + (ε/C)·smooth` (`nll` without smoothing): the `'none'` entry.
    pub loss: T,
    /// `nll = −w_t·logp_t` (0 for an ignored row).
    pub nll: f64,
    /// `smooth = −Σ_c w_c·logp_c` (0 for an ignored row, and without smoothing).
    pub smooth: f64,
}

impl<T: Real> IndexLoss<T> {
    /// An ignored row.
    fn ignored() -> Self {
        Self {
            loss: T::zero(),
            nll: 0.0,
            smooth: 0.0,
        }
    }
}

/// The running sums of the two terms of class-index rows ([`IndexLoss`]), reduced as PyTorch
/// reduces them ([`RowMath::reduce_index`]).
#[derive(Default)]
pub(crate) struct IndexTotals {
    nll: Sum8,
    smooth: Sum8,
}

impl IndexTotals {
    /// Adds one row's terms.
    #[inline]
    pub(crate) fn add<T>(&mut self, l: &IndexLoss<T>) {
        self.nll.add(l.nll);
        self.smooth.add(l.smooth);
    }
}

/// A class-index row begun by [`RowMath::index_row_start`]: what its loss needs besides
/// `ln Σexp`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexRow<T> {
    /// `Σ_c exp(x_c − m)` (1 for an ignored row: its log is never used).
    sum: f64,
    /// `x_t − m`.
    target_shifted: T,
    /// `w_t` (1 unweighted).
    wt: T,
    /// `Σ_c w_c·(x_c − m)` with smoothing, else 0.
    shifted: f64,
    /// `smooth` summed element by element, for a row where the one-pass form is not reliable
    /// ([`RowMath::index_row_start`]).
    smooth_exact: Option<f64>,
    ignored: bool,
}

impl<T: Real> IndexRow<T> {
    fn ignored() -> Self {
        Self {
            sum: 1.0,
            target_shifted: T::zero(),
            wt: T::one(),
            shifted: 0.0,
            smooth_exact: None,
            ignored: true,
        }
    }
}

/// Rows per [`IndexRowBatch`].
const LOG_BATCH: usize = 64;

/// Begun class-index rows whose logs are taken together: [`IndexRowBatch::flush`] runs
/// [`ln_f64`] over up to [`LOG_BATCH`] sums in one vectorisable loop (a scalar log per row
/// was an eighth of a forward pass over 100 classes), then finishes the rows in order.
pub(crate) struct IndexRowBatch<T> {
    rows: [IndexRow<T>; LOG_BATCH],
    /// The rows' `sum`s again, contiguous, so that the log loop loads vectors (from `rows`
    /// it would gather).
    sums: [f64; LOG_BATCH],
    len: usize,
}

impl<T: Real> IndexRowBatch<T> {
    pub(crate) fn new() -> Self {
        Self {
            rows: [IndexRow::ignored(); LOG_BATCH],
            sums: [1.0; LOG_BATCH],
            len: 0,
        }
    }

    /// Adds a row, finishing the batch through `done` (in row order) when it is full.
    #[inline(always)]
    pub(crate) fn push(
        &mut self,
        row: IndexRow<T>,
        math: &RowMath<'_, T>,
        done: &mut impl FnMut(IndexLoss<T>),
    ) {
        self.sums[self.len] = row.sum;
        self.rows[self.len] = row;
        self.len += 1;
        if self.len == LOG_BATCH {
            self.flush(math, done);
        }
    }

    /// Finishes the rows held, in order, through `done`. Not inlined: in the row loop it
    /// crowded the loop's registers (the whole `(1000, 100)` forward pass 7 % slower).
    #[inline(never)]
    pub(crate) fn flush(&mut self, math: &RowMath<'_, T>, done: &mut impl FnMut(IndexLoss<T>)) {
        let mut lns = [0.0f64; LOG_BATCH];
        // The same `ln_f64` as a single row's, vectorised: the same bits.
        ln_slice(&self.sums[..self.len], &mut lns);
        for (row, &ln_sum) in self.rows[..self.len].iter().zip(&lns) {
            done(math.index_row_finish(row, ln_sum));
        }
        self.len = 0;
    }
}

/// The per-call constants of the cross-entropy math of one row (the `C` logits of one
/// position), for both target modes.
///
/// Gradients are formed as PyTorch's autograd forms them: `g_c`, the gradient with respect to
/// `logp_c`, then `∂/∂x_c = g_c − softmax_c · Σ_k g_k`. This keeps PyTorch's NaN/±inf pattern
/// when the mean's denominator is 0 (`ĝ = 1/0`).
pub(crate) struct RowMath<'w, T> {
    classes: usize,
    weight: Option<&'w [T]>,
    ignore_index: i64,
    smoothing: bool,
    /// `1 − ε`.
    keep: T,
    /// `ε / C`.
    spread: T,
    /// `Σ_c w_c` (`C` when unweighted).
    w_all: f64,
    /// The upstream gradient of each row's loss: `1/Σw` (index mean), `1/positions` (probability
    /// mean) or 1.
    g_hat: T,
    /// Index mode with smoothing: `b = −ĝ·ε/C`, the gradient of `logp_c` is `b·w_c` (plus the
    /// target term), and `Σ_c b·w_c`.
    smooth_b: T,
    smooth_gsum: T,
    /// `Σw·log C` is finite: the one-pass smoothing term cannot overflow through `Σw·log Σexp`.
    one_pass_ok: bool,
    /// Smoothing with a non-finite class weight: an ignored row's gradient is NaN.
    ignored_nan: bool,
}

impl<'w, T: Real> RowMath<'w, T> {
    /// The constants for `classes` classes, class weights `weight` (length `classes`),
    /// `ignore_index` (index mode), label smoothing `eps` in `[0, 1]` and the upstream gradient
    /// `g_hat` of every row's loss.
    pub(crate) fn new(
        classes: usize,
        weight: Option<&'w [T]>,
        ignore_index: i64,
        eps: f64,
        g_hat: T,
    ) -> Self {
        let smoothing = eps > 0.0;
        let spread = if classes == 0 {
            T::zero()
        } else {
            T::of(eps / classes as f64)
        };
        let w_all = weight.map_or(classes as f64, |w| crate::reduction::sum(w));
        let smooth_b = -(spread * g_hat);
        let smooth_gsum = match weight {
            // Summed term by term, as autograd does: mixed-sign weights with ĝ = inf give NaN.
            Some(w) => {
                let mut s = Sum8::new();
                w.iter().for_each(|&wc| s.add((smooth_b * wc).f64()));
                T::of(s.total())
            }
            None => T::of(smooth_b.f64() * classes as f64),
        };
        Self {
            classes,
            weight,
            ignore_index,
            smoothing,
            keep: T::of(1.0 - eps),
            spread,
            w_all,
            g_hat,
            smooth_b,
            smooth_gsum,
            one_pass_ok: (w_all * (classes as f64).ln()).is_finite(),
            ignored_nan: smoothing && weight.is_some_and(|w| w.iter().any(|v| !v.is_finite())),
        }
    }

    /// The loss of one row with class-index target `t` (already checked: `ignore_index` or in
    /// `[0, C)`), with its two terms; writes `∂(ĝ·ℓ)/∂x` into `gx` when given (length `C`).
    ///
    /// `ℓ = (1−ε)·(−w_t·logp_t) + (ε/C)·(−Σ_c w_c·logp_c)`; 0 for an ignored row.
    #[inline]
    pub(crate) fn index_row(&self, x: &[T], t: i64, gx: Option<&mut [T]>) -> IndexLoss<T> {
        let row = self.index_row_start::<true>(x, t, gx);
        self.index_row_finish(&row, ln_f64(row.sum))
    }

    /// The part of [`Self::index_row`] before the log of the row's exp-sum: the maximum, the
    /// exp-sum, the loss's other terms, and the whole gradient (which needs the sum, not its
    /// log). [`Self::index_row_finish`] completes the loss from `ln Σexp`, so that a loop of
    /// rows can take the logs of many rows' sums in one vectorised pass
    /// ([`IndexRowBatch`]); a row gives the same bits either way.
    ///
    /// The vector loops are dispatched here (`DISPATCH`) or compiled into the caller, which
    /// has dispatched a whole loop of rows (one dispatch per call, not per row: rows are often
    /// short).
    #[inline(always)]
    fn index_row_start<const DISPATCH: bool>(
        &self,
        x: &[T],
        t: i64,
        gx: Option<&mut [T]>,
    ) -> IndexRow<T> {
        debug_assert_eq!(x.len(), self.classes);
        if t == self.ignore_index {
            if let Some(gx) = gx {
                if self.ignored_nan {
                    // PyTorch's smoothing term covers ignored rows too, masked to 0 after:
                    // its gradient 0·w_c is NaN at a non-finite weight, and then Σ_c g_c.
                    gx.iter_mut().for_each(|g| *g = T::nan());
                } else {
                    ignored_row_grad(x, gx);
                }
            }
            return IndexRow::ignored();
        }
        let t = t as usize;
        let mut gx = gx;
        let (m, sum) = if DISPATCH {
            max_and_sum_exp(x, gx.as_deref_mut())
        } else {
            max_and_sum_exp_in(x, gx.as_deref_mut())
        };
        let wt = self.weight.map_or(T::one(), |w| w[t]);
        // −Σ w_c·logp_c = −(Σ w_c·(x_c − m) − Σw·log Σexp): the first sum here.
        let shifted = if self.smoothing {
            match self.weight {
                Some(w) => {
                    let mut s = Sum8::new();
                    x.iter()
                        .zip(w)
                        .for_each(|(&xc, &wc)| s.add((wc * (xc - m)).f64()));
                    s.total()
                }
                None => {
                    let mut s = Sum8::new();
                    x.iter().for_each(|&xc| s.add((xc - m).f64()));
                    s.total()
                }
            }
        } else {
            0.0
        };
        // The one-pass form −(Σ w_c·(x_c − m) − Σw·log Σexp) meets 0·∞ (an infinite weight on
        // the row's maximum) or ∞ − ∞ where PyTorch's −Σ w_c·logp_c is ±∞ or finite: such rows
        // (a non-finite first sum, or weights whose sum times log C overflows) take the
        // elementwise sum.
        let smooth_exact = (self.smoothing && !(shifted.is_finite() && self.one_pass_ok))
            .then(|| self.smooth_elementwise(x, m, sum));
        if let Some(gx) = gx {
            // gx holds exp(x_c − m); softmax_c = gx_c / sum.
            let inv = T::of(1.0 / sum);
            if self.smoothing {
                let g_t = wt * -(self.keep * self.g_hat);
                let k = (g_t + self.smooth_gsum) * inv;
                let b = self.smooth_b;
                let e_t = gx[t];
                match self.weight {
                    Some(w) => gx
                        .iter_mut()
                        .zip(w)
                        .for_each(|(g, &wc)| *g = b * wc - *g * k),
                    None => gx.iter_mut().for_each(|g| *g = b - *g * k),
                }
                // The target's g_c = b·w_t + g_t whole before the softmax term, as autograd
                // accumulates it: with one class that is g − 1·g = 0 exactly, as in PyTorch
                // (adding g_t afterwards left a rounding residue).
                gx[t] = (b * wt + g_t) - e_t * k;
            } else {
                let g_t = wt * -self.g_hat;
                let k = g_t * inv;
                gx.iter_mut().for_each(|g| *g = -(*g * k));
                gx[t] += g_t;
            }
        }
        IndexRow {
            sum,
            target_shifted: x[t] - m,
            wt,
            shifted,
            smooth_exact,
            ignored: false,
        }
    }

    /// `−Σ_c w_c·logp_c` as PyTorch sums it, `logp_c = (x_c − m) − log Σexp` in `T`.
    #[cold]
    fn smooth_elementwise(&self, x: &[T], m: T, sum: f64) -> f64 {
        let lns = T::of(ln_f64(sum));
        let mut s = Sum8::new();
        for (c, &xc) in x.iter().enumerate() {
            let lp = (xc - m) - lns;
            s.add(self.weight.map_or(lp, |w| lp * w[c]).f64());
        }
        -s.total()
    }

    /// The loss of a row begun by [`Self::index_row_start`], from `ln_sum = ln Σexp(x_c − m)`
    /// ([`ln_f64`] of its `sum`).
    #[inline(always)]
    fn index_row_finish(&self, row: &IndexRow<T>, ln_sum: f64) -> IndexLoss<T> {
        if row.ignored {
            return IndexLoss::ignored();
        }
        let lns = T::of(ln_sum);
        let logp_t = row.target_shifted - lns;
        let nll = match self.weight {
            Some(_) => -(row.wt * logp_t),
            None => -logp_t,
        };
        if self.smoothing {
            let smooth = row
                .smooth_exact
                .unwrap_or_else(|| -(row.shifted - self.w_all * lns.f64()));
            IndexLoss {
                loss: T::of(self.keep.f64() * nll.f64() + self.spread.f64() * smooth),
                nll: nll.f64(),
                smooth,
            }
        } else {
            IndexLoss {
                loss: nll,
                nll: nll.f64(),
                smooth: 0.0,
            }
        }
    }

    /// The reduced class-index loss from the summed terms of its rows, with PyTorch's
    /// arithmetic: `'sum'` gives `(1−ε)·Σ nll + (ε/C)·Σ smooth` and `'mean'`
    /// `(1−ε)·(Σ nll / W) + (ε/C)·(Σ smooth / W)` for the summed target weights `W` (just
    /// `Σ nll` or `Σ nll / W` without smoothing).
    ///
    /// Dividing each term by `W` before adding them is what makes the mean NaN when every
    /// non-ignored target has weight 0 (`Σ nll = 0`, `0/0`), however large `Σ smooth / W` is.
    pub(crate) fn reduce_index(
        &self,
        totals: &IndexTotals,
        reduction: Reduction,
        total_weight: f64,
    ) -> f64 {
        let (nll, smooth) = (totals.nll.total(), totals.smooth.total());
        let (nll, smooth) = match reduction {
            Reduction::Mean => (nll / total_weight, smooth / total_weight),
            Reduction::Sum | Reduction::None => (nll, smooth),
        };
        if self.smoothing {
            self.keep.f64() * nll + self.spread.f64() * smooth
        } else {
            nll
        }
    }

    /// The loss of one row with class probabilities `p` (length `C`):
    /// `ℓ = −Σ_c w_c·p'_c·logp_c` with `p' = (1−ε)·p + ε/C`.
    ///
    /// When given, writes `∂(ĝ·ℓ)/∂x` into `gx`, `∂(ĝ·ℓ)/∂p` into `gp`, and adds
    /// `Σ p'_c·logp_c` (the weight gradient before its factor `−ĝ`) into `gw`.
    #[inline]
    pub(crate) fn prob_row(
        &self,
        x: &[T],
        p: &[T],
        gx: Option<&mut [T]>,
        gp: Option<&mut [T]>,
        gw: Option<&mut [f64]>,
    ) -> T {
        debug_assert_eq!((x.len(), p.len()), (self.classes, self.classes));
        if x.is_empty() {
            // The negated empty sum, as PyTorch gives it.
            return -T::zero();
        }
        let mut gx = gx;
        let m = row_max(x);
        let (sum, shifted, q) = self.prob_pass(x, p, m, gx.as_deref_mut());
        let lns = T::of(sum.ln());
        let mut loss = T::of(-(shifted - q * lns.f64()));
        if !loss.is_finite() {
            // The one-pass form can meet ∞ − ∞ or ∞·0 (an infinite probability) where PyTorch's
            // elementwise −Σ log_softmax_c·p'_c·w_c is ±∞, or overflow in Σp' where that sum is
            // finite (probabilities near the largest float): recompute that way, only then, with
            // the log of the sum rounded to T as PyTorch sums in T (a 0 log-probability where
            // the other terms vanish, so 0·∞ stays NaN as in torch).
            let lns = T::of(sum).ln();
            let mut total = Sum8::new();
            for c in 0..x.len() {
                let lp = (x[c] - m) - lns;
                let t = lp * self.smoothed(p[c]);
                total.add(self.weight.map_or(t, |w| t * w[c]).f64());
            }
            loss = T::of(-total.total());
        }
        if gx.is_none() && gp.is_none() && gw.is_none() {
            return loss;
        }
        let inv = T::of(1.0 / sum);
        let neg_g = -self.g_hat;
        // Σ_c g_c with g_c = −ĝ·w_c·p'_c. Where Σ w_c·p'_c overflows (probabilities near the
        // largest float) the g_c themselves are summed, as autograd does: finite after the
        // mean's 1/N.
        let k = if q.is_finite() {
            T::of(neg_g.f64() * q) * inv
        } else {
            let mut s = Sum8::new();
            for c in 0..x.len() {
                let wc = self.weight.map_or(T::one(), |w| w[c]);
                s.add((neg_g * wc * self.smoothed(p[c])).f64());
            }
            T::of(s.total()) * inv
        };
        let mut gp = gp;
        let mut gw = gw;
        for c in 0..x.len() {
            let pc = self.smoothed(p[c]);
            let wc = self.weight.map_or(T::one(), |w| w[c]);
            let lp = (x[c] - m) - lns;
            if let Some(gx) = gx.as_deref_mut() {
                gx[c] = neg_g * wc * pc - gx[c] * k;
            }
            if let Some(gp) = gp.as_deref_mut() {
                gp[c] = neg_g * wc * lp * self.keep;
            }
            if let Some(gw) = gw.as_deref_mut() {
                gw[c] += (lp * pc).f64();
            }
        }
        loss
    }

    /// `p' = (1−ε)·p + ε/C`, or `p` without smoothing (as PyTorch, which only mixes when ε > 0).
    #[inline(always)]
    fn smoothed(&self, p: T) -> T {
        if self.smoothing {
            p * self.keep + self.spread
        } else {
            p
        }
    }

    /// One sweep over a probability row: `Σ exp(x_c − m)` (stored into `e` when given),
    /// `Σ (x_c − m)·p'_c·w_c` and `Σ p'_c·w_c`.
    fn prob_pass(&self, x: &[T], p: &[T], m: T, e: Option<&mut [T]>) -> (f64, f64, f64) {
        let (mut sum, mut shifted, mut q) = (Sum8::new(), Sum8::new(), Sum8::new());
        let mut e = e;
        for c in 0..x.len() {
            let d = x[c] - m;
            let v = d.vexp();
            if let Some(e) = e.as_deref_mut() {
                e[c] = v;
            }
            sum.add(v.f64());
            let pc = self.smoothed(p[c]);
            match self.weight {
                Some(w) => {
                    shifted.add((d * pc * w[c]).f64());
                    q.add((pc * w[c]).f64());
                }
                None => {
                    shifted.add((d * pc).f64());
                    q.add(pc.f64());
                }
            }
        }
        (sum.total(), shifted.total(), q.total())
    }
}

/// The gradient of an ignored row: autograd gives `0 − softmax·0`, which is NaN where the
/// row's softmax is NaN (a NaN or `+inf` logit, or all logits `−inf`), else 0.
fn ignored_row_grad<T: Real>(x: &[T], gx: &mut [T]) {
    let m = row_max(x);
    let nan = !x.is_empty() && (!m.is_finite() || x.iter().any(|v| v.is_nan()));
    let fill = if nan { T::nan() } else { T::zero() };
    gx.iter_mut().for_each(|g| *g = fill);
}

/// The largest element (NaNs skipped: they make the row's sum NaN anyway); `−inf` when empty.
#[inline(always)]
pub(crate) fn row_max<T: Real>(x: &[T]) -> T {
    let mut lanes = [T::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for k in 0..8 {
            if ch[k] > lanes[k] {
                lanes[k] = ch[k];
            }
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        if v > lanes[k] {
            lanes[k] = v;
        }
    }
    lanes
        .iter()
        .fold(T::neg_infinity(), |a, &b| if b > a { b } else { a })
}

/// The row's maximum `m` ([`row_max`]) and `Σ exp(x_c − m)` accumulated in `f64` (element
/// `c` to lane `c mod 8`); each `exp(x_c − m)` is stored into `e` when given. Both in one call
/// compiled for the widest vector instructions the CPU has ([`crate::vmath::dispatch`]), with
/// the vectorisable [`crate::vmath`] `exp`.
#[inline]
pub(crate) fn max_and_sum_exp<T: Real>(x: &[T], e: Option<&mut [T]>) -> (T, f64) {
    vectorised!(max_and_sum_exp_in(x, e))
}

/// [`max_and_sum_exp`] compiled into its caller (which has dispatched).
#[inline(always)]
fn max_and_sum_exp_in<T: Real>(x: &[T], e: Option<&mut [T]>) -> (T, f64) {
    let m = row_max(x);
    (m, sum_exp_body(x, m, e))
}

/// Row chunk of [`max_and_sum_exp`] without an output (a multiple of 16; rows of up to 128
/// classes in one piece: one padded last group instead of one per 64, 5 % faster at 100).
const EXP_CHUNK: usize = 128;

#[inline(always)]
fn sum_exp_body<T: Real>(x: &[T], m: T, e: Option<&mut [T]>) -> f64 {
    let mut lanes = [0.0f64; 8];
    match e {
        Some(e) => {
            let e = &mut e[..x.len()];
            exp_into(x, m, e);
            add_to_lanes(&mut lanes, e);
        }
        None => {
            let mut buf = [T::zero(); EXP_CHUNK];
            for xs in x.chunks(EXP_CHUNK) {
                let b = &mut buf[..xs.len()];
                exp_into(xs, m, b);
                add_to_lanes(&mut lanes, b);
            }
        }
    }
    lanes_total(&lanes)
}

/// Width of the padded last group of [`exp_into`] (one 512-bit register of `f32`).
const EXP_TAIL: usize = 16;

/// `out[c] = exp(x[c] − m)`: whole groups of [`EXP_TAIL`] by the vectorised loop, the rest as
/// one group padded with `m` (selected lane by lane, masked loads on AVX-512), not by
/// the loop's scalar remainder, which costs about one vector `exp` per element. The same
/// function per element either way, so the same bits.
#[inline(always)]
fn exp_into<T: Real>(x: &[T], m: T, out: &mut [T]) {
    let n = x.len();
    let full = n - n % EXP_TAIL;
    let out = &mut out[..n];
    for (o, &v) in out[..full].iter_mut().zip(&x[..full]) {
        *o = (v - m).vexp();
    }
    if full < n {
        let tail = &x[full..];
        let mut pad = [m; EXP_TAIL];
        for (k, p) in pad.iter_mut().enumerate() {
            *p = (tail.get(k).copied().unwrap_or(m) - m).vexp();
        }
        // Indexed, element by element: `copy_from_slice` or a zip become a `memcpy` call,
        // 5–8 % slower over the whole pass.
        for (k, o) in out[full..].iter_mut().enumerate() {
            *o = pad[k];
        }
    }
}

/// Positions per cancellation checkpoint.
const CHECK_EVERY: usize = 256;

/// About how many elements one transposed tile of a K-dimensional input holds.
const TILE_ELEMS: usize = 16384;

/// How many positions one transposed tile of `classes` classes holds: about [`TILE_ELEMS`]
/// elements (8 to 256 positions), never more than the `spatial` positions there are.
pub(crate) fn tile_positions(classes: usize, spatial: usize) -> usize {
    (TILE_ELEMS / classes.max(1)).clamp(8, 256).min(spatial)
}

/// The rows of one position handed to the row math: logits, probabilities, and the gradient
/// rows to fill.
struct Rows<'r, T> {
    x: &'r [T],
    p: Option<&'r [T]>,
    gx: Option<&'r mut [T]>,
    gp: Option<&'r mut [T]>,
}

/// Calls `f(position, rows)` for every position of a `layout`-shaped input `x` (and
/// probabilities `p` of the same shape), in row-major order of positions, with contiguous rows.
///
/// Without spatial dimensions the rows are slices of the buffers themselves; otherwise tiles of
/// positions are transposed into scratch rows and the gradient rows transposed back.
#[inline(always)]
fn for_each_row<T: Real>(
    layout: &ClassLayout,
    x: &[T],
    p: Option<&[T]>,
    mut gx: Option<&mut [T]>,
    mut gp: Option<&mut [T]>,
    mut f: impl FnMut(usize, Rows<'_, T>),
) -> Result<(), LossError> {
    let (c, s) = (layout.classes, layout.spatial);
    if s <= 1 {
        for pos in 0..layout.positions() {
            if pos % CHECK_EVERY == 0 {
                crate::cancel::checkpoint()?;
            }
            let r = pos * c..(pos + 1) * c;
            f(
                pos,
                Rows {
                    x: &x[r.clone()],
                    p: p.map(|p| &p[r.clone()]),
                    gx: gx.as_deref_mut().map(|g| &mut g[r.clone()]),
                    gp: gp.as_deref_mut().map(|g| &mut g[r]),
                },
            );
        }
        return Ok(());
    }
    let b = tile_positions(c, s);
    let scratch = |on: bool| {
        if on {
            vec![T::zero(); b * c]
        } else {
            Vec::new()
        }
    };
    let mut xt = scratch(true);
    let mut pt = scratch(p.is_some());
    let mut gxt = scratch(gx.is_some());
    let mut gpt = scratch(gp.is_some());
    for n in 0..layout.batch {
        let base = n * c * s;
        for s0 in (0..s).step_by(b) {
            crate::cancel::checkpoint()?;
            let bb = b.min(s - s0);
            gather(x, base, c, s, s0, bb, &mut xt);
            if let Some(p) = p {
                gather(p, base, c, s, s0, bb, &mut pt);
            }
            for j in 0..bb {
                let r = j * c..(j + 1) * c;
                f(
                    n * s + s0 + j,
                    Rows {
                        x: &xt[r.clone()],
                        p: p.map(|_| &pt[r.clone()]),
                        gx: gx.as_ref().map(|_| &mut gxt[r.clone()]),
                        gp: gp.as_ref().map(|_| &mut gpt[r]),
                    },
                );
            }
            if let Some(g) = gx.as_deref_mut() {
                scatter(&gxt, g, base, c, s, s0, bb);
            }
            if let Some(g) = gp.as_deref_mut() {
                scatter(&gpt, g, base, c, s, s0, bb);
            }
        }
    }
    Ok(())
}

/// `dst[j·c + k] = src[base + k·s + s0 + j]` for `j < bb`, `k < c`: positions to rows.
pub(crate) fn gather<T: Copy>(
    src: &[T],
    base: usize,
    c: usize,
    s: usize,
    s0: usize,
    bb: usize,
    dst: &mut [T],
) {
    for k in 0..c {
        let col = &src[base + k * s + s0..][..bb];
        for (j, &v) in col.iter().enumerate() {
            dst[j * c + k] = v;
        }
    }
}

/// The inverse of [`gather`]: rows back to positions.
pub(crate) fn scatter<T: Copy>(
    src: &[T],
    dst: &mut [T],
    base: usize,
    c: usize,
    s: usize,
    s0: usize,
    bb: usize,
) {
    for k in 0..c {
        let col = &mut dst[base + k * s + s0..][..bb];
        for (j, v) in col.iter_mut().enumerate() {
            *v = src[j * c + k];
        }
    }
}

/// The loss: the per-position `losses` (shape `out_shape`) for `'none'`, else the already
/// reduced value.
pub(crate) fn finish_loss<T: Real>(
    reduction: Reduction,
    out_shape: &[usize],
    losses: Vec<T>,
    reduced: f64,
) -> ArrayD<T> {
    match reduction {
        Reduction::None => {
            ArrayD::from_shape_vec(IxDyn(out_shape), losses).expect("one per position")
        }
        Reduction::Sum | Reduction::Mean => ndarray::arr0(T::of(reduced)).into_dyn(),
    }
}

/// The reduced probability-mode loss from `Σ(−ℓ)` (negated here: PyTorch's sum of nothing is
/// −0.0) and the mean's `denominator` (the number of positions, NaN when there are no elements).
pub(crate) fn reduce_probs(reduction: Reduction, neg_total: f64, denominator: f64) -> f64 {
    match reduction {
        Reduction::Mean => -neg_total / denominator,
        Reduction::Sum | Reduction::None => -neg_total,
    }
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
    weight: Option<ArrayViewD<'_, T>>,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
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
            let loss = finish_loss(
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
            let loss = finish_loss(
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
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::{Array, Axis, array};

    fn idx(v: &[i64]) -> ArrayD<i64> {
        Array::from_vec(v.to_vec()).into_dyn()
    }

    fn ce(
        x: &ArrayD<f64>,
        t: &CeTarget<'_, f64>,
        w: Option<&ArrayD<f64>>,
        ignore_index: i64,
        eps: f64,
        reduction: Reduction,
        grad: bool,
    ) -> LossOutput<f64> {
        cross_entropy(
            x.view(),
            t.clone(),
            w.map(|w| w.view()),
            ignore_index,
            eps,
            reduction,
            grad,
        )
        .unwrap()
    }

    fn flat(a: &ArrayD<f64>) -> Vec<f64> {
        a.iter().copied().collect()
    }

    /// LOSSES.md §5's logits.
    fn example() -> ArrayD<f64> {
        array![[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]].into_dyn()
    }

    /// One worked example: weight, ignore_index, label_smoothing, loss, input gradient.
    type Example<'a> = (Option<&'a ArrayD<f64>>, i64, f64, f64, [f64; 9]);

    #[test]
    fn matches_the_worked_examples_of_losses_md() {
        let x = example();
        let t = idx(&[2, 0, 1]);
        let t = CeTarget::Indices(t.view());
        let w = array![1.0, 2.0, 0.5].into_dyn();
        let cases: [Example<'_>; 4] = [
            (
                None,
                -100,
                0.0,
                2.0429549922,
                [
                    0.0770746325,
                    0.2095105731,
                    -0.2865852056,
                    -0.3177957925,
                    0.0057159418,
                    0.3120798506,
                    0.1111111111,
                    -0.2222222222,
                    0.1111111111,
                ],
            ),
            (
                Some(&w),
                -100,
                0.0,
                1.7843693923,
                [
                    0.0330319854,
                    0.0897902456,
                    -0.122822231,
                    -0.2723963935,
                    0.0048993787,
                    0.2674970148,
                    0.1904761905,
                    -0.380952381,
                    0.1904761905,
                ],
            ),
            (
                None,
                0,
                0.0,
                1.5314905364,
                [
                    0.1156119488,
                    0.3142658596,
                    -0.4298778084,
                    0.0,
                    0.0,
                    0.0,
                    0.1666666667,
                    -0.3333333333,
                    0.1666666667,
                ],
            ),
            (
                Some(&w),
                -100,
                0.1,
                1.7816565237,
                [
                    0.0279124406,
                    0.0827146593,
                    -0.1106270999,
                    -0.2531268096,
                    -0.014066584,
                    0.2671933936,
                    0.173015873,
                    -0.3507936508,
                    0.1777777778,
                ],
            ),
        ];
        for (w, ii, eps, loss, g) in cases {
            let out = ce(&x, &t, w, ii, eps, Reduction::Mean, true);
            assert_close("loss", &[out.loss[[]]], &[loss], 1e-9, 0.0);
            assert_close("grad", &flat(out.grad("input").unwrap()), &g, 0.0, 1e-9);
            assert_eq!(out.grads.len(), 1);
        }
        // The probability-target row: p reconstructed from the printed gradient of `input`.
        let p = array![[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]].into_dyn();
        let out = ce(
            &x,
            &CeTarget::Probs(p.view()),
            Some(&w),
            -100,
            0.0,
            Reduction::Mean,
            true,
        );
        assert_close("loss", &[out.loss[[]]], &[1.6324999097], 1e-9, 0.0);
        let gx = [
            0.0142616975,
            0.0199861017,
            -0.0342477992,
            -0.3177957925,
            0.0057159418,
            0.3120798506,
            0.0444444444,
            0.0111111111,
            -0.0555555556,
        ];
        let gp = [
            0.488122928,
            0.3095791894,
            0.3273947974,
            1.0219613013,
            2.7105892692,
            0.0109806506,
            0.3662040962,
            0.7324081924,
            0.1831020481,
        ];
        assert_close("input", &flat(out.grad("input").unwrap()), &gx, 0.0, 1e-9);
        assert_close("target", &flat(out.grad("target").unwrap()), &gp, 0.0, 1e-9);
        assert_eq!(out.grad("weight").unwrap().shape(), &[3]);
    }

    #[test]
    fn probability_mode_with_weight_and_smoothing_matches_pytorch_on_a_k_dim_input() {
        // torch 2.15: x = randn(2,3,2,2) (seed 0), p = rand(2,3,2,2), w = [0.5,1.5,2], ε = 0.1,
        // sum; gradients of input, target and weight.
        let x = Array::from_shape_vec(
            (2, 3, 2, 2),
            vec![
                -2.310411800234176,
                -0.3732508612577643,
                -1.0608166785462863,
                0.9995093547811761,
                -0.8840250045832653,
                -1.2755469302148053,
                -0.623224579866079,
                -0.8664416019125772,
                0.23871805816817063,
                0.7335283685272841,
                -1.3218818291421377,
                1.3148113651971234,
                -1.4874956356507338,
                -0.7135753396468577,
                0.519998663178938,
                -0.9528856397032842,
                0.6748575435940039,
                1.0468653769814655,
                0.15429517864658948,
                -0.7498915228391941,
                -0.7233897004977882,
                0.08636989238234997,
                -1.746404903728242,
                1.041012457033509,
            ],
        )
        .unwrap()
        .into_dyn();
        let p = Array::from_shape_vec(
            (2, 3, 2, 2),
            vec![
                0.2721837106053647,
                0.04143948666981612,
                0.7486882683183439,
                0.3417558526082366,
                0.538225008554474,
                0.46636541886786753,
                0.8634864607582904,
                0.041059375136441645,
                0.9972603835252126,
                0.879664099238981,
                0.7629971687438133,
                0.2558997317667261,
                0.18960807750190223,
                0.9877646697951884,
                0.779601876763762,
                0.36187934651354103,
                0.5658438596011792,
                0.7411996909945431,
                0.004462945317032396,
                0.5836046330976992,
                0.5697132768667305,
                0.04828532922378648,
                0.16300454959952582,
                0.9986809627272996,
            ],
        )
        .unwrap()
        .into_dyn();
        let w = array![0.5, 1.5, 2.0].into_dyn();
        let out = ce(
            &x,
            &CeTarget::Probs(p.view()),
            Some(&w),
            -100,
            0.1,
            Reduction::Sum,
            true,
        );
        assert_close("loss", &[out.loss[[]]], &[16.683647908810734], 1e-12, 0.0);
        let gx = [
            0.015502749511637366,
            0.49851006822803723,
            0.5530701950960745,
            0.14757839589812347,
            -0.13269001519880025,
            -0.46305422846389593,
            0.18866430987737315,
            -0.05621453411269213,
            0.11718726568716299,
            -0.03545583976414169,
            -0.7417345049734474,
            -0.09136386178543135,
            0.0676263117548129,
            -0.2769479924876351,
            0.06847023417221718,
            0.12162875302368814,
            0.6603448510466213,
            0.020577632915708657,
            0.24640260261525185,
            -0.46894872302435875,
            -0.7279711628014341,
            0.25637035957192683,
            -0.314872836787469,
            0.34731997000067066,
        ];
        let gp = [
            1.2996559699404522,
            0.6698040251517906,
            0.5398762054372993,
            0.41688371306968836,
            1.9733457356926265,
            3.2275117685473775,
            1.0288792830936182,
            3.7696849307456324,
            0.6101901346375844,
            0.6870134869940756,
            2.6294220928217302,
            1.0999912335300484,
            1.1121159532398497,
            0.9907674673920034,
            0.2638517443201498,
            1.0163459752971504,
            0.41717106773915263,
            0.595707434727774,
            1.2852549370791198,
            2.77499586812493,
            3.073073129684096,
            2.5231684519154403,
            5.134933397713524,
            0.47636732706237345,
        ];
        assert_close(
            "input",
            &flat(out.grad("input").unwrap()),
            &gx,
            1e-12,
            1e-15,
        );
        assert_close(
            "target",
            &flat(out.grad("target").unwrap()),
            &gp,
            1e-12,
            1e-15,
        );
        let gw = [5.849711933800568, 4.314386062609918, 3.643606423997787];
        assert_close(
            "weight",
            &flat(out.grad("weight").unwrap()),
            &gw,
            1e-12,
            0.0,
        );
    }

    /// Moves the class dimension last and flattens to (positions, C).
    fn as_rows<T: Copy>(a: &ArrayD<T>) -> ndarray::Array2<T> {
        let mut v = a.view();
        for k in 1..a.ndim() - 1 {
            v.swap_axes(k, k + 1);
        }
        let c = a.shape()[1];
        let rows: Vec<T> = v.iter().copied().collect();
        ndarray::Array2::from_shape_vec((rows.len() / c.max(1), c), rows).unwrap()
    }

    #[test]
    fn k_dimensional_inputs_equal_the_same_rows_laid_out_flat() {
        // Spatial sizes 300 (several tiles and a remainder) and 3, in both modes.
        let mut rng = Rng::new(11);
        for (shape, eps) in [(&[2, 3, 300][..], 0.0), (&[2, 5, 3, 1][..], 0.2)] {
            let x = rng.randn(shape);
            let c = shape[1];
            let tshape: Vec<usize> = [&shape[..1], &shape[2..]].concat();
            let n: usize = tshape.iter().product();
            let t = ArrayD::from_shape_vec(
                IxDyn(&tshape),
                (0..n)
                    .map(|i| {
                        if i % 7 == 3 {
                            -100
                        } else {
                            rng.below(c) as i64
                        }
                    })
                    .collect(),
            )
            .unwrap();
            let w = rng.uniform_tensor(&[c], 0.5, 2.0);
            let xr = as_rows(&x).into_dyn();
            let tr = Array::from_iter(t.iter().copied()).into_dyn();
            let got = ce(
                &x,
                &CeTarget::Indices(t.view()),
                Some(&w),
                -100,
                eps,
                Reduction::None,
                true,
            );
            let want = ce(
                &xr,
                &CeTarget::Indices(tr.view()),
                Some(&w),
                -100,
                eps,
                Reduction::None,
                true,
            );
            assert_eq!(got.loss.shape(), tshape.as_slice());
            assert_eq!(flat(&got.loss), flat(&want.loss));
            let g = as_rows(got.grad("input").unwrap()).into_dyn();
            assert_eq!(&g, want.grad("input").unwrap());

            let p = rng.uniform_tensor(shape, 0.0, 1.0);
            let pr = as_rows(&p).into_dyn();
            let got = ce(
                &x,
                &CeTarget::Probs(p.view()),
                Some(&w),
                -1,
                eps,
                Reduction::Mean,
                true,
            );
            let want = ce(
                &xr,
                &CeTarget::Probs(pr.view()),
                Some(&w),
                -1,
                eps,
                Reduction::Mean,
                true,
            );
            assert_eq!(got.loss, want.loss);
            for name in ["input", "target"] {
                let g = as_rows(got.grad(name).unwrap()).into_dyn();
                assert_eq!(&g, want.grad(name).unwrap(), "{name}");
            }
            assert_eq!(got.grad("weight"), want.grad("weight"));
        }
    }

    #[test]
    fn huge_logits_stay_finite_in_both_precisions() {
        let x = array![[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]].into_dyn();
        let t = idx(&[1, 2]);
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            true,
        );
        // ln 3 to the ulp: the log of the exp-sum is vmath's `ln` (within 1 ulp of libm's).
        assert_close(
            "loss",
            &flat(&out.loss),
            &[2e4, 3f64.ln()],
            f64::EPSILON,
            0.0,
        );
        let g = out.grad("input").unwrap();
        assert_eq!(
            g.iter().take(3).copied().collect::<Vec<_>>(),
            vec![1.0, -1.0, 0.0]
        );
        let xf = x.mapv(|v| v as f32);
        let out = cross_entropy(
            xf.view(),
            CeTarget::Indices(t.view()),
            None,
            -100,
            0.1,
            Reduction::Sum,
            true,
        )
        .unwrap();
        assert!(out.loss[[]].is_finite());
        assert!(out.grad("input").unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn zero_total_weight_gives_pytorchs_nan_and_infinite_gradients() {
        // Values printed by torch 2.15.
        let x = array![[0.1, 0.5, -0.3], [1.0, 2.0, 0.0]].into_dyn();
        let t = idx(&[0, 1]);
        let t = CeTarget::Indices(t.view());
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let w = array![0.0, 0.0, 1.0].into_dyn();
        let out = ce(&x, &t, Some(&w), -100, 0.0, Reduction::Mean, true);
        assert!(out.loss[[]].is_nan());
        assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
        let w = array![1.0, -1.0, 1.0].into_dyn();
        let out = ce(&x, &t, Some(&w), -100, 0.0, Reduction::Mean, true);
        assert_eq!(out.loss[[]], inf);
        assert_close(
            "grad",
            &flat(out.grad("input").unwrap()),
            &[nan, inf, inf, -inf, nan, -inf],
            0.0,
            0.0,
        );
        let out = ce(&x, &t, Some(&w), -100, 0.1, Reduction::Mean, true);
        assert_eq!(out.loss[[]], inf);
        assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
        // ε = 1: (1−ε)·(Σ nll / W) = 0·inf is NaN, whatever the smoothing term.
        let out = ce(&x, &t, Some(&w), -100, 1.0, Reduction::Mean, true);
        assert!(out.loss[[]].is_nan());
        assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
        let w = array![0.0, 0.0, 1.0].into_dyn();
        let out = ce(&x, &t, Some(&w), -100, 1.0, Reduction::Mean, true);
        assert!(out.loss[[]].is_nan());
        assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
        // With W ≠ 0, ε = 1 is the smoothing term alone.
        let w = array![1.0, 2.0, 1.0].into_dyn();
        let out = ce(&x, &t, Some(&w), -100, 1.0, Reduction::Mean, true);
        assert_close("loss", &[out.loss[[]]], &[0.9817139902990554], 1e-15, 0.0);
        assert_close(
            "grad",
            &flat(out.grad("input").unwrap()),
            &[
                0.029440470322080647,
                -0.012543901747648523,
                -0.01689656857443209,
                -0.00234290175342327,
                0.07344042478880967,
                -0.07109752303538647,
            ],
            1e-13,
            1e-16,
        );
    }

    #[test]
    fn smoothed_mean_with_only_zero_weight_targets_is_nan_like_pytorchs() {
        // Two rows of zero logits (C = 2), weight [0, 1], both targets class 0, ε = 0.5: each
        // nll_n = −0·logp_0 = 0 and smooth_n = −(0 + 1·(−ln 2)) = ln 2, so ℓ_n = (ε/C)·ln 2.
        // PyTorch's mean is (1−ε)·(Σ nll / W) + (ε/C)·(Σ smooth / W) with W = 0: 0/0 = NaN,
        // where dividing Σ ℓ_n by W would give +inf. Values printed by torch 2.15.
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
        let w = array![0.0, 1.0].into_dyn();
        let t = idx(&[0, 0]);
        let t = CeTarget::Indices(t.view());
        let l = 2f64.ln() / 4.0;
        let none = ce(&x, &t, Some(&w), -100, 0.5, Reduction::None, true);
        assert_close("none", &flat(&none.loss), &[l, l], 1e-15, 0.0);
        assert_close("torch", &[l], &[0.17328679513998632], 1e-15, 0.0);
        // ∂ℓ_n/∂x_c = (ε/C)·(W_all·s_c − w_c) = 0.25·(0.5 − w_c): the target term is 0.
        let g = [0.125, -0.125, 0.125, -0.125];
        assert_eq!(flat(none.grad("input").unwrap()), g);
        let sum = ce(&x, &t, Some(&w), -100, 0.5, Reduction::Sum, true);
        assert_close("sum", &[sum.loss[[]]], &[2.0 * l], 1e-15, 0.0);
        assert_eq!(flat(sum.grad("input").unwrap()), g);
        let mean = ce(&x, &t, Some(&w), -100, 0.5, Reduction::Mean, true);
        assert!(mean.loss[[]].is_nan());
        assert!(mean.grad("input").unwrap().iter().all(|v| v.is_nan()));
        // An ignored row keeps its zero gradient; the others are NaN (torch 2.15).
        let t = idx(&[0, -100]);
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            Some(&w),
            -100,
            0.5,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        let g = flat(out.grad("input").unwrap());
        assert!(g[..2].iter().all(|v| v.is_nan()));
        assert_eq!(g[2..], [0.0, 0.0]);
        // The same on a K-dimensional input (1, 2, 3) with targets [[0, 0, −100]].
        let x = ArrayD::<f64>::zeros(IxDyn(&[1, 2, 3]));
        let t = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0i64, 0, -100]).unwrap();
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            Some(&w),
            -100,
            0.5,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        let g = flat(out.grad("input").unwrap());
        let nan_at = [true, true, false, true, true, false];
        for (v, nan) in g.iter().zip(nan_at) {
            assert!(if nan { v.is_nan() } else { *v == 0.0 }, "{g:?}");
        }
        // float32 too.
        let x = ArrayD::<f32>::zeros(IxDyn(&[2, 2]));
        let w = array![0.0f32, 1.0].into_dyn();
        let t = idx(&[0, 0]);
        let out = cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            Some(w.view()),
            -100,
            0.5,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert!(out.loss[[]].is_nan());
        assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
    }

    /// torch 2.15 (issue 28): label smoothing with an infinite class weight. PyTorch's
    /// `−Σ_c w_c·logp_c` is +inf (`inf · logp_1` with `logp_1 < 0`), where the one-pass form
    /// met `inf · (x_1 − max) = inf · 0`.
    #[test]
    fn smoothing_with_an_infinite_weight_follows_pytorch() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        let x = array![[0.0, 1.0], [2.0, 0.0]].into_dyn();
        let w = array![1.0, inf].into_dyn();
        let t = idx(&[0, 1]);
        let t = CeTarget::Indices(t.view());
        let out = ce(&x, &t, Some(&w), -100, 0.5, Reduction::None, true);
        assert_eq!(flat(&out.loss), [inf, inf]);
        // Gradients (torch: [[inf, nan], [inf, nan]]).
        assert_close(
            "dx",
            &flat(out.grad("input").unwrap()),
            &[inf, nan, inf, nan],
            0.0,
            0.0,
        );
        let t0 = idx(&[0, 0]);
        for r in [Reduction::Sum, Reduction::Mean] {
            let out = ce(
                &x,
                &CeTarget::Indices(t0.view()),
                Some(&w),
                -100,
                0.5,
                r,
                false,
            );
            assert_eq!(flat(&out.loss), [inf], "{r:?}");
        }
        // An ignored row: loss 0, gradient NaN (0·inf in the masked smoothing term).
        let out = ce(&x, &t, Some(&w), 1, 0.5, Reduction::None, true);
        assert_eq!(flat(&out.loss), [inf, 0.0]);
        assert_close(
            "dx",
            &flat(out.grad("input").unwrap()),
            &[inf, nan, nan, nan],
            0.0,
            0.0,
        );
        // Finite weights whose sum overflows: the elementwise sum is finite where it is.
        let w = array![1e308, 1e308].into_dyn();
        let out = ce(&x, &t, Some(&w), -100, 0.5, Reduction::None, false);
        assert_close(
            "loss",
            &flat(&out.loss),
            &[1.0632616875182229e308, inf],
            1e-15,
            0.0,
        );
        // In float32 too.
        let x32 = x.mapv(|v| v as f32);
        let w32 = array![1.0f32, f32::INFINITY].into_dyn();
        let t1 = idx(&[0]);
        let out = cross_entropy(
            x32.slice(ndarray::s![0..1, ..]).into_dyn(),
            CeTarget::Indices(t1.view()),
            Some(w32.view()),
            -100,
            0.5,
            Reduction::None,
            false,
        )
        .unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[f32::INFINITY]);
    }

    /// torch 2.15: probabilities near the largest float, mean over two rows. Σp overflows,
    /// the gradients Σ(−p_c/2) do not.
    #[test]
    fn near_max_probabilities_give_autograds_finite_gradient() {
        let x = array![[0.0, 1.0], [0.5, -0.5]].into_dyn();
        let p = array![[1e308, 8.98846567431158e307], [0.25, 0.75]].into_dyn();
        let out = ce(
            &x,
            &CeTarget::Probs(p.view()),
            None,
            -100,
            0.0,
            Reduction::Mean,
            true,
        );
        assert_close(
            "loss",
            &flat(&out.loss),
            &[7.974179400258347e307],
            1e-12,
            0.0,
        );
        let want = [
            -2.4466075259576407e307,
            2.4466075259576407e307,
            0.24052928931500245,
            -0.24052928931500245,
        ];
        assert_close("dx", &flat(out.grad("input").unwrap()), &want, 1e-12, 0.0);
    }

    #[test]
    fn smoothed_reductions_reduce_the_two_terms_apart() {
        // Σ ℓ_n (or Σ ℓ_n / W) and PyTorch's term-by-term (1−ε)·Σ nll + (ε/C)·Σ smooth agree
        // to rounding wherever W ≠ 0.
        let mut rng = Rng::new(23);
        let x = rng.randn(&[6, 5]);
        let t = idx(&[0, 4, -100, 2, 2, 1]);
        let w = rng.uniform_tensor(&[5], 0.2, 2.0);
        let t = CeTarget::Indices(t.view());
        let none = ce(&x, &t, Some(&w), -100, 0.3, Reduction::None, false);
        let total: f64 = none.loss.iter().sum();
        let wsum: f64 = [0usize, 4, 2, 2, 1].iter().map(|&c| w[[c]]).sum();
        let sum = ce(&x, &t, Some(&w), -100, 0.3, Reduction::Sum, false);
        assert_close("sum", &[sum.loss[[]]], &[total], 1e-14, 0.0);
        let mean = ce(&x, &t, Some(&w), -100, 0.3, Reduction::Mean, false);
        assert_close("mean", &[mean.loss[[]]], &[total / wsum], 1e-14, 0.0);
    }

    #[test]
    fn all_ignored_mean_is_nan_and_ignored_rows_get_no_gradient() {
        let x = example();
        let t = idx(&[-100, -100, -100]);
        for eps in [0.0, 0.3] {
            let out = ce(
                &x,
                &CeTarget::Indices(t.view()),
                None,
                -100,
                eps,
                Reduction::Mean,
                true,
            );
            assert!(out.loss[[]].is_nan());
            assert!(out.grad("input").unwrap().iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn an_ignored_row_with_a_nan_softmax_has_a_nan_gradient_as_in_pytorch() {
        // torch 2.15: autograd's 0 − softmax·0 is NaN for rows [NaN,0,0], [inf,0,0],
        // [−inf,−inf,−inf], and 0 for [−inf,0,1].
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        for (row, is_nan) in [
            ([nan, 0.0, 0.0], true),
            ([inf, 0.0, 0.0], true),
            ([-inf, -inf, -inf], true),
            ([-inf, 0.0, 1.0], false),
        ] {
            let x = array![row, [0.5, 1.0, -1.0]].into_dyn();
            let t = idx(&[-100, 1]);
            for eps in [0.0, 0.2] {
                let out = ce(
                    &x,
                    &CeTarget::Indices(t.view()),
                    None,
                    -100,
                    eps,
                    Reduction::Mean,
                    true,
                );
                assert!(out.loss[[]].is_finite());
                let g = out.grad("input").unwrap();
                assert!(
                    g.index_axis(Axis(0), 0)
                        .iter()
                        .all(|v| v.is_nan() == is_nan && (is_nan || *v == 0.0))
                );
                assert!(g.index_axis(Axis(0), 1).iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn infinite_logits_follow_pytorch() {
        // torch 2.15: a −inf logit at the target gives inf with gradient [−1, .5, .5]; elsewhere
        // it is harmless; a NaN or +inf logit makes the row NaN.
        let inf = f64::INFINITY;
        let x = array![[-inf, 0.0, 0.0]].into_dyn();
        let t = idx(&[0]);
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            true,
        );
        assert_eq!(out.loss[[0]], inf);
        assert_eq!(flat(out.grad("input").unwrap()), vec![-1.0, 0.5, 0.5]);
        let t = idx(&[1]);
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            true,
        );
        assert_close("loss", &[out.loss[[0]]], &[2f64.ln()], 1e-15, 0.0);
        assert_eq!(flat(out.grad("input").unwrap()), vec![0.0, -0.5, 0.5]);
        let x = array![[inf, 0.0, 0.0], [f64::NAN, 0.0, 0.0]].into_dyn();
        let t = idx(&[1, 2]);
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            true,
        );
        assert!(out.loss.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn label_smoothing_equals_a_smoothed_one_hot_probability_target() {
        let mut rng = Rng::new(4);
        let x = rng.randn(&[5, 4]);
        let t = idx(&[0, 3, 1, 1, 2]);
        let eps = 0.25;
        let mut p = ArrayD::from_elem(IxDyn(&[5, 4]), eps / 4.0);
        for (n, &c) in t.iter().enumerate() {
            p[[n, c as usize]] += 1.0 - eps;
        }
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let a = ce(
                &x,
                &CeTarget::Indices(t.view()),
                None,
                -100,
                eps,
                reduction,
                true,
            );
            let b = ce(
                &x,
                &CeTarget::Probs(p.view()),
                None,
                -100,
                0.0,
                reduction,
                true,
            );
            assert_close("loss", &flat(&a.loss), &flat(&b.loss), 1e-13, 1e-15);
            let (ga, gb) = (a.grad("input").unwrap(), b.grad("input").unwrap());
            assert_close("grad", &flat(ga), &flat(gb), 1e-12, 1e-15);
        }
    }

    #[test]
    fn a_one_hot_probability_target_differs_from_indices_only_in_the_weighted_mean() {
        let x = example();
        let t = idx(&[2, 0, 1]);
        let p = array![[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]].into_dyn();
        let w = array![1.0, 2.0, 0.5].into_dyn();
        let a = ce(
            &x,
            &CeTarget::Indices(t.view()),
            Some(&w),
            -100,
            0.0,
            Reduction::Sum,
            false,
        );
        let b = ce(
            &x,
            &CeTarget::Probs(p.view()),
            Some(&w),
            -100,
            0.0,
            Reduction::Sum,
            false,
        );
        assert_close("sum", &[a.loss[[]]], &[b.loss[[]]], 1e-14, 0.0);
        let a = ce(
            &x,
            &CeTarget::Indices(t.view()),
            Some(&w),
            -100,
            0.0,
            Reduction::Mean,
            false,
        );
        let b = ce(
            &x,
            &CeTarget::Probs(p.view()),
            Some(&w),
            -100,
            0.0,
            Reduction::Mean,
            false,
        );
        // Index mode divides by Σw_t = 0.5 + 1 + 2, probability mode by 3 positions.
        assert_close("mean", &[a.loss[[]] * 3.5], &[b.loss[[]] * 3.0], 1e-14, 0.0);
    }

    #[test]
    fn unbatched_inputs_take_a_0d_index_or_a_probability_vector() {
        let x = array![0.5, -1.0, 2.0].into_dyn();
        let rows = x.clone().insert_axis(Axis(0));
        let batched = ce(
            &rows,
            &CeTarget::Indices(idx(&[2]).view()),
            None,
            -100,
            0.0,
            Reduction::Mean,
            true,
        );
        for t in [ndarray::arr0(2i64).into_dyn(), idx(&[2])] {
            let out = ce(
                &x,
                &CeTarget::Indices(t.view()),
                None,
                -100,
                0.0,
                Reduction::None,
                true,
            );
            assert_eq!(out.loss.shape(), &[] as &[usize]);
            assert_eq!(out.loss[[]], batched.loss[[]]);
            assert_eq!(
                flat(out.grad("input").unwrap()),
                flat(batched.grad("input").unwrap())
            );
        }
        let p = array![0.2, 0.2, 0.6].into_dyn();
        let out = ce(
            &x,
            &CeTarget::Probs(p.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            true,
        );
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.grad("target").unwrap().shape(), &[3]);
    }

    #[test]
    fn empty_inputs_follow_pytorch() {
        // torch 2.15: probability mode gives NaN (mean) and −0.0 (sum and each 'none' entry)
        // for (2, 0) and (0, 3) inputs; index mode with everything ignored gives NaN.
        for shape in [&[2, 0][..], &[0, 3]] {
            let x = ArrayD::<f64>::zeros(IxDyn(shape));
            let p = CeTarget::Probs(x.view());
            let mean = ce(&x, &p, None, -100, 0.0, Reduction::Mean, true);
            assert!(mean.loss[[]].is_nan());
            assert_eq!(mean.grad("input").unwrap().shape(), shape);
            let sum = ce(&x, &p, None, -100, 0.0, Reduction::Sum, false);
            assert!(sum.loss[[]] == 0.0 && sum.loss[[]].is_sign_negative());
            let none = ce(&x, &p, None, -100, 0.0, Reduction::None, false);
            assert_eq!(none.loss.shape(), &shape[..1]);
            assert!(none.loss.iter().all(|v| *v == 0.0 && v.is_sign_negative()));
        }
        // torch 2.15: the weight gradient of an empty batch is 0.
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let w = array![1.0, 2.0, 3.0].into_dyn();
        let out = ce(
            &x,
            &CeTarget::Probs(x.view()),
            Some(&w),
            -100,
            0.0,
            Reduction::Mean,
            true,
        );
        assert_eq!(flat(out.grad("weight").unwrap()), vec![0.0; 3]);
        let x = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        let t = idx(&[-100, -100]);
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3, 4]));
        let t = ArrayD::<i64>::zeros(IxDyn(&[0, 4]));
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.1,
            Reduction::Sum,
            true,
        );
        assert_eq!(out.loss[[]], 0.0);
    }

    #[test]
    fn bad_options_are_rejected() {
        let x = example();
        let t = idx(&[2, 0, 1]);
        for eps in [-0.1, 1.5, f64::NAN] {
            let e = cross_entropy(
                x.view(),
                CeTarget::Indices(t.view()),
                None,
                -100,
                eps,
                Reduction::Mean,
                false,
            )
            .unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Option, "label_smoothing"));
        }
        let p = x.mapv(|v| v.abs());
        let e = cross_entropy(
            x.view(),
            CeTarget::Probs(p.view()),
            None,
            0,
            0.0,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Option, "ignore_index"));
        // A negative ignore_index has no effect on probabilities.
        let a = ce(
            &x,
            &CeTarget::Probs(p.view()),
            None,
            -5,
            0.0,
            Reduction::Mean,
            false,
        );
        let b = ce(
            &x,
            &CeTarget::Probs(p.view()),
            None,
            -100,
            0.0,
            Reduction::Mean,
            false,
        );
        assert_eq!(a.loss, b.loss);
    }

    #[test]
    fn targets_that_do_not_fit_are_rejected() {
        let x = example();
        let shape_err = |r: Result<LossOutput<f64>, LossError>, arg: &str| {
            let e = r.unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
        };
        // Indices with the input's shape are probabilities by PyTorch's rule.
        let t = ArrayD::<i64>::zeros(IxDyn(&[3, 3]));
        shape_err(
            cross_entropy(
                x.view(),
                CeTarget::Indices(t.view()),
                None,
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "target",
        );
        let p = ArrayD::<f64>::zeros(IxDyn(&[3, 2]));
        shape_err(
            cross_entropy(
                x.view(),
                CeTarget::Probs(p.view()),
                None,
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "target",
        );
        let t = idx(&[0, 1]);
        shape_err(
            cross_entropy(
                x.view(),
                CeTarget::Indices(t.view()),
                None,
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "target",
        );
        let t = ArrayD::<i64>::zeros(IxDyn(&[1, 2]));
        shape_err(
            cross_entropy(
                x.view(),
                CeTarget::Indices(t.view()),
                None,
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "target",
        );
        let w = array![1.0, 2.0].into_dyn();
        let t = idx(&[0, 1, 2]);
        shape_err(
            cross_entropy(
                x.view(),
                CeTarget::Indices(t.view()),
                Some(w.view()),
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "weight",
        );
        let p = x.clone();
        shape_err(
            cross_entropy(
                x.view(),
                CeTarget::Probs(p.view()),
                Some(w.view()),
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "weight",
        );
        let x0 = ndarray::arr0(1.0).into_dyn();
        shape_err(
            cross_entropy(
                x0.view(),
                CeTarget::Probs(x0.view()),
                None,
                -100,
                0.0,
                Reduction::Mean,
                false,
            ),
            "input",
        );
        let t = idx(&[0, 3, 1]);
        let e = cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            false,
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.arg, e.index),
            (ErrorKind::Value, "target", Some(vec![1]))
        );
    }

    /// The bits of each element (through `f64`, exact for both precisions).
    fn loss_bits<T: Real>(v: &ArrayD<T>) -> Vec<u64> {
        v.iter().map(|x| x.f64().to_bits()).collect()
    }

    /// The batched logs ([`IndexRowBatch`], 64 rows at a time, vectorised) give the bits of a
    /// single row's [`RowMath::index_row`] (scalar `ln_f64`), and the gradient pass the bits of
    /// the forward pass: over batch boundaries, class counts around the vector widths, ignored
    /// rows, weights and smoothing, in both precisions.
    fn batched_rows_equal_single_rows<T: Real>() {
        let mut rng = Rng::new(20_261_204);
        for classes in [1usize, 5, 16, 37, 100] {
            let n = 150;
            let x = rng.randn(&[n, classes]).mapv(|v| T::of(v * 5.0));
            let t: Vec<i64> = (0..n)
                .map(|_| {
                    if rng.uniform() < 0.1 {
                        -100
                    } else {
                        (rng.uniform() * classes as f64) as i64 % classes as i64
                    }
                })
                .collect();
            let t = ArrayD::from_shape_vec(IxDyn(&[n]), t).unwrap();
            let w = rng.randn(&[classes]).mapv(|v| T::of(v.abs() + 0.1));
            for eps in [0.0, 0.2] {
                for weight in [None, Some(w.view())] {
                    let run = |reduction, grad| {
                        cross_entropy(
                            x.view(),
                            CeTarget::Indices(t.view()),
                            weight.clone(),
                            -100,
                            eps,
                            reduction,
                            grad,
                        )
                        .unwrap()
                    };
                    let wv: Option<Vec<T>> = weight.as_ref().map(|w| w.iter().copied().collect());
                    let math = RowMath::new(classes, wv.as_deref(), -100, eps, T::one());
                    let out = run(Reduction::None, false);
                    let xs = x.as_slice().unwrap();
                    for (i, &l) in out.loss.iter().enumerate() {
                        let row = &xs[i * classes..(i + 1) * classes];
                        let single = math.index_row(row, t[[i]], None).loss;
                        assert_eq!(
                            l.f64().to_bits(),
                            single.f64().to_bits(),
                            "C {classes} row {i}"
                        );
                    }
                    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                        let a = run(reduction, false).loss;
                        let b = run(reduction, true).loss;
                        assert_eq!(loss_bits(&a), loss_bits(&b), "C {classes} {reduction:?}");
                    }
                }
            }
        }
    }

    /// [`batched_rows_equal_single_rows`] for a K-dimensional input: batches of 64 rows that
    /// cross the transposed tiles (163 positions of 100 classes each).
    fn batched_k_dim_rows_equal_single_rows<T: Real>() {
        let mut rng = Rng::new(20_261_205);
        let (n, c, d) = (2, 100, 300);
        let x = rng.randn(&[n, c, d]).mapv(|v| T::of(v * 5.0));
        let t: Vec<i64> = (0..n * d)
            .map(|i| {
                if i % 7 == 3 {
                    -100
                } else {
                    (i * 13 % c) as i64
                }
            })
            .collect();
        let t = ArrayD::from_shape_vec(IxDyn(&[n, d]), t).unwrap();
        for eps in [0.0, 0.2] {
            let run = |reduction, grad| {
                let out = cross_entropy(
                    x.view(),
                    CeTarget::Indices(t.view()),
                    None,
                    -100,
                    eps,
                    reduction,
                    grad,
                );
                out.unwrap().loss
            };
            let math = RowMath::new(c, None, -100, eps, T::one());
            let out = run(Reduction::None, false);
            for b in 0..n {
                for j in 0..d {
                    let row: Vec<T> = (0..c).map(|k| x[[b, k, j]]).collect();
                    let single = math.index_row(&row, t[[b, j]], None).loss;
                    assert_eq!(
                        out[[b, j]].f64().to_bits(),
                        single.f64().to_bits(),
                        "{b} {j}"
                    );
                }
            }
            for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                let (a, b) = (run(reduction, false), run(reduction, true));
                assert_eq!(loss_bits(&a), loss_bits(&b), "{reduction:?}");
            }
        }
    }

    #[test]
    fn batched_k_dim_rows_equal_single_rows_both_precisions() {
        batched_k_dim_rows_equal_single_rows::<f64>();
        batched_k_dim_rows_equal_single_rows::<f32>();
    }

    #[test]
    fn batched_rows_equal_single_rows_f64() {
        batched_rows_equal_single_rows::<f64>();
    }

    #[test]
    fn batched_rows_equal_single_rows_f32() {
        batched_rows_equal_single_rows::<f32>();
    }

    #[test]
    fn float32_agrees_with_float64() {
        let mut rng = Rng::new(8);
        let x = rng.randn(&[6, 7]).mapv(|v| v * 4.0);
        let t = idx(&[0, 1, 2, 3, 4, 6]);
        let a = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.1,
            Reduction::Mean,
            true,
        );
        let xf = x.mapv(|v| v as f32);
        let b = cross_entropy(
            xf.view(),
            CeTarget::Indices(t.view()),
            None,
            -100,
            0.1,
            Reduction::Mean,
            true,
        )
        .unwrap();
        assert!((a.loss[[]] - f64::from(b.loss[[]])).abs() < 1e-5);
        let gb: Vec<f64> = b
            .grad("input")
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_close("grad", &gb, &flat(a.grad("input").unwrap()), 1e-5, 1e-6);
    }

    #[test]
    fn index_mode_gradients_match_finite_differences() {
        let mut rng = Rng::new(21);
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
                    .map(|i| if i == 1 { 3 } else { rng.below(4) as i64 })
                    .collect(),
            )
            .unwrap();
            let t = CeTarget::Indices(t.view());
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (use_w, eps, ii) in [
                    (false, 0.0, -100),
                    (true, 0.0, 3),
                    (true, 0.3, -100),
                    (false, 0.2, 3),
                ] {
                    let wv = use_w.then_some(&w);
                    let out = ce(&x, &t, wv, ii, eps, reduction, true);
                    assert_grad(
                        &format!("{shape:?} {reduction:?} weight={use_w} eps={eps} ii={ii}"),
                        &x,
                        out.grad("input").unwrap(),
                        |x| scalar(&ce(x, &t, wv, ii, eps, reduction, false)),
                    );
                }
            }
        }
    }

    #[test]
    fn infinite_probabilities_give_pytorchs_infinities_not_nan() {
        // torch 2.15: -(log_softmax(x) * p' * w).sum(1) elementwise, so an infinite probability
        // gives ±inf where a one-pass Σ(x−m)p − Σp·lse would meet ∞ − ∞.
        let inf = f64::INFINITY;
        let x = array![
            [2.389899969100952, 0.6690000295639038],
            [0.15690000355243683, -1.7970999479293823]
        ]
        .into_dyn();
        let t = array![[1.0, 0.5], [-inf, 0.25]].into_dyn();
        let w = array![2.0, 0.0].into_dyn();
        let loss = |t: &ArrayD<f64>, w: Option<&ArrayD<f64>>, eps: f64| {
            ce(
                &x,
                &CeTarget::Probs(t.view()),
                w,
                -100,
                eps,
                Reduction::None,
                false,
            )
            .loss
        };
        let close = |got: ArrayD<f64>, first: f64| {
            assert!((got[0] - first).abs() < 1e-4, "{got}");
            assert_eq!(got[1], -inf, "{got}");
        };
        close(loss(&t, None, 0.0), 1.1073);
        close(loss(&t, None, 0.2), 1.0909);
        close(loss(&t, Some(&w), 0.0), 0.3292);
        // inf·(−0.17) + (−inf)·(−1.89) is NaN in torch too; 0·lp + inf·lp is −(−inf).
        let t2 = array![[inf, -inf], [0.0, inf]].into_dyn();
        let got = loss(&t2, None, 0.0);
        assert!(got[0].is_nan() && got[1] == inf, "{got}");
        // A confident row: torch's log_softmax of the top class is exactly 0 (float32: the
        // other exp(x − m) vanish in the float32 sum; float64 likewise at a gap of 40), so an
        // infinite probability there gives 0·∞ = NaN, not ∓∞.
        let x32 = array![[20.0f32, 0.0]].into_dyn();
        let t32 = array![[f32::INFINITY, 0.0]].into_dyn();
        let out = cross_entropy(
            x32.view(),
            CeTarget::Probs(t32.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            false,
        )
        .unwrap();
        assert!(out.loss[0].is_nan(), "{}", out.loss);
        let x64 = array![[40.0, 0.0]].into_dyn();
        let t64 = array![[inf, 0.0]].into_dyn();
        let got = ce(
            &x64,
            &CeTarget::Probs(t64.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            false,
        )
        .loss;
        assert!(got[0].is_nan(), "{got}");
    }

    #[test]
    fn huge_finite_probabilities_keep_pytorchs_finite_loss() {
        // torch 2.15, x = [[0, 0]], p = [[1e308, 1e308]]: the elementwise sum −Σ lp·p' is
        // 2·ln2·1e308, finite, while the one-pass Σp' overflows (ℓ = inf); gradient
        // −p' + softmax·Σp' = [inf, inf] in torch as well. Smoothing with weight [1, .5]:
        // 9.35748693755926e307. Float32 with 3e38: inf (the sum overflows in float32 too),
        // and 2.807245923005356e38 smoothed and weighted.
        let x = array![[0.0, 0.0]].into_dyn();
        let p = array![[1e308, 1e308]].into_dyn();
        let w = array![1.0, 0.5].into_dyn();
        let run = |w: Option<&ArrayD<f64>>, eps: f64, grad: bool| {
            ce(
                &x,
                &CeTarget::Probs(p.view()),
                w,
                -100,
                eps,
                Reduction::Mean,
                grad,
            )
        };
        let out = run(None, 0.0, true);
        assert_close(
            "loss",
            &[out.loss[[]]],
            &[1.3862943611198905e308],
            1e-15,
            0.0,
        );
        assert_eq!(flat(out.grad("input").unwrap()), vec![f64::INFINITY; 2]);
        let out = run(Some(&w), 0.1, false);
        assert_close(
            "smoothed",
            &[out.loss[[]]],
            &[9.35748693755926e307],
            1e-15,
            0.0,
        );
        let run32 = |w: Option<ArrayViewD<'_, f32>>, eps: f64| {
            let x = array![[0.0f32, 0.0]].into_dyn();
            let p = array![[3e38f32, 3e38]].into_dyn();
            let out = cross_entropy(
                x.view(),
                CeTarget::Probs(p.view()),
                w,
                -100,
                eps,
                Reduction::Mean,
                false,
            );
            f64::from(out.unwrap().loss[[]])
        };
        assert_eq!(run32(None, 0.0), f64::INFINITY);
        let w32 = array![1.0f32, 0.5].into_dyn();
        let got = run32(Some(w32.view()), 0.1);
        assert_close("f32 smoothed", &[got], &[2.807245923005356e38], 1e-6, 0.0);
    }

    #[test]
    fn one_class_gradients_are_exactly_zero_with_smoothing() {
        // torch 2.15: with C = 1 the log-softmax is 0 whatever the logit, and its backward
        // g − exp(0)·Σg is exactly 0 (found by diff_torch.py through linear_cross_entropy,
        // where a residue of 1e-7 times a weight of −1e6 made 0.12).
        let x = array![[0.0458], [1.1231], [-3.7]].into_dyn();
        let t = idx(&[0, 0, 0]);
        let w = array![1.6314].into_dyn();
        for weight in [None, Some(&w)] {
            for reduction in [Reduction::Sum, Reduction::Mean] {
                let out = ce(
                    &x,
                    &CeTarget::Indices(t.view()),
                    weight,
                    1,
                    0.1,
                    reduction,
                    true,
                );
                assert_eq!(flat(&out.loss), vec![0.0]);
                assert!(out.grad("input").unwrap().iter().all(|&g| g == 0.0));
                let xf = x.mapv(|v| v as f32);
                let wf = w.mapv(|v| v as f32);
                let out = cross_entropy(
                    xf.view(),
                    CeTarget::Indices(t.view()),
                    weight.map(|_| wf.view()),
                    1,
                    0.1,
                    reduction,
                    true,
                )
                .unwrap();
                assert!(out.grad("input").unwrap().iter().all(|&g| g == 0.0));
            }
        }
    }

    #[test]
    fn probability_mode_gradients_match_finite_differences() {
        let mut rng = Rng::new(22);
        for shape in [&[3, 4][..], &[2, 4, 3], &[4]] {
            let x = rng.randn(shape);
            let p = rng.uniform_tensor(shape, 0.0, 1.0);
            let w = rng.uniform_tensor(&[4], 0.5, 2.0);
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for (use_w, eps) in [(false, 0.0), (true, 0.0), (true, 0.3)] {
                    let what = format!("{shape:?} {reduction:?} weight={use_w} eps={eps}");
                    let run = |x: &ArrayD<f64>, p: &ArrayD<f64>, w: &ArrayD<f64>, grad| {
                        let wv = use_w.then_some(w);
                        ce(
                            x,
                            &CeTarget::Probs(p.view()),
                            wv,
                            -100,
                            eps,
                            reduction,
                            grad,
                        )
                    };
                    let out = run(&x, &p, &w, true);
                    assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                        scalar(&run(x, &p, &w, false))
                    });
                    assert_grad(&what, &p, out.grad("target").unwrap(), |p| {
                        scalar(&run(&x, p, &w, false))
                    });
                    if use_w {
                        assert_grad(&what, &w, out.grad("weight").unwrap(), |w| {
                            scalar(&run(&x, &p, w, false))
                        });
                    } else {
                        assert!(out.grad("weight").is_none());
                    }
                }
            }
        }
    }
}
