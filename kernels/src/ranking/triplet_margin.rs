//! `triplet_margin_loss` (`nn.TripletMarginLoss`), docs/losses.md, and the triplet machinery
//! it shares with `triplet_margin_with_distance_loss`.
//!
//! `ℓ = max(0, margin + d(a, p) − d_neg)` with `d_neg = d(a, n)`, or with `swap`
//! `d_neg = min(d(a, n), d(p, n))`; `d(u, v) = ‖u − v + eps‖_p` over the last dimension, eps
//! added to every component of the difference (ATen's `pairwise_distance`).
//!
//! lossd's decisions, all PyTorch 2.15's behaviour:
//! - `margin <= 0` (and NaN) is rejected; `p` and `eps` are any `f64`: `p = 0` counts non-zero
//!   components (no gradient), `p = ±∞` is the largest/smallest `|·|` (pass
//!   `f64::INFINITY`), negative and fractional `p` use the generic formula; an empty last
//!   dimension with `p < 0` or `p = ±∞` is an error (the norm has no value there).
//! - The three tensors must have the same rank; each *pair* broadcasts as ATen broadcasts
//!   `x1 − x2` (so a last dimension of size 1 is repeated, not summed once), and the
//!   per-pair distances broadcast together. 0-D tensors are accepted (the norm of a scalar).
//! - Gradients follow autograd's chain exactly (docs/differences.md, Gradients): the hinge has derivative 0
//!   at 0, `p = ∞` ties share the gradient equally, a swap tie gives ½ to each branch, a zero
//!   difference has gradient 0, and a masked (zero) upstream times a non-finite factor is NaN,
//!   as in PyTorch.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::margin_ranking::{hinge, hinge_grad};
use crate::broadcast::{broadcast_pair, broadcast_shape, unbroadcast};
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{CHUNK, Sum8, add_to_lanes, lanes_total, reduce, upstream};
use crate::regression::{contiguous, sign};
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// The options of [`triplet_margin_loss`]; the defaults are `nn.TripletMarginLoss()`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TripletMarginOptions {
    /// The margin (> 0).
    pub margin: f64,
    /// The norm's degree, any value (`f64::INFINITY` for the largest component).
    pub p: f64,
    /// Added to every component of the difference before the norm.
    pub eps: f64,
    /// Compare with the nearer of the anchor and the positive to the negative.
    pub swap: bool,
    /// How the per-triplet losses are reduced.
    pub reduction: Reduction,
    /// Whether to return the gradients.
    pub grad: bool,
}

impl Default for TripletMarginOptions {
    fn default() -> Self {
        Self {
            margin: 1.0,
            p: 2.0,
            eps: 1e-6,
            swap: false,
            reduction: Reduction::Mean,
            grad: false,
        }
    }
}

/// `F.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, reduction)`.
///
/// Accepts any three tensors of the same rank that broadcast pairwise, e.g. `(N, D)` (returns
/// `(N)` for `none`), `(D)` (returns `()`), `(B, N, D)` (returns `(B, N)`). Gradients: `anchor`,
/// `positive`, `negative`, each of its argument's shape.
///
/// Errors: [`LossError::option`] `margin` when `margin <= 0` or NaN; [`LossError::shape`]
/// naming `positive` or `negative` when the ranks differ or the shapes do not broadcast, and
/// naming the pair's first tensor when `p < 0` or `p = ±∞` meets an empty last dimension.
pub fn triplet_margin_loss<T: Real>(
    anchor: ArrayViewD<'_, T>,
    positive: ArrayViewD<'_, T>,
    negative: ArrayViewD<'_, T>,
    options: TripletMarginOptions,
) -> Result<LossOutput<T>, LossError> {
    check_margin(options.margin)?;
    let distance = Distance::PNorm {
        p: options.p,
        eps: options.eps,
    };
    let (margin, swap) = (options.margin, options.swap);
    let (reduction, grad) = (options.reduction, options.grad);
    let triplet = Triplet {
        margin,
        distance,
        swap,
        reduction,
        grad,
    };
    triplet_loss(anchor, positive, negative, triplet)
}

