use super::*;
use crate::ErrorKind;
use crate::testing::{Rng, assert_close, assert_grad, class_target, scalar};
use ndarray::{Array, Axis, array};

fn idx(v: &[i64]) -> ArrayD<i64> {
    Array::from_vec(v.to_vec()).into_dyn()
}

fn ce(
    x: &ArrayD<f64>,
    t: &CeTarget<'_, f64>,
    w: Option<&ArrayD<f64>>,
    ignore_index: i64,
    eps: f64,
    reduction: Reduction,
    grad: bool,
) -> LossOutput<f64> {
    cross_entropy(
        x.view(),
        t.clone(),
        CrossEntropyOptions {
            weight: w.map(|w| w.view()),
            ignore_index,
            label_smoothing: eps,
            reduction,
            grad,
        },
    )
    .unwrap()
}

fn flat(a: &ArrayD<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// The worked example's logits.
fn example() -> ArrayD<f64> {
    array![[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]].into_dyn()
}

/// One worked example: weight, ignore_index, label_smoothing, loss, input gradient.
type Example<'a> = (Option<&'a ArrayD<f64>>, i64, f64, f64, [f64; 9]);

#[test]
fn matches_the_worked_examples_of_losses_md() {
    let x = example();
    let t = idx(&[2, 0, 1]);
    let t = CeTarget::Indices(t.view());
    let w = array![1.0, 2.0, 0.5].into_dyn();
    let cases: [Example<'_>; 4] = [
        (
            None,
            -100,
            0.0,
            2.0429549922,
            [
                0.0770746325,
                0.2095105731,
                -0.2865852056,
                -0.3177957925,
                0.0057159418,
                0.3120798506,
                0.1111111111,
                -0.2222222222,
                0.1111111111,
            ],
        ),
        (
            Some(&w),
            -100,
            0.0,
            1.7843693923,
            [
                0.0330319854,
                0.0897902456,
                -0.122822231,
                -0.2723963935,
                0.0048993787,
                0.2674970148,
                0.1904761905,
                -0.380952381,
                0.1904761905,
            ],
        ),
        (
            None,
            0,
            0.0,
            1.5314905364,
            [
                0.1156119488,
                0.3142658596,
                -0.4298778084,
                0.0,
                0.0,
                0.0,
                0.1666666667,
                -0.3333333333,
                0.1666666667,
            ],
        ),
        (
            Some(&w),
            -100,
            0.1,
            1.7816565237,
            [
                0.0279124406,
                0.0827146593,
                -0.1106270999,
                -0.2531268096,
                -0.014066584,
                0.2671933936,
                0.173015873,
                -0.3507936508,
                0.1777777778,
            ],
        ),
    ];
    for (w, ii, eps, loss, g) in cases {
        let out = ce(&x, &t, w, ii, eps, Reduction::Mean, true);
        assert_close("loss", &[out.loss[[]]], &[loss], 1e-9, 0.0);
        assert_close("grad", &flat(out.grad("input").unwrap()), &g, 0.0, 1e-9);
        assert_eq!(out.grads.len(), 1);
    }
    // The probability-target row: p reconstructed from the printed gradient of `input`.
    let p = array![[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]].into_dyn();
    let out = ce(
        &x,
        &CeTarget::Probs(p.view()),
        Some(&w),
        -100,
        0.0,
        Reduction::Mean,
        true,
    );
    assert_close("loss", &[out.loss[[]]], &[1.6324999097], 1e-9, 0.0);
    let gx = [
        0.0142616975,
        0.0199861017,
        -0.0342477992,
        -0.3177957925,
        0.0057159418,
        0.3120798506,
        0.0444444444,
        0.0111111111,
        -0.0555555556,
    ];
    let gp = [
        0.488122928,
        0.3095791894,
        0.3273947974,
        1.0219613013,
        2.7105892692,
        0.0109806506,
        0.3662040962,
        0.7324081924,
        0.1831020481,
    ];
    assert_close("input", &flat(out.grad("input").unwrap()), &gx, 0.0, 1e-9);
    assert_close("target", &flat(out.grad("target").unwrap()), &gp, 0.0, 1e-9);
    assert_eq!(out.grad("weight").unwrap().shape(), &[3]);
}

