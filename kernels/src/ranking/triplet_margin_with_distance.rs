//! `triplet_margin_with_distance_loss` (`nn.TripletMarginWithDistanceLoss`), LOSSES.md §2.22.
//!
//! PyTorch takes any callable as `distance_function`; lossd offers a fixed menu,
//! [`DistanceFunction`]: the default `nn.PairwiseDistance()` (numerically identical to
//! `triplet_margin_loss` with `p = 2`, `eps = 1e-6`) and the cosine distance
//! `1 − cosine_similarity(x1, x2, dim=-1, eps=1e-8)`. Margin, swap, reductions, shape rules and
//! sub-gradient conventions are those of `triplet_margin_loss` (the machinery is shared, see
//! [`super::triplet_margin`]).

use ndarray::ArrayViewD;

use super::triplet_margin::{Distance, check_margin, triplet_loss};
use crate::{LossError, LossOutput, Real, Reduction};

/// The distance functions lossd offers for `distance_function`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DistanceFunction {
    /// `nn.PairwiseDistance()` (PyTorch's default): `‖x1 − x2 + 1e-6‖₂` over the last
    /// dimension.
    #[default]
    PairwiseDistance,
    /// `1 − F.cosine_similarity(x1, x2, dim=-1, eps=1e-8)`, with PyTorch 2.15's formula
    /// `Σ (x1 / max(‖x1‖, eps)) · (x2 / max(‖x2‖, eps))` (x1 and x2 broadcast first) and its
    /// autograd gradient (the clamp to eps is invisible to autograd).
    CosineDistance,
}

impl DistanceFunction {
    fn distance(self) -> Distance {
        match self {
            DistanceFunction::PairwiseDistance => Distance::PNorm { p: 2.0, eps: 1e-6 },
            DistanceFunction::CosineDistance => Distance::Cosine { eps: 1e-8 },
        }
    }
}

