//! `gaussian_nll_loss` (`nn.GaussianNLLLoss`):
//! `ℓ = ½ (log max(var, eps) + (input − target)² / max(var, eps))`, plus `½ log 2π` with
//! `full`, docs/losses.md.
//!
//! lossd mirrors PyTorch (docs/differences.md item 12): negative variances are rejected first, then
//! `var`'s shape is checked by PyTorch's rule (the input's shape; the input's shape without
//! its last dimension, which gets a trailing 1; or the input's rank with the sizes where they
//! differ summing to 1), then input, target and var broadcast. The clamp at `eps` is invisible
//! to the gradient: `∂/∂var` is evaluated at the clamped value and passed straight through.
//! `var` may also be a plain number (PyTorch's float `var`), which has no gradient.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, Axis, Dimension, IxDyn};

use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::error::fmt_shape;
use crate::reduction::{Reduction, blocked, reduce};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real};

/// The `var` argument: a tensor of variances, or one variance for every element.
#[derive(Clone, Debug)]
pub enum Var<'a, T> {
    /// Variances under PyTorch's shape rule (see [`gaussian_nll_loss`]); differentiable.
    Tensor(ArrayViewD<'a, T>),
    /// One variance (PyTorch's Python-float `var`); no gradient.
    Scalar(f64),
}

/// `var`'s shape as the loss broadcasts it, or `None` if PyTorch rejects it ("var is of
/// incorrect size").
pub fn effective_var_shape(input: &[usize], var: &[usize]) -> Option<Vec<usize>> {
    if var == input {
        return Some(var.to_vec());
    }
    if let Some((_, leading)) = input.split_last()
        && var == leading
    {
        let mut s = var.to_vec();
        s.push(1);
        return Some(s);
    }
    // PyTorch's test: the sizes of var where they differ from input's sum to 1.
    let mismatched = input
        .iter()
        .zip(var)
        .filter(|(a, b)| a != b)
        .fold(0usize, |acc, (_, &b)| acc.saturating_add(b));
    (var.len() == input.len() && mismatched == 1).then(|| var.to_vec())
}

/// `clamp_min(v, eps)` as ATen computes it: NaN if either is NaN.
#[inline(always)]
fn clamp_min<T: Real>(v: T, eps: T) -> T {
    if v.is_nan() || eps.is_nan() {
        T::nan()
    } else if v < eps {
        eps
    } else {
        v
    }
}