#[test]
fn probability_mode_with_weight_and_smoothing_matches_pytorch_on_a_k_dim_input() {
    // torch 2.15: x = randn(2,3,2,2) (seed 0), p = rand(2,3,2,2), w = [0.5,1.5,2], ε = 0.1,
    // sum; gradients of input, target and weight.
    let x = Array::from_shape_vec(
        (2, 3, 2, 2),
        vec![
            -2.310411800234176,
            -0.3732508612577643,
            -1.0608166785462863,
            0.9995093547811761,
            -0.8840250045832653,
            -1.2755469302148053,
            -0.623224579866079,
            -0.8664416019125772,
            0.23871805816817063,
            0.7335283685272841,
            -1.3218818291421377,
            1.3148113651971234,
            -1.4874956356507338,
            -0.7135753396468577,
            0.519998663178938,
            -0.9528856397032842,
            0.6748575435940039,
            1.0468653769814655,
            0.15429517864658948,
            -0.7498915228391941,
            -0.7233897004977882,
            0.08636989238234997,
            -1.746404903728242,
            1.041012457033509,
        ],
    )
    .unwrap()
    .into_dyn();
    let p = Array::from_shape_vec(
        (2, 3, 2, 2),
        vec![
            0.2721837106053647,
            0.04143948666981612,
            0.7486882683183439,
            0.3417558526082366,
            0.538225008554474,
            0.46636541886786753,
            0.8634864607582904,
            0.041059375136441645,
            0.9972603835252126,
            0.879664099238981,
            0.7629971687438133,
            0.2558997317667261,
            0.18960807750190223,
            0.9877646697951884,
            0.779601876763762,
            0.36187934651354103,
            0.5658438596011792,
            0.7411996909945431,
            0.004462945317032396,
            0.5836046330976992,
            0.5697132768667305,
            0.04828532922378648,
            0.16300454959952582,
            0.9986809627272996,
        ],
    )
    .unwrap()
    .into_dyn();
    let w = array![0.5, 1.5, 2.0].into_dyn();
    let out = ce(
        &x,
        &CeTarget::Probs(p.view()),
        Some(&w),
        -100,
        0.1,
        Reduction::Sum,
        true,
    );
    assert_close("loss", &[out.loss[[]]], &[16.683647908810734], 1e-12, 0.0);
    let gx = [
        0.015502749511637366,
        0.49851006822803723,
        0.5530701950960745,
        0.14757839589812347,
        -0.13269001519880025,
        -0.46305422846389593,
        0.18866430987737315,
        -0.05621453411269213,
        0.11718726568716299,
        -0.03545583976414169,
        -0.7417345049734474,
        -0.09136386178543135,
        0.0676263117548129,
        -0.2769479924876351,
        0.06847023417221718,
        0.12162875302368814,
        0.6603448510466213,
        0.020577632915708657,
        0.24640260261525185,
        -0.46894872302435875,
        -0.7279711628014341,
        0.25637035957192683,
        -0.314872836787469,
        0.34731997000067066,
    ];
    let gp = [
        1.2996559699404522,
        0.6698040251517906,
        0.5398762054372993,
        0.41688371306968836,
        1.9733457356926265,
        3.2275117685473775,
        1.0288792830936182,
        3.7696849307456324,
        0.6101901346375844,
        0.6870134869940756,
        2.6294220928217302,
        1.0999912335300484,
        1.1121159532398497,
        0.9907674673920034,
        0.2638517443201498,
        1.0163459752971504,
        0.41717106773915263,
        0.595707434727774,
        1.2852549370791198,
        2.77499586812493,
        3.073073129684096,
        2.5231684519154403,
        5.134933397713524,
        0.47636732706237345,
    ];
    assert_close(
        "input",
        &flat(out.grad("input").unwrap()),
        &gx,
        1e-12,
        1e-15,
    );
    assert_close(
        "target",
        &flat(out.grad("target").unwrap()),
        &gp,
        1e-12,
        1e-15,
    );
    let gw = [5.849711933800568, 4.314386062609918, 3.643606423997787];
    assert_close(
        "weight",
        &flat(out.grad("weight").unwrap()),
        &gw,
        1e-12,
        0.0,
    );
}

/// Moves the class dimension last and flattens to (positions, C).
fn as_rows<T: Copy>(a: &ArrayD<T>) -> ndarray::Array2<T> {
    let mut v = a.view();
    for k in 1..a.ndim() - 1 {
        v.swap_axes(k, k + 1);
    }
    let c = a.shape()[1];
    let rows: Vec<T> = v.iter().copied().collect();
    ndarray::Array2::from_shape_vec((rows.len() / c.max(1), c), rows).unwrap()
}

#[test]
fn k_dimensional_inputs_equal_the_same_rows_laid_out_flat() {
    // Spatial sizes 300 (several tiles and a remainder) and 3, in both modes.
    let mut rng = Rng::new(11);
    for (shape, eps) in [(&[2, 3, 300][..], 0.0), (&[2, 5, 3, 1][..], 0.2)] {
        let x = rng.randn(shape);
        let c = shape[1];
        let tshape: Vec<usize> = [&shape[..1], &shape[2..]].concat();
        let n: usize = tshape.iter().product();
        let t = ArrayD::from_shape_vec(
            IxDyn(&tshape),
            (0..n)
                .map(|i| {
                    if i % 7 == 3 {
                        -100
                    } else {
                        rng.below(c) as i64
                    }
                })
                .collect(),
        )
        .unwrap();
        let w = rng.uniform_tensor(&[c], 0.5, 2.0);
        let xr = as_rows(&x).into_dyn();
        let tr = Array::from_iter(t.iter().copied()).into_dyn();
        let got = ce(
            &x,
            &CeTarget::Indices(t.view()),
            Some(&w),
            -100,
            eps,
            Reduction::None,
            true,
        );
        let want = ce(
            &xr,
            &CeTarget::Indices(tr.view()),
            Some(&w),
            -100,
            eps,
            Reduction::None,
            true,
        );
        assert_eq!(got.loss.shape(), tshape.as_slice());
        assert_eq!(flat(&got.loss), flat(&want.loss));
        let g = as_rows(got.grad("input").unwrap()).into_dyn();
        assert_eq!(&g, want.grad("input").unwrap());

        let p = rng.uniform_tensor(shape, 0.0, 1.0);
        let pr = as_rows(&p).into_dyn();
        let got = ce(
            &x,
            &CeTarget::Probs(p.view()),
            Some(&w),
            -1,
            eps,
            Reduction::Mean,
            true,
        );
        let want = ce(
            &xr,
            &CeTarget::Probs(pr.view()),
            Some(&w),
            -1,
            eps,
            Reduction::Mean,
            true,
        );
        assert_eq!(got.loss, want.loss);
        for name in ["input", "target"] {
            let g = as_rows(got.grad(name).unwrap()).into_dyn();
            assert_eq!(&g, want.grad(name).unwrap(), "{name}");
        }
        assert_eq!(got.grad("weight"), want.grad("weight"));
    }
}

