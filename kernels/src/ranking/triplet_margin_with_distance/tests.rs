use super::*;
use crate::ErrorKind;
use crate::ranking::triplet_margin::tests::{opts as triplet_opts, triplet};
use crate::testing::{Rng, assert_array_close, assert_close, assert_grads3};
use ndarray::{ArrayD, IxDyn, array};

/// `triplet_margin_with_distance_loss` on owned arrays.
fn with_distance<T: Real>(
    a: &ArrayD<T>,
    p: &ArrayD<T>,
    n: &ArrayD<T>,
    options: TripletMarginWithDistanceOptions,
) -> Result<LossOutput<T>, LossError> {
    triplet_margin_with_distance_loss(a.view(), p.view(), n.view(), options)
}

/// The options `distance_function`, `margin`, `swap`, `reduction`, `grad`.
fn opts(
    distance_function: DistanceFunction,
    margin: f64,
    swap: bool,
    reduction: Reduction,
    grad: bool,
) -> TripletMarginWithDistanceOptions {
    TripletMarginWithDistanceOptions {
        distance_function,
        margin,
        swap,
        reduction,
        grad,
    }
}

/// The options of the cosine distance.
fn cosine(
    margin: f64,
    swap: bool,
    reduction: Reduction,
    grad: bool,
) -> TripletMarginWithDistanceOptions {
    opts(
        DistanceFunction::CosineDistance,
        margin,
        swap,
        reduction,
        grad,
    )
}

fn cosine_similarity(a: &[f64], b: &[f64]) -> f64 {
    let n = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-8);
    let (na, nb) = (n(a), n(b));
    a.iter().zip(b).map(|(x, y)| (x / na) * (y / nb)).sum()
}

