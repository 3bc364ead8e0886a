//! `poisson_nll_loss` (`nn.PoissonNLLLoss`): `ℓ = exp(input) − target · input`, or
//! `input − target · log(input + eps)` without `log_input`, docs/losses.md.
//!
//! Input and target broadcast silently; no value is checked (as in PyTorch). `full` adds the
//! Stirling term `y·log y − y + ½·log(2π y)` only where `y > 1`. lossd returns the gradient
//! with respect to the input only: PyTorch's target gradient is NaN at `y ≤ 0` with `full`,
//! and lossd does not expose it (docs/differences.md item 11).

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::operands;
use crate::broadcast::unbroadcast;
use crate::reduction::{Reduction, blocked, reduce};
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real};

/// The Stirling approximation of `log(y!)` that `full = true` adds, as ATen computes it
/// (`2π` multiplies `y` in the element type).
#[inline(always)]
fn stirling<T: Real>(y: T) -> T {
    let two_pi = T::of(2.0 * std::f64::consts::PI);
    y * y.vln() - y + T::of(0.5) * (two_pi * y).vln()
}

/// `F.poisson_nll_loss(input, target, log_input, full, eps, reduction)`.
///
/// `input` is the log-rate (`log_input = true`) or the rate. Any shapes that broadcast (else a
/// `Shape` error on `"target"`); the unreduced loss has the broadcast shape. `eps` is used only
/// without `log_input`, and never validated. Gradient: `"input"` only, `ĝ·(exp(x) − y)` or
/// `ĝ·(1 − y/(x + eps))` per element; an input broadcast to a larger target has the upstream
/// gradient summed to its shape first, then its own derivative applied, as autograd does
/// ([`broadcast_input_grad`]).
pub fn poisson_nll_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    log_input: bool,
    full: bool,
    eps: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (xs, _, shape, n, x, y) = operands(&input, &target)?;
    let eps = T::of(eps);
    let g = T::of(if reduction == Reduction::Mean {
        1.0 / n as f64
    } else {
        1.0
    });

    let keep = reduction == Reduction::None;
    // A broadcast input's gradient is formed after the pass, as autograd forms it (below).
    let broadcast = xs != shape;
    let elementwise_grad = grad && !broadcast;
    let mut losses = if keep { vec![T::zero(); n] } else { Vec::new() };
    let mut dx = if elementwise_grad {
        vec![T::zero(); n]
    } else {
        Vec::new()
    };
    let (l, d) = (&mut losses[..], &mut dx[..]);
    macro_rules! go {
        ($($a:literal $b:literal $c:literal $d:literal),*) => {
            match (log_input, full, keep, elementwise_grad) {
                $(($a, $b, $c, $d) => vectorised!(pass::<T, $a, $b, $c, $d>(&x, &y, eps, g, l, d)),)*
            }
        };
    }
    let total = go!(
        false false false false, false false false true, false false true false,
        false false true true, false true false false, false true false true,
        false true true false, false true true true, true false false false,
        true false false true, true false true false, true false true true,
        true true false false, true true false true, true true true false,
        true true true true
    );

    let mut out = LossOutput::new(reduce(reduction, &shape, losses, total, n));
    if grad {
        let dx = if broadcast {
            broadcast_input_grad(&input, &y, &shape, log_input, eps, g)
        } else {
            ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n elements")
        };
        out.grads.push(("input", dx));
    }
    Ok(out)
}