#[test]
fn huge_logits_stay_finite_in_both_precisions() {
    let x = array![[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]].into_dyn();
    let t = idx(&[1, 2]);
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.0,
        Reduction::None,
        true,
    );
    // ln 3 to the ulp: the log of the exp-sum is vmath's `ln` (within 1 ulp of libm's).
    assert_close(
        "loss",
        &flat(&out.loss),
        &[2e4, 3f64.ln()],
        f64::EPSILON,
        0.0,
    );
    let g = out.grad("input").unwrap();
    assert_eq!(
        g.iter().take(3).copied().collect::<Vec<_>>(),
        vec![1.0, -1.0, 0.0]
    );
    let xf = x.mapv(|v| v as f32);
    let out = cross_entropy(
        xf.view(),
        CeTarget::Indices(t.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.1,
            reduction: Reduction::Sum,
            grad: true,
        },
    )
    .unwrap();
    assert!(out.loss[[]].is_finite());
    assert!(out.grad("input").unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn zero_total_weight_gives_pytorchs_nan_and_infinite_gradients() {
    // Values printed by torch 2.15.
    let x = array![[0.1, 0.5, -0.3], [1.0, 2.0, 0.0]].into_dyn();
    let t = idx(&[0, 1]);
    let t = CeTarget::Indices(t.view());
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let w = array![0.0, 0.0, 1.0].into_dyn();
    let out = ce(&x, &t, Some(&w), -100, 0.0, Reduction::Mean, true);
    assert!(out.loss[[]].is_nan());
    assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
    let w = array![1.0, -1.0, 1.0].into_dyn();
    let out = ce(&x, &t, Some(&w), -100, 0.0, Reduction::Mean, true);
    assert_eq!(out.loss[[]], inf);
    assert_close(
        "grad",
        &flat(out.grad("input").unwrap()),
        &[nan, inf, inf, -inf, nan, -inf],
        0.0,
        0.0,
    );
    let out = ce(&x, &t, Some(&w), -100, 0.1, Reduction::Mean, true);
    assert_eq!(out.loss[[]], inf);
    assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
    // ε = 1: (1−ε)·(Σ nll / W) = 0·inf is NaN, whatever the smoothing term.
    let out = ce(&x, &t, Some(&w), -100, 1.0, Reduction::Mean, true);
    assert!(out.loss[[]].is_nan());
    assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
    let w = array![0.0, 0.0, 1.0].into_dyn();
    let out = ce(&x, &t, Some(&w), -100, 1.0, Reduction::Mean, true);
    assert!(out.loss[[]].is_nan());
    assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
    // With W ≠ 0, ε = 1 is the smoothing term alone.
    let w = array![1.0, 2.0, 1.0].into_dyn();
    let out = ce(&x, &t, Some(&w), -100, 1.0, Reduction::Mean, true);
    assert_close("loss", &[out.loss[[]]], &[0.9817139902990554], 1e-15, 0.0);
    assert_close(
        "grad",
        &flat(out.grad("input").unwrap()),
        &[
            0.029440470322080647,
            -0.012543901747648523,
            -0.01689656857443209,
            -0.00234290175342327,
            0.07344042478880967,
            -0.07109752303538647,
        ],
        1e-13,
        1e-16,
    );
}

#[test]
fn smoothed_mean_with_only_zero_weight_targets_is_nan_like_pytorchs() {
    // Two rows of zero logits (C = 2), weight [0, 1], both targets class 0, ε = 0.5: each
    // nll_n = −0·logp_0 = 0 and smooth_n = −(0 + 1·(−ln 2)) = ln 2, so ℓ_n = (ε/C)·ln 2.
    // PyTorch's mean is (1−ε)·(Σ nll / W) + (ε/C)·(Σ smooth / W) with W = 0: 0/0 = NaN,
    // where dividing Σ ℓ_n by W would give +inf. Values printed by torch 2.15.
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
    let w = array![0.0, 1.0].into_dyn();
    let t = idx(&[0, 0]);
    let t = CeTarget::Indices(t.view());
    let l = 2f64.ln() / 4.0;
    let none = ce(&x, &t, Some(&w), -100, 0.5, Reduction::None, true);
    assert_close("none", &flat(&none.loss), &[l, l], 1e-15, 0.0);
    assert_close("torch", &[l], &[0.17328679513998632], 1e-15, 0.0);
    // ∂ℓ_n/∂x_c = (ε/C)·(W_all·s_c − w_c) = 0.25·(0.5 − w_c): the target term is 0.
    let g = [0.125, -0.125, 0.125, -0.125];
    assert_eq!(flat(none.grad("input").unwrap()), g);
    let sum = ce(&x, &t, Some(&w), -100, 0.5, Reduction::Sum, true);
    assert_close("sum", &[sum.loss[[]]], &[2.0 * l], 1e-15, 0.0);
    assert_eq!(flat(sum.grad("input").unwrap()), g);
    let mean = ce(&x, &t, Some(&w), -100, 0.5, Reduction::Mean, true);
    assert!(mean.loss[[]].is_nan());
    assert!(mean.grad("input").unwrap().iter().all(|v| v.is_nan()));
    // An ignored row keeps its zero gradient; the others are NaN (torch 2.15).
    let t = idx(&[0, -100]);
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        Some(&w),
        -100,
        0.5,
        Reduction::Mean,
        true,
    );
    assert!(out.loss[[]].is_nan());
    let g = flat(out.grad("input").unwrap());
    assert!(g[..2].iter().all(|v| v.is_nan()));
    assert_eq!(g[2..], [0.0, 0.0]);
    // The same on a K-dimensional input (1, 2, 3) with targets [[0, 0, −100]].
    let x = ArrayD::<f64>::zeros(IxDyn(&[1, 2, 3]));
    let t = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0i64, 0, -100]).unwrap();
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        Some(&w),
        -100,
        0.5,
        Reduction::Mean,
        true,
    );
    assert!(out.loss[[]].is_nan());
    let g = flat(out.grad("input").unwrap());
    let nan_at = [true, true, false, true, true, false];
    for (v, nan) in g.iter().zip(nan_at) {
        assert!(if nan { v.is_nan() } else { *v == 0.0 }, "{g:?}");
    }
    // float32 too.
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 2]));
    let w = array![0.0f32, 1.0].into_dyn();
    let t = idx(&[0, 0]);
    let out = cross_entropy(
        x.view(),
        CeTarget::Indices(t.view()),
        CrossEntropyOptions {
            weight: Some(w.view()),
            ignore_index: -100,
            label_smoothing: 0.5,
            reduction: Reduction::Mean,
            grad: true,
        },
    )
    .unwrap();
    assert!(out.loss[[]].is_nan());
    assert!(out.grad("input").unwrap().iter().all(|v| v.is_nan()));
}

