//! Rows of softmax: the log-softmax row math that `cross_entropy` and `linear_cross_entropy`
//! share.
//!
//! [`RowMath`] computes one row (the classes of one position) for forward and gradient
//! together: its maximum, then `exp(x − max)` stored straight into the gradient buffer, then
//! the gradient in place; class-index rows are batched ([`IndexRowBatch`]) so their logarithms
//! are taken together. For a K-dimensional input the classes of a position are strided
//! (`S = d1·…·dK` apart): [`for_each_row`] transposes tiles of positions into contiguous rows
//! ([`gather`], [`scatter`]), so the row math only ever sees contiguous slices.

use crate::classification::nll::ClassLayout;
use crate::reduction::{Sum8, add_to_lanes, lanes_total};
use crate::vmath::{ln_f64, ln_slice, vectorised};
use crate::{LossError, Real, Reduction};

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
    /// crowded the loop's registers and slowed the whole pass.
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
    pub(crate) fn index_row_start<const DISPATCH: bool>(
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
/// classes in one piece: one padded last group instead of one per 64).
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
        // which is slower over the whole pass.
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
pub(crate) struct Rows<'r, T> {
    pub x: &'r [T],
    pub p: Option<&'r [T]>,
    pub gx: Option<&'r mut [T]>,
    pub gp: Option<&'r mut [T]>,
}

/// Calls `f(position, rows)` for every position of a `layout`-shaped input `x` (and
/// probabilities `p` of the same shape), in row-major order of positions, with contiguous rows.
///
/// Without spatial dimensions the rows are slices of the buffers themselves; otherwise tiles of
/// positions are transposed into scratch rows and the gradient rows transposed back.
#[inline(always)]
pub(crate) fn for_each_row<T: Real>(
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

/// The reduced probability-mode loss from `Σ(−ℓ)` (negated here: PyTorch's sum of nothing is
/// −0.0) and the mean's `denominator` (the number of positions, NaN when there are no elements).
pub(crate) fn reduce_probs(reduction: Reduction, neg_total: f64, denominator: f64) -> f64 {
    match reduction {
        Reduction::Mean => -neg_total / denominator,
        Reduction::Sum | Reduction::None => -neg_total,
    }
}
