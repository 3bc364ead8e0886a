//! Regression losses: functions of the difference `d = input - target`, broadcast as PyTorch
//! does (with its warning), with the functional `weight=` of `l1_loss`, `mse_loss` and
//! `huber_loss`.
//!
//! All four share [`distance_loss`], which takes the per-element loss and its derivative
//! with respect to `d`.

pub mod huber;
pub mod l1;
pub mod mse;
pub mod smooth_l1;

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::broadcast::{broadcast_pair, materialize, unbroadcast};
use crate::error::{LossError, fmt_shape};
use crate::output::LossOutput;
use crate::real::Real;
use crate::reduction::{Reduction, Sum8, lanes_total};
use crate::vmath::vectorised;

/// How the weighted `mean` is divided (docs/differences.md item 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightedMean {
    /// `Σ w·ℓ / Σ w` (`l1_loss`, `mse_loss`).
    SumOfWeights,
    /// `Σ w·ℓ / numel` (`huber_loss`).
    Count,
}

/// PyTorch's warning when input and target sizes differ.
pub(crate) fn size_warning(input: &[usize], target: &[usize]) -> String {
    format!(
        "Using a target size (torch.Size({})) that is different to the input size (torch.Size({})). \
         This will likely lead to incorrect results due to broadcasting. Please ensure they have the same size.",
        fmt_shape(target),
        fmt_shape(input)
    )
}

/// Contiguous row-major data of `x` broadcast to `shape`, borrowed when no copy is needed.
pub(crate) fn contiguous<'a, T: Copy>(x: &'a ArrayViewD<'a, T>, shape: &[usize]) -> Cow<'a, [T]> {
    match x.as_slice() {
        Some(s) if x.shape() == shape => Cow::Borrowed(s),
        _ => Cow::Owned(materialize(x, shape)),
    }
}

/// The arguments every regression kernel takes.
pub(crate) struct Args<'a, T> {
    pub input: ArrayViewD<'a, T>,
    pub target: ArrayViewD<'a, T>,
    pub weight: Option<ArrayViewD<'a, T>>,
    pub reduction: Reduction,
    pub grad: bool,
}

