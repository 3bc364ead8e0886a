//! `margin_ranking_loss` (`nn.MarginRankingLoss`): `ℓ = max(0, −y·(x1 − x2) + margin)`,
//! docs/losses.md.
//!
//! `input1`, `input2` and `target` must have the same number of dimensions (PyTorch's Python
//! check), then broadcast silently. All three are differentiable (a floating target is, in
//! PyTorch). The hinge has derivative 0 where `z = 0` (docs/differences.md, At kinks).
//!
//! This file also holds the small pieces the other ranking kernels share: the hinge as ATen's
//! `clamp_min(z, 0)` computes it and its backward.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::error::fmt_shape;
use crate::reduction::{blocked_checked, reduce, upstream};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// `max(0, z)` as ATen's `clamp_min(z, 0)`: a NaN `z` stays NaN (`f64::max` would drop it).
#[inline(always)]
pub(crate) fn hinge<T: Real>(z: T) -> T {
    if z > T::zero() || z.is_nan() {
        z
    } else {
        T::zero()
    }
}

/// The backward of [`hinge`] for upstream gradient `g`: `g` where `z > 0`, else exactly 0
/// (also at `z = 0` and for NaN `z`, as `clamp_min`'s backward in torch 2.15).
#[inline(always)]
pub(crate) fn hinge_grad<T: Real>(z: T, g: T) -> T {
    if z > T::zero() { g } else { T::zero() }
}

/// `F.margin_ranking_loss(input1, input2, target, margin, reduction)`.
///
/// The three tensors must have the same number of dimensions, then broadcast (`none` returns
/// the broadcast shape). `margin` is not validated (PyTorch accepts any value). Gradients:
/// `input1` `−y·a`, `input2` `y·a`, `target` `−(x1 − x2)·a` with `a = 1[z > 0]`, each summed
/// back to its argument's shape.
///
/// Errors: [`LossError::shape`] naming `input2` or `target` when the ranks differ or the
/// shapes do not broadcast.
pub fn margin_ranking_loss<T: Real>(
    input1: ArrayViewD<'_, T>,
    input2: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    margin: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (s1, s2, st) = (input1.shape(), input2.shape(), target.shape());
    if s1.len() != s2.len() || s1.len() != st.len() {
        let arg = if s1.len() != s2.len() {
            "input2"
        } else {
            "target"
        };
        return Err(LossError::shape(
            arg,
            format!(
                "margin_ranking_loss: all input tensors should have the same number of dimensions, \
                 but got input1 {}, input2 {} and target {}",
                fmt_shape(s1),
                fmt_shape(s2),
                fmt_shape(st)
            ),
        ));
    }
    let s12 = broadcast_pair("input1", s1, "input2", s2)?;
    let shape = broadcast_pair("the broadcast of input1 and input2", &s12, "target", st)?;
    let n: usize = shape.iter().product();
    let x1 = contiguous(&input1, &shape);
    let x2 = contiguous(&input2, &shape);
    let y = contiguous(&target, &shape);
    let m = T::of(margin);
    let up = T::of(upstream(reduction, n));

    let keep = reduction == Reduction::None;
    let mut losses = if keep { vec![T::zero(); n] } else { Vec::new() };
    let zeros = || if grad { vec![T::zero(); n] } else { Vec::new() };
    let (mut d1, mut d2, mut dt) = (zeros(), zeros(), zeros());
    let (l, g1, g2, gt) = (&mut losses[..], &mut d1[..], &mut d2[..], &mut dt[..]);
    let total = vectorised!(match (keep, grad) {
        (false, false) => pass::<T, false, false>(&x1, &x2, &y, m, up, l, [g1, g2, gt]),
        (false, true) => pass::<T, false, true>(&x1, &x2, &y, m, up, l, [g1, g2, gt]),
        (true, false) => pass::<T, true, false>(&x1, &x2, &y, m, up, l, [g1, g2, gt]),
        (true, true) => pass::<T, true, true>(&x1, &x2, &y, m, up, l, [g1, g2, gt]),
    })?;
    let mut out = LossOutput::new(reduce(reduction, &shape, losses, total, n));
    if grad {
        let full = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("n elements");
        out.grads.push(("input1", unbroadcast(full(d1), s1)));
        out.grads.push(("input2", unbroadcast(full(d2), s2)));
        out.grads.push(("target", unbroadcast(full(dt), st)));
    }
    Ok(out)
}

/// The pass over the elements in blocks of [`BLOCK`](crate::reduction::BLOCK), specialised on what it writes (`KEEP`:
/// `losses`; `GRAD`: the gradients `d1`, `d2`, `dt`), so the element-wise loops have no branches and
/// vectorise. Each block's losses go to the eight lanes (element `i` to lane `i mod 8`, the
/// order of [`crate::reduction::Sum8`]); a cancellation checkpoint every [`CHUNK`](crate::reduction::CHUNK) elements.
/// Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const KEEP: bool, const GRAD: bool>(
    x1: &[T],
    x2: &[T],
    y: &[T],
    m: T,
    up: T,
    losses: &mut [T],
    [d1, d2, dt]: [&mut [T]; 3],
) -> Result<f64, LossError> {
    let n = x1.len();
    let (x2, y) = (&x2[..n], &y[..n]);
    let (d1, d2, dt) = if GRAD {
        (&mut d1[..n], &mut d2[..n], &mut dt[..n])
    } else {
        (d1, d2, dt)
    };

    blocked_checked::<T, KEEP>(
        n,
        losses,
        #[inline(always)]
        |r, block| {
            let (start, end) = (r.start, r.end);
            let (x1s, x2s, ys) = (&x1[start..end], &x2[start..end], &y[start..end]);
            for (((l, &a), &b), &yv) in block.iter_mut().zip(x1s).zip(x2s).zip(ys) {
                *l = hinge(-yv * (a - b) + m);
            }
            if GRAD {
                let gs = d1[start..end]
                    .iter_mut()
                    .zip(&mut d2[start..end])
                    .zip(&mut dt[start..end]);
                for ((((g1, g2), gt), (&a, &b)), &yv) in gs.zip(x1s.iter().zip(x2s)).zip(ys) {
                    let d = a - b;
                    let z = -yv * d + m;
                    // Autograd's chain for `(−y)·(x1 − x2) + margin`, so that a masked (zero)
                    // gradient times an infinite difference is NaN, as in PyTorch.
                    let gz = hinge_grad(z, up);
                    let g = gz * -yv;
                    *g1 = g;
                    *g2 = -g;
                    *gt = -(gz * d);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests;