/// torch 2.15 (issue 28): label smoothing with an infinite class weight. PyTorch's
/// `−Σ_c w_c·logp_c` is +inf (`inf · logp_1` with `logp_1 < 0`), where the one-pass form
/// met `inf · (x_1 − max) = inf · 0`.
#[test]
fn smoothing_with_an_infinite_weight_follows_pytorch() {
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let x = array![[0.0, 1.0], [2.0, 0.0]].into_dyn();
    let w = array![1.0, inf].into_dyn();
    let t = idx(&[0, 1]);
    let t = CeTarget::Indices(t.view());
    let out = ce(&x, &t, Some(&w), -100, 0.5, Reduction::None, true);
    assert_eq!(flat(&out.loss), [inf, inf]);
    // Gradients (torch: [[inf, nan], [inf, nan]]).
    assert_close(
        "dx",
        &flat(out.grad("input").unwrap()),
        &[inf, nan, inf, nan],
        0.0,
        0.0,
    );
    let t0 = idx(&[0, 0]);
    for r in [Reduction::Sum, Reduction::Mean] {
        let out = ce(
            &x,
            &CeTarget::Indices(t0.view()),
            Some(&w),
            -100,
            0.5,
            r,
            false,
        );
        assert_eq!(flat(&out.loss), [inf], "{r:?}");
    }
    // An ignored row: loss 0, gradient NaN (0·inf in the masked smoothing term).
    let out = ce(&x, &t, Some(&w), 1, 0.5, Reduction::None, true);
    assert_eq!(flat(&out.loss), [inf, 0.0]);
    assert_close(
        "dx",
        &flat(out.grad("input").unwrap()),
        &[inf, nan, nan, nan],
        0.0,
        0.0,
    );
    // Finite weights whose sum overflows: the elementwise sum is finite where it is.
    let w = array![1e308, 1e308].into_dyn();
    let out = ce(&x, &t, Some(&w), -100, 0.5, Reduction::None, false);
    assert_close(
        "loss",
        &flat(&out.loss),
        &[1.0632616875182229e308, inf],
        1e-15,
        0.0,
    );
    // In float32 too.
    let x32 = x.mapv(|v| v as f32);
    let w32 = array![1.0f32, f32::INFINITY].into_dyn();
    let t1 = idx(&[0]);
    let out = cross_entropy(
        x32.slice(ndarray::s![0..1, ..]).into_dyn(),
        CeTarget::Indices(t1.view()),
        CrossEntropyOptions {
            weight: Some(w32.view()),
            ignore_index: -100,
            label_smoothing: 0.5,
            reduction: Reduction::None,
            grad: false,
        },
    )
    .unwrap();
    assert_eq!(out.loss.as_slice().unwrap(), &[f32::INFINITY]);
}

/// torch 2.15: probabilities near the largest float, mean over two rows. Σp overflows,
/// the gradients Σ(−p_c/2) do not.
#[test]
fn near_max_probabilities_give_autograds_finite_gradient() {
    let x = array![[0.0, 1.0], [0.5, -0.5]].into_dyn();
    let p = array![[1e308, 8.98846567431158e307], [0.25, 0.75]].into_dyn();
    let out = ce(
        &x,
        &CeTarget::Probs(p.view()),
        None,
        -100,
        0.0,
        Reduction::Mean,
        true,
    );
    assert_close(
        "loss",
        &flat(&out.loss),
        &[7.974179400258347e307],
        1e-12,
        0.0,
    );
    let want = [
        -2.4466075259576407e307,
        2.4466075259576407e307,
        0.24052928931500245,
        -0.24052928931500245,
    ];
    assert_close("dx", &flat(out.grad("input").unwrap()), &want, 1e-12, 0.0);
}

#[test]
fn smoothed_reductions_reduce_the_two_terms_apart() {
    // Σ ℓ_n (or Σ ℓ_n / W) and PyTorch's term-by-term (1−ε)·Σ nll + (ε/C)·Σ smooth agree
    // to rounding wherever W ≠ 0.
    let mut rng = Rng::new(23);
    let x = rng.randn(&[6, 5]);
    let t = idx(&[0, 4, -100, 2, 2, 1]);
    let w = rng.uniform_tensor(&[5], 0.2, 2.0);
    let t = CeTarget::Indices(t.view());
    let none = ce(&x, &t, Some(&w), -100, 0.3, Reduction::None, false);
    let total: f64 = none.loss.iter().sum();
    let wsum: f64 = [0usize, 4, 2, 2, 1].iter().map(|&c| w[[c]]).sum();
    let sum = ce(&x, &t, Some(&w), -100, 0.3, Reduction::Sum, false);
    assert_close("sum", &[sum.loss[[]]], &[total], 1e-14, 0.0);
    let mean = ce(&x, &t, Some(&w), -100, 0.3, Reduction::Mean, false);
    assert_close("mean", &[mean.loss[[]]], &[total / wsum], 1e-14, 0.0);
}