/// Rejects `margin <= 0` (and NaN) with PyTorch's message.
pub(crate) fn check_margin(margin: f64) -> Result<(), LossError> {
    if margin > 0.0 {
        Ok(())
    } else {
        Err(LossError::option(
            "margin",
            format!("margin must be greater than 0, got {margin}"),
        ))
    }
}

/// How the distance between two embeddings is measured (over their last dimension).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Distance {
    /// `‖x − y + eps‖_p`, ATen's `pairwise_distance`.
    PNorm { p: f64, eps: f64 },
    /// `1 − cosine_similarity(x, y, dim=-1, eps)` as ATen computes it (checked on torch 2.15):
    /// `Σ (x / max(‖x‖, eps)) · (y / max(‖y‖, eps))`, the clamp invisible to autograd.
    Cosine { eps: f64 },
}

/// What [`triplet_loss`] computes, whichever public kernel asked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Triplet {
    pub margin: f64,
    pub distance: Distance,
    pub swap: bool,
    pub reduction: Reduction,
    pub grad: bool,
}

/// The branch of ATen's `norm_backward` (and forward) a `p` takes, in ATen's order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum NormKind {
    Zero,
    One,
    Two,
    /// `p = +∞` (`max`) or `−∞` (`min`); both take the tie-sharing backward.
    Inf {
        max: bool,
    },
    /// `p < 1`, negative `p` included.
    Below1,
    /// `1 < p < 2`.
    Below2,
    /// `p > 2`, and NaN (which fails every other test).
    Above2,
}

impl NormKind {
    fn of(p: f64) -> Self {
        if p == 0.0 {
            NormKind::Zero
        } else if p == 1.0 {
            NormKind::One
        } else if p == 2.0 {
            NormKind::Two
        } else if p.is_infinite() {
            NormKind::Inf { max: p > 0.0 }
        } else if p < 1.0 {
            NormKind::Below1
        } else if p < 2.0 {
            NormKind::Below2
        } else {
            NormKind::Above2
        }
    }

    /// Whether the norm has no value over an empty dimension (`linalg.vector_norm` refuses).
    fn needs_elements(p: f64) -> bool {
        p < 0.0 || p.is_infinite()
    }
}

/// A [`Distance`] with its constants in the element type.
#[derive(Clone, Copy, Debug)]
enum Metric<T> {
    Norm {
        kind: NormKind,
        p: T,
        eps: T,
        p64: f64,
    },
    Cosine {
        eps: T,
    },
}

impl<T: Real> Metric<T> {
    fn of(d: Distance) -> Self {
        match d {
            Distance::PNorm { p, eps } => Metric::Norm {
                kind: NormKind::of(p),
                p: T::of(p),
                eps: T::of(eps),
                p64: p,
            },
            Distance::Cosine { eps } => Metric::Cosine { eps: T::of(eps) },
        }
    }
}

/// One pair's distance for the current row, with what its backward needs.
///
/// `x` and `y` rows have length `d` (the pair's broadcast last dimension) or 1 (broadcast along
/// it); broadcast rows are expanded into `ex`/`ey` and their gradients gathered in `gx`/`gy`.
struct Pair<T> {
    d: usize,
    /// Norm: the difference `x − y + eps`. Cosine: unused.
    u: Vec<T>,
    /// Per-element terms before their `f64` sum.
    tmp: Vec<T>,
    ex: Vec<T>,
    ey: Vec<T>,
    gx: Vec<T>,
    gy: Vec<T>,
    /// Norm: the norm. Cosine: `‖x‖`.
    n1: T,
    /// Norm (p = ±∞): how many components attain the norm. Cosine: `‖y‖`.
    n2: T,
    /// Cosine: `max(‖x‖, eps)`, `max(‖y‖, eps)`.
    c1: T,
    c2: T,
}

/// `max(n, eps)` as `clamp_min`: NaN stays NaN.
#[inline(always)]
fn clamp_min<T: Real>(n: T, eps: T) -> T {
    if n < eps { eps } else { n }
}

/// `min(x, y)` as `torch.minimum`: NaN propagates.
#[inline(always)]
fn minimum<T: Real>(x: T, y: T) -> T {
    if x.is_nan() || y.is_nan() {
        T::nan()
    } else if y < x {
        y
    } else {
        x
    }
}

