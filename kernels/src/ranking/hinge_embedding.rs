//! `hinge_embedding_loss` (`nn.HingeEmbeddingLoss`), docs/losses.md.
//!
//! `ℓ = 1[y ≠ 1]·max(0, margin − x) + 1[y ≠ −1]·x`, ATen's formula, so a target other than
//! ±1 (0, 2, 0.5, NaN, ...) gives `x + max(0, margin − x)` (docs/differences.md item 13: mirrored).
//! Input and target broadcast both ways without a warning; the margin is not validated.
//! Only `input` gets a gradient (the target is used in comparisons only).

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::margin_ranking::{hinge, hinge_grad};
use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::reduction::{blocked_checked, reduce, upstream};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// `F.hinge_embedding_loss(input, target, margin, reduction)`.
///
/// `input` and `target` may have any shapes that broadcast (`none` returns the broadcast
/// shape). Gradient with respect to `input` only: `1[y ≠ −1] − 1[y ≠ 1]·1[margin − x > 0]`,
/// summed back to the input's shape.
///
/// Errors: [`LossError::shape`] naming `target` when the shapes do not broadcast.
pub fn hinge_embedding_loss<T: Real>(
    input: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    margin: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (xs, ys) = (input.shape(), target.shape());
    let shape = broadcast_pair("input", xs, "target", ys)?;
    let n: usize = shape.iter().product();
    let x = contiguous(&input, &shape);
    let y = contiguous(&target, &shape);
    let m = T::of(margin);
    let up = T::of(upstream(reduction, n));
    let keep = reduction == Reduction::None;
    let mut losses = if keep { vec![T::zero(); n] } else { Vec::new() };
    let mut dx = if grad { vec![T::zero(); n] } else { Vec::new() };
    let (l, d) = (&mut losses[..], &mut dx[..]);
    let total = vectorised!(match (keep, grad) {
        (false, false) => pass::<T, false, false>(&x, &y, m, up, l, d),
        (false, true) => pass::<T, false, true>(&x, &y, m, up, l, d),
        (true, false) => pass::<T, true, false>(&x, &y, m, up, l, d),
        (true, true) => pass::<T, true, true>(&x, &y, m, up, l, d),
    })?;
    let mut out = LossOutput::new(reduce(reduction, &shape, losses, total, n));
    if grad {
        let dx = ArrayD::from_shape_vec(IxDyn(&shape), dx).expect("n elements");
        out.grads.push(("input", unbroadcast(dx, xs)));
    }
    Ok(out)
}

