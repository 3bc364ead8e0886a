//! `kl_div` (`nn.KLDivLoss`): `ℓ = xlogy(target, target) − target · input`, or
//! `exp(target) · (target − input)` with `log_target`, docs/losses.md.
//!
//! Input and target broadcast silently. lossd mirrors PyTorch exactly, including its quirks:
//! `reduction = Mean` divides by every element and adds PyTorch's warning to `warnings`
//! (docs/differences.md item 10); `BatchMean` divides by `input.size(0)` (a 0-d input gets the plain
//! sum); a zero target contributes 0 (NaN when the input is infinite), a negative one NaN; the
//! target gradient is NaN where the target is 0, as autograd's `xlogy` derivative gives.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::operands;
use crate::broadcast::unbroadcast;
use crate::reduction::{Reduction, Sum8, mean};
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real};

/// The `reduction` of `kl_div`: PyTorch's three plus `'batchmean'`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KlReduction {
    /// The unreduced loss tensor (the broadcast shape of input and target).
    None,
    /// The mean over every element (PyTorch warns that this is not the KL divergence).
    #[default]
    Mean,
    /// The sum over every element.
    Sum,
    /// The sum divided by `input.size(0)`: the KL divergence per sample.
    BatchMean,
}

impl KlReduction {
    /// The name PyTorch uses (`"none"`, `"mean"`, `"sum"`, `"batchmean"`).
    pub fn as_str(self) -> &'static str {
        match self {
            KlReduction::None => "none",
            KlReduction::Mean => "mean",
            KlReduction::Sum => "sum",
            KlReduction::BatchMean => "batchmean",
        }
    }
}

impl From<Reduction> for KlReduction {
    fn from(r: Reduction) -> Self {
        match r {
            Reduction::None => KlReduction::None,
            Reduction::Mean => KlReduction::Mean,
            Reduction::Sum => KlReduction::Sum,
        }
    }
}

/// The warning `F.kl_div` prints for `reduction='mean'`, verbatim (the missing spaces between
/// its sentences are PyTorch's).
pub const MEAN_WARNING: &str = "reduction: 'mean' divides the total loss by both the batch size and the support size.\
'batchmean' divides only by the batch size, and aligns with the KL div math definition.\
'mean' will be changed to behave the same as 'batchmean' in the next major release.";

/// `xlogy(x, y)` as ATen computes it: NaN if `y` is NaN, 0 if `x` is 0, else `x·log(y)`;
/// `ln_y` is `log(y)`, computed once by the caller. Selects, no branches: it vectorises.
#[inline(always)]
fn xlogy<T: Real>(x: T, y: T, ln_y: T) -> T {
    let v = if x == T::zero() { T::zero() } else { x * ln_y };
    if y.is_nan() { y } else { v }
}

/// One block of [`kl_div`]'s element-wise pass, specialised on `log_target` and `grad` so that
/// the loop has no branches and vectorises: the losses into `l`, the gradients (scaled by the
/// upstream `g`) into `dx` and `dy`.
///
/// `SPLIT` (a target smaller than the broadcast shape): `dy` gets only the part of the target
/// gradient that autograd sums over the broadcast before applying the target's own derivative
/// (`−g·x`, or `g·(y − x)` with `log_target`); [`kl_div`] finishes it per target element.
#[inline(always)]
fn block<T: Real, const LOG: bool, const GRAD: bool, const SPLIT: bool>(
    x: &[T],
    y: &[T],
    g: T,
    l: &mut [T],
    dx: &mut [T],
    dy: &mut [T],
) {
    let n = l.len();
    let (x, y) = (&x[..n], &y[..n]);
    let (dx, dy) = if GRAD {
        (&mut dx[..n], &mut dy[..n])
    } else {
        (dx, dy)
    };
    for k in 0..n {
        let (xi, yi) = (x[k], y[k]);
        l[k] = if LOG {
            let e = yi.vexp();
            if GRAD {
                // Autograd's order: mul, then exp's backward, plus the `(y − x)` branch.
                dx[k] = -(g * e);
                dy[k] = if SPLIT {
                    g * (yi - xi)
                } else {
                    g * (yi - xi) * e + g * e
                };
            }
            e * (yi - xi)
        } else {
            let ln_y = yi.vln();
            if GRAD {
                dx[k] = -(g * yi);
                dy[k] = if SPLIT {
                    (-g) * xi
                } else {
                    xlogy_grad(g, yi, ln_y) + (-g) * xi
                };
            }
            xlogy(yi, yi, ln_y) - yi * xi
        };
    }
}