impl<T: Real> Pair<T> {
    fn new(d: usize) -> Self {
        Self {
            d,
            u: vec![T::zero(); d],
            tmp: vec![T::zero(); d],
            ex: vec![T::zero(); d],
            ey: vec![T::zero(); d],
            gx: vec![T::zero(); d],
            gy: vec![T::zero(); d],
            n1: T::zero(),
            n2: T::zero(),
            c1: T::zero(),
            c2: T::zero(),
        }
    }

    /// The distance between rows `x` and `y`.
    #[inline(always)]
    fn forward(&mut self, m: &Metric<T>, x: &[T], y: &[T]) -> T {
        let d = self.d;
        let x: &[T] = if x.len() == d {
            x
        } else {
            self.ex.fill(x.first().copied().unwrap_or_else(T::zero));
            &self.ex
        };
        let y: &[T] = if y.len() == d {
            y
        } else {
            self.ey.fill(y.first().copied().unwrap_or_else(T::zero));
            &self.ey
        };
        match *m {
            Metric::Norm { kind, p, eps, p64 } => {
                for ((u, &a), &b) in self.u.iter_mut().zip(x).zip(y) {
                    *u = a - b + eps;
                }
                let (u, tmp) = (&self.u, &mut self.tmp);
                let n = if d == 0 {
                    // Every accepted p has value 0 over nothing (negative and infinite p were
                    // rejected); even NaN p gives 0 in torch.
                    T::zero()
                } else {
                    match kind {
                        NormKind::Zero => {
                            T::of(u.iter().filter(|&&v| v != T::zero()).count() as f64)
                        }
                        NormKind::One => {
                            tmp.iter_mut().zip(u).for_each(|(t, &v)| *t = v.abs());
                            T::of(sum(tmp))
                        }
                        // Over one element torch's norm is |u| itself (no square to
                        // overflow): checked on torch 2.15 with |u| = 1e200.
                        NormKind::Two | NormKind::Below1 | NormKind::Below2 | NormKind::Above2
                            if d == 1 =>
                        {
                            u[0].abs()
                        }
                        NormKind::Two => {
                            tmp.iter_mut().zip(u).for_each(|(t, &v)| *t = v * v);
                            T::of(sum(tmp).sqrt())
                        }
                        NormKind::Inf { max } => {
                            let mut best = u[0].abs();
                            for &v in &u[1..] {
                                let a = v.abs();
                                if a.is_nan() || best.is_nan() {
                                    best = T::nan();
                                } else if (max && a > best) || (!max && a < best) {
                                    best = a;
                                }
                            }
                            // The tie count for the backward: |u_i| = norm, or NaN.
                            self.n2 =
                                T::of(u.iter().filter(|&&v| v.abs() == best || v.is_nan()).count()
                                    as f64);
                            best
                        }
                        NormKind::Below1 | NormKind::Below2 | NormKind::Above2 => {
                            tmp.iter_mut()
                                .zip(u)
                                .for_each(|(t, &v)| *t = v.abs().powf(p));
                            T::of(sum(tmp).powf(1.0 / p64))
                        }
                    }
                };
                self.n1 = n;
                n
            }
            Metric::Cosine { eps } => {
                let tmp = &mut self.tmp;
                // ATen's vector norm over one element is |x| (no square to overflow), as for
                // the p-norm above; over more the squares are formed in T.
                let mut norm = |v: &[T]| {
                    if d == 1 {
                        v[0].abs()
                    } else {
                        tmp.iter_mut().zip(v).for_each(|(t, &v)| *t = v * v);
                        T::of(sum(tmp).sqrt())
                    }
                };
                let (n1, n2) = (norm(x), norm(y));
                let (c1, c2) = (clamp_min(n1, eps), clamp_min(n2, eps));
                for ((t, &a), &b) in tmp.iter_mut().zip(x).zip(y) {
                    *t = (a / c1) * (b / c2);
                }
                let s = T::of(sum(tmp));
                (self.n1, self.n2, self.c1, self.c2) = (n1, n2, c1, c2);
                T::one() - s
            }
        }
    }