/// The pass over the elements in blocks of [`BLOCK`](crate::reduction::BLOCK), specialised on what it writes (`KEEP`:
/// `losses`; `GRAD`: `dx`), so the element-wise loops have no branches and vectorise. Each
/// block's losses go to the eight lanes (element `i` to lane `i mod 8`, the order of
/// [`crate::reduction::Sum8`]); a cancellation checkpoint every [`CHUNK`](crate::reduction::CHUNK) elements.
/// Returns `Σ ℓ`.
#[inline(always)]
fn pass<T: Real, const KEEP: bool, const GRAD: bool>(
    x: &[T],
    y: &[T],
    m: T,
    up: T,
    losses: &mut [T],
    dx: &mut [T],
) -> Result<f64, LossError> {
    let (one, zero) = (T::one(), T::zero());
    let n = x.len();
    let y = &y[..n];
    let dx = if GRAD { &mut dx[..n] } else { dx };

    blocked_checked::<T, KEEP>(
        n,
        losses,
        #[inline(always)]
        |r, block| {
            let (start, end) = (r.start, r.end);
            let (xs, ys) = (&x[start..end], &y[start..end]);
            for ((l, &xi), &yi) in block.iter_mut().zip(xs).zip(ys) {
                let hinge_part = if yi != one { hinge(m - xi) } else { zero };
                let self_part = if yi != -one { xi } else { zero };
                *l = hinge_part + self_part;
            }
            if GRAD {
                for ((g, &xi), &yi) in dx[start..end].iter_mut().zip(xs).zip(ys) {
                    let g_self = if yi != -one { up } else { zero };
                    let g_hinge = if yi != one { up } else { zero };
                    *g = g_self - hinge_grad(m - xi, g_hinge);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::reduction::BLOCK;
    use crate::reduction::Sum8;
    use crate::testing::{Rng, assert_array_close, assert_grad, bits, scalar, sum_bits};
    use ndarray::array;

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example: margin 1, none, output [0.3, 0.0, 1.2, 1.0], gradient [1, 0, −1, 0]; the row
        // notes target 0 → x + max(0, 1 − x). Inputs reconstructed from those values.
        let x = array![0.3, 1.0, -0.2, 0.5].into_dyn();
        let y = array![1.0, -1.0, -1.0, 0.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert_array_close("loss", &out.loss, &[0.3, 0.0, 1.2, 1.0], 1e-15, 0.0);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[1.0, 0.0, -1.0, 0.0]
        );
    }

    #[test]
    fn targets_other_than_plus_or_minus_one_add_both_terms() {
        let x = array![2.0, 0.25, -1.0].into_dyn();
        let y = array![0.0, 2.0, f64::NAN].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[2.0, 1.0, 1.0]);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn the_hinge_has_zero_gradient_at_the_margin() {
        let x = array![1.0, 0.5].into_dyn();
        let y = array![-1.0, -1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.5));
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0, -1.0]);
    }

    /// Issue 28: lanes whose plain total overflows (1.35e308 + 1.35e308) while the exact sum
    /// is finite: torch 2.15 gives the exact sum, −4.49423283715579e307.
    #[test]
    fn a_sum_near_the_float_range_does_not_overflow_in_the_lanes() {
        let big = 1.3482698511467367e308;
        let x = array![big, -2.0, -2.0, -f64::MAX, 1.0, -big, big].into_dyn();
        let y = ndarray::ArrayD::from_elem(vec![7], 1.0);
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::Sum, false).unwrap();
        assert_eq!(out.loss.first(), Some(&-4.49423283715579e307));
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::Mean, false).unwrap();
        assert_eq!(out.loss.first(), Some(&(-4.49423283715579e307 / 7.0)));
        // A sum that is beyond the range stays infinite, and inf − inf NaN.
        let x = array![f64::MAX, f64::MAX, 1.0].into_dyn();
        let y = ndarray::ArrayD::from_elem(vec![3], 1.0);
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::Sum, false).unwrap();
        assert_eq!(out.loss.first(), Some(&f64::INFINITY));
        let x = array![f64::INFINITY, f64::NEG_INFINITY].into_dyn();
        let y = ndarray::ArrayD::from_elem(vec![2], 1.0);
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::Sum, false).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
    }

    #[test]
    fn a_negative_margin_is_accepted() {
        let x = array![-2.0].into_dyn();
        let y = array![-1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), -1.0, Reduction::Mean, false).unwrap();
        assert_eq!(out.loss.first(), Some(&1.0));
    }

    #[test]
    fn nan_input_propagates() {
        let x = array![f64::NAN, f64::NAN].into_dyn();
        let y = array![1.0, -1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert!(out.loss.iter().all(|v| v.is_nan()));
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[1.0, 0.0]);
    }

    #[test]
    fn input_and_target_broadcast_both_ways() {
        let x = array![[0.5], [2.0]].into_dyn();
        let y = array![1.0, -1.0, 1.0].into_dyn();
        let out = hinge_embedding_loss(x.view(), y.view(), 1.0, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[2, 3]);
        assert_eq!(
            out.loss.as_slice().unwrap(),
            &[0.5, 0.5, 0.5, 2.0, 0.0, 2.0]
        );
        assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[1.0, 2.0]);
        let e = hinge_embedding_loss(
            x.view(),
            array![[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]].into_dyn().view(),
            1.0,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn empty_input_gives_nan_mean_and_zero_sum() {
        let x = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
        let mean = hinge_embedding_loss(x.view(), x.view(), 1.0, Reduction::Mean, true).unwrap();
        assert!(mean.loss.first().unwrap().is_nan());
        assert_eq!(mean.grad("input").unwrap().shape(), &[0, 3]);
        let sum = hinge_embedding_loss(x.view(), x.view(), 1.0, Reduction::Sum, false).unwrap();
        assert_eq!(sum.loss.first(), Some(&0.0));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(5);
        let cases: [(&[usize], &[usize]); 3] = [(&[3, 4], &[3, 4]), (&[3, 1], &[4]), (&[], &[])];
        for (xs, ys) in cases {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let x = rng.randn(xs).mapv(|v| v * 2.0);
                // Targets ±1 and one "other" value, as PyTorch allows.
                let y = rng.randn(ys).mapv(|v| {
                    if v > 0.5 {
                        1.0
                    } else if v > -0.5 {
                        -1.0
                    } else {
                        0.5
                    }
                });
                let out = hinge_embedding_loss(x.view(), y.view(), 0.7, reduction, true).unwrap();
                assert_grad(
                    &format!("{xs:?} {reduction:?}"),
                    &x,
                    out.grad("input").unwrap(),
                    |x| {
                        scalar(
                            &hinge_embedding_loss(x.view(), y.view(), 0.7, reduction, false)
                                .unwrap(),
                        )
                    },
                );
            }
        }
    }

    /// The element loop the blocked pass replaced: one element at a time, summed with
    /// [`Sum8`]. Returns the losses, the gradient and the total.
    fn reference<T: Real>(x: &[T], y: &[T], m: T, up: T) -> (Vec<T>, Vec<T>, f64) {
        let (one, zero) = (T::one(), T::zero());
        let mut total = Sum8::new();
        let (mut losses, mut dx) = (vec![], vec![]);
        for i in 0..x.len() {
            let (xi, yi) = (x[i], y[i]);
            let z = m - xi;
            let hinge_part = if yi != one { hinge(z) } else { zero };
            let self_part = if yi != -one { xi } else { zero };
            let l = hinge_part + self_part;
            total.add(l.f64());
            losses.push(l);
            let g_self = if yi != -one { up } else { zero };
            let g_hinge = if yi != one { up } else { zero };
            dx.push(g_self - hinge_grad(z, g_hinge));
        }
        (losses, dx, total.total())
    }

    /// `3·BLOCK + 77` pairs `(x, y)` for `margin`: inputs mostly random, with NaN, ±inf, ±0
    /// and the kink `x = margin`; targets mostly ±1, with 0, −0, 0.5, 2, NaN and random ones.
    fn hinge_data(seed: u64, margin: f64) -> [Vec<f64>; 2] {
        const SPECIAL_X: [f64; 5] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
        const SPECIAL_Y: [f64; 5] = [0.0, -0.0, 0.5, 2.0, f64::NAN];
        let mut rng = Rng::new(seed);
        let n = 3 * BLOCK + 77;
        let [mut x, mut y] = [vec![], vec![]];
        for _ in 0..n {
            x.push(match rng.below(10) {
                0 => SPECIAL_X[rng.below(SPECIAL_X.len())],
                1 => margin,
                _ => rng.range(-3.0, 3.0),
            });
            y.push(match rng.below(10) {
                0 => SPECIAL_Y[rng.below(SPECIAL_Y.len())],
                1 => rng.range(-2.0, 2.0),
                k => [1.0, -1.0][k % 2],
            });
        }
        [x, y]
    }

    /// Runs the pass with the given writes on the widest vector path (`avx2`) or the baseline;
    /// returns the total, the losses and the gradient (empty where not written).
    fn run_pass<T: Real>(
        [x, y]: &[Vec<T>; 2],
        m: T,
        up: T,
        keep: bool,
        grad: bool,
        avx2: bool,
    ) -> (f64, Vec<T>, Vec<T>) {
        let n = x.len();
        let z = |on: bool| if on { vec![T::zero(); n] } else { Vec::new() };
        let (mut l, mut d) = (z(keep), z(grad));
        let (ls, ds) = (&mut l[..], &mut d[..]);
        let total = crate::vmath::dispatch_with(
            avx2,
            #[inline(always)]
            || match (keep, grad) {
                (false, false) => pass::<T, false, false>(x, y, m, up, ls, ds),
                (false, true) => pass::<T, false, true>(x, y, m, up, ls, ds),
                (true, false) => pass::<T, true, false>(x, y, m, up, ls, ds),
                (true, true) => pass::<T, true, true>(x, y, m, up, ls, ds),
            },
        )
        .unwrap();
        (total, l, d)
    }

    /// Finite copies of test data (NaN and infinities replaced), so that the totals are finite.
    fn finite<const K: usize>(data: &[Vec<f64>; K]) -> [Vec<f64>; K] {
        data.each_ref().map(|v| {
            v.iter()
                .map(|&x| if x.is_finite() { x } else { 1.5 })
                .collect()
        })
    }

    fn to_f32<const K: usize>(data: &[Vec<f64>; K]) -> [Vec<f32>; K] {
        data.each_ref()
            .map(|v| v.iter().map(|&x| x as f32).collect())
    }

    /// The blocked pass, and the whole kernel for each reduction, give the bits of the element
    /// loop it replaced (losses, gradient, total), NaN, infinities, zeros, kinks and targets
    /// other than ±1 included.
    #[test]
    fn blocked_pass_matches_the_element_loop_bit_for_bit() {
        fn check<T: Real>(data: &[Vec<T>; 2], margin: f64) {
            let n = data[0].len();
            let m = T::of(margin);
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let up = T::of(upstream(reduction, n));
                let (l, g, total) = reference(&data[0], &data[1], m, up);
                let what = format!(
                    "{} margin {margin} {reduction:?}",
                    std::any::type_name::<T>()
                );
                for (keep, grad) in [(false, false), (false, true), (true, false), (true, true)] {
                    let out = run_pass(data, m, up, keep, grad, crate::vmath::has_avx2());
                    assert_eq!(sum_bits(out.0), sum_bits(total), "{what} total");
                    if keep {
                        assert_eq!(bits(&out.1), bits(&l), "{what} losses");
                    }
                    if grad {
                        assert_eq!(bits(&out.2), bits(&g), "{what} gradient");
                    }
                }
                let [x, y] = data
                    .each_ref()
                    .map(|v| ArrayViewD::from_shape(IxDyn(&[n]), &v[..]).unwrap());
                let run = |grad| {
                    hinge_embedding_loss(x.view(), y.view(), margin, reduction, grad).unwrap()
                };
                let want = reduce(reduction, &[n], l.clone(), total, n);
                let loss_bits = |loss: &ArrayD<T>| match reduction {
                    Reduction::None => bits(loss.as_slice().unwrap()),
                    _ => vec![sum_bits(loss.first().unwrap().f64())],
                };
                let out = run(true);
                assert_eq!(loss_bits(&out.loss), loss_bits(&want), "{what} loss");
                let got = out.grad("input").unwrap().as_slice().unwrap().to_vec();
                assert_eq!(bits(&got), bits(&g), "{what} input");
                assert_eq!(loss_bits(&run(false).loss), loss_bits(&want), "{what} loss");
            }
        }
        for (seed, margin) in [(1, 1.0), (2, 0.0), (3, -0.5)] {
            let data = hinge_data(seed, margin);
            for data in [finite(&data), data] {
                check::<f64>(&data, margin);
                check::<f32>(&to_f32(&data), margin);
            }
        }
    }

    /// The vector-compiled pass (AVX-512 or AVX2, the widest the CPU has) gives the same bits as
    /// the baseline one (total, losses and gradient), f32 and f64, over a length that is not a
    /// multiple of the block.
    #[test]
    fn avx2_and_baseline_passes_are_bit_identical() {
        fn check<T: Real>(data: &[Vec<T>; 2]) {
            let (m, up) = (T::of(1.0), T::of(1.0 / 3.0));
            let a = run_pass(data, m, up, true, true, true);
            let b = run_pass(data, m, up, true, true, false);
            assert_eq!(sum_bits(a.0), sum_bits(b.0));
            assert_eq!(bits(&a.1), bits(&b.1));
            assert_eq!(bits(&a.2), bits(&b.2));
        }
        let data = hinge_data(17, 1.0);
        for data in [finite(&data), data] {
            check::<f64>(&data);
            check::<f32>(&to_f32(&data));
        }
    }
}
