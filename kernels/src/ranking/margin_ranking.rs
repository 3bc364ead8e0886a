//! `margin_ranking_loss` (`nn.MarginRankingLoss`): `ℓ = max(0, −y·(x1 − x2) + margin)`,
//! LOSSES.md §2.20.
//!
//! `input1`, `input2` and `target` must have the same number of dimensions (PyTorch's Python
//! check), then broadcast silently. All three are differentiable (a floating target is, in
//! PyTorch). The hinge has derivative 0 where `z = 0` (§1.6).
//!
//! This file also holds the small pieces the other ranking kernels share: the hinge as ATen's
//! `clamp_min(z, 0)` computes it, its backward, and the reduction of a loss vector.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::broadcast::{broadcast_pair, unbroadcast};
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{BLOCK, add_to_lanes, lanes_total, mean, upstream};
use crate::regression::contiguous;
use crate::vmath::vectorised;
use crate::{LossError, LossOutput, Real, Reduction};

/// Elements processed between two cancellation checkpoints.
pub(crate) const CHUNK: usize = 1 << 16;

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

/// The returned loss: the unreduced `losses` (shape `shape`) for `none`, else the 0-d sum
/// `total` or its mean over `count` elements (the mean of nothing is NaN).
pub(crate) fn reduce<T: Real>(
    reduction: Reduction,
    shape: &[usize],
    losses: Vec<T>,
    total: f64,
    count: usize,
) -> ArrayD<T> {
    match reduction {
        Reduction::None => ArrayD::from_shape_vec(IxDyn(shape), losses).expect("count elements"),
        Reduction::Sum => ndarray::arr0(T::of(total)).into_dyn(),
        Reduction::Mean => ndarray::arr0(T::of(mean(total, count))).into_dyn(),
    }
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
        (false, false) => pass::<T, false, false>(&x1, &x2, &y, m, up, l, g1, g2, gt),
        (false, true) => pass::<T, false, true>(&x1, &x2, &y, m, up, l, g1, g2, gt),
        (true, false) => pass::<T, true, false>(&x1, &x2, &y, m, up, l, g1, g2, gt),
        (true, true) => pass::<T, true, true>(&x1, &x2, &y, m, up, l, g1, g2, gt),
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

/// The pass over the elements in blocks of [`BLOCK`], specialised on what it writes (`KEEP`:
/// `losses`; `GRAD`: `d1`, `d2`, `dt`), so the element-wise loops have no branches and
/// vectorise. Each block's losses go to the eight lanes (element `i` to lane `i mod 8`, the
/// order of [`crate::reduction::Sum8`]); a cancellation checkpoint every [`CHUNK`] elements.
/// Returns `Σ ℓ`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pass<T: Real, const KEEP: bool, const GRAD: bool>(
    x1: &[T],
    x2: &[T],
    y: &[T],
    m: T,
    up: T,
    losses: &mut [T],
    d1: &mut [T],
    d2: &mut [T],
    dt: &mut [T],
) -> Result<f64, LossError> {
    const { assert!(CHUNK.is_multiple_of(BLOCK)) };
    let n = x1.len();
    let (x2, y) = (&x2[..n], &y[..n]);
    let losses = if KEEP { &mut losses[..n] } else { losses };
    let (d1, d2, dt) = if GRAD {
        (&mut d1[..n], &mut d2[..n], &mut dt[..n])
    } else {
        (d1, d2, dt)
    };
    let mut lanes = [0.0f64; 8];
    let mut buf = [T::zero(); BLOCK];
    for start in (0..n).step_by(BLOCK) {
        if start % CHUNK == 0 {
            checkpoint()?;
        }
        let end = (start + BLOCK).min(n);
        let (x1s, x2s, ys) = (&x1[start..end], &x2[start..end], &y[start..end]);
        let block = &mut buf[..end - start];
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
        if KEEP {
            losses[start..end].copy_from_slice(block);
        }
        add_to_lanes(&mut lanes, block);
    }
    Ok(lanes_total(&lanes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::reduction::Sum8;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::array;

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // LOSSES.md §5 gives the outputs but not the inputs: x1 − x2 = [0.2, −1, −1] with
        // y = [1, 1, −1] and margin 0.5 reproduce every listed value and sign of zero.
        let x1 = array![0.7, 0.0, 0.0].into_dyn();
        let x2 = array![0.5, 1.0, 1.0].into_dyn();
        let y = array![1.0, 1.0, -1.0].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::None, true)
            .unwrap();
        assert_close(
            "loss",
            out.loss.as_slice().unwrap(),
            &[0.3, 1.5, 0.0],
            1e-15,
            0.0,
        );
        let g = |k| out.grad(k).unwrap().as_slice().unwrap().to_vec();
        assert_eq!(g("input1"), vec![-1.0, -1.0, 0.0]);
        assert_eq!(g("input2"), vec![1.0, 1.0, -0.0]);
        assert!(g("input2")[2].is_sign_negative());
        assert_close("target", &g("target"), &[-0.2, 1.0, 0.0], 1e-15, 0.0);
    }

    #[test]
    fn reductions_sum_and_average() {
        let x1 = array![1.0, 2.0].into_dyn();
        let x2 = array![2.0, 0.0].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let run = |r| {
            margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.0, r, false)
                .unwrap()
                .loss
        };
        assert_eq!(run(Reduction::Sum).first(), Some(&1.0));
        assert_eq!(run(Reduction::Mean).first(), Some(&0.5));
        assert_eq!(run(Reduction::None).shape(), &[2]);
    }

    #[test]
    fn the_hinge_has_zero_gradient_at_its_kink() {
        let x1 = array![1.0].into_dyn();
        let x2 = array![0.5].into_dyn();
        let y = array![1.0].into_dyn();
        let out =
            margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        for k in ["input1", "input2", "target"] {
            assert_eq!(out.grad(k).unwrap().first(), Some(&0.0), "{k}");
        }
    }

    #[test]
    fn a_zero_target_gives_the_clamped_margin() {
        let x = array![3.0, -3.0].into_dyn();
        let y = array![0.0, 0.0].into_dyn();
        let out = margin_ranking_loss(x.view(), x.view(), y.view(), 0.25, Reduction::None, false)
            .unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[0.25, 0.25]);
    }

    #[test]
    fn nan_propagates_and_a_masked_infinite_difference_gives_a_nan_target_gradient() {
        let x1 = array![f64::NAN, f64::INFINITY].into_dyn();
        let x2 = array![0.0, 0.0].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        let l = out.loss.as_slice().unwrap();
        assert!(l[0].is_nan());
        assert_eq!(l[1], 0.0);
        let dt = out.grad("target").unwrap();
        // PyTorch: clamp_min's masked gradient 0 times −(x1 − x2) = −inf is NaN.
        assert!(dt[[1]].is_nan());
        assert_eq!(out.grad("input1").unwrap()[[0]], 0.0);
    }

    #[test]
    fn inputs_broadcast_once_their_ranks_agree() {
        let x1 = array![[1.0], [2.0]].into_dyn();
        let x2 = array![[0.0, 1.0, 2.0]].into_dyn();
        let y = array![[1.0]].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 1.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.shape(), &[2, 3]);
        assert_eq!(out.grad("input1").unwrap().shape(), &[2, 1]);
        assert_eq!(out.grad("input2").unwrap().shape(), &[1, 3]);
        assert_eq!(out.grad("target").unwrap().shape(), &[1, 1]);
    }

    #[test]
    fn different_ranks_are_rejected() {
        let a = array![1.0, 2.0, 3.0].into_dyn();
        let b = array![[1.0], [2.0], [3.0]].into_dyn();
        let e = margin_ranking_loss(a.view(), b.view(), a.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
        assert!(e.message.contains("[3, 1]"), "{}", e.message);
        let e = margin_ranking_loss(a.view(), a.view(), b.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_rejected() {
        let a = array![1.0, 2.0, 3.0].into_dyn();
        let b = array![1.0, 2.0].into_dyn();
        let e = margin_ranking_loss(a.view(), b.view(), a.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
        let e = margin_ranking_loss(a.view(), a.view(), b.view(), 0.0, Reduction::Mean, false)
            .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
    }

    #[test]
    fn empty_and_zero_dimensional_inputs_work() {
        let e = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let out =
            margin_ranking_loss(e.view(), e.view(), e.view(), 1.0, Reduction::Mean, true).unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        assert_eq!(out.grad("input1").unwrap().shape(), &[0]);
        let s =
            margin_ranking_loss(e.view(), e.view(), e.view(), 1.0, Reduction::Sum, false).unwrap();
        assert_eq!(s.loss.first(), Some(&0.0));
        let x = ndarray::arr0(1.0).into_dyn();
        let y = ndarray::arr0(-1.0).into_dyn();
        let out =
            margin_ranking_loss(x.view(), x.view(), y.view(), 0.5, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.loss.first(), Some(&0.5));
    }

    #[test]
    fn float32_works() {
        let x1 = array![1.0f32, -1.0].into_dyn();
        let x2 = array![0.0f32, 0.0].into_dyn();
        let y = array![-1.0f32, 1.0].into_dyn();
        let out = margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::Mean, true)
            .unwrap();
        assert_eq!(out.loss.first(), Some(&1.5));
        assert_eq!(
            out.grad("input1").unwrap().as_slice().unwrap(),
            &[0.5, -0.5]
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        let cases: [[&[usize]; 3]; 3] = [
            [&[6], &[6], &[6]],
            [&[2, 3], &[1, 3], &[2, 1]],
            [&[], &[], &[]],
        ];
        for [s1, s2, st] in cases {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let x1 = rng.randn(s1);
                let x2 = rng.randn(s2);
                let y = rng.randn(st);
                let run = |x1: &ArrayD<f64>, x2: &ArrayD<f64>, y: &ArrayD<f64>| {
                    margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.3, reduction, true)
                        .unwrap()
                };
                let out = run(&x1, &x2, &y);
                let what = format!("{s1:?} {reduction:?}");
                assert_grad(&what, &x1, out.grad("input1").unwrap(), |v| {
                    scalar(&run(v, &x2, &y))
                });
                assert_grad(&what, &x2, out.grad("input2").unwrap(), |v| {
                    scalar(&run(&x1, v, &y))
                });
                assert_grad(&what, &y, out.grad("target").unwrap(), |v| {
                    scalar(&run(&x1, &x2, v))
                });
            }
        }
    }

    /// The element loop the blocked pass replaced: one element at a time, summed with
    /// [`Sum8`]. Returns the losses, the gradients `[d1, d2, dt]` and the total.
    fn reference<T: Real>(x1: &[T], x2: &[T], y: &[T], m: T, up: T) -> (Vec<T>, [Vec<T>; 3], f64) {
        let mut total = Sum8::new();
        let (mut l, mut d1, mut d2, mut dt) = (vec![], vec![], vec![], vec![]);
        for i in 0..x1.len() {
            let d = x1[i] - x2[i];
            let z = -y[i] * d + m;
            let v = hinge(z);
            total.add(v.f64());
            l.push(v);
            let gz = hinge_grad(z, up);
            let g = gz * -y[i];
            d1.push(g);
            d2.push(-g);
            dt.push(-(gz * d));
        }
        (l, [d1, d2, dt], total.total())
    }

    /// `3·BLOCK + 77` triples `(x1, x2, y)` for `margin`: mostly random, with NaN, ±inf, ±0,
    /// targets 0 and ±1, and exact kinks `z = 0` (`x1 − x2 = ±margin`, `y = ±1`).
    fn ranking_data(seed: u64, margin: f64) -> [Vec<f64>; 3] {
        const SPECIAL: [f64; 8] = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
        ];
        fn pick(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
            if rng.below(10) == 0 {
                SPECIAL[rng.below(SPECIAL.len())]
            } else {
                rng.range(lo, hi)
            }
        }
        let mut rng = Rng::new(seed);
        let n = 3 * BLOCK + 77;
        let [mut x1, mut x2, mut y] = [vec![], vec![], vec![]];
        for _ in 0..n {
            let (a, b, t) = match rng.below(8) {
                0 => (margin, 0.0, 1.0),
                1 => (0.0, margin, -1.0),
                2 => (pick(&mut rng, -2.0, 2.0), 0.0, 0.0),
                _ => {
                    let a = pick(&mut rng, -2.0, 2.0);
                    let b = pick(&mut rng, -2.0, 2.0);
                    let t = if rng.below(2) == 0 { 1.0 } else { -1.0 };
                    (
                        a,
                        b,
                        if rng.below(10) == 0 {
                            pick(&mut rng, -2.0, 2.0)
                        } else {
                            t
                        },
                    )
                }
            };
            x1.push(a);
            x2.push(b);
            y.push(t);
        }
        [x1, x2, y]
    }

    fn bits<T: Real>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.f64().to_bits()).collect()
    }

    /// The bits of a sum, any NaN as one: the sign of a NaN sum depends on which NaN operand
    /// an addition propagates, and the compiler may swap the operands of the lane additions
    /// (it does so differently in the reference loop and the vectorised pass).
    fn sum_bits(t: f64) -> u64 {
        if t.is_nan() { f64::NAN } else { t }.to_bits()
    }

    /// Runs the pass with the given writes on the widest vector path (`avx2`) or the baseline;
    /// returns the total's bits, the losses and the gradients (empty where not written).
    #[allow(clippy::type_complexity)]
    fn run_pass<T: Real>(
        [x1, x2, y]: &[Vec<T>; 3],
        m: T,
        up: T,
        keep: bool,
        grad: bool,
        avx2: bool,
    ) -> (u64, Vec<T>, [Vec<T>; 3]) {
        let n = x1.len();
        let z = |on: bool| if on { vec![T::zero(); n] } else { Vec::new() };
        let (mut l, mut d1, mut d2, mut dt) = (z(keep), z(grad), z(grad), z(grad));
        let (ls, g1, g2, gt) = (&mut l[..], &mut d1[..], &mut d2[..], &mut dt[..]);
        let total = crate::vmath::dispatch_with(
            avx2,
            #[inline(always)]
            || match (keep, grad) {
                (false, false) => pass::<T, false, false>(x1, x2, y, m, up, ls, g1, g2, gt),
                (false, true) => pass::<T, false, true>(x1, x2, y, m, up, ls, g1, g2, gt),
                (true, false) => pass::<T, true, false>(x1, x2, y, m, up, ls, g1, g2, gt),
                (true, true) => pass::<T, true, true>(x1, x2, y, m, up, ls, g1, g2, gt),
            },
        )
        .unwrap();
        (total.to_bits(), l, [d1, d2, dt])
    }

    /// The blocked pass, and the whole kernel for each reduction, give the bits of the element
    /// loop it replaced (losses, gradients, total), NaN, infinities, zeros and kinks included.
    #[test]
    fn blocked_pass_matches_the_element_loop_bit_for_bit() {
        fn check<T: Real>(data: &[Vec<T>; 3], margin: f64) {
            let n = data[0].len();
            let m = T::of(margin);
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let up = T::of(upstream(reduction, n));
                let (l, g, total) = reference(&data[0], &data[1], &data[2], m, up);
                let what = format!(
                    "{} margin {margin} {reduction:?}",
                    std::any::type_name::<T>()
                );
                for (keep, grad) in [(false, false), (false, true), (true, false), (true, true)] {
                    let out = run_pass(data, m, up, keep, grad, crate::vmath::has_avx2());
                    assert_eq!(
                        sum_bits(f64::from_bits(out.0)),
                        sum_bits(total),
                        "{what} total"
                    );
                    if keep {
                        assert_eq!(bits(&out.1), bits(&l), "{what} losses");
                    }
                    if grad {
                        for (k, (got, want)) in out.2.iter().zip(&g).enumerate() {
                            assert_eq!(bits(got), bits(want), "{what} gradient {k}");
                        }
                    }
                }
                let [x1, x2, y] = data
                    .each_ref()
                    .map(|v| ArrayViewD::from_shape(IxDyn(&[n]), &v[..]).unwrap());
                let run = |grad| {
                    margin_ranking_loss(x1.view(), x2.view(), y.view(), margin, reduction, grad)
                        .unwrap()
                };
                let out = run(true);
                let want = reduce(reduction, &[n], l.clone(), total, n);
                let loss_bits = |loss: &ArrayD<T>| match reduction {
                    Reduction::None => bits(loss.as_slice().unwrap()),
                    _ => vec![sum_bits(loss.first().unwrap().f64())],
                };
                assert_eq!(loss_bits(&out.loss), loss_bits(&want), "{what} loss");
                for (k, name) in ["input1", "input2", "target"].into_iter().enumerate() {
                    let got = out.grad(name).unwrap().as_slice().unwrap().to_vec();
                    assert_eq!(bits(&got), bits(&g[k]), "{what} {name}");
                }
                assert_eq!(loss_bits(&run(false).loss), loss_bits(&want), "{what} loss");
            }
        }
        for (seed, margin) in [(1, 0.5), (2, 0.0), (3, -0.25)] {
            let data = ranking_data(seed, margin);
            // The same without NaN and infinities, so that the totals are finite.
            let finite = data.each_ref().map(|v| {
                v.iter()
                    .map(|&x| if x.is_finite() { x } else { 1.5 })
                    .collect()
            });
            for data in [data, finite] {
                check::<f64>(&data, margin);
                check::<f32>(
                    &data
                        .each_ref()
                        .map(|v| v.iter().map(|&x| x as f32).collect()),
                    margin,
                );
            }
        }
    }

    /// The vector-compiled pass (AVX-512 or AVX2, the widest the CPU has) gives the same bits as
    /// the baseline one (total, losses and gradients), f32 and f64, over a length that is not a
    /// multiple of the block.
    #[test]
    fn avx2_and_baseline_passes_are_bit_identical() {
        fn check<T: Real>(data: &[Vec<T>; 3]) {
            let (m, up) = (T::of(0.5), T::of(1.0 / 3.0));
            let (a, b) = (
                run_pass(data, m, up, true, true, true),
                run_pass(data, m, up, true, true, false),
            );
            let total = |t: u64| sum_bits(f64::from_bits(t));
            assert_eq!(total(a.0), total(b.0));
            assert_eq!(bits(&a.1), bits(&b.1));
            for (k, (a, b)) in a.2.iter().zip(&b.2).enumerate() {
                assert_eq!(bits(a), bits(b), "gradient {k}");
            }
        }
        let data = ranking_data(17, 0.5);
        let finite = data.each_ref().map(|v| {
            v.iter()
                .map(|&x| if x.is_finite() { x } else { 1.5 })
                .collect()
        });
        for data in [data, finite] {
            check::<f64>(&data);
            check::<f32>(
                &data
                    .each_ref()
                    .map(|v| v.iter().map(|&x| x as f32).collect()),
            );
        }
    }
}