/// The gradient of an input broadcast to `shape` (the target `y` laid out in `shape`), formed
/// as autograd forms it from PyTorch's `exp(x) − y·x` / `x − y·log(x + eps)`: the upstream
/// gradients summed to the input's shape first, then the input's own derivative applied —
/// `(Σĝ)·exp(x) + Σ(−ĝ·y)`, or `Σĝ + Σ(−ĝ·y) / (x + eps)` — not the element-wise derivative
/// summed. The two differ in rounding, and where the local derivative is infinite: rate input
/// 0 with eps 0 over targets of both signs is `Σĝ + Σ(−ĝ·y)/0` in torch (−inf for Σy > 0, +inf
/// for Σy < 0, NaN for Σy = 0), while the element-wise terms `ĝ − ĝ·y_i/0` mix `±inf` into
/// NaN. Over an empty broadcast the sums are 0, so the gradient is `0·exp(x)` or
/// `0/(x + eps)` (NaN where that is), as in torch.
fn broadcast_input_grad<T: Real>(
    input: &ArrayViewD<'_, T>,
    y: &[T],
    shape: &[usize],
    log_input: bool,
    eps: T,
    g: T,
) -> ArrayD<T> {
    let xs = input.shape();
    // Each input element stands for the same number of broadcast elements.
    let copies = if input.is_empty() {
        0
    } else {
        shape.iter().product::<usize>() / input.len()
    };
    // Σĝ over the copies (none over an empty broadcast, where a mean's ĝ = 1/0).
    let g_sum = if copies == 0 {
        T::zero()
    } else {
        T::of(copies as f64 * g.f64())
    };
    let neg_gy: Vec<T> = y.iter().map(|&v| (-g) * v).collect();
    let neg_gy = ArrayD::from_shape_vec(IxDyn(shape), neg_gy).expect("the broadcast shape");
    let mut dx = unbroadcast(neg_gy, xs);
    dx.zip_mut_with(input, |d, &x| {
        *d = if log_input {
            g_sum * x.vexp() + *d
        } else {
            g_sum + *d / (x + eps)
        }
    });
    dx
}