/// A loss `ℓ = w · f(input − target)`, where `f(d)` returns `(ℓ, dℓ/dd / dx_factor)`.
///
/// Input and target broadcast (a warning when their sizes differ); `weight` must have the
/// input's shape. Gradients: input `w·f'·dx_factor`, target its negative, weight `f`, each
/// scaled by the reduction and summed back to the argument's shape. `dx_factor` (1 but for
/// `mse_loss`) is folded into the reduction's scale as ATen does (`mse_loss_backward`:
/// `(x − y) · (2/N)`, finite where `2(x − y)` would overflow); only without `weight`.
pub(crate) fn distance_loss<T: Real>(
    args: Args<'_, T>,
    weighted_mean: WeightedMean,
    dx_factor: f64,
    f: impl Fn(T) -> (T, T),
) -> Result<LossOutput<T>, LossError> {
    let (input, target, weight) = (args.input, args.target, args.weight);
    let (reduction, grad) = (args.reduction, args.grad);
    debug_assert!(dx_factor == 1.0 || weight.is_none());
    let (xs, ys) = (input.shape().to_vec(), target.shape().to_vec());
    let shape = broadcast_pair("input", &xs, "target", &ys)?;
    let mut warnings = Vec::new();
    if xs != ys {
        warnings.push(size_warning(&xs, &ys));
    }
    if let Some(w) = &weight
        && w.shape() != xs.as_slice()
    {
        return Err(LossError::shape(
            "weight",
            format!(
                "weight has shape {} but input has shape {}: weights and input must have the same size",
                fmt_shape(w.shape()),
                fmt_shape(&xs)
            ),
        ));
    }
    let n: usize = shape.iter().product();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let w = weight.as_ref().map(|w| contiguous(w, &shape));

    let keep = reduction == Reduction::None;
    let mut losses = if keep { vec![T::zero(); n] } else { Vec::new() };
    let mut dx = if grad { vec![T::zero(); n] } else { Vec::new() };
    let mut raw = if grad && w.is_some() {
        vec![T::zero(); n]
    } else {
        Vec::new()
    };
    // The denominator of the mean; PyTorch sums the weight tensor itself (not broadcast).
    let denom = match (reduction, &weight, weighted_mean) {
        (Reduction::Mean, Some(w), WeightedMean::SumOfWeights) => {
            let mut s = Sum8::new();
            w.iter().for_each(|v| s.add(v.f64()));
            s.total()
        }
        _ => n as f64,
    };
    // The reduction's scale of the gradients (1 but for a mean).
    let scale = T::of(if reduction == Reduction::Mean {
        1.0 / denom
    } else {
        1.0
    });
    let ops = Operands {
        x: &x,
        y: &y,
        w: w.as_deref().unwrap_or(&[]),
    };
    let (l, d, r) = (&mut losses[..], &mut dx[..], &mut raw[..]);
    // Compiled for the widest vector instructions the CPU has (bit-identical on every path).
    let total = vectorised!(match (keep, grad, w.is_some()) {
        (false, false, false) => pass::<T, false, false, false>(ops, scale, &f, l, d, r),
        (false, false, true) => pass::<T, false, false, true>(ops, scale, &f, l, d, r),
        (false, true, false) => pass::<T, false, true, false>(ops, scale, &f, l, d, r),
        (false, true, true) => pass::<T, false, true, true>(ops, scale, &f, l, d, r),
        (true, false, false) => pass::<T, true, false, false>(ops, scale, &f, l, d, r),
        (true, false, true) => pass::<T, true, false, true>(ops, scale, &f, l, d, r),
        (true, true, false) => pass::<T, true, true, false>(ops, scale, &f, l, d, r),
        (true, true, true) => pass::<T, true, true, true>(ops, scale, &f, l, d, r),
    });

    let value = match reduction {
        Reduction::None => None,
        Reduction::Sum => Some(total),
        // 0/0 is NaN for the mean of nothing; a weighted mean over an empty broadcast divides
        // 0 by the weights' own sum and is 0, as in PyTorch.
        Reduction::Mean => Some(total / denom),
    };
    let loss = match value {
        None => ArrayD::from_shape_vec(IxDyn(&shape), losses).expect("n elements"),
        Some(v) => ndarray::arr0(T::of(v)).into_dyn(),
    };
    let mut out = LossOutput {
        loss,
        grads: Vec::new(),
        warnings,
    };
    if grad {
        let dx_scale = T::of(if reduction == Reduction::Mean {
            dx_factor / denom
        } else {
            dx_factor
        });
        // With a weight the pass has scaled the gradient already.
        if dx_scale != T::one() && weight.is_none() {
            dx.iter_mut().for_each(|g| *g *= dx_scale);
        }
        let dy: Vec<T> = dx.iter().map(|&g| -g).collect();
        let dx = ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n elements");
        let dy = ArrayD::from_shape_vec(IxDyn(&shape), dy).expect("n elements");
        out.grads.push(("input", unbroadcast(dx, &xs)));
        out.grads.push(("target", unbroadcast(dy, &ys)));
        if weight.is_some() {
            if scale != T::one() {
                raw.iter_mut().for_each(|l| *l *= scale);
            }
            let raw = ArrayD::from_shape_vec(IxDyn(&shape), raw).expect("n elements");
            let mut dw = unbroadcast(raw, &xs);
            // Σw in the denominator: ∂/∂w_k of (Σ w ℓ / Σ w) has the extra term −L/Σw.
            if reduction == Reduction::Mean && weighted_mean == WeightedMean::SumOfWeights {
                let shift = T::of(value.unwrap_or(0.0) / denom);
                dw.iter_mut().for_each(|g| *g -= shift);
            }
            out.grads.push(("weight", dw));
        }
    }
    Ok(out)
}

/// The element-wise operands of [`pass`], broadcast to one shape (`w` empty without a
/// weight).
#[derive(Clone, Copy)]
struct Operands<'a, T> {
    x: &'a [T],
    y: &'a [T],
    w: &'a [T],
}

