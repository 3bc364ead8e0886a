use super::*;
use crate::ErrorKind;
use crate::reduction::BLOCK;
use crate::reduction::Sum8;
use crate::testing::{Rng, assert_array_close, assert_close, assert_grads3, bits, sum_bits};
use ndarray::array;

#[test]
fn matches_the_worked_example_of_losses_md() {
    // The worked example gives the outputs but not the inputs: x1 − x2 = [0.2, −1, −1] with
    // y = [1, 1, −1] and margin 0.5 reproduce every listed value and sign of zero.
    let x1 = array![0.7, 0.0, 0.0].into_dyn();
    let x2 = array![0.5, 1.0, 1.0].into_dyn();
    let y = array![1.0, 1.0, -1.0].into_dyn();
    let out =
        margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::None, true).unwrap();
    assert_array_close("loss", &out.loss, &[0.3, 1.5, 0.0], 1e-15, 0.0);
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
    let out =
        margin_ranking_loss(x.view(), x.view(), y.view(), 0.25, Reduction::None, false).unwrap();
    assert_eq!(out.loss.as_slice().unwrap(), &[0.25, 0.25]);
}

#[test]
fn nan_propagates_and_a_masked_infinite_difference_gives_a_nan_target_gradient() {
    let x1 = array![f64::NAN, f64::INFINITY].into_dyn();
    let x2 = array![0.0, 0.0].into_dyn();
    let y = array![1.0, 1.0].into_dyn();
    let out =
        margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.0, Reduction::None, true).unwrap();
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
    let out =
        margin_ranking_loss(x1.view(), x2.view(), y.view(), 1.0, Reduction::None, true).unwrap();
    assert_eq!(out.loss.shape(), &[2, 3]);
    assert_eq!(out.grad("input1").unwrap().shape(), &[2, 1]);
    assert_eq!(out.grad("input2").unwrap().shape(), &[1, 3]);
    assert_eq!(out.grad("target").unwrap().shape(), &[1, 1]);
}

#[test]
fn different_ranks_are_rejected() {
    let a = array![1.0, 2.0, 3.0].into_dyn();
    let b = array![[1.0], [2.0], [3.0]].into_dyn();
    let e =
        margin_ranking_loss(a.view(), b.view(), a.view(), 0.0, Reduction::Mean, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
    assert!(e.message.contains("[3, 1]"), "{}", e.message);
    let e =
        margin_ranking_loss(a.view(), a.view(), b.view(), 0.0, Reduction::Mean, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
}

#[test]
fn shapes_that_do_not_broadcast_are_rejected() {
    let a = array![1.0, 2.0, 3.0].into_dyn();
    let b = array![1.0, 2.0].into_dyn();
    let e =
        margin_ranking_loss(a.view(), b.view(), a.view(), 0.0, Reduction::Mean, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
    let e =
        margin_ranking_loss(a.view(), a.view(), b.view(), 0.0, Reduction::Mean, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
}

#[test]
fn empty_and_zero_dimensional_inputs_work() {
    let e = ArrayD::<f64>::zeros(IxDyn(&[0]));
    let out =
        margin_ranking_loss(e.view(), e.view(), e.view(), 1.0, Reduction::Mean, true).unwrap();
    assert!(out.loss.first().unwrap().is_nan());
    assert_eq!(out.grad("input1").unwrap().shape(), &[0]);
    let s = margin_ranking_loss(e.view(), e.view(), e.view(), 1.0, Reduction::Sum, false).unwrap();
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
    let out =
        margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.5, Reduction::Mean, true).unwrap();
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
                margin_ranking_loss(x1.view(), x2.view(), y.view(), 0.3, reduction, true).unwrap()
            };
            let what = format!("{s1:?} {reduction:?}");
            let args = [&x1, &x2, &y];
            assert_grads3(&what, args, ["input1", "input2", "target"], run);
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
            (false, false) => pass::<T, false, false>(x1, x2, y, m, up, ls, [g1, g2, gt]),
            (false, true) => pass::<T, false, true>(x1, x2, y, m, up, ls, [g1, g2, gt]),
            (true, false) => pass::<T, true, false>(x1, x2, y, m, up, ls, [g1, g2, gt]),
            (true, true) => pass::<T, true, true>(x1, x2, y, m, up, ls, [g1, g2, gt]),
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