#[test]
fn all_ignored_mean_is_nan_and_ignored_rows_get_no_gradient() {
    let x = example();
    let t = idx(&[-100, -100, -100]);
    for eps in [0.0, 0.3] {
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            eps,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        assert!(out.grad("input").unwrap().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn an_ignored_row_with_a_nan_softmax_has_a_nan_gradient_as_in_pytorch() {
    // torch 2.15: autograd's 0 − softmax·0 is NaN for rows [NaN,0,0], [inf,0,0],
    // [−inf,−inf,−inf], and 0 for [−inf,0,1].
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    for (row, is_nan) in [
        ([nan, 0.0, 0.0], true),
        ([inf, 0.0, 0.0], true),
        ([-inf, -inf, -inf], true),
        ([-inf, 0.0, 1.0], false),
    ] {
        let x = array![row, [0.5, 1.0, -1.0]].into_dyn();
        let t = idx(&[-100, 1]);
        for eps in [0.0, 0.2] {
            let out = ce(
                &x,
                &CeTarget::Indices(t.view()),
                None,
                -100,
                eps,
                Reduction::Mean,
                true,
            );
            assert!(out.loss[[]].is_finite());
            let g = out.grad("input").unwrap();
            assert!(
                g.index_axis(Axis(0), 0)
                    .iter()
                    .all(|v| v.is_nan() == is_nan && (is_nan || *v == 0.0))
            );
            assert!(g.index_axis(Axis(0), 1).iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn infinite_logits_follow_pytorch() {
    // torch 2.15: a −inf logit at the target gives inf with gradient [−1, .5, .5]; elsewhere
    // it is harmless; a NaN or +inf logit makes the row NaN.
    let inf = f64::INFINITY;
    let x = array![[-inf, 0.0, 0.0]].into_dyn();
    let t = idx(&[0]);
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.0,
        Reduction::None,
        true,
    );
    assert_eq!(out.loss[[0]], inf);
    assert_eq!(flat(out.grad("input").unwrap()), vec![-1.0, 0.5, 0.5]);
    let t = idx(&[1]);
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.0,
        Reduction::None,
        true,
    );
    assert_close("loss", &[out.loss[[0]]], &[2f64.ln()], 1e-15, 0.0);
    assert_eq!(flat(out.grad("input").unwrap()), vec![0.0, -0.5, 0.5]);
    let x = array![[inf, 0.0, 0.0], [f64::NAN, 0.0, 0.0]].into_dyn();
    let t = idx(&[1, 2]);
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.0,
        Reduction::None,
        true,
    );
    assert!(out.loss.iter().all(|v| v.is_nan()));
}

#[test]
fn label_smoothing_equals_a_smoothed_one_hot_probability_target() {
    let mut rng = Rng::new(4);
    let x = rng.randn(&[5, 4]);
    let t = idx(&[0, 3, 1, 1, 2]);
    let eps = 0.25;
    let mut p = ArrayD::from_elem(IxDyn(&[5, 4]), eps / 4.0);
    for (n, &c) in t.iter().enumerate() {
        p[[n, c as usize]] += 1.0 - eps;
    }
    for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        let a = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            eps,
            reduction,
            true,
        );
        let b = ce(
            &x,
            &CeTarget::Probs(p.view()),
            None,
            -100,
            0.0,
            reduction,
            true,
        );
        assert_close("loss", &flat(&a.loss), &flat(&b.loss), 1e-13, 1e-15);
        let (ga, gb) = (a.grad("input").unwrap(), b.grad("input").unwrap());
        assert_close("grad", &flat(ga), &flat(gb), 1e-12, 1e-15);
    }
}

#[test]
fn a_one_hot_probability_target_differs_from_indices_only_in_the_weighted_mean() {
    let x = example();
    let t = idx(&[2, 0, 1]);
    let p = array![[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]].into_dyn();
    let w = array![1.0, 2.0, 0.5].into_dyn();
    let a = ce(
        &x,
        &CeTarget::Indices(t.view()),
        Some(&w),
        -100,
        0.0,
        Reduction::Sum,
        false,
    );
    let b = ce(
        &x,
        &CeTarget::Probs(p.view()),
        Some(&w),
        -100,
        0.0,
        Reduction::Sum,
        false,
    );
    assert_close("sum", &[a.loss[[]]], &[b.loss[[]]], 1e-14, 0.0);
    let a = ce(
        &x,
        &CeTarget::Indices(t.view()),
        Some(&w),
        -100,
        0.0,
        Reduction::Mean,
        false,
    );
    let b = ce(
        &x,
        &CeTarget::Probs(p.view()),
        Some(&w),
        -100,
        0.0,
        Reduction::Mean,
        false,
    );
    // Index mode divides by Σw_t = 0.5 + 1 + 2, probability mode by 3 positions.
    assert_close("mean", &[a.loss[[]] * 3.5], &[b.loss[[]] * 3.0], 1e-14, 0.0);
}

#[test]
fn unbatched_inputs_take_a_0d_index_or_a_probability_vector() {
    let x = array![0.5, -1.0, 2.0].into_dyn();
    let rows = x.clone().insert_axis(Axis(0));
    let batched = ce(
        &rows,
        &CeTarget::Indices(idx(&[2]).view()),
        None,
        -100,
        0.0,
        Reduction::Mean,
        true,
    );
    for t in [ndarray::arr0(2i64).into_dyn(), idx(&[2])] {
        let out = ce(
            &x,
            &CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::None,
            true,
        );
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.loss[[]], batched.loss[[]]);
        assert_eq!(
            flat(out.grad("input").unwrap()),
            flat(batched.grad("input").unwrap())
        );
    }
    let p = array![0.2, 0.2, 0.6].into_dyn();
    let out = ce(
        &x,
        &CeTarget::Probs(p.view()),
        None,
        -100,
        0.0,
        Reduction::None,
        true,
    );
    assert_eq!(out.loss.shape(), &[] as &[usize]);
    assert_eq!(out.grad("target").unwrap().shape(), &[3]);
}

#[test]
fn empty_inputs_follow_pytorch() {
    // torch 2.15: probability mode gives NaN (mean) and −0.0 (sum and each 'none' entry)
    // for (2, 0) and (0, 3) inputs; index mode with everything ignored gives NaN.
    for shape in [&[2, 0][..], &[0, 3]] {
        let x = ArrayD::<f64>::zeros(IxDyn(shape));
        let p = CeTarget::Probs(x.view());
        let mean = ce(&x, &p, None, -100, 0.0, Reduction::Mean, true);
        assert!(mean.loss[[]].is_nan());
        assert_eq!(mean.grad("input").unwrap().shape(), shape);
        let sum = ce(&x, &p, None, -100, 0.0, Reduction::Sum, false);
        assert!(sum.loss[[]] == 0.0 && sum.loss[[]].is_sign_negative());
        let none = ce(&x, &p, None, -100, 0.0, Reduction::None, false);
        assert_eq!(none.loss.shape(), &shape[..1]);
        assert!(none.loss.iter().all(|v| *v == 0.0 && v.is_sign_negative()));
    }
    // torch 2.15: the weight gradient of an empty batch is 0.
    let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
    let w = array![1.0, 2.0, 3.0].into_dyn();
    let out = ce(
        &x,
        &CeTarget::Probs(x.view()),
        Some(&w),
        -100,
        0.0,
        Reduction::Mean,
        true,
    );
    assert_eq!(flat(out.grad("weight").unwrap()), vec![0.0; 3]);
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
    let t = idx(&[-100, -100]);
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.0,
        Reduction::Mean,
        true,
    );
    assert!(out.loss[[]].is_nan());
    let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3, 4]));
    let t = ArrayD::<i64>::zeros(IxDyn(&[0, 4]));
    let out = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.1,
        Reduction::Sum,
        true,
    );
    assert_eq!(out.loss[[]], 0.0);
}