/// `F.triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=...,
/// margin, swap, reduction)`.
///
/// `ℓ = max(0, margin + D(a, p) − D(a, n))`, with `swap` `D(a, n)` replaced by
/// `min(D(a, n), D(p, n))`. Shapes as `triplet_margin_loss`: same rank, pairwise broadcast,
/// distance over the last dimension (`(N, D)` → `(N)`, `(D)` → `()`). Gradients: `anchor`,
/// `positive`, `negative`.
///
/// Errors: [`LossError::option`] `margin` when `margin <= 0` or NaN (checked first, as
/// PyTorch does); [`LossError::shape`] naming `positive` or `negative` when the ranks differ
/// or the shapes do not broadcast.
#[allow(clippy::too_many_arguments)]
pub fn triplet_margin_with_distance_loss<T: Real>(
    anchor: ArrayViewD<'_, T>,
    positive: ArrayViewD<'_, T>,
    negative: ArrayViewD<'_, T>,
    distance_function: DistanceFunction,
    margin: f64,
    swap: bool,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    check_margin(margin)?;
    triplet_loss(
        anchor,
        positive,
        negative,
        margin,
        distance_function.distance(),
        swap,
        reduction,
        grad,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::ranking::triplet_margin::triplet_margin_loss;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::{ArrayD, IxDyn, array};

    fn cosine(a: &[f64], b: &[f64]) -> f64 {
        let n = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-8);
        let (na, nb) = (n(a), n(b));
        a.iter().zip(b).map(|(x, y)| (x / na) * (y / nb)).sum()
    }

    #[test]
    fn the_default_is_triplet_margin_loss_with_p_2() {
        let mut rng = Rng::new(2);
        let [a, p, n] = [rng.randn(&[4, 6]), rng.randn(&[4, 6]), rng.randn(&[4, 6])];
        for swap in [false, true] {
            let want = triplet_margin_loss(
                a.view(),
                p.view(),
                n.view(),
                0.8,
                2.0,
                1e-6,
                swap,
                Reduction::None,
                true,
            )
            .unwrap();
            let got = triplet_margin_with_distance_loss(
                a.view(),
                p.view(),
                n.view(),
                DistanceFunction::default(),
                0.8,
                swap,
                Reduction::None,
                true,
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
        let out = triplet_margin_with_distance_loss(
            a.view(),
            p.view(),
            n.view(),
            DistanceFunction::CosineDistance,
            1.0,
            false,
            Reduction::None,
            false,
        )
        .unwrap();
        let rows = |x: &ArrayD<f64>, i: usize| {
            x.index_axis(ndarray::Axis(0), i)
                .iter()
                .copied()
                .collect::<Vec<f64>>()
        };
        let want: Vec<f64> = (0..2)
            .map(|i| {
                let d_ap = 1.0 - cosine(&rows(&a, i), &rows(&p, i));
                let d_an = 1.0 - cosine(&rows(&a, i), &rows(&n, i));
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
        let out = triplet_margin_with_distance_loss(
            a.view(),
            p.view(),
            n.view(),
            DistanceFunction::CosineDistance,
            0.5,
            false,
            Reduction::Sum,
            true,
        )
        .unwrap();
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
        let out = triplet_margin_with_distance_loss(
            a.view(),
            p.view(),
            n.view(),
            DistanceFunction::CosineDistance,
            5.0,
            false,
            Reduction::Sum,
            true,
        )
        .unwrap();
        // ℓ = m + (1 − cos(a, p)) − (1 − cos(a, n)) and cos(a, n) = −cos(a, p): anchor gets
        // −2 ∂cos(a, p)/∂a.
        let want = [-2.0 * 61223845.1381, -2.0 * 51737012.1576];
        assert_close(
            "anchor",
            out.grad("anchor").unwrap().as_slice().unwrap(),
            &want,
            1e-11,
            0.0,
        );
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
            let out = triplet_margin_with_distance_loss(
                a.view(),
                p.view(),
                n.view(),
                DistanceFunction::CosineDistance,
                1.0,
                false,
                Reduction::None,
                true,
            )
            .unwrap();
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
        let col = |v: [f64; 3]| {
            ArrayD::from_shape_vec(IxDyn(&[3, 1]), v.map(|x| x as f32).to_vec()).unwrap()
        };
        let a = col([
            1.114904080168344e-05,
            1.386179633300344e-06,
            1.607406829862157e-07,
        ]);
        let n = col([2537.70849609375, 14045.69140625, -9195.0234375]);
        let out = triplet_margin_with_distance_loss(
            a.view(),
            a.view(),
            n.view(),
            DistanceFunction::CosineDistance,
            1.0,
            true,
            Reduction::Mean,
            true,
        )
        .unwrap();
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
        let out = triplet_margin_with_distance_loss(
            e.view(),
            e.view(),
            e.view(),
            DistanceFunction::CosineDistance,
            1.0,
            true,
            Reduction::None,
            true,
        )
        .unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[1.0, 1.0, 1.0]);
    }

    #[test]
    fn margin_is_checked_before_shapes() {
        let a = array![[1.0]].into_dyn();
        let b = array![1.0].into_dyn();
        let e = triplet_margin_with_distance_loss(
            a.view(),
            b.view(),
            a.view(),
            DistanceFunction::CosineDistance,
            0.0,
            false,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Option, "margin"));
        let e = triplet_margin_with_distance_loss(
            a.view(),
            b.view(),
            a.view(),
            DistanceFunction::CosineDistance,
            1.0,
            false,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
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
                            triplet_margin_with_distance_loss(
                                a.view(),
                                p.view(),
                                n.view(),
                                f,
                                1.5,
                                swap,
                                reduction,
                                true,
                            )
                            .unwrap()
                        };
                        let out = run(&a, &p, &n);
                        let what = format!("{sa:?} {f:?} swap={swap} {reduction:?}");
                        assert_grad(&what, &a, out.grad("anchor").unwrap(), |v| {
                            scalar(&run(v, &p, &n))
                        });
                        assert_grad(&what, &p, out.grad("positive").unwrap(), |v| {
                            scalar(&run(&a, v, &n))
                        });
                        assert_grad(&what, &n, out.grad("negative").unwrap(), |v| {
                            scalar(&run(&a, &p, v))
                        });
                    }
                }
            }
        }
    }
}