/// The one pass over the elements of [`distance_loss`], specialised on what it writes so the
/// loop has no branches of its own and vectorises: returns `Σ w·ℓ` (in `f64`, element `i`
/// added to lane `i mod 8`, the order of [`Sum8`]) and fills `losses` (`w·ℓ`, when `KEEP`),
/// `dx` (`(scale·w)·f'` with a weight, else `f'`, when `GRAD`) and `raw` (`ℓ`, when `GRAD`
/// and `W`).
#[inline(always)]
fn pass<T: Real, const KEEP: bool, const GRAD: bool, const W: bool>(
    ops: Operands<'_, T>,
    scale: T,
    f: &impl Fn(T) -> (T, T),
    losses: &mut [T],
    dx: &mut [T],
    raw: &mut [T],
) -> f64 {
    let Operands { x, y, w } = ops;
    let n = x.len();
    let y = &y[..n];
    let w = if W { &w[..n] } else { w };
    let losses = if KEEP { &mut losses[..n] } else { losses };
    let dx = if GRAD { &mut dx[..n] } else { dx };
    let raw = if GRAD && W { &mut raw[..n] } else { raw };
    // Blocks of 512: first the element-wise loop (no reduction in it, so the loop vectoriser
    // takes it, selects and all), then the block's losses summed into the eight lanes. The
    // block length is a multiple of 8, so element `i` still goes to lane `i mod 8`.
    const BLOCK: usize = 512;
    let mut lanes = [0.0f64; 8];
    let mut buf = [T::zero(); BLOCK];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let len = end - start;
        let (xs, ys) = (&x[start..end], &y[start..end]);
        let ws = if W { &w[start..end] } else { &w[..0] };
        let block = &mut buf[..len];
        for k in 0..len {
            let (l, g) = f(xs[k] - ys[k]);
            // Autograd's order with a weight: the reduction's gradient times the weight, then
            // times f' (a huge weight over a huge Σw stays finite).
            let (wl, wg) = if W {
                (ws[k] * l, (scale * ws[k]) * g)
            } else {
                (l, g)
            };
            block[k] = wl;
            if GRAD {
                dx[start + k] = wg;
                if W {
                    raw[start + k] = l;
                }
            }
        }
        if KEEP {
            losses[start..end].copy_from_slice(block);
        }
        let chunks = block.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (lane, v) in lanes.iter_mut().zip(c) {
                *lane += v.f64();
            }
        }
        for (lane, v) in lanes.iter_mut().zip(rest) {
            *lane += v.f64();
        }
    }
    lanes_total(&lanes)
}

/// `sign(d)` as ATen's `sgn` computes it for reals: `(0 < d) − (d < 0)`, so `sign(0) = 0`
/// and `sign(NaN) = 0` (checked on torch 2.15: the L1 gradient at a NaN difference is 0).
#[inline(always)]
pub(crate) fn sign<T: Real>(d: T) -> T {
    if d > T::zero() {
        T::one()
    } else if d < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Shared checks for the regression kernels.

    use super::*;
    use crate::testing::{Rng, assert_grad, scalar};

    /// The signature shared by the four regression kernels (options bound).
    pub type Kernel = dyn Fn(
        ArrayViewD<'_, f64>,
        ArrayViewD<'_, f64>,
        Option<ArrayViewD<'_, f64>>,
        Reduction,
        bool,
    ) -> Result<LossOutput<f64>, LossError>;

    /// Checks every gradient against finite differences, for each reduction, with and without
    /// weight, with and without broadcasting.
    pub fn check_gradients(k: &Kernel, weighted: bool) {
        let mut rng = Rng::new(7);
        let cases: [(&[usize], &[usize]); 3] = [(&[3, 4], &[3, 4]), (&[3, 4], &[4]), (&[], &[])];
        for (xs, ys) in cases {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                for use_w in [false, true] {
                    if use_w && !weighted {
                        continue;
                    }
                    let x = rng.randn(xs).mapv(|v| v * 3.0);
                    let y = rng.randn(ys);
                    let w = rng.uniform_tensor(xs, 0.5, 2.0);
                    let run = |x: &ArrayD<f64>, y: &ArrayD<f64>, w: &ArrayD<f64>| {
                        let w = use_w.then(|| w.view());
                        k(x.view(), y.view(), w, reduction, true).unwrap()
                    };
                    let out = run(&x, &y, &w);
                    let what = format!("{xs:?}/{ys:?} {reduction:?} weight={use_w}");
                    assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                        scalar(&run(x, &y, &w))
                    });
                    assert_grad(&what, &y, out.grad("target").unwrap(), |y| {
                        scalar(&run(&x, y, &w))
                    });
                    if use_w {
                        assert_grad(&what, &w, out.grad("weight").unwrap(), |w| {
                            scalar(&run(&x, &y, w))
                        });
                    }
                }
            }
        }
    }
}