#[test]
fn bad_options_are_rejected() {
    let x = example();
    let t = idx(&[2, 0, 1]);
    for eps in [-0.1, 1.5, f64::NAN] {
        let e = cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: eps,
                reduction: Reduction::Mean,
                grad: false,
            },
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Option, "label_smoothing"));
    }
    let p = x.mapv(|v| v.abs());
    let e = cross_entropy(
        x.view(),
        CeTarget::Probs(p.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: 0,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
            grad: false,
        },
    )
    .unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Option, "ignore_index"));
    // A negative ignore_index has no effect on probabilities.
    let a = ce(
        &x,
        &CeTarget::Probs(p.view()),
        None,
        -5,
        0.0,
        Reduction::Mean,
        false,
    );
    let b = ce(
        &x,
        &CeTarget::Probs(p.view()),
        None,
        -100,
        0.0,
        Reduction::Mean,
        false,
    );
    assert_eq!(a.loss, b.loss);
}

#[test]
fn targets_that_do_not_fit_are_rejected() {
    let x = example();
    let shape_err = |r: Result<LossOutput<f64>, LossError>, arg: &str| {
        let e = r.unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
    };
    // Indices with the input's shape are probabilities by PyTorch's rule.
    let t = ArrayD::<i64>::zeros(IxDyn(&[3, 3]));
    shape_err(
        cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "target",
    );
    let p = ArrayD::<f64>::zeros(IxDyn(&[3, 2]));
    shape_err(
        cross_entropy(
            x.view(),
            CeTarget::Probs(p.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "target",
    );
    let t = idx(&[0, 1]);
    shape_err(
        cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "target",
    );
    let t = ArrayD::<i64>::zeros(IxDyn(&[1, 2]));
    shape_err(
        cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "target",
    );
    let w = array![1.0, 2.0].into_dyn();
    let t = idx(&[0, 1, 2]);
    shape_err(
        cross_entropy(
            x.view(),
            CeTarget::Indices(t.view()),
            CrossEntropyOptions {
                weight: Some(w.view()),
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "weight",
    );
    let p = x.clone();
    shape_err(
        cross_entropy(
            x.view(),
            CeTarget::Probs(p.view()),
            CrossEntropyOptions {
                weight: Some(w.view()),
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "weight",
    );
    let x0 = ndarray::arr0(1.0).into_dyn();
    shape_err(
        cross_entropy(
            x0.view(),
            CeTarget::Probs(x0.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        ),
        "input",
    );
    let t = idx(&[0, 3, 1]);
    let e = cross_entropy(
        x.view(),
        CeTarget::Indices(t.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::None,
            grad: false,
        },
    )
    .unwrap_err();
    assert_eq!(
        (e.kind, e.arg, e.index),
        (ErrorKind::Value, "target", Some(vec![1]))
    );
}

/// The bits of each element (through `f64`, exact for both precisions).
fn loss_bits<T: Real>(v: &ArrayD<T>) -> Vec<u64> {
    v.iter().map(|x| x.f64().to_bits()).collect()
}

/// The batched logs ([`IndexRowBatch`], 64 rows at a time, vectorised) give the bits of a
/// single row's [`RowMath::index_row`] (scalar `ln_f64`), and the gradient pass the bits of
/// the forward pass: over batch boundaries, class counts around the vector widths, ignored
/// rows, weights and smoothing, in both precisions.
fn batched_rows_equal_single_rows<T: Real>() {
    let mut rng = Rng::new(20_261_204);
    for classes in [1usize, 5, 16, 37, 100] {
        let n = 150;
        let x = rng.randn(&[n, classes]).mapv(|v| T::of(v * 5.0));
        let t: Vec<i64> = (0..n)
            .map(|_| {
                if rng.uniform() < 0.1 {
                    -100
                } else {
                    (rng.uniform() * classes as f64) as i64 % classes as i64
                }
            })
            .collect();
        let t = ArrayD::from_shape_vec(IxDyn(&[n]), t).unwrap();
        let w = rng.randn(&[classes]).mapv(|v| T::of(v.abs() + 0.1));
        for eps in [0.0, 0.2] {
            for weight in [None, Some(w.view())] {
                let run = |reduction, grad| {
                    cross_entropy(
                        x.view(),
                        CeTarget::Indices(t.view()),
                        CrossEntropyOptions {
                            weight: weight.clone(),
                            ignore_index: -100,
                            label_smoothing: eps,
                            reduction,
                            grad,
                        },
                    )
                    .unwrap()
                };
                let wv: Option<Vec<T>> = weight.as_ref().map(|w| w.iter().copied().collect());
                let math = RowMath::new(classes, wv.as_deref(), -100, eps, T::one());
                let out = run(Reduction::None, false);
                let xs = x.as_slice().unwrap();
                for (i, &l) in out.loss.iter().enumerate() {
                    let row = &xs[i * classes..(i + 1) * classes];
                    let single = math.index_row(row, t[[i]], None).loss;
                    assert_eq!(
                        l.f64().to_bits(),
                        single.f64().to_bits(),
                        "C {classes} row {i}"
                    );
                }
                for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                    let a = run(reduction, false).loss;
                    let b = run(reduction, true).loss;
                    assert_eq!(loss_bits(&a), loss_bits(&b), "C {classes} {reduction:?}");
                }
            }
        }
    }
}

/// [`batched_rows_equal_single_rows`] for a K-dimensional input: batches of 64 rows that
/// cross the transposed tiles (163 positions of 100 classes each).
fn batched_k_dim_rows_equal_single_rows<T: Real>() {
    let mut rng = Rng::new(20_261_205);
    let (n, c, d) = (2, 100, 300);
    let x = rng.randn(&[n, c, d]).mapv(|v| T::of(v * 5.0));
    let t: Vec<i64> = (0..n * d)
        .map(|i| {
            if i % 7 == 3 {
                -100
            } else {
                (i * 13 % c) as i64
            }
        })
        .collect();
    let t = ArrayD::from_shape_vec(IxDyn(&[n, d]), t).unwrap();
    for eps in [0.0, 0.2] {
        let run = |reduction, grad| {
            let out = cross_entropy(
                x.view(),
                CeTarget::Indices(t.view()),
                CrossEntropyOptions {
                    weight: None,
                    ignore_index: -100,
                    label_smoothing: eps,
                    reduction,
                    grad,
                },
            );
            out.unwrap().loss
        };
        let math = RowMath::new(c, None, -100, eps, T::one());
        let out = run(Reduction::None, false);
        for b in 0..n {
            for j in 0..d {
                let row: Vec<T> = (0..c).map(|k| x[[b, k, j]]).collect();
                let single = math.index_row(&row, t[[b, j]], None).loss;
                assert_eq!(
                    out[[b, j]].f64().to_bits(),
                    single.f64().to_bits(),
                    "{b} {j}"
                );
            }
        }
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean] {
            let (a, b) = (run(reduction, false), run(reduction, true));
            assert_eq!(loss_bits(&a), loss_bits(&b), "{reduction:?}");
        }
    }
}

#[test]
fn batched_k_dim_rows_equal_single_rows_both_precisions() {
    batched_k_dim_rows_equal_single_rows::<f64>();
    batched_k_dim_rows_equal_single_rows::<f32>();
}

#[test]
fn batched_rows_equal_single_rows_f64() {
    batched_rows_equal_single_rows::<f64>();
}

#[test]
fn batched_rows_equal_single_rows_f32() {
    batched_rows_equal_single_rows::<f32>();
}

#[test]
fn float32_agrees_with_float64() {
    let mut rng = Rng::new(8);
    let x = rng.randn(&[6, 7]).mapv(|v| v * 4.0);
    let t = idx(&[0, 1, 2, 3, 4, 6]);
    let a = ce(
        &x,
        &CeTarget::Indices(t.view()),
        None,
        -100,
        0.1,
        Reduction::Mean,
        true,
    );
    let xf = x.mapv(|v| v as f32);
    let b = cross_entropy(
        xf.view(),
        CeTarget::Indices(t.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.1,
            reduction: Reduction::Mean,
            grad: true,
        },
    )
    .unwrap();
    assert!((a.loss[[]] - f64::from(b.loss[[]])).abs() < 1e-5);
    let gb: Vec<f64> = b
        .grad("input")
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_close("grad", &gb, &flat(a.grad("input").unwrap()), 1e-5, 1e-6);
}

#[test]
fn index_mode_gradients_match_finite_differences() {
    let mut rng = Rng::new(21);
    let w = rng.uniform_tensor(&[4], 0.5, 2.0);
    for shape in [&[5, 4][..], &[2, 4, 3], &[4]] {
        let x = rng.randn(shape);
        let t = class_target(&mut rng, shape, 4, 3);
        let t = CeTarget::Indices(t.view());
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (use_w, eps, ii) in [
                (false, 0.0, -100),
                (true, 0.0, 3),
                (true, 0.3, -100),
                (false, 0.2, 3),
            ] {
                let wv = use_w.then_some(&w);
                let out = ce(&x, &t, wv, ii, eps, reduction, true);
                assert_grad(
                    &format!("{shape:?} {reduction:?} weight={use_w} eps={eps} ii={ii}"),
                    &x,
                    out.grad("input").unwrap(),
                    |x| scalar(&ce(x, &t, wv, ii, eps, reduction, false)),
                );
            }
        }
    }
}

#[test]
fn infinite_probabilities_give_pytorchs_infinities_not_nan() {
    // torch 2.15: -(log_softmax(x) * p' * w).sum(1) elementwise, so an infinite probability
    // gives ±inf where a one-pass Σ(x−m)p − Σp·lse would meet ∞ − ∞.
    let inf = f64::INFINITY;
    let x = array![
        [2.389899969100952, 0.6690000295639038],
        [0.15690000355243683, -1.7970999479293823]
    ]
    .into_dyn();
    let t = array![[1.0, 0.5], [-inf, 0.25]].into_dyn();
    let w = array![2.0, 0.0].into_dyn();
    let loss = |t: &ArrayD<f64>, w: Option<&ArrayD<f64>>, eps: f64| {
        ce(
            &x,
            &CeTarget::Probs(t.view()),
            w,
            -100,
            eps,
            Reduction::None,
            false,
        )
        .loss
    };
    let close = |got: ArrayD<f64>, first: f64| {
        assert!((got[0] - first).abs() < 1e-4, "{got}");
        assert_eq!(got[1], -inf, "{got}");
    };
    close(loss(&t, None, 0.0), 1.1073);
    close(loss(&t, None, 0.2), 1.0909);
    close(loss(&t, Some(&w), 0.0), 0.3292);
    // inf·(−0.17) + (−inf)·(−1.89) is NaN in torch too; 0·lp + inf·lp is −(−inf).
    let t2 = array![[inf, -inf], [0.0, inf]].into_dyn();
    let got = loss(&t2, None, 0.0);
    assert!(got[0].is_nan() && got[1] == inf, "{got}");
    // A confident row: torch's log_softmax of the top class is exactly 0 (float32: the
    // other exp(x − m) vanish in the float32 sum; float64 likewise at a gap of 40), so an
    // infinite probability there gives 0·∞ = NaN, not ∓∞.
    let x32 = array![[20.0f32, 0.0]].into_dyn();
    let t32 = array![[f32::INFINITY, 0.0]].into_dyn();
    let out = cross_entropy(
        x32.view(),
        CeTarget::Probs(t32.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::None,
            grad: false,
        },
    )
    .unwrap();
    assert!(out.loss[0].is_nan(), "{}", out.loss);
    let x64 = array![[40.0, 0.0]].into_dyn();
    let t64 = array![[inf, 0.0]].into_dyn();
    let got = ce(
        &x64,
        &CeTarget::Probs(t64.view()),
        None,
        -100,
        0.0,
        Reduction::None,
        false,
    )
    .loss;
    assert!(got[0].is_nan(), "{got}");
}

#[test]
fn huge_finite_probabilities_keep_pytorchs_finite_loss() {
    // torch 2.15, x = [[0, 0]], p = [[1e308, 1e308]]: the elementwise sum −Σ lp·p' is
    // 2·ln2·1e308, finite, while the one-pass Σp' overflows (ℓ = inf); gradient
    // −p' + softmax·Σp' = [inf, inf] in torch as well. Smoothing with weight [1, .5]:
    // 9.35748693755926e307. Float32 with 3e38: inf (the sum overflows in float32 too),
    // and 2.807245923005356e38 smoothed and weighted.
    let x = array![[0.0, 0.0]].into_dyn();
    let p = array![[1e308, 1e308]].into_dyn();
    let w = array![1.0, 0.5].into_dyn();
    let run = |w: Option<&ArrayD<f64>>, eps: f64, grad: bool| {
        ce(
            &x,
            &CeTarget::Probs(p.view()),
            w,
            -100,
            eps,
            Reduction::Mean,
            grad,
        )
    };
    let out = run(None, 0.0, true);
    assert_close(
        "loss",
        &[out.loss[[]]],
        &[1.3862943611198905e308],
        1e-15,
        0.0,
    );
    assert_eq!(flat(out.grad("input").unwrap()), vec![f64::INFINITY; 2]);
    let out = run(Some(&w), 0.1, false);
    assert_close(
        "smoothed",
        &[out.loss[[]]],
        &[9.35748693755926e307],
        1e-15,
        0.0,
    );
    let run32 = |w: Option<ArrayViewD<'_, f32>>, eps: f64| {
        let x = array![[0.0f32, 0.0]].into_dyn();
        let p = array![[3e38f32, 3e38]].into_dyn();
        let out = cross_entropy(
            x.view(),
            CeTarget::Probs(p.view()),
            CrossEntropyOptions {
                weight: w,
                ignore_index: -100,
                label_smoothing: eps,
                reduction: Reduction::Mean,
                grad: false,
            },
        );
        f64::from(out.unwrap().loss[[]])
    };
    assert_eq!(run32(None, 0.0), f64::INFINITY);
    let w32 = array![1.0f32, 0.5].into_dyn();
    let got = run32(Some(w32.view()), 0.1);
    assert_close("f32 smoothed", &[got], &[2.807245923005356e38], 1e-6, 0.0);
}

#[test]
fn one_class_gradients_are_exactly_zero_with_smoothing() {
    // torch 2.15: with C = 1 the log-softmax is 0 whatever the logit, and its backward
    // g − exp(0)·Σg is exactly 0 (found by diff_torch.py through linear_cross_entropy,
    // where a residue of 1e-7 times a weight of −1e6 made 0.12).
    let x = array![[0.0458], [1.1231], [-3.7]].into_dyn();
    let t = idx(&[0, 0, 0]);
    let w = array![1.6314].into_dyn();
    for weight in [None, Some(&w)] {
        for reduction in [Reduction::Sum, Reduction::Mean] {
            let out = ce(
                &x,
                &CeTarget::Indices(t.view()),
                weight,
                1,
                0.1,
                reduction,
                true,
            );
            assert_eq!(flat(&out.loss), vec![0.0]);
            assert!(out.grad("input").unwrap().iter().all(|&g| g == 0.0));
            let xf = x.mapv(|v| v as f32);
            let wf = w.mapv(|v| v as f32);
            let out = cross_entropy(
                xf.view(),
                CeTarget::Indices(t.view()),
                CrossEntropyOptions {
                    weight: weight.map(|_| wf.view()),
                    ignore_index: 1,
                    label_smoothing: 0.1,
                    reduction,
                    grad: true,
                },
            )
            .unwrap();
            assert!(out.grad("input").unwrap().iter().all(|&g| g == 0.0));
        }
    }
}

#[test]
fn probability_mode_gradients_match_finite_differences() {
    let mut rng = Rng::new(22);
    for shape in [&[3, 4][..], &[2, 4, 3], &[4]] {
        let x = rng.randn(shape);
        let p = rng.uniform_tensor(shape, 0.0, 1.0);
        let w = rng.uniform_tensor(&[4], 0.5, 2.0);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (use_w, eps) in [(false, 0.0), (true, 0.0), (true, 0.3)] {
                let what = format!("{shape:?} {reduction:?} weight={use_w} eps={eps}");
                let run = |x: &ArrayD<f64>, p: &ArrayD<f64>, w: &ArrayD<f64>, grad| {
                    let wv = use_w.then_some(w);
                    ce(
                        x,
                        &CeTarget::Probs(p.view()),
                        wv,
                        -100,
                        eps,
                        reduction,
                        grad,
                    )
                };
                let out = run(&x, &p, &w, true);
                assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                    scalar(&run(x, &p, &w, false))
                });
                assert_grad(&what, &p, out.grad("target").unwrap(), |p| {
                    scalar(&run(&x, p, &w, false))
                });
                if use_w {
                    assert_grad(&what, &w, out.grad("weight").unwrap(), |w| {
                        scalar(&run(&x, &p, w, false))
                    });
                } else {
                    assert!(out.grad("weight").is_none());
                }
            }
        }
    }
}
