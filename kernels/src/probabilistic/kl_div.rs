//! `kl_div` (`nn.KLDivLoss`): `ℓ = xlogy(target, target) − target · input`, or
//! `exp(target) · (target − input)` with `log_target`, LOSSES.md §2.14.
//!
//! Input and target broadcast silently. lossd mirrors PyTorch exactly, including its quirks:
//! `reduction = Mean` divides by every element and adds PyTorch's warning to `warnings`
//! (LOSSES.md §4 item 10); `BatchMean` divides by `input.size(0)` (a 0-d input gets the plain
//! sum); a zero target contributes 0 (NaN when the input is infinite), a negative one NaN; the
//! target gradient is NaN where the target is 0, as autograd's `xlogy` derivative gives.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::reduction::{Reduction, Sum8, mean};
use crate::regression::contiguous;
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

/// `xlogy(x, y)` as ATen computes it: NaN if `y` is NaN, 0 if `x` is 0, else `x·log(y)`.
#[inline(always)]
fn xlogy<T: Real>(x: T, y: T) -> T {
    if y.is_nan() {
        y
    } else if x == T::zero() {
        T::zero()
    } else {
        x * y.ln()
    }
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
    let (xs, ys) = (input.shape().to_vec(), target.shape().to_vec());
    let shape = broadcast_pair("input", &xs, "target", &ys)?;
    let n: usize = shape.iter().product();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);

    // `batchmean` is PyTorch's sum divided afterwards by the input's first size (0-d: by 1).
    let batch = xs.first().copied().unwrap_or(1);
    let upstream = T::of(match reduction {
        KlReduction::Mean => 1.0 / n as f64,
        KlReduction::BatchMean => 1.0 / batch as f64,
        KlReduction::None | KlReduction::Sum => 1.0,
    });

    let keep = reduction == KlReduction::None;
    let mut losses = Vec::with_capacity(if keep { n } else { 0 });
    let mut dx = Vec::with_capacity(if grad { n } else { 0 });
    let mut dy = Vec::with_capacity(if grad { n } else { 0 });
    let mut total = Sum8::new();
    let g = upstream;
    for i in 0..n {
        let (xi, yi) = (x[i], y[i]);
        let l = if log_target {
            let e = yi.exp();
            if grad {
                // Autograd's order: mul, then exp's backward, plus the `(y − x)` branch.
                dx.push(-(g * e));
                dy.push(g * (yi - xi) * e + g * e);
            }
            e * (yi - xi)
        } else {
            if grad {
                // `xlogy(y, y)` contributes `xlogy(y ≠ 0, y) + y/y` (NaN at y = 0, as in PyTorch).
                let nonzero = if yi != T::zero() { T::one() } else { T::zero() };
                dx.push(-(g * yi));
                dy.push(g * xlogy(nonzero, yi) + g * yi / yi + (-g) * xi);
            }
            xlogy(yi, yi) - yi * xi
        };
        total.add(l.f64());
        if keep {
            losses.push(l);
        }
    }

    let loss = match reduction {
        KlReduction::None => ArrayD::from_shape_vec(IxDyn(&shape), losses).expect("n elements"),
        KlReduction::Sum => ndarray::arr0(T::of(total.total())).into_dyn(),
        KlReduction::Mean => ndarray::arr0(T::of(mean(total.total(), n))).into_dyn(),
        KlReduction::BatchMean => {
            // 0/0 for an input of size 0 along its first dimension: NaN, as in PyTorch.
            ndarray::arr0(T::of(total.total() / batch as f64)).into_dyn()
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
        out.grads.push(("target", unbroadcast(dy, &ys)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::array;

    /// LOSSES.md §5's KLDivLoss case (x, y recovered from its gradients `−y/2` and
    /// `(log y + 1 − x)/2`; `x[0][0]` is free since `y[0][0] = 0`).
    fn worked_example() -> (ArrayD<f64>, ArrayD<f64>) {
        let x = array![[-1.0, -0.5, -2.0], [-0.1, -3.0, -1.5]].into_dyn();
        let y = array![[0.0, 0.6, 0.4], [0.5, 0.25, 0.25]].into_dyn();
        (x, y)
    }

    #[test]
    fn batchmean_matches_the_worked_example_of_losses_md() {
        let (x, y) = worked_example();
        let out = kl_div(x.view(), y.view(), false, KlReduction::BatchMean, true).unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &[0.2811337811],
            1e-9,
            0.0,
        );
        assert_close(
            "dx",
            out.grad("input").unwrap().as_slice().unwrap(),
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
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &[0.0937112604],
            1e-9,
            0.0,
        );
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
        assert_close(
            "dx",
            out.grad("input").unwrap().as_slice().unwrap(),
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
}