/// `F.gaussian_nll_loss(input, target, var, full, eps, reduction)`.
///
/// `var` is [`Var::Tensor`] with the input's shape, the input's shape without its last
/// dimension, or the input's rank with exactly one dimension where var has size 1 (a 0-d var
/// only for a 1-D input), else a `Shape` error on `"var"`; or [`Var::Scalar`]. A negative
/// variance is a `Value` error on `"var"` (pointing at the first negative entry; NaN passes).
/// Input, target and var broadcast (else a `Shape` error on `"target"` or `"var"`); the
/// unreduced loss has the broadcast shape. Gradients: `"input"` `(x − y)/v`, `"target"`
/// `−(x − y)/v`, and for a tensor var `"var"` `½ (1/v − (x − y)²/v²)` at the clamped `v`,
/// each summed back to its argument's shape.
pub fn gaussian_nll_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    var: Var<'_, T>,
    full: bool,
    eps: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (xs, ys) = (input.shape().to_vec(), target.shape().to_vec());
    match &var {
        Var::Scalar(v) if *v < 0.0 => {
            return Err(LossError::value(
                "var",
                format!("var is {v}, but a variance must not be negative"),
            ));
        }
        Var::Tensor(v) => {
            // A fast scan first (the indexed iteration over a dynamic-rank array costs more
            // than the whole loss), the index only when there is a negative entry.
            let negative = match v.as_slice_memory_order() {
                Some(s) => s.iter().any(|x| *x < T::zero()),
                None => v.iter().any(|x| *x < T::zero()),
            };
            if negative && let Some((idx, bad)) = v.indexed_iter().find(|(_, x)| **x < T::zero()) {
                return Err(LossError::value(
                    "var",
                    format!(
                        "var has the negative entry {bad} at index {:?}, but a variance must not be negative",
                        idx.slice()
                    ),
                )
                .at(idx.slice()));
            }
        }
        Var::Scalar(_) => {}
    }
    let var_view = match &var {
        Var::Tensor(v) => {
            let Some(eff) = effective_var_shape(&xs, v.shape()) else {
                let leading = xs.split_last().map(|(_, l)| fmt_shape(l));
                return Err(LossError::shape(
                    "var",
                    format!(
                        "var has shape {} but input has shape {}: var must have the input's shape{}, \
                         or the input's rank with exactly one dimension of size 1 where they differ",
                        fmt_shape(v.shape()),
                        fmt_shape(&xs),
                        leading.map_or(String::new(), |l| format!(
                            ", the input's shape without its last dimension ({l})"
                        )),
                    ),
                ));
            };
            Some(if eff.len() > v.ndim() {
                v.clone().insert_axis(Axis(v.ndim()))
            } else {
                v.clone()
            })
        }
        Var::Scalar(_) => None,
    };
    let pair = broadcast_pair("input", &xs, "target", &ys)?;
    let shape = match &var_view {
        Some(v) => {
            let what = if pair == xs {
                "input"
            } else {
                "input broadcast with target"
            };
            broadcast_pair(what, &pair, "var", v.shape())?
        }
        None => pair,
    };
    let n: usize = shape.iter().product();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    // A scalar var is read through a stride of 0.
    let (v, v_step): (Cow<'_, [T]>, usize) = match (&var_view, &var) {
        (Some(view), _) => (contiguous(view, &shape), 1),
        (None, Var::Scalar(s)) => (Cow::Owned(vec![T::of(*s)]), 0),
        (None, Var::Tensor(_)) => unreachable!("a tensor var has a view"),
    };
    let eps = T::of(eps);
    let constant = T::of(0.5 * (2.0 * std::f64::consts::PI).ln());
    let g = T::of(if reduction == Reduction::Mean {
        1.0 / n as f64
    } else {
        1.0
    });
    let var_grad = grad && var_view.is_some();

    let keep = reduction == Reduction::None;
    let mut losses = if keep { vec![T::zero(); n] } else { Vec::new() };
    let mut dx = if grad { vec![T::zero(); n] } else { Vec::new() };
    let mut dv = if var_grad {
        vec![T::zero(); n]
    } else {
        Vec::new()
    };
    let c = Consts {
        eps,
        g,
        constant: if full { constant } else { T::zero() },
        full,
    };
    let (l, gx, gv) = (&mut losses[..], &mut dx[..], &mut dv[..]);
    // A scalar var never has a gradient; a tensor var has one whenever `grad`.
    let total = match (v_step == 0, keep, grad) {
        (true, false, false) => {
            vectorised!(pass::<T, true, false, false>(&x, &y, &v, c, l, gx, gv))
        }
        (true, false, true) => vectorised!(pass::<T, true, false, true>(&x, &y, &v, c, l, gx, gv)),
        (true, true, false) => vectorised!(pass::<T, true, true, false>(&x, &y, &v, c, l, gx, gv)),
        (true, true, true) => vectorised!(pass::<T, true, true, true>(&x, &y, &v, c, l, gx, gv)),
        (false, false, false) => {
            vectorised!(pass::<T, false, false, false>(&x, &y, &v, c, l, gx, gv))
        }
        (false, false, true) => {
            vectorised!(pass::<T, false, false, true>(&x, &y, &v, c, l, gx, gv))
        }
        (false, true, false) => {
            vectorised!(pass::<T, false, true, false>(&x, &y, &v, c, l, gx, gv))
        }
        (false, true, true) => vectorised!(pass::<T, false, true, true>(&x, &y, &v, c, l, gx, gv)),
    };

    let mut out = LossOutput::new(reduce(reduction, &shape, losses, total, n));
    if grad {
        let dy: Vec<T> = dx.iter().map(|&g| -g).collect();
        let dx = ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n elements");
        let dy = ArrayD::from_shape_vec(IxDyn(&shape), dy).expect("n elements");
        out.grads.push(("input", unbroadcast(dx, &xs)));
        out.grads.push(("target", unbroadcast(dy, &ys)));
        if let (Some(view), Var::Tensor(orig)) = (&var_view, &var) {
            let dv = ArrayD::from_shape_vec(IxDyn(&shape), dv).expect("n elements");
            // Sum over the broadcast dimensions, then drop the trailing 1 PyTorch unsqueezed.
            let mut dv = unbroadcast(dv, view.shape())
                .into_shape_with_order(IxDyn(orig.shape()))
                .expect("the same number of elements");
            if n == 0 {
                // Over an empty input autograd still applies log(var)'s derivative to the
                // (zero) summed gradient: 0 / max(var, eps), NaN where that is NaN or 0, as in
                // torch 2.15.
                dv.zip_mut_with(orig, |d, &v| *d = T::zero() / clamp_min(v, eps));
            }
            out.grads.push(("var", dv));
        }
    }
    Ok(out)
}