    /// Adds `g · ∂distance/∂x` to `dx` and `g · ∂distance/∂y` to `dy` for the rows of the last
    /// [`Pair::forward`] (`dx`, `dy` have the lengths of those rows).
    #[inline(always)]
    fn backward(&mut self, m: &Metric<T>, g: T, x: &[T], y: &[T], dx: &mut [T], dy: &mut [T]) {
        let d = self.d;
        if let Metric::Norm {
            kind: NormKind::Zero,
            ..
        } = m
        {
            // ATen's norm_backward returns no gradient at all for p = 0.
            return;
        }
        let xb = x.len() != d;
        let yb = y.len() != d;
        let x: &[T] = if xb { &self.ex } else { x };
        let y: &[T] = if yb { &self.ey } else { y };
        if xb {
            self.gx.fill(T::zero());
        }
        if yb {
            self.gy.fill(T::zero());
        }
        let gx: &mut [T] = if xb { &mut self.gx } else { &mut *dx };
        let gy: &mut [T] = if yb { &mut self.gy } else { &mut *dy };
        let zero = T::zero();
        match *m {
            Metric::Norm { kind, p64, .. } => {
                let (u, n) = (&self.u, self.n1);
                match kind {
                    NormKind::Zero => {}
                    NormKind::One => scatter(gx, gy, u, |v| sign(v) * g),
                    NormKind::Two => {
                        if n == zero {
                            scatter(gx, gy, u, |_| g * zero);
                        } else {
                            scatter(gx, gy, u, |v| g * (v / n));
                        }
                    }
                    NormKind::Inf { .. } => {
                        let share = g / self.n2;
                        scatter(gx, gy, u, |v| {
                            let hit = v.abs() == n || v.is_nan();
                            sign(v) * (share * if hit { T::one() } else { zero })
                        });
                    }
                    NormKind::Below1 => {
                        let scale = n.powf(T::of(1.0 - p64));
                        let pm1 = T::of(p64 - 1.0);
                        scatter(gx, gy, u, |v| {
                            let w = if v == zero { zero } else { v.abs().powf(pm1) };
                            sign(v) * w * g * scale
                        });
                    }
                    NormKind::Below2 => {
                        let pm1 = T::of(p64 - 1.0);
                        let scale = if n == zero { zero } else { g / n.powf(pm1) };
                        scatter(gx, gy, u, |v| sign(v) * v.abs().powf(pm1) * scale);
                    }
                    NormKind::Above2 => {
                        let (pm1, pm2) = (T::of(p64 - 1.0), T::of(p64 - 2.0));
                        let scale = if n == zero { zero } else { g / n.powf(pm1) };
                        scatter(gx, gy, u, |v| v * v.abs().powf(pm2) * scale);
                    }
                }
            }
            Metric::Cosine { .. } => {
                let (n1, n2, c1, c2) = (self.n1, self.n2, self.c1, self.c2);
                let gs = -g;
                // Autograd's chain through Σ (x/c1)·(y/c2): the division's backward for the
                // divisor is −grad·((x/c1)/c1), summed over the row, and flows on into ‖x‖
                // unchanged (the clamp to eps is not recorded); the same for y.
                let tmp = &mut self.tmp;
                for ((t, &a), &b) in tmp.iter_mut().zip(x).zip(y) {
                    *t = -(gs * (b / c2)) * (a / c1 / c1);
                }
                let dn1 = T::of(sum(tmp));
                for ((t, &a), &b) in tmp.iter_mut().zip(x).zip(y) {
                    *t = -(gs * (a / c1)) * (b / c2 / c2);
                }
                let dn2 = T::of(sum(tmp));
                // Each term added on its own, as autograd accumulates them: the division's
                // first, then the norm's.
                for (((ga, gb), &a), &b) in gx.iter_mut().zip(gy.iter_mut()).zip(x).zip(y) {
                    let na = if n1 == zero { zero } else { a / n1 };
                    let nb = if n2 == zero { zero } else { b / n2 };
                    *ga = (*ga + gs * (b / c2) / c1) + dn1 * na;
                    *gb = (*gb + gs * (a / c1) / c2) + dn2 * nb;
                }
            }
        }
        // Rows broadcast along the last dimension: sum the expanded gradient onto their one
        // element.
        if xb && let Some(t) = dx.first_mut() {
            *t += T::of(sum(&self.gx));
        }
        if yb && let Some(t) = dy.first_mut() {
            *t += T::of(sum(&self.gy));
        }
    }
}