#[test]
fn the_default_is_triplet_margin_loss_with_p_2() {
    let mut rng = Rng::new(2);
    let [a, p, n] = [rng.randn(&[4, 6]), rng.randn(&[4, 6]), rng.randn(&[4, 6])];
    for swap in [false, true] {
        let want = triplet(
            &a,
            &p,
            &n,
            triplet_opts(0.8, 2.0, 1e-6, swap, Reduction::None, true),
        )
        .unwrap();
        let got = with_distance(
            &a,
            &p,
            &n,
            opts(
                DistanceFunction::default(),
                0.8,
                swap,
                Reduction::None,
                true,
            ),
        )
        .unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn cosine_distance_is_one_minus_the_cosine_similarity() {
    let a = array![[1.0, 0.0], [1.0, 1.0]].into_dyn();
    let p = array![[1.0, 1.0], [2.0, 2.0]].into_dyn();
    let n = array![[0.0, 1.0], [-1.0, 0.5]].into_dyn();
    let out = with_distance(&a, &p, &n, cosine(1.0, false, Reduction::None, false)).unwrap();
    let rows = |x: &ArrayD<f64>, i: usize| {
        x.index_axis(ndarray::Axis(0), i)
            .iter()
            .copied()
            .collect::<Vec<f64>>()
    };
    let want: Vec<f64> = (0..2)
        .map(|i| {
            let d_ap = 1.0 - cosine_similarity(&rows(&a, i), &rows(&p, i));
            let d_an = 1.0 - cosine_similarity(&rows(&a, i), &rows(&n, i));
            (1.0 + d_ap - d_an).max(0.0)
        })
        .collect();
    assert_close("loss", out.loss.as_slice().unwrap(), &want, 1e-15, 1e-15);
}

#[test]
fn cosine_of_a_zero_vector_is_zero_and_its_gradient_divides_by_eps() {
    // torch 2.15: cosine_similarity(0, y) = 0, ∂/∂x = y / (‖y‖ · eps), ∂/∂y = 0.
    let a = array![0.0, 0.0, 0.0].into_dyn();
    let p = array![1.0, 2.0, 2.0].into_dyn();
    let n = array![1.0, 2.0, 2.0].into_dyn();
    let out = with_distance(&a, &p, &n, cosine(0.5, false, Reduction::Sum, true)).unwrap();
    assert_eq!(out.loss.first(), Some(&0.5));
    // d_ap and d_an cancel at a = 0: anchor gets −(p/‖p‖)/eps + (n/‖n‖)/eps = 0.
    assert!(out.grad("anchor").unwrap().iter().all(|&v| v == 0.0));
    assert!(out.grad("positive").unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn cosine_gradient_below_eps_follows_autograd_through_the_unclamped_norm() {
    // Value checked on torch 2.15: x = [1e-9, 2e-9], y = [1, 1]:
    // ∂cos/∂x = [61223845.1381, 51737012.1576].
    let a = array![1e-9, 2e-9].into_dyn();
    let p = array![1.0, 1.0].into_dyn();
    let n = array![-1.0, -1.0].into_dyn();
    let out = with_distance(&a, &p, &n, cosine(5.0, false, Reduction::Sum, true)).unwrap();
    // ℓ = m + (1 − cos(a, p)) − (1 − cos(a, n)) and cos(a, n) = −cos(a, p): anchor gets
    // −2 ∂cos(a, p)/∂a.
    let want = [-2.0 * 61223845.1381, -2.0 * 51737012.1576];
    assert_array_close("anchor", out.grad("anchor").unwrap(), &want, 1e-11, 0.0);
}

#[test]
fn cosine_over_one_element_takes_its_norm_as_the_absolute_value() {
    // torch 2.15: linalg.vector_norm of one element is |x|, so a huge value (whose square
    // overflows) still has cosine ±1 with a non-zero one, and 0 with a zero one (whose
    // gradient divides by eps). triplet_margin_with_distance_loss(a, p, n,
    // distance_function=lambda x, y: 1 - F.cosine_similarity(x, y), reduction='none'),
    // then .sum().backward(), in float64 with big = -1e200 and float32 with -8.21e21:
    // loss [2, 1]; gradients 0 but ∂/∂n[0] = -1e8.
    fn check<T: Real + std::fmt::Debug>(big: T) {
        let t = |v: [f64; 2]| ArrayD::from_shape_vec(IxDyn(&[2, 1]), v.map(T::of).to_vec());
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![big, T::of(3.0)]).unwrap();
        let p = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![T::of(3.0), -big]).unwrap();
        let n = t([0.0, 5.0]).unwrap();
        let out = with_distance(&a, &p, &n, cosine(1.0, false, Reduction::None, true)).unwrap();
        let f = |v: &ArrayD<T>| v.iter().map(|x| x.f64()).collect::<Vec<f64>>();
        assert_eq!(f(&out.loss), [2.0, 1.0]);
        assert_eq!(f(out.grad("anchor").unwrap()), [0.0, 0.0]);
        assert_eq!(f(out.grad("positive").unwrap()), [0.0, 0.0]);
        assert_eq!(f(out.grad("negative").unwrap()), [-1e8, 0.0]);
    }
    check(-1e200f64);
    check(-8.21e21f32);
}

#[test]
fn cosine_gradient_terms_accumulate_in_autograds_order() {
    // torch 2.15, float32, swap=True, reduction='mean': over one element every cosine is
    // ±1, so every gradient is 0 in exact arithmetic; torch's rounding gives exactly 0
    // because autograd differentiates (p, n), then (a, n), then (a, p), adding each
    // division's term and then each norm's to the running gradient. Summed in another
    // order the terms (~3e4 each) leave a 1-ulp residue (-0.0009765625).
    let col =
        |v: [f64; 3]| ArrayD::from_shape_vec(IxDyn(&[3, 1]), v.map(|x| x as f32).to_vec()).unwrap();
    let a = col([
        1.114904080168344e-05,
        1.386179633300344e-06,
        1.607406829862157e-07,
    ]);
    let n = col([2537.70849609375, 14045.69140625, -9195.0234375]);
    let out = with_distance(&a, &a, &n, cosine(1.0, true, Reduction::Mean, true)).unwrap();
    assert_eq!(out.loss.first(), Some(&(2.0f32 / 3.0)));
    for name in ["anchor", "positive", "negative"] {
        assert!(
            out.grad(name).unwrap().iter().all(|&v| v == 0.0),
            "{name}: {:?}",
            out.grad(name)
        );
    }
}

#[test]
fn cosine_distance_accepts_an_empty_last_dimension() {
    let e = ArrayD::<f64>::zeros(IxDyn(&[3, 0]));
    let out = with_distance(&e, &e, &e, cosine(1.0, true, Reduction::None, true)).unwrap();
    assert_eq!(out.loss.as_slice().unwrap(), &[1.0, 1.0, 1.0]);
}

#[test]
fn margin_is_checked_before_shapes() {
    let a = array![[1.0]].into_dyn();
    let b = array![1.0].into_dyn();
    let e = with_distance(&a, &b, &a, cosine(0.0, false, Reduction::Mean, false)).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Option, "margin"));
    let e = with_distance(&a, &b, &a, cosine(1.0, false, Reduction::Mean, false)).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "positive"));
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(31);
    let shapes: [[&[usize]; 3]; 3] = [
        [&[3, 4], &[3, 4], &[3, 4]],
        [&[3, 4], &[1, 4], &[3, 1]],
        [&[5], &[5], &[5]],
    ];
    for [sa, sp, sn] in shapes {
        for f in [
            DistanceFunction::PairwiseDistance,
            DistanceFunction::CosineDistance,
        ] {
            for swap in [false, true] {
                for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    let a = rng.randn(sa);
                    let p = rng.randn(sp);
                    let n = rng.randn(sn);
                    let run = |a: &ArrayD<f64>, p: &ArrayD<f64>, n: &ArrayD<f64>| {
                        with_distance(a, p, n, opts(f, 1.5, swap, reduction, true)).unwrap()
                    };
                    let what = format!("{sa:?} {f:?} swap={swap} {reduction:?}");
                    let args = [&a, &p, &n];
                    assert_grads3(&what, args, ["anchor", "positive", "negative"], run);
                }
            }
        }
    }
}