/// The gradient of `xlogy(y, y)` for the upstream `g`: `xlogy(y ≠ 0, y) + y/y` (NaN at
/// y = 0, as in PyTorch), each term times `g` before it is divided, as autograd forms it.
#[inline(always)]
fn xlogy_grad<T: Real>(g: T, y: T, ln_y: T) -> T {
    let nonzero = if y != T::zero() { T::one() } else { T::zero() };
    g * xlogy(nonzero, y, ln_y) + g * y / y
}

/// What [`pass`] computes: the target's form, whether it keeps the losses and computes the
/// gradients, and whether the target's gradient is split (see [`kl_div`]).
#[derive(Clone, Copy)]
struct Mode {
    log_target: bool,
    keep: bool,
    grad: bool,
    split: bool,
}

/// [`kl_div`]'s pass over the elements in blocks: each block's losses are summed in order into
/// `total` (the order of adding them one by one) and kept in `losses` when `keep`.
#[inline(always)]
fn pass<T: Real>(
    x: &[T],
    y: &[T],
    g: T,
    mode: Mode,
    losses: &mut [T],
    dx: &mut [T],
    dy: &mut [T],
) -> f64 {
    let Mode {
        log_target,
        keep,
        grad,
        split,
    } = mode;
    const BLOCK: usize = 512;
    let n = x.len();
    let mut total = Sum8::new();
    let mut lb = [T::zero(); BLOCK];
    let mut sums = [0.0f64; BLOCK];
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let len = end - start;
        let (xs, ys, l) = (&x[start..end], &y[start..end], &mut lb[..len]);
        let (gx, gy) = if grad {
            (&mut dx[start..end], &mut dy[start..end])
        } else {
            (&mut dx[..0], &mut dy[..0])
        };
        match (log_target, grad, split) {
            (true, true, false) => block::<T, true, true, false>(xs, ys, g, l, gx, gy),
            (true, true, true) => block::<T, true, true, true>(xs, ys, g, l, gx, gy),
            (true, false, _) => block::<T, true, false, false>(xs, ys, g, l, gx, gy),
            (false, true, false) => block::<T, false, true, false>(xs, ys, g, l, gx, gy),
            (false, true, true) => block::<T, false, true, true>(xs, ys, g, l, gx, gy),
            (false, false, _) => block::<T, false, false, false>(xs, ys, g, l, gx, gy),
        }
        if keep {
            losses[start..end].copy_from_slice(l);
        }
        for (s, v) in sums.iter_mut().zip(l.iter()) {
            *s = v.f64();
        }
        total.extend(&sums[..len]);
    }
    total.total()
}