/// Adds `f(u_i)` to `gx_i` and subtracts it from `gy_i` (`u = x − y + eps`).
#[inline(always)]
fn scatter<T: Real>(gx: &mut [T], gy: &mut [T], u: &[T], f: impl Fn(T) -> T) {
    for ((a, b), &v) in gx.iter_mut().zip(gy.iter_mut()).zip(u) {
        let t = f(v);
        *a += t;
        *b -= t;
    }
}

/// The shape of one tensor's rows: the full batch shape and the tensor's own last dimension.
/// Calls `f`; with an `#[inline(always)]` closure, its body is inlined into the caller.
#[inline(always)]
fn inlined<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// [`crate::reduction::sum`] (same lanes, same order), inlined into the vector build.
#[inline(always)]
fn sum<T: Real>(xs: &[T]) -> f64 {
    let mut lanes = [0.0f64; 8];
    add_to_lanes(&mut lanes, xs);
    lanes_total(&lanes)
}

fn rows_shape(batch: &[usize], x: &[usize]) -> Vec<usize> {
    match x.last() {
        None => Vec::new(),
        Some(&d) => batch.iter().copied().chain([d]).collect(),
    }
}

/// The triplet loss for any [`Distance`], after the margin has been checked.
///
/// Shape rules: same rank (PyTorch's message), then each pair broadcasts as ATen broadcasts
/// `x1 − x2` (anchor–positive, anchor–negative, then positive–negative with `swap`), then the
/// per-pair distances broadcast together.
pub(crate) fn triplet_loss<T: Real>(
    anchor: ArrayViewD<'_, T>,
    positive: ArrayViewD<'_, T>,
    negative: ArrayViewD<'_, T>,
    triplet: Triplet,
) -> Result<LossOutput<T>, LossError> {
    let (margin, distance, swap) = (triplet.margin, triplet.distance, triplet.swap);
    let (reduction, grad) = (triplet.reduction, triplet.grad);
    let (sa, sp, sn) = (anchor.shape(), positive.shape(), negative.shape());
    let k = sa.len();
    if sp.len() != k || sn.len() != k {
        return Err(LossError::shape(
            if sp.len() != k {
                "positive"
            } else {
                "negative"
            },
            format!(
                "The anchor, positive, and negative tensors are expected to have the same number of \
                 dimensions, but got: anchor {k}D {}, positive {}D {}, and negative {}D {} inputs",
                fmt_shape(sa),
                sp.len(),
                fmt_shape(sp),
                sn.len(),
                fmt_shape(sn)
            ),
        ));
    }
    // The p whose norm has no value over an empty last dimension, if this is one.
    let needs_elements = match distance {
        Distance::PNorm { p, .. } if NormKind::needs_elements(p) => Some(p),
        _ => None,
    };
    // Each pair in the order ATen computes them; its broadcast shape's batch part and last dim.
    let mut pairs: Vec<(&'static str, &[usize], &'static str, &[usize])> = vec![
        ("anchor", sa, "positive", sp),
        ("anchor", sa, "negative", sn),
    ];
    if swap {
        pairs.push(("positive", sp, "negative", sn));
    }
    let mut batch: Vec<usize> = Vec::new();
    let mut dims = Vec::with_capacity(3);
    for (i, &(xn, xs, yn, ys)) in pairs.iter().enumerate() {
        let full = broadcast_pair(xn, xs, yn, ys)?;
        let (b, d) = match full.split_last() {
            Some((&d, b)) => (b.to_vec(), d),
            None => (Vec::new(), 1),
        };
        if let (0, Some(p)) = (d, needs_elements) {
            return Err(LossError::shape(
                xn,
                format!(
                    "the {p}-norm has no value over an empty dimension, but {xn} and {yn} \
                     broadcast to shape {} (last dimension 0); use p >= 0 or give the \
                     embeddings at least one component",
                    fmt_shape(&full)
                ),
            ));
        }
        batch = if i == 0 {
            b
        } else {
            broadcast_shape(&batch, &b).map_err(|m| {
                LossError::shape(
                    yn,
                    format!(
                        "the distances between the pairs of anchor, positive and negative have \
                         shapes that do not broadcast ({} against {}): {m}",
                        fmt_shape(&batch),
                        fmt_shape(&b)
                    ),
                )
            })?
        };
        dims.push(d);
    }
    let rows: usize = batch.iter().product();
    let own = |s: &[usize]| s.last().copied().unwrap_or(1);
    let (da_, dp_, dn_) = (own(sa), own(sp), own(sn));
    let (ra, rp, rn) = (
        rows_shape(&batch, sa),
        rows_shape(&batch, sp),
        rows_shape(&batch, sn),
    );
    let a = contiguous(&anchor, &ra);
    let p = contiguous(&positive, &rp);
    let n = contiguous(&negative, &rn);

    let metric = Metric::<T>::of(distance);
    let mut ap = Pair::new(dims[0]);
    let mut an = Pair::new(dims[1]);
    let mut pn = Pair::new(dims.get(2).copied().unwrap_or(0));
    let m = T::of(margin);
    let up = T::of(upstream(reduction, rows));
    let zero = T::zero();
    let half = T::of(0.5);

    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { rows } else { 0 });
    let mut total = Sum8::new();
    let zeros = |len: usize| vec![zero; if grad { len } else { 0 }];
    let (mut ga, mut gp, mut gn) = (zeros(rows * da_), zeros(rows * dp_), zeros(rows * dn_));
    let widest = dims.iter().copied().max().unwrap_or(1).max(1);
    let every = (CHUNK / widest).max(1);
    // The loop over rows runs in the widest vector build the CPU has (`vectorised!`): the
    // distances' loops are inlined into it. Same operations in the same order, same bits.
    vectorised!(inlined(
        #[inline(always)]
        || -> Result<(), LossError> {
            for r in 0..rows {
                if r % every == 0 {
                    checkpoint()?;
                }
                let ar = &a[r * da_..(r + 1) * da_];
                let pr = &p[r * dp_..(r + 1) * dp_];
                let nr = &n[r * dn_..(r + 1) * dn_];
                let d_ap = ap.forward(&metric, ar, pr);
                let d_an = an.forward(&metric, ar, nr);
                let d_pn = if swap {
                    pn.forward(&metric, pr, nr)
                } else {
                    zero
                };
                let d_neg = if swap { minimum(d_an, d_pn) } else { d_an };
                let z = m + d_ap - d_neg;
                let l = hinge(z);
                total.add(l.f64());
                if keep {
                    losses.push(l);
                }
                if grad {
                    let gz = hinge_grad(z, up);
                    let g_neg = -gz;
                    let ga_r = &mut ga[r * da_..(r + 1) * da_];
                    let gp_r = &mut gp[r * dp_..(r + 1) * dp_];
                    let gn_r = &mut gn[r * dn_..(r + 1) * dn_];
                    // Autograd's order: the distance computed last is differentiated first
                    // (swap's, then (a, n), then (a, p)); with the cosine distance a tensor
                    // gets two terms from each, so the order decides the last bit.
                    if swap {
                        // torch.minimum's backward: ½ each on a tie, and a NaN sends the full gradient
                        // to both sides.
                        let (g_an, g_pn) = if d_an == d_pn {
                            (g_neg * half, g_neg * half)
                        } else {
                            (
                                if d_an > d_pn { zero } else { g_neg },
                                if d_an < d_pn { zero } else { g_neg },
                            )
                        };
                        pn.backward(&metric, g_pn, pr, nr, gp_r, gn_r);
                        an.backward(&metric, g_an, ar, nr, ga_r, gn_r);
                    } else {
                        an.backward(&metric, g_neg, ar, nr, ga_r, gn_r);
                    }
                    ap.backward(&metric, gz, ar, pr, ga_r, gp_r);
                }
            }
            Ok(())
        }
    ))?;
    let mut out = LossOutput::new(reduce(reduction, &batch, losses, total.total(), rows));
    if grad {
        let back = |g: Vec<T>, rs: &[usize], s: &[usize]| {
            unbroadcast(
                ArrayD::from_shape_vec(IxDyn(rs), g).expect("rows × own last dimension"),
                s,
            )
        };
        out.grads.push(("anchor", back(ga, &ra, sa)));
        out.grads.push(("positive", back(gp, &rp, sp)));
        out.grads.push(("negative", back(gn, &rn, sn)));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