/// The loop-invariant values of [`pass`].
#[derive(Clone, Copy)]
struct Consts<T> {
    eps: T,
    /// The upstream gradient (`1/n` for a mean, else 1).
    g: T,
    /// `½ log 2π` with `full`.
    constant: T,
    full: bool,
}

/// The pass over the elements in blocks of [`BLOCK`](crate::reduction::BLOCK), specialised on a scalar var (`VS`:
/// `v` has one element and no gradient) and on what it writes (`KEEP`: `losses`; `GRAD`:
/// `dx`, and `dv` unless `VS`), so the element-wise loop (with the vectorisable `ln`) has no
/// branches. Each block's losses go to the eight lanes (element `i` to lane `i mod 8`, the
/// order of [`crate::reduction::Sum8`]). Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const VS: bool, const KEEP: bool, const GRAD: bool>(
    x: &[T],
    y: &[T],
    v: &[T],
    c: Consts<T>,
    losses: &mut [T],
    dx: &mut [T],
    dv: &mut [T],
) -> f64 {
    let (half, two) = (T::of(0.5), T::of(2.0));
    let gs = c.g * half;
    let n = x.len();
    let y = &y[..n];
    let v = if VS { &v[..1] } else { &v[..n] };
    let dx = if GRAD { &mut dx[..n] } else { dx };
    let dv = if GRAD && !VS { &mut dv[..n] } else { dv };

    blocked::<T, KEEP>(
        n,
        losses,
        #[inline(always)]
        |r, block| {
            let (start, end) = (r.start, r.end);
            let len = end - start;
            let (xs, ys) = (&x[start..end], &y[start..end]);
            let vs = if VS { v } else { &v[start..end] };
            let gxs = if GRAD {
                &mut dx[start..end]
            } else {
                &mut dx[..0]
            };
            let gvs = if GRAD && !VS {
                &mut dv[start..end]
            } else {
                &mut dv[..0]
            };
            for k in 0..len {
                let d = xs[k] - ys[k];
                let vi = clamp_min(if VS { vs[0] } else { vs[k] }, c.eps);
                let q = d * d;
                let l = half * (vi.vln() + q / vi);
                block[k] = if c.full { l + c.constant } else { l };
                if GRAD {
                    gxs[k] = gs / vi * (two * d);
                    if !VS {
                        gvs[k] = gs / vi + (-gs) * (q / vi / vi);
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grads3};
    use ndarray::array;

    fn run(
        x: &ArrayD<f64>,
        y: &ArrayD<f64>,
        v: &ArrayD<f64>,
        full: bool,
        reduction: Reduction,
    ) -> Result<LossOutput<f64>, LossError> {
        gaussian_nll_loss(
            x.view(),
            y.view(),
            Var::Tensor(v.view()),
            full,
            1e-6,
            reduction,
            true,
        )
    }

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example (var (2,1), full, none): input − target = [[0.5, −0.5], [0, −2]] and
        // var = [[0.5], [2]], recovered from its gradients (x − y)/v.
        let x = array![[1.0, 0.5], [2.0, -1.0]].into_dyn();
        let y = array![[0.5, 1.0], [2.0, 1.0]].into_dyn();
        let v = array![[0.5], [2.0]].into_dyn();
        let out = run(&x, &y, &v, true, Reduction::None).unwrap();
        assert_array_close(
            "loss",
            &out.loss,
            &[0.8223649429, 0.8223649429, 1.2655121235, 2.2655121235],
            1e-10,
            0.0,
        );
        let g = |name| out.grad(name).unwrap().as_slice().unwrap().to_vec();
        assert_close("dx", &g("input"), &[1.0, -1.0, 0.0, -1.0], 1e-15, 0.0);
        assert_close("dy", &g("target"), &[-1.0, 1.0, -0.0, 1.0], 1e-15, 0.0);
        assert_close("dvar", &g("var"), &[1.0, 0.0], 1e-15, 1e-15);
        assert_eq!(out.grad("var").unwrap().shape(), &[2, 1]);
    }

    #[test]
    fn accepted_var_shapes_follow_pytorch_rule() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
        for ok in [&[4, 3][..], &[4, 1], &[1, 3], &[4]] {
            let v = ArrayD::<f64>::ones(IxDyn(ok));
            let out = run(&x, &x, &v, false, Reduction::None).unwrap();
            assert_eq!(out.loss.shape(), &[4, 3], "{ok:?}");
            assert_eq!(out.grad("var").unwrap().shape(), ok);
        }
        for bad in [&[1, 1][..], &[3], &[], &[2, 3], &[4, 3, 1], &[1, 4, 3]] {
            let v = ArrayD::<f64>::ones(IxDyn(bad));
            let e = run(&x, &x, &v, false, Reduction::None).unwrap_err();
            assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "var"), "{bad:?}");
            assert!(e.message.contains("[4, 3]"), "{}", e.message);
        }
    }

    #[test]
    fn a_0_d_var_is_accepted_only_for_a_1_d_input() {
        let x = array![0.0, 1.0, 2.0].into_dyn();
        let v = ndarray::arr0(2.0).into_dyn();
        let out = run(&x, &x, &v, false, Reduction::Sum).unwrap();
        assert_eq!(out.grad("var").unwrap().shape(), &[] as &[usize]);
        let x = ndarray::arr0(1.0).into_dyn();
        let v1 = array![2.0].into_dyn();
        let e = run(&x, &x, &v1, false, Reduction::Sum).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "var"));
        assert!(run(&x, &x, &v, false, Reduction::Sum).is_ok());
    }

    #[test]
    fn a_square_input_gives_one_variance_per_row() {
        // var (3,) for input (3,3) is input.shape[:-1], so it is unsqueezed to (3,1) rather
        // than broadcast along the last dimension (checked on torch 2.15).
        let x = ArrayD::<f64>::zeros(IxDyn(&[3, 3]));
        let y = ArrayD::from_shape_vec(IxDyn(&[3, 3]), (0..9).map(f64::from).collect()).unwrap();
        let v = array![1.0, 2.0, 3.0].into_dyn();
        let out = run(&x, &y, &v, false, Reduction::None).unwrap();
        assert_close(
            "row 1",
            &out.loss.as_slice().unwrap()[3..6],
            &[
                0.5 * (2f64.ln() + 4.5),
                0.5 * (2f64.ln() + 8.0),
                0.5 * (2f64.ln() + 12.5),
            ],
            1e-15,
            0.0,
        );
    }

    #[test]
    fn negative_variances_are_rejected_before_the_shape_is_checked() {
        let x = array![1.0, 2.0].into_dyn();
        let v = array![[1.0, 0.5, -1.0]].into_dyn();
        let e = run(&x, &x, &v, false, Reduction::Mean).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Value, "var"));
        assert_eq!(e.index, Some(vec![0, 2]));
        assert!(e.message.contains("-1"));
        let e = gaussian_nll_loss(
            x.view(),
            x.view(),
            Var::Scalar(-0.5),
            false,
            1e-6,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg, e.index), (ErrorKind::Value, "var", None));
    }

    #[test]
    fn nan_variances_pass_and_give_nan() {
        let x = array![0.0, 0.0].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let v = array![f64::NAN, 1.0].into_dyn();
        let out = run(&x, &y, &v, false, Reduction::None).unwrap();
        assert!(out.loss[[0]].is_nan());
        assert_eq!(out.loss[[1]], 0.5);
    }

    #[test]
    fn the_clamp_is_invisible_to_the_gradient() {
        // docs/losses.md: var = 0, d = 1, eps = 1e-6 gives ∂/∂var = −4.999995e11.
        let x = array![1.0].into_dyn();
        let y = array![0.0].into_dyn();
        let v = array![0.0].into_dyn();
        let out = run(&x, &y, &v, false, Reduction::Sum).unwrap();
        assert_array_close("loss", &out.loss, &[0.5 * (1e-6f64.ln() + 1e6)], 1e-15, 0.0);
        assert_array_close(
            "dvar",
            out.grad("var").unwrap(),
            &[-4.999995e11],
            1e-12,
            0.0,
        );
        // A NaN eps makes every clamped variance NaN, as torch's clamp does.
        let out = gaussian_nll_loss(
            x.view(),
            y.view(),
            Var::Tensor(v.view()),
            false,
            f64::NAN,
            Reduction::Sum,
            false,
        )
        .unwrap();
        assert!(out.loss.first().unwrap().is_nan());
    }

    #[test]
    fn an_empty_input_gives_var_the_derivative_of_its_log_times_zero() {
        // torch 2.15, input and target (4, 0), var (4, 1) and (4,) = [NaN, 0.7861, 0, inf]:
        // var.grad = 0 / max(var, eps): [NaN, 0, 0, 0] with eps 1e-6, [NaN, 0, NaN, 0] with 0.
        let e = ArrayD::<f64>::zeros(IxDyn(&[4, 0]));
        let vals = [f64::NAN, 0.7861, 0.0, f64::INFINITY];
        for shape in [&[4, 1][..], &[4]] {
            let v = ArrayD::from_shape_vec(IxDyn(shape), vals.to_vec()).unwrap();
            for (eps, want) in [
                (1e-6, [f64::NAN, 0.0, 0.0, 0.0]),
                (0.0, [f64::NAN, 0.0, f64::NAN, 0.0]),
            ] {
                for reduction in [Reduction::Sum, Reduction::Mean, Reduction::None] {
                    let out = gaussian_nll_loss(
                        e.view(),
                        e.view(),
                        Var::Tensor(v.view()),
                        true,
                        eps,
                        reduction,
                        true,
                    )
                    .unwrap();
                    let got = out.grad("var").unwrap();
                    assert_eq!(got.shape(), shape);
                    // Exact: NaN where torch has NaN, the same value elsewhere.
                    let got: Vec<f64> = got.iter().copied().collect();
                    assert_close("var", &got, &want, 0.0, 0.0);
                }
            }
        }
    }

    #[test]
    fn a_scalar_var_applies_to_every_element_and_has_no_gradient() {
        let x = array![[0.5, 1.0], [1.5, 2.0]].into_dyn();
        let y = array![0.0, 0.0].into_dyn();
        let s = gaussian_nll_loss(
            x.view(),
            y.view(),
            Var::Scalar(0.75),
            false,
            1e-6,
            Reduction::Mean,
            true,
        )
        .unwrap();
        let t = run(
            &x,
            &y,
            &ArrayD::from_elem(IxDyn(&[2, 2]), 0.75),
            false,
            Reduction::Mean,
        )
        .unwrap();
        assert_eq!(s.loss, t.loss);
        assert_eq!(s.grad("input"), t.grad("input"));
        assert_eq!(s.grad("target"), t.grad("target"));
        assert!(s.grad("var").is_none());
    }

    #[test]
    fn full_adds_half_log_two_pi() {
        let x = array![0.3, -0.2].into_dyn();
        let v = array![0.5, 2.0].into_dyn();
        let a = run(&x, &x, &v, false, Reduction::None).unwrap();
        let b = run(&x, &x, &v, true, Reduction::None).unwrap();
        for (a, b) in a.loss.iter().zip(b.loss.iter()) {
            assert!((b - a - 0.9189385332046727).abs() < 1e-15);
        }
    }

    #[test]
    fn target_and_var_broadcast_against_the_input() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[3]));
        let y = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
        let v = array![1.0].into_dyn();
        let out = run(&x, &y, &v, false, Reduction::None).unwrap();
        assert_eq!(out.loss.shape(), &[2, 3]);
        let x = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
        let y = ArrayD::<f64>::zeros(IxDyn(&[4]));
        let v = ArrayD::<f64>::ones(IxDyn(&[4, 3]));
        let e = run(&x, &y, &v, false, Reduction::None).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        // Passes PyTorch's size rule (0 + 1 = 1) but cannot broadcast (checked on torch 2.15).
        let v = ArrayD::<f64>::ones(IxDyn(&[0, 1]));
        let e = run(&x, &x, &v, false, Reduction::None).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "var"));
    }

    #[test]
    fn empty_inputs_give_a_nan_mean_and_a_zero_sum() {
        let x = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let m = run(&x, &x, &x, false, Reduction::Mean).unwrap();
        assert!(m.loss.first().unwrap().is_nan());
        let s = run(&x, &x, &x, false, Reduction::Sum).unwrap();
        assert_eq!(s.loss.first(), Some(&0.0));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(9);
        let cases: [(&[usize], &[usize], &[usize]); 4] = [
            (&[3, 4], &[3, 4], &[3, 4]),
            (&[3, 4], &[4], &[3]),
            (&[3, 4], &[3, 4], &[1, 4]),
            (&[2, 3], &[2, 3], &[2, 1]),
        ];
        for (xs, ys, vs) in cases {
            for full in [false, true] {
                for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    let x = rng.randn(xs);
                    let y = rng.randn(ys);
                    let v = rng.uniform_tensor(vs, 0.5, 2.0);
                    let f = |x: &ArrayD<f64>, y: &ArrayD<f64>, v: &ArrayD<f64>| {
                        run(x, y, v, full, reduction).unwrap()
                    };
                    let what = format!("{xs:?}/{ys:?}/{vs:?} full={full} {reduction:?}");
                    let args = [&x, &y, &v];
                    assert_grads3(&what, args, ["input", "target", "var"], f);
                }
            }
        }
    }
}