/// `F.kl_div(input, target, reduction, log_target)`.
///
/// `input` holds log-probabilities; `target` probabilities, or log-probabilities with
/// `log_target`. Any shapes that broadcast (else a `Shape` error on `"target"`); the unreduced
/// loss has the broadcast shape. Gradients: `"input"` (`−y`, or `−exp(y)`) and `"target"`
/// (`log y + 1 − x`, NaN at `y = 0`; or `exp(y)·(y − x + 1)`), each summed back to its
/// argument's shape. `Mean` adds [`MEAN_WARNING`] to the output's warnings.
pub fn kl_div<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    log_target: bool,
    reduction: KlReduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (xs, ys, shape, n, x, y) = operands(&input, &target)?;

    // `batchmean` is PyTorch's sum divided afterwards by the input's first size (0-d: by 1).
    let batch = xs.first().copied().unwrap_or(1);
    let upstream = T::of(match reduction {
        KlReduction::Mean => 1.0 / n as f64,
        KlReduction::BatchMean => 1.0 / batch as f64,
        KlReduction::None | KlReduction::Sum => 1.0,
    });

    let keep = reduction == KlReduction::None;
    let zeros = |on: bool| if on { vec![T::zero(); n] } else { Vec::new() };
    let (mut losses, mut dx, mut dy) = (zeros(keep), zeros(grad), zeros(grad));
    let g = upstream;
    // A broadcast target: autograd sums the upstream gradient over the broadcast before the
    // target's own derivative (`y/y`, `exp(y)`) applies, which matters where a per-element
    // product underflows (a subnormal target under `mean`) or overflows.
    let split = grad && n > 0 && ys != shape;
    let mode = Mode {
        log_target,
        keep,
        grad,
        split,
    };
    let total = vectorised!(pass(&x, &y, g, mode, &mut losses, &mut dx, &mut dy));

    let loss = match reduction {
        KlReduction::None => ArrayD::from_shape_vec(IxDyn(&shape), losses).expect("n elements"),
        KlReduction::Sum => ndarray::arr0(T::of(total)).into_dyn(),
        KlReduction::Mean => ndarray::arr0(T::of(mean(total, n))).into_dyn(),
        KlReduction::BatchMean => {
            // 0/0 for an input of size 0 along its first dimension: NaN, as in PyTorch.
            ndarray::arr0(T::of(total / batch as f64)).into_dyn()
        }
    };
    let mut out = LossOutput::new(loss);
    if reduction == KlReduction::Mean {
        out.warnings.push(MEAN_WARNING.to_string());
    }
    if grad {
        let dx = ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n elements");
        let dy = ArrayD::from_shape_vec(IxDyn(&shape), dy).expect("n elements");
        out.grads.push(("input", unbroadcast(dx, &xs)));
        let mut dy = unbroadcast(dy, &ys);
        if split {
            // Each target element stands for n / |target| broadcast copies; the upstream
            // summed over them as `unbroadcast` sums.
            let copies = n / target.len();
            let sum_copies = |v: T| T::of((0..copies).fold(0.0, |s, _| s + v.f64()));
            let gsum = sum_copies(g);
            dy.zip_mut_with(&target, |d, &y| {
                *d = if log_target {
                    let e = y.vexp();
                    *d * e + sum_copies(g * e)
                } else {
                    xlogy_grad(gsum, y, y.vln()) + *d
                }
            });
        }
        if n == 0 {
            // Over an empty broadcast autograd still applies the target's own derivative to
            // the (zero) summed gradient: xlogy(y, y)'s 0·y/y, or exp(y)'s 0·exp(y). NaN where
            // y is 0, ±inf or NaN (log_target: where exp(y) overflows, or y is NaN), as in
            // torch 2.15.
            dy.zip_mut_with(&target, |d, &y| {
                *d = if log_target {
                    T::zero() * y.exp()
                } else {
                    T::zero() * y / y
                }
            });
        }
        out.grads.push(("target", dy));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
    use ndarray::array;

    /// The worked example's KLDivLoss case (x, y recovered from its gradients `−y/2` and
    /// `(log y + 1 − x)/2`; `x[0][0]` is free since `y[0][0] = 0`).
    fn worked_example() -> (ArrayD<f64>, ArrayD<f64>) {
        let x = array![[-1.0, -0.5, -2.0], [-0.1, -3.0, -1.5]].into_dyn();
        let y = array![[0.0, 0.6, 0.4], [0.5, 0.25, 0.25]].into_dyn();
        (x, y)
    }

    #[test]
    fn an_empty_input_gives_the_target_its_own_derivative_times_zero() {
        // torch 2.15: input (0, 6), target [0, -1, 0.5, inf, NaN, -inf]: target.grad is
        // [NaN, 0, 0, NaN, NaN, NaN], and with log_target [0, 0, 0, NaN, NaN, 0], whatever the
        // reduction.
        let nan = f64::NAN;
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 6]));
        let y = array![0.0, -1.0, 0.5, f64::INFINITY, nan, f64::NEG_INFINITY].into_dyn();
        for (log_target, want) in [
            (false, [nan, 0.0, 0.0, nan, nan, nan]),
            (true, [0.0, 0.0, 0.0, nan, nan, 0.0]),
        ] {
            for reduction in [KlReduction::Sum, KlReduction::BatchMean, KlReduction::None] {
                let out = kl_div(x.view(), y.view(), log_target, reduction, true).unwrap();
                let got = out.grad("target").unwrap();
                // Exact: NaN where torch has NaN, the same value elsewhere.
                let got: Vec<f64> = got.iter().copied().collect();
                assert_close("target", &got, &want, 0.0, 0.0);
                assert_eq!(out.grad("input").unwrap().shape(), &[0, 6]);
            }
        }
    }

    #[test]
    fn batchmean_matches_the_worked_example_of_losses_md() {
        let (x, y) = worked_example();
        let out = kl_div(x.view(), y.view(), false, KlReduction::BatchMean, true).unwrap();
        assert_array_close("loss", &out.loss, &[0.2811337811], 1e-9, 0.0);
        assert_array_close(
            "dx",
            out.grad("input").unwrap(),
            &[-0.0, -0.3, -0.2, -0.25, -0.125, -0.125],
            1e-15,
            0.0,
        );
        let want_dy = [
            f64::NAN,
            0.4945871881,
            1.0418546341,
            0.2034264097,
            1.3068528194,
            0.5568528194,
        ];
        let dy = out.grad("target").unwrap();
        assert_close("dy", dy.as_slice().unwrap(), &want_dy, 1e-9, 0.0);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn mean_divides_by_every_element_and_warns() {
        let (x, y) = worked_example();
        let out = kl_div(x.view(), y.view(), false, KlReduction::Mean, true).unwrap();
        assert_array_close("loss", &out.loss, &[0.0937112604], 1e-9, 0.0);
        let want_dx = [
            -0.0,
            -0.1,
            -0.0666666667,
            -0.0833333333,
            -0.0416666667,
            -0.0416666667,
        ];
        let dx = out.grad("input").unwrap();
        assert_close("dx", dx.as_slice().unwrap(), &want_dx, 1e-9, 0.0);
        assert_eq!(out.warnings, vec![MEAN_WARNING.to_string()]);
        assert!(MEAN_WARNING.contains("'batchmean' divides only by the batch size"));
    }

    #[test]
    fn zero_targets_contribute_zero_unless_the_input_is_infinite() {
        let x = array![-1.0, f64::INFINITY, f64::NEG_INFINITY, 1.0, f64::NAN].into_dyn();
        let y = array![0.0, 0.0, 0.0, -1.0, 0.0].into_dyn();
        let out = kl_div(x.view(), y.view(), false, KlReduction::None, true).unwrap();
        let l = out.loss.as_slice().unwrap();
        assert_eq!(l[0], 0.0);
        assert!(l[1..].iter().all(|v| v.is_nan()));
        // Checked on torch 2.15: input grad −y, target grad NaN at every one of these.
        assert_array_close(
            "dx",
            out.grad("input").unwrap(),
            &[-0.0, -0.0, -0.0, 1.0, -0.0],
            0.0,
            0.0,
        );
        assert!(out.grad("target").unwrap().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn log_target_uses_the_exponential_of_the_target() {
        let x = array![-0.5, -2.0, -1.0].into_dyn();
        let y = array![-1.0, -0.3, f64::NEG_INFINITY].into_dyn();
        let out = kl_div(x.view(), y.view(), true, KlReduction::None, true).unwrap();
        let l = out.loss.as_slice().unwrap();
        assert!((l[0] - (-1.0f64).exp() * (-0.5)).abs() < 1e-15);
        assert!((l[1] - (-0.3f64).exp() * 1.7).abs() < 1e-15);
        // log(0) target: 0·(−inf) is NaN, as in PyTorch.
        assert!(l[2].is_nan());
        let dx = out.grad("input").unwrap();
        assert_eq!(dx[[2]], -0.0);
        assert!(out.grad("target").unwrap()[[2]].is_nan());
    }

    /// torch 2.15 (issue 28): a subnormal target broadcast over the input. Autograd sums the
    /// upstream 1/3 over the three copies before `y/y` (1·y/y = 1), where per element
    /// (1/3)·y underflows to 0: the target gradient is log y + 1, not log y.
    #[test]
    fn a_broadcast_subnormal_target_gets_the_summed_upstream_gradient() {
        let x = array![0.0, 0.0, 0.0].into_dyn();
        let y = array![5e-324].into_dyn();
        for reduction in [KlReduction::Mean, KlReduction::BatchMean] {
            let out = kl_div(x.view(), y.view(), false, reduction, true).unwrap();
            let dy = out.grad("target").unwrap();
            assert_eq!(
                dy.as_slice().unwrap(),
                &[-743.4400719213812],
                "{reduction:?}"
            );
        }
        // log_target: the upstream times (y − x) summed, then times exp(y) (the smallest
        // subnormal), plus the summed g·exp(y) (each (1/3)·exp(y) is 0). torch 2.15:
        // −3.676e-321, where per element each third underflows on its own.
        let y = array![-744.5].into_dyn();
        let out = kl_div(x.view(), y.view(), true, KlReduction::Mean, true).unwrap();
        assert_eq!(
            out.grad("target").unwrap().as_slice().unwrap(),
            &[-3.676e-321]
        );
        // Whatever the split, ordinary values agree with the unbroadcast computation.
        let x = array![[-0.5, -1.0], [-2.0, -0.25]].into_dyn();
        let y = array![0.3, 0.7].into_dyn();
        let yb = array![[0.3, 0.7], [0.3, 0.7]].into_dyn();
        for log_target in [false, true] {
            let a = kl_div(x.view(), y.view(), log_target, KlReduction::Sum, true).unwrap();
            let b = kl_div(x.view(), yb.view(), log_target, KlReduction::Sum, true).unwrap();
            let want = unbroadcast(b.grad("target").unwrap().clone(), &[2]);
            assert_array_close(
                "dy",
                a.grad("target").unwrap(),
                want.as_slice().unwrap(),
                1e-15,
                0.0,
            );
        }
    }

    #[test]
    fn batchmean_of_a_0_d_input_is_the_plain_sum() {
        let x = ndarray::arr0(-0.5).into_dyn();
        let y = array![0.2, 0.3].into_dyn();
        let b = kl_div(x.view(), y.view(), false, KlReduction::BatchMean, true).unwrap();
        let s = kl_div(x.view(), y.view(), false, KlReduction::Sum, true).unwrap();
        assert_eq!(b, s);
    }

    #[test]
    fn batchmean_uses_the_input_first_size_not_the_broadcast_one() {
        let x = array![[-0.5, -1.0]].into_dyn();
        let y = array![[0.2, 0.3], [0.4, 0.1], [0.5, 0.5]].into_dyn();
        let b = kl_div(x.view(), y.view(), false, KlReduction::BatchMean, false).unwrap();
        let s = kl_div(x.view(), y.view(), false, KlReduction::Sum, false).unwrap();
        assert_eq!(b.loss, s.loss);
    }

    #[test]
    fn empty_inputs_give_nan_means_and_a_zero_sum() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let y = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
        let r = |red| {
            *kl_div(x.view(), y.view(), false, red, true)
                .unwrap()
                .loss
                .first()
                .unwrap()
        };
        assert!(r(KlReduction::Mean).is_nan());
        assert!(r(KlReduction::BatchMean).is_nan());
        assert_eq!(r(KlReduction::Sum), 0.0);
        // PyTorch divides by input.size(0) = 3 here: 0/3.
        let x = ArrayD::<f64>::zeros(IxDyn(&[3, 0]));
        let out = kl_div(x.view(), x.view(), false, KlReduction::BatchMean, false).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_rejected() {
        let x = array![[0.1, 0.2, 0.3]].into_dyn();
        let y = array![0.1, 0.2].into_dyn();
        let e = kl_div(x.view(), y.view(), false, KlReduction::Sum, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        assert!(e.message.contains("[1, 3]") && e.message.contains("[2]"));
    }

    #[test]
    fn float32_computes_in_float32() {
        let x = array![-0.1f32, -0.7].into_dyn();
        let y = array![0.3f32, 0.7].into_dyn();
        let out = kl_div(x.view(), y.view(), false, KlReduction::Sum, false).unwrap();
        let want: f64 = [(0.3f32, -0.1f32), (0.7, -0.7)]
            .iter()
            .map(|&(y, x)| f64::from(y * y.ln() - y * x))
            .sum();
        assert_eq!(out.loss.first(), Some(&(want as f32)));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        let cases: [(&[usize], &[usize]); 3] =
            [(&[3, 4], &[3, 4]), (&[3, 4], &[4]), (&[1], &[2, 3])];
        for (xs, ys) in cases {
            for log_target in [false, true] {
                for reduction in [
                    KlReduction::None,
                    KlReduction::Mean,
                    KlReduction::Sum,
                    KlReduction::BatchMean,
                ] {
                    let x = rng.randn(xs);
                    let y = if log_target {
                        rng.randn(ys)
                    } else {
                        rng.uniform_tensor(ys, 0.1, 1.0)
                    };
                    let run = |x: &ArrayD<f64>, y: &ArrayD<f64>| {
                        kl_div(x.view(), y.view(), log_target, reduction, true).unwrap()
                    };
                    let out = run(&x, &y);
                    let what = format!("{xs:?}/{ys:?} log_target={log_target} {reduction:?}");
                    assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                        scalar(&run(x, &y))
                    });
                    assert_grad(&what, &y, out.grad("target").unwrap(), |y| {
                        scalar(&run(&x, y))
                    });
                }
            }
        }
    }

    /// The vector-compiled pass (AVX-512 or AVX2, the widest the CPU has) gives the bits of the
    /// baseline one: total, losses and both gradients, both target forms, f32 and f64, zeros,
    /// negative and NaN targets included, over a length that is not a multiple of the block.
    #[test]
    fn vector_and_baseline_passes_are_bit_identical() {
        fn run<T: Real>(x: &[T], y: &[T], log: bool, vector: bool) -> Vec<u64> {
            let n = x.len();
            let (mut l, mut dx, mut dy) =
                (vec![T::zero(); n], vec![T::zero(); n], vec![T::zero(); n]);
            let t = crate::vmath::dispatch_with(
                vector,
                #[inline(always)]
                || {
                    let mode = Mode {
                        log_target: log,
                        keep: true,
                        grad: true,
                        split: false,
                    };
                    pass(x, y, T::of(0.25), mode, &mut l, &mut dx, &mut dy)
                },
            );
            let mut bits = vec![t.to_bits()];
            bits.extend(l.iter().chain(&dx).chain(&dy).map(|v| v.f64().to_bits()));
            bits
        }
        let mut rng = Rng::new(23);
        let n = 2 * 512 + 77;
        let x: Vec<f64> = (0..n).map(|_| rng.range(-5.0, 0.0)).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| match i % 17 {
                0 => 0.0,
                1 => f64::NAN,
                2 => -0.5,
                _ => rng.range(0.0, 1.0),
            })
            .collect();
        let (xf, yf): (Vec<f32>, Vec<f32>) = (
            x.iter().map(|&v| v as f32).collect(),
            y.iter().map(|&v| v as f32).collect(),
        );
        for log in [false, true] {
            assert_eq!(
                run(&x, &y, log, true),
                run(&x, &y, log, false),
                "f64 log_target {log}"
            );
            assert_eq!(
                run(&xf, &yf, log, true),
                run(&xf, &yf, log, false),
                "f32 log_target {log}"
            );
        }
    }
}