/// The pass over the elements in blocks of [`BLOCK`](crate::reduction::BLOCK), specialised on `log_input` (`LOG`),
/// `full` (`FULL`) and what it writes (`KEEP`: `losses`; `GRAD`: `dx`), so the element-wise
/// loop (vectorisable `exp`/`ln`; the Stirling term computed everywhere and selected where
/// `y > 1` or `y` is NaN) has no branches. Each block's losses go to the eight lanes (element
/// `i` to lane `i mod 8`, the order of [`crate::reduction::Sum8`]). Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const LOG: bool, const FULL: bool, const KEEP: bool, const GRAD: bool>(
    x: &[T],
    y: &[T],
    eps: T,
    g: T,
    losses: &mut [T],
    dx: &mut [T],
) -> f64 {
    let n = x.len();
    let y = &y[..n];
    let dx = if GRAD { &mut dx[..n] } else { dx };
    blocked::<T, KEEP>(
        n,
        losses,
        #[inline(always)]
        |r, block| {
            let (xs, ys) = (&x[r.clone()], &y[r.clone()]);
            let gs = if GRAD { &mut dx[r] } else { &mut dx[..0] };
            for k in 0..block.len() {
                let (xi, yi) = (xs[k], ys[k]);
                let l = if LOG {
                    let e = xi.vexp();
                    if GRAD {
                        gs[k] = g * e + (-g) * yi;
                    }
                    e - yi * xi
                } else {
                    let shifted = xi + eps;
                    if GRAD {
                        gs[k] = g + (-g) * yi / shifted;
                    }
                    xi - yi * shifted.vln()
                };
                // `masked_fill(target <= 1, 0)`: a NaN target keeps its (NaN) term.
                block[k] = if FULL && (yi > T::one() || yi.is_nan()) {
                    l + stirling(yi)
                } else {
                    l
                };
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
    use ndarray::array;

    #[test]
    fn an_empty_broadcast_gives_the_input_its_own_derivative_times_zero() {
        // torch 2.15: input [0, -1, 0.5, inf, NaN, -inf, 1000], target (0, 7), any reduction
        // and `full`: input.grad is 0·exp(x) with log_input ([0, 0, 0, NaN, NaN, 0, NaN]),
        // else 0/(x + eps) ([NaN at x = 0 only with eps = 0, NaN at NaN, else 0]).
        let nan = f64::NAN;
        let x = array![
            0.0,
            -1.0,
            0.5,
            f64::INFINITY,
            nan,
            f64::NEG_INFINITY,
            1000.0
        ]
        .into_dyn();
        let y = ArrayD::<f64>::zeros(IxDyn(&[0, 7]));
        let cases = [
            (true, 1e-8, [0.0, 0.0, 0.0, nan, nan, 0.0, nan]),
            (false, 1e-8, [0.0, 0.0, 0.0, 0.0, nan, 0.0, 0.0]),
            (false, 0.0, [nan, 0.0, 0.0, 0.0, nan, 0.0, 0.0]),
        ];
        for (log_input, eps, want) in cases {
            for full in [false, true] {
                for reduction in [Reduction::Sum, Reduction::Mean, Reduction::None] {
                    let out =
                        poisson_nll_loss(x.view(), y.view(), log_input, full, eps, reduction, true)
                            .unwrap();
                    let got = out.grad("input").unwrap();
                    // Exact: NaN where torch has NaN, the same value elsewhere.
                    let got: Vec<f64> = got.iter().copied().collect();
                    assert_close("input", &got, &want, 0.0, 0.0);
                }
            }
        }
    }

    #[test]
    fn a_broadcast_input_sums_the_upstream_gradient_before_its_derivative() {
        // torch 2.15, rate input, eps 0: x = [0] over y = [0.5, −2] ('sum') has gradient
        // 2 + 1.5/0 = +inf (the element-wise terms 1 − 0.5/0 and 1 + 2/0 would mix ±inf into
        // NaN); x = [[0], [1.5]] over y = [[0.5, 2, −1], [3, 0.25, 1]] ('mean'):
        // [−inf, 0.027777777777777846]. Log input, x = [800, 1] over y = [[1e308, 2],
        // [1e308, −3]] ('sum'): [NaN, 6.43656365691809].
        let grad = |x: ArrayD<f64>, y: ArrayD<f64>, log_input: bool, reduction| {
            let out = poisson_nll_loss(x.view(), y.view(), log_input, false, 0.0, reduction, true);
            out.unwrap()
                .grad("input")
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>()
        };
        let g = grad(
            array![0.0].into_dyn(),
            array![0.5, -2.0].into_dyn(),
            false,
            Reduction::Sum,
        );
        assert_eq!(g, vec![f64::INFINITY]);
        let g = grad(
            array![[0.0], [1.5]].into_dyn(),
            array![[0.5, 2.0, -1.0], [3.0, 0.25, 1.0]].into_dyn(),
            false,
            Reduction::Mean,
        );
        assert_close(
            "rate",
            &g,
            &[f64::NEG_INFINITY, 0.027777777777777846],
            1e-14,
            0.0,
        );
        let g = grad(
            array![800.0, 1.0].into_dyn(),
            array![[1e308, 2.0], [1e308, -3.0]].into_dyn(),
            true,
            Reduction::Sum,
        );
        assert_close("log", &g, &[f64::NAN, 6.43656365691809], 1e-15, 0.0);
    }

    #[test]
    fn log_input_full_matches_the_worked_example_of_losses_md() {
        // The worked example: x = [0.5, −1, 2], y = [0, 1, 3] (recovered from its gradients
        // exp(x) − y and −x + Stirling').
        let x = array![0.5, -1.0, 2.0].into_dyn();
        let y = array![0.0, 1.0, 3.0].into_dyn();
        let out =
            poisson_nll_loss(x.view(), y.view(), true, true, 1e-8, Reduction::None, true).unwrap();
        assert_array_close(
            "loss",
            &out.loss,
            &[1.6487212707, 1.3678794412, 3.1531376425],
            1e-10,
            0.0,
        );
        assert_array_close(
            "dx",
            out.grad("input").unwrap(),
            &[1.6487212707, -0.6321205588, 4.3890560989],
            1e-10,
            0.0,
        );
        assert_eq!(
            out.grads.len(),
            1,
            "no target gradient (docs/differences.md item 11)"
        );
    }

    #[test]
    fn rate_input_matches_the_worked_example_of_losses_md() {
        // The worked example: input = [0.5, 1, 2], y = [0, 1, 3] (recovered from its gradients).
        let x = array![0.5, 1.0, 2.0].into_dyn();
        let y = array![0.0, 1.0, 3.0].into_dyn();
        let out = poisson_nll_loss(
            x.view(),
            y.view(),
            false,
            false,
            1e-8,
            Reduction::None,
            true,
        )
        .unwrap();
        assert_array_close(
            "loss",
            &out.loss,
            &[0.5, 0.99999999, -0.0794415567],
            1e-9,
            0.0,
        );
        assert_array_close(
            "dx",
            out.grad("input").unwrap(),
            &[1.0, 1e-08, -0.4999999925],
            1e-9,
            1e-10,
        );
    }

    #[test]
    fn the_stirling_term_applies_only_above_one() {
        let x = array![0.0, 0.0, 0.0, 0.0, 0.0].into_dyn();
        let y = array![-2.0, 0.0, 0.5, 1.0, 1.5].into_dyn();
        let plain = poisson_nll_loss(
            x.view(),
            y.view(),
            true,
            false,
            1e-8,
            Reduction::None,
            false,
        )
        .unwrap();
        let full =
            poisson_nll_loss(x.view(), y.view(), true, true, 1e-8, Reduction::None, false).unwrap();
        let d: Vec<f64> = full
            .loss
            .iter()
            .zip(plain.loss.iter())
            .map(|(a, b)| a - b)
            .collect();
        let s = 1.5 * 1.5f64.ln() - 1.5 + 0.5 * (2.0 * std::f64::consts::PI * 1.5).ln();
        assert_close("stirling", &d, &[0.0, 0.0, 0.0, 0.0, s], 1e-15, 0.0);
    }

    #[test]
    fn a_nan_target_keeps_its_nan_stirling_term() {
        let x = array![0.0].into_dyn();
        let y = array![f64::NAN].into_dyn();
        let out =
            poisson_nll_loss(x.view(), y.view(), true, true, 1e-8, Reduction::Sum, false).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
    }

    #[test]
    fn eps_is_used_only_without_log_input() {
        let x = array![0.0].into_dyn();
        let y = array![2.0].into_dyn();
        let out =
            poisson_nll_loss(x.view(), y.view(), false, false, 0.5, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&(-2.0 * 0.5f64.ln())));
        assert_eq!(out.grad("input").unwrap().first(), Some(&(1.0 - 2.0 / 0.5)));
        // A zero rate without eps: −y·log(0) = +inf, as in PyTorch.
        let out =
            poisson_nll_loss(x.view(), y.view(), false, false, 0.0, Reduction::Sum, false).unwrap();
        assert_eq!(out.loss.first(), Some(&f64::INFINITY));
    }

    #[test]
    fn reductions_follow_the_default_rule() {
        let x = array![[0.1, 0.2], [0.3, 0.4]].into_dyn();
        let y = array![1.0, 2.0].into_dyn();
        let none = poisson_nll_loss(
            x.view(),
            y.view(),
            true,
            false,
            1e-8,
            Reduction::None,
            false,
        )
        .unwrap();
        let sum =
            poisson_nll_loss(x.view(), y.view(), true, false, 1e-8, Reduction::Sum, false).unwrap();
        let mean = poisson_nll_loss(
            x.view(),
            y.view(),
            true,
            false,
            1e-8,
            Reduction::Mean,
            false,
        )
        .unwrap();
        assert_eq!(none.loss.shape(), &[2, 2]);
        let total: f64 = none.loss.iter().sum();
        assert!((sum.loss.first().unwrap() - total).abs() < 1e-15);
        assert!((mean.loss.first().unwrap() - total / 4.0).abs() < 1e-15);
        let e = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let m =
            poisson_nll_loss(e.view(), e.view(), true, false, 1e-8, Reduction::Mean, true).unwrap();
        assert!(m.loss.first().unwrap().is_nan());
        let s =
            poisson_nll_loss(e.view(), e.view(), true, false, 1e-8, Reduction::Sum, true).unwrap();
        assert_eq!(s.loss.first(), Some(&0.0));
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_rejected() {
        let x = array![0.1, 0.2, 0.3].into_dyn();
        let y = array![1.0, 2.0].into_dyn();
        let e = poisson_nll_loss(x.view(), y.view(), true, false, 1e-8, Reduction::Sum, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(5);
        let cases: [(&[usize], &[usize]); 3] = [(&[3, 4], &[3, 4]), (&[4], &[3, 4]), (&[], &[2])];
        for (xs, ys) in cases {
            for (log_input, full) in [(true, false), (true, true), (false, false), (false, true)] {
                for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    let x = if log_input {
                        rng.randn(xs)
                    } else {
                        rng.uniform_tensor(xs, 0.5, 3.0)
                    };
                    let y = rng.uniform_tensor(ys, 0.0, 5.0).mapv(f64::floor);
                    let run = |x: &ArrayD<f64>| {
                        poisson_nll_loss(x.view(), y.view(), log_input, full, 1e-8, reduction, true)
                            .unwrap()
                    };
                    let out = run(&x);
                    let what = format!("{xs:?}/{ys:?} log_input={log_input} full={full}");
                    assert_grad(&what, &x, out.grad("input").unwrap(), |x| scalar(&run(x)));
                }
            }
        }
    }
}
