use super::*;
use crate::ErrorKind;
use crate::classification::cross_entropy::cross_entropy;
use crate::testing::{Rng, assert_close, assert_grad, scalar};
use ndarray::{Array, Ix2, array};

fn flat(a: &ArrayD<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn lce(
    x: &ArrayD<f64>,
    wl: &ArrayD<f64>,
    t: &CeTarget<'_, f64>,
    b: Option<&ArrayD<f64>>,
    options: CrossEntropyOptions<'_, f64>,
) -> LossOutput<f64> {
    linear_cross_entropy(x.view(), wl.view(), t.clone(), b.map(|b| b.view()), options).unwrap()
}

/// The options with class weights `w`, label smoothing `eps`, `reduction` and `grad`.
fn opts(
    w: Option<&ArrayD<f64>>,
    eps: f64,
    reduction: Reduction,
    grad: bool,
) -> CrossEntropyOptions<'_, f64> {
    CrossEntropyOptions {
        weight: w.map(|w| w.view()),
        label_smoothing: eps,
        reduction,
        grad,
        ..CrossEntropyOptions::default()
    }
}

/// The unfused computation, as PyTorch's reference path: the logits
/// `(input · linear_weight.reshape(C·D, in)ᵀ + linear_bias).reshape(N, C, d1..dK)`,
/// `cross_entropy`, and the chain rule by hand. `x` must be 2-D.
fn unfused(
    x: &ArrayD<f64>,
    wl: &ArrayD<f64>,
    t: &CeTarget<'_, f64>,
    b: Option<&ArrayD<f64>>,
    w: Option<&ArrayD<f64>>,
    eps: f64,
    reduction: Reduction,
) -> (ArrayD<f64>, Vec<(&'static str, ArrayD<f64>)>) {
    let x2 = x.view().into_dimensionality::<Ix2>().unwrap();
    let per_sample = &wl.shape()[..wl.ndim() - 1];
    let cd: usize = per_sample.iter().product();
    let w2 = wl
        .view()
        .into_shape_with_order((cd, wl.shape()[wl.ndim() - 1]))
        .unwrap();
    let mut logits = x2.dot(&w2.t());
    if let Some(b) = b {
        logits += &b.view().into_shape_with_order(cd).unwrap();
    }
    let shape = [&[x2.nrows()][..], per_sample].concat();
    let logits = logits.into_shape_with_order(IxDyn(&shape)).unwrap();
    let out = cross_entropy(
        logits.view(),
        t.clone(),
        CrossEntropyOptions {
            weight: w.map(|w| w.view()),
            ignore_index: -100,
            label_smoothing: eps,
            reduction,
            grad: true,
        },
    )
    .unwrap();
    let gl = out
        .grad("input")
        .unwrap()
        .view()
        .into_shape_with_order((x2.nrows(), cd))
        .unwrap()
        .to_owned();
    let mut grads = vec![
        ("input", gl.dot(&w2).into_dyn()),
        (
            "linear_weight",
            gl.t()
                .dot(&x2)
                .into_shape_with_order(wl.shape())
                .unwrap()
                .into_dyn(),
        ),
    ];
    if b.is_some() {
        let db = gl.sum_axis(ndarray::Axis(0));
        grads.push((
            "linear_bias",
            db.into_shape_with_order(per_sample).unwrap().into_dyn(),
        ));
    }
    (out.loss, grads)
}

#[test]
fn chunked_result_equals_the_unfused_computation_over_several_chunks() {
    // 2100 rows of 4 classes: three chunks of at most 1024 rows.
    let mut rng = Rng::new(31);
    let (n, k, c) = (2100, 3, 4);
    let x = rng.randn(&[n, k]);
    let wl = rng.randn(&[c, k]);
    let b = rng.randn(&[c]);
    let w = rng.uniform_tensor(&[c], 0.5, 2.0);
    let t = Array::from_iter((0..n).map(|i| {
        if i % 9 == 0 {
            -100
        } else {
            rng.below(c) as i64
        }
    }))
    .into_dyn();
    let p = rng.uniform_tensor(&[n, c], 0.0, 1.0);
    for target in [CeTarget::Indices(t.view()), CeTarget::Probs(p.view())] {
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (use_b, use_w, eps) in [(false, false, 0.0), (true, true, 0.2)] {
                let (bv, wv) = (use_b.then_some(&b), use_w.then_some(&w));
                let got = lce(&x, &wl, &target, bv, opts(wv, eps, reduction, true));
                let (loss, grads) = unfused(&x, &wl, &target, bv, wv, eps, reduction);
                assert_close("loss", &flat(&got.loss), &flat(&loss), 1e-12, 1e-14);
                assert_eq!(got.grads.len(), grads.len());
                for (name, want) in &grads {
                    let g = got.grad(name).unwrap();
                    assert_eq!(g.shape(), want.shape(), "{name}");
                    assert_close(name, &flat(g), &flat(want), 1e-10, 1e-13);
                }
            }
        }
    }
}

#[test]
fn unbatched_input_takes_a_0d_or_one_element_index_or_a_probability_vector() {
    let x = array![0.5, -1.0].into_dyn();
    let wl = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].into_dyn();
    let xb = array![[0.5, -1.0]].into_dyn();
    let tb = array![2i64].into_dyn();
    let want = lce(
        &xb,
        &wl,
        &CeTarget::Indices(tb.view()),
        None,
        opts(None, 0.0, Reduction::Sum, true),
    );
    for t in [ndarray::arr0(2i64).into_dyn(), tb.clone()] {
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            None,
            opts(None, 0.0, Reduction::None, true),
        );
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.loss[[]], want.loss[[]]);
        assert_eq!(out.grad("input").unwrap().shape(), &[2]);
        assert_eq!(
            flat(out.grad("input").unwrap()),
            flat(want.grad("input").unwrap())
        );
        assert_eq!(out.grad("linear_weight"), want.grad("linear_weight"));
    }
    let p = array![0.2, 0.3, 0.5].into_dyn();
    let out = lce(
        &x,
        &wl,
        &CeTarget::Probs(p.view()),
        None,
        opts(None, 0.0, Reduction::None, true),
    );
    assert_eq!(out.loss.shape(), &[] as &[usize]);
}

#[test]
fn all_ignored_mean_is_nan_with_zero_gradients_and_empty_batches_work() {
    let x = array![[0.5, -1.0], [1.0, 2.0]].into_dyn();
    let wl = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].into_dyn();
    let b = array![0.1, 0.2, 0.3].into_dyn();
    let t = array![-100i64, -100].into_dyn();
    let out = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        Some(&b),
        opts(None, 0.1, Reduction::Mean, true),
    );
    assert!(out.loss[[]].is_nan());
    assert!(out.grads.iter().all(|(_, g)| g.iter().all(|&v| v == 0.0)));

    let x = ArrayD::<f64>::zeros(IxDyn(&[0, 2]));
    let t = ArrayD::<i64>::zeros(IxDyn(&[0]));
    let out = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        Some(&b),
        opts(None, 0.0, Reduction::Mean, true),
    );
    assert!(out.loss[[]].is_nan());
    assert_eq!(out.grad("input").unwrap().shape(), &[0, 2]);
    assert_eq!(out.grad("linear_weight").unwrap().shape(), &[3, 2]);
    let out = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        None,
        opts(None, 0.0, Reduction::None, false),
    );
    assert_eq!(out.loss.shape(), &[0]);

    // No input features: the logits are the bias.
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
    let wl = ArrayD::<f64>::zeros(IxDyn(&[3, 0]));
    let t = array![0i64, 2].into_dyn();
    let out = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        Some(&b),
        opts(None, 0.0, Reduction::Sum, true),
    );
    let bl = b.clone().insert_axis(ndarray::Axis(0));
    let bl = ndarray::concatenate![ndarray::Axis(0), bl, bl].into_dyn();
    let want = cross_entropy(
        bl.view(),
        CeTarget::Indices(t.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Sum,
            grad: false,
        },
    )
    .unwrap();
    assert_close("loss", &[out.loss[[]]], &[want.loss[[]]], 1e-15, 0.0);
}

#[test]
fn shapes_and_options_pytorch_rejects_are_rejected() {
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
    let wl = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
    let t = array![0i64, 1].into_dyn();
    let p = ArrayD::<f64>::zeros(IxDyn(&[2, 4]));
    let call = |x: &ArrayD<f64>,
                wl: &ArrayD<f64>,
                t: CeTarget<'_, f64>,
                b: Option<&ArrayD<f64>>,
                w: Option<&ArrayD<f64>>,
                ii: i64,
                eps: f64| {
        linear_cross_entropy(
            x.view(),
            wl.view(),
            t,
            b.map(|b| b.view()),
            CrossEntropyOptions {
                weight: w.map(|w| w.view()),
                ignore_index: ii,
                label_smoothing: eps,
                reduction: Reduction::Mean,
                grad: false,
            },
        )
        .unwrap_err()
    };
    let idx = || CeTarget::Indices(t.view());
    let x3 = ArrayD::<f64>::zeros(IxDyn(&[1, 2, 3]));
    let wl3 = ArrayD::<f64>::zeros(IxDyn(&[4, 1, 2]));
    let wl5 = ArrayD::<f64>::zeros(IxDyn(&[4, 5]));
    let b5 = ArrayD::<f64>::zeros(IxDyn(&[5]));
    let w5 = ArrayD::<f64>::zeros(IxDyn(&[5]));
    let t3 = array![0i64, 1, 2].into_dyn();
    let t4 = array![0i64, 4].into_dyn();
    let cases = [
        (
            call(&x3, &wl, idx(), None, None, -100, 0.0),
            ErrorKind::Shape,
            "input",
        ),
        (
            call(&x, &wl3, idx(), None, None, -100, 0.0),
            ErrorKind::Shape,
            "linear_weight",
        ),
        (
            call(&x, &wl5, idx(), None, None, -100, 0.0),
            ErrorKind::Shape,
            "linear_weight",
        ),
        (
            call(&x, &wl, idx(), Some(&b5), None, -100, 0.0),
            ErrorKind::Shape,
            "linear_bias",
        ),
        (
            call(&x, &wl, idx(), None, Some(&w5), -100, 0.0),
            ErrorKind::Shape,
            "weight",
        ),
        (
            call(&x, &wl, CeTarget::Indices(t3.view()), None, None, -100, 0.0),
            ErrorKind::Shape,
            "target",
        ),
        (
            call(&x, &wl, CeTarget::Probs(x.view()), None, None, -100, 0.0),
            ErrorKind::Shape,
            "target",
        ),
        (
            call(&x, &wl, CeTarget::Indices(t4.view()), None, None, -100, 0.0),
            ErrorKind::Value,
            "target",
        ),
        (
            call(&x, &wl, CeTarget::Probs(p.view()), None, None, -5, 0.0),
            ErrorKind::Option,
            "ignore_index",
        ),
        (
            call(&x, &wl, idx(), None, None, -100, 1.5),
            ErrorKind::Option,
            "label_smoothing",
        ),
        (
            call(&x, &wl, idx(), None, None, -100, -0.5),
            ErrorKind::Option,
            "label_smoothing",
        ),
    ];
    for (e, kind, arg) in cases {
        assert_eq!((e.kind, e.arg), (kind, arg), "{}", e.message);
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(32);
    let (n, k, c) = (4, 3, 5);
    let t = array![0i64, 4, -100, 2].into_dyn();
    let p = rng.uniform_tensor(&[n, c], 0.0, 1.0);
    let w = rng.uniform_tensor(&[c], 0.5, 2.0);
    for target in [CeTarget::Indices(t.view()), CeTarget::Probs(p.view())] {
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let x = rng.randn(&[n, k]);
            let wl = rng.randn(&[c, k]);
            let b = rng.randn(&[c]);
            let run = |x: &ArrayD<f64>, wl: &ArrayD<f64>, b: &ArrayD<f64>, grad| {
                lce(
                    x,
                    wl,
                    &target,
                    Some(b),
                    opts(Some(&w), 0.1, reduction, grad),
                )
            };
            let out = run(&x, &wl, &b, true);
            let what = format!("{reduction:?}");
            assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                scalar(&run(x, &wl, &b, false))
            });
            assert_grad(&what, &wl, out.grad("linear_weight").unwrap(), |wl| {
                scalar(&run(&x, wl, &b, false))
            });
            assert_grad(&what, &b, out.grad("linear_bias").unwrap(), |b| {
                scalar(&run(&x, &wl, b, false))
            });
        }
    }
}

#[test]
fn float32_agrees_with_float64() {
    let mut rng = Rng::new(33);
    let x = rng.randn(&[40, 6]);
    let wl = rng.randn(&[7, 6]);
    let t = Array::from_iter((0..40).map(|i| (i % 7) as i64)).into_dyn();
    let a = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        None,
        opts(None, 0.0, Reduction::Mean, true),
    );
    let (xf, wf) = (x.mapv(|v| v as f32), wl.mapv(|v| v as f32));
    let b = linear_cross_entropy(
        xf.view(),
        wf.view(),
        CeTarget::Indices(t.view()),
        None,
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
            grad: true,
        },
    )
    .unwrap();
    assert!((a.loss[[]] - f64::from(b.loss[[]])).abs() < 1e-5);
    let g: Vec<f64> = b
        .grad("linear_weight")
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_close(
        "linear_weight",
        &g,
        &flat(a.grad("linear_weight").unwrap()),
        1e-4,
        1e-6,
    );
}

#[test]
fn k_dimensional_weight_small_case_by_hand() {
    // x = [[1, 0], [0, 1]] through W (C = 2, d1 = 2, in = 2): the logits of sample 0 are
    // (class, d) = [[1, 0], [0, 0]], of sample 1 [[0, 0], [0, 2]]; targets [[0, 1], [1, 1]].
    let x = array![[1.0, 0.0], [0.0, 1.0]].into_dyn();
    let wl = array![[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]].into_dyn();
    let b = ArrayD::<f64>::zeros(IxDyn(&[2, 2]));
    let t = array![[0i64, 1], [1, 1]].into_dyn();
    let t = CeTarget::Indices(t.view());
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    let ln2 = 2f64.ln();
    let none = lce(
        &x,
        &wl,
        &t,
        Some(&b),
        opts(None, 0.0, Reduction::None, true),
    );
    assert_eq!(none.loss.shape(), &[2, 2]);
    // ln(1 + e^{−1}), ln 2, ln 2, ln(1 + e^{−2}); torch 2.15 prints the same values.
    let want = [(-sig(1.0).ln()), ln2, ln2, -sig(2.0).ln()];
    assert_close("none", &flat(&none.loss), &want, 1e-15, 0.0);
    assert_close(
        "torch",
        &[want[0], want[3]],
        &[0.31326168751822286, 0.1269280110429726],
        1e-15,
        0.0,
    );
    // Bias gradient (C, d): Σ_n softmax − one-hot at each position.
    let s1 = sig(-1.0);
    let s2 = sig(-2.0);
    let db = [0.5 - s1, 0.5 + s2, s1 - 0.5, -0.5 - s2];
    assert_eq!(none.grad("linear_bias").unwrap().shape(), &[2, 2]);
    assert_close(
        "linear_bias",
        &flat(none.grad("linear_bias").unwrap()),
        &db,
        1e-15,
        1e-16,
    );
    // The logits' gradients g[n, c, d]: sample 0 [[−s1, 0.5], [s1, −0.5]], sample 1
    // [[0.5, s2], [−0.5, −s2]]. input: row n is Σ_{c,d} g[n,c,d]·W[c,d], and W[c,d] is e0
    // at (0,0), 2·e1 at (1,1), else 0.
    let dx = [-s1, 2.0 * -0.5, 0.5, 2.0 * -s2];
    assert_close(
        "input",
        &flat(none.grad("input").unwrap()),
        &dx,
        1e-15,
        1e-16,
    );
    // W[c, d, :] = g[0,c,d]·x0 + g[1,c,d]·x1 = [g[0,c,d], g[1,c,d]].
    let dw = [-s1, 0.5, 0.5, s2, s1, -0.5, -0.5, -s2];
    assert_eq!(none.grad("linear_weight").unwrap().shape(), &[2, 2, 2]);
    assert_close(
        "linear_weight",
        &flat(none.grad("linear_weight").unwrap()),
        &dw,
        1e-15,
        1e-16,
    );
    let sum = lce(
        &x,
        &wl,
        &t,
        Some(&b),
        opts(None, 0.0, Reduction::Sum, false),
    );
    assert_close("sum", &[sum.loss[[]]], &[want.iter().sum()], 1e-15, 0.0);
    let mean = lce(
        &x,
        &wl,
        &t,
        Some(&b),
        opts(None, 0.0, Reduction::Mean, false),
    );
    assert_close(
        "mean",
        &[mean.loss[[]]],
        &[want.iter().sum::<f64>() / 4.0],
        1e-15,
        0.0,
    );
}

/// The K-dimensional inputs of the torch 2.15 checks below: x (3, 2), W (3, 2, 2),
/// b (3, 2), class weights (3).
fn kdim_example() -> [ArrayD<f64>; 4] {
    [
        array![[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]].into_dyn(),
        array![
            [[0.3, -0.2], [1.0, 0.5]],
            [[-0.4, 0.8], [0.1, -0.6]],
            [[0.7, 0.2], [-0.9, 0.4]]
        ]
        .into_dyn(),
        array![[0.1, -0.2], [0.0, 0.3], [-0.1, 0.2]].into_dyn(),
        array![0.5, 2.0, 1.0].into_dyn(),
    ]
}

#[test]
fn k_dimensional_weight_matches_pytorch() {
    let [x, wl, b, w] = kdim_example();
    let check = |out: &LossOutput<f64>, loss: f64, want: [&[f64]; 3]| {
        assert_close("loss", &[out.loss[[]]], &[loss], 1e-13, 0.0);
        for (name, want) in ["input", "linear_weight", "linear_bias"].iter().zip(want) {
            if want.is_empty() {
                assert!(out.grad(name).is_none());
                continue;
            }
            let g = out.grad(name).unwrap();
            let shape = match *name {
                "input" => x.shape(),
                "linear_weight" => wl.shape(),
                _ => b.shape(),
            };
            assert_eq!(g.shape(), shape, "{name}");
            assert_close(name, &flat(g), want, 1e-12, 1e-15);
        }
    };
    // torch 2.15: F.linear_cross_entropy(x, W, t, linear_bias=b, weight=w, ignore_index=2,
    // label_smoothing=0.2) (mean), t = [[2, 0], [1, 2], [0, 1]]; .backward().
    let t = array![[2i64, 0], [1, 2], [0, 1]].into_dyn();
    let out = linear_cross_entropy(
        x.view(),
        wl.view(),
        CeTarget::Indices(t.view()),
        Some(b.view()),
        CrossEntropyOptions {
            weight: Some(w.view()),
            ignore_index: 2,
            label_smoothing: 0.2,
            reduction: Reduction::Mean,
            grad: true,
        },
    )
    .unwrap();
    check(
        &out,
        2.167630066297596,
        [
            &[
                -0.05773693200051267,
                -0.06277263453780751,
                0.2823239993065962,
                -0.2240619398151654,
                -0.28573320849794226,
                0.4091327668927044,
            ],
            &[
                0.22805694777395033,
                -0.12644102190100817,
                -0.06784772620929233,
                0.1608423421350595,
                -0.505459295619319,
                0.08192660718044684,
                0.27304567305907934,
                -0.7092060760872477,
                0.27740234784536866,
                0.04451441472056131,
                -0.20519794684978696,
                0.5483637339521881,
            ],
            &[
                0.03595524998498657,
                -0.009961003836210382,
                -0.21967651801656563,
                -0.2694823037272866,
                0.18372126803157904,
                0.2794433075634969,
            ],
        ],
    );
    // Probabilities (3, 3, 2): weight, label_smoothing=0.1, sum.
    let p = array![
        [[0.2, 0.5], [0.3, 0.25], [0.5, 0.25]],
        [[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]],
        [[0.1, 0.6], [0.7, 0.3], [0.2, 0.1]]
    ]
    .into_dyn();
    let p = CeTarget::Probs(p.view());
    let out = lce(
        &x,
        &wl,
        &p,
        Some(&b),
        opts(Some(&w), 0.1, Reduction::Sum, true),
    );
    check(
        &out,
        9.642762035464656,
        [
            &[
                0.3930757824269691,
                -0.6400077537585559,
                1.4205360113987582,
                0.8488449223861746,
                -0.816095312579209,
                0.5144536959174416,
            ],
            &[
                -0.20276380176713366,
                -0.4805327856458008,
                1.618305474191078,
                0.028314045645787544,
                -0.21602927542413694,
                0.46012069670786154,
                -0.45410473189042366,
                -1.4100094393423668,
                0.41879307719127057,
                0.02041208893793918,
                -1.164200742300654,
                1.3816953936965788,
            ],
            &[
                0.29599852015126454,
                0.8659896230623814,
                -0.45125383157565485,
                -1.025843609244721,
                0.15525531142439028,
                0.1598539861823396,
            ],
        ],
    );
    // The same probabilities, no bias, no weight, mean (÷ 6 positions).
    let out = lce(&x, &wl, &p, None, opts(None, 0.0, Reduction::Mean, true));
    check(
        &out,
        1.487800801500308,
        [
            &[
                0.0036066472123842267,
                -0.09345601445584321,
                0.21914133323128213,
                0.1308369055378972,
                -0.18429835898711144,
                0.05052636586715481,
            ],
            &[
                -0.1501298896031826,
                -0.08782414761751801,
                0.23068452124517003,
                -0.06115574511656928,
                0.002202569601758391,
                0.07629577433007056,
                -0.027190626951712992,
                -0.1524264234412345,
                0.14792732000142425,
                0.011528373287447446,
                -0.20349389429345702,
                0.21358216855780382,
            ],
            &[],
        ],
    );
}

#[test]
fn k_dimensional_chunks_and_tiles_equal_the_unfused_computation() {
    // 1200 samples of 3 classes × (20, 15) positions: two chunks (1165 + 35 samples) of
    // 900 logits per sample, each sample's 300 positions in two tiles (256 + 44).
    let mut rng = Rng::new(34);
    let (n, k, c, d) = (1200, 2, 3, [20, 15]);
    let x = rng.randn(&[n, k]);
    let wl = rng.randn(&[c, d[0], d[1], k]);
    let b = rng.randn(&[c, d[0], d[1]]);
    let w = rng.uniform_tensor(&[c], 0.5, 2.0);
    let t = ArrayD::from_shape_vec(
        IxDyn(&[n, d[0], d[1]]),
        (0..n * d[0] * d[1])
            .map(|i| {
                if i % 11 == 5 {
                    -100
                } else {
                    rng.below(c) as i64
                }
            })
            .collect(),
    )
    .unwrap();
    let p = rng.uniform_tensor(&[n, c, d[0], d[1]], 0.0, 1.0);
    let cases = [
        (CeTarget::Indices(t.view()), Reduction::None, true, 0.0),
        (CeTarget::Indices(t.view()), Reduction::Mean, false, 0.2),
        (CeTarget::Probs(p.view()), Reduction::Sum, true, 0.1),
    ];
    for (target, reduction, use_b, eps) in cases {
        let bv = use_b.then_some(&b);
        let got = lce(&x, &wl, &target, bv, opts(Some(&w), eps, reduction, true));
        let (loss, grads) = unfused(&x, &wl, &target, bv, Some(&w), eps, reduction);
        assert_eq!(got.loss.shape(), loss.shape());
        assert_close("loss", &flat(&got.loss), &flat(&loss), 1e-12, 1e-14);
        assert_eq!(got.grads.len(), grads.len());
        for (name, want) in &grads {
            let g = got.grad(name).unwrap();
            assert_eq!(g.shape(), want.shape(), "{name}");
            assert_close(name, &flat(g), &flat(want), 1e-10, 1e-12);
        }
    }
}

#[test]
fn k_dimensional_gradients_match_finite_differences() {
    let mut rng = Rng::new(35);
    let (n, k, c) = (3, 2, 4);
    let t = array![
        [[0i64, 3], [1, -100]],
        [[2, 2], [3, 0]],
        [[-100, 1], [0, 3]]
    ]
    .into_dyn();
    let p = rng.uniform_tensor(&[n, c, 2, 2], 0.0, 1.0);
    let w = rng.uniform_tensor(&[c], 0.5, 2.0);
    for target in [CeTarget::Indices(t.view()), CeTarget::Probs(p.view())] {
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for (use_w, eps) in [(false, 0.0), (true, 0.3)] {
                let x = rng.randn(&[n, k]);
                let wl = rng.randn(&[c, 2, 2, k]);
                let b = rng.randn(&[c, 2, 2]);
                let wv = use_w.then_some(&w);
                let run = |x: &ArrayD<f64>, wl: &ArrayD<f64>, b: &ArrayD<f64>, grad| {
                    lce(x, wl, &target, Some(b), opts(wv, eps, reduction, grad))
                };
                let out = run(&x, &wl, &b, true);
                let what = format!("{reduction:?} weight={use_w} eps={eps}");
                assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                    scalar(&run(x, &wl, &b, false))
                });
                assert_grad(&what, &wl, out.grad("linear_weight").unwrap(), |wl| {
                    scalar(&run(&x, wl, &b, false))
                });
                assert_grad(&what, &b, out.grad("linear_bias").unwrap(), |b| {
                    scalar(&run(&x, &wl, b, false))
                });
            }
        }
    }
}

#[test]
fn k_dimensional_shapes_pytorch_rejects_are_rejected() {
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
    let wl = ArrayD::<f64>::zeros(IxDyn(&[4, 5, 3]));
    let t = ArrayD::<i64>::zeros(IxDyn(&[2, 5]));
    let err = |x: &ArrayD<f64>, wl: &ArrayD<f64>, t: CeTarget<'_, f64>, b: Option<&ArrayD<f64>>| {
        let e = linear_cross_entropy(
            x.view(),
            wl.view(),
            t,
            b.map(|b| b.view()),
            CrossEntropyOptions {
                weight: None,
                ignore_index: -100,
                label_smoothing: 0.0,
                reduction: Reduction::Mean,
                grad: false,
            },
        )
        .unwrap_err();
        (e.kind, e.arg)
    };
    let idx = || CeTarget::Indices(t.view());
    let shape = |arg| (ErrorKind::Shape, arg);
    // torch 2.15: "expected linear_weight with dimensionality at least 2, got 1".
    let w1 = ArrayD::<f64>::zeros(IxDyn(&[3]));
    let t2 = array![0i64, 1].into_dyn();
    assert_eq!(
        err(&x, &w1, CeTarget::Indices(t2.view()), None),
        shape("linear_weight")
    );
    // torch: "expected linear_bias shape (4, 5), got (4,)" (and (20,) is no better).
    for bshape in [&[4][..], &[20], &[5, 4], &[4, 5, 1]] {
        let b = ArrayD::<f64>::zeros(IxDyn(bshape));
        assert_eq!(err(&x, &wl, idx(), Some(&b)), shape("linear_bias"));
    }
    // torch: "K-dimensional loss ... requires batched input".
    let x1 = ArrayD::<f64>::zeros(IxDyn(&[3]));
    let t0 = ndarray::arr0(0i64).into_dyn();
    assert_eq!(
        err(&x1, &wl, CeTarget::Indices(t0.view()), None),
        shape("input")
    );
    // torch: "Expected target size [2, 5], got [2]" / "[2, 5, 1]".
    let t5 = ArrayD::<i64>::zeros(IxDyn(&[2, 5, 1]));
    for t in [&t2, &t5] {
        assert_eq!(
            err(&x, &wl, CeTarget::Indices(t.view()), None),
            shape("target")
        );
    }
    let p = ArrayD::<f64>::zeros(IxDyn(&[2, 5, 4]));
    assert_eq!(
        err(&x, &wl, CeTarget::Probs(p.view()), None),
        shape("target")
    );
    // Class indices with the logits' shape (2, 4, 5) would be probabilities.
    let ti = ArrayD::<i64>::zeros(IxDyn(&[2, 4, 5]));
    assert_eq!(
        err(&x, &wl, CeTarget::Indices(ti.view()), None),
        shape("target")
    );
    // A weight holding no element, whose logits would not fit in memory: too large (PyTorch
    // fails to allocate them).
    let huge = ArrayD::<f64>::zeros(IxDyn(&[isize::MAX as usize / 8, 4, 0]));
    let xe = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
    let tz = ArrayD::<i64>::zeros(IxDyn(&[2, 4]));
    assert_eq!(
        err(&xe, &huge, CeTarget::Indices(tz.view()), None),
        (ErrorKind::TooLarge, "linear_weight")
    );
    let wide = ArrayD::<f64>::zeros(IxDyn(&[1 << 20, 1 << 10, 0]));
    let tz = ArrayD::<i64>::zeros(IxDyn(&[2, 1 << 10]));
    assert_eq!(
        err(&xe, &wide, CeTarget::Indices(tz.view()), None),
        (ErrorKind::TooLarge, "linear_weight")
    );
    // And what it accepts: a (C, d1) bias.
    let b = ArrayD::<f64>::zeros(IxDyn(&[4, 5]));
    let out = lce(
        &x,
        &wl,
        &idx(),
        Some(&b),
        opts(None, 0.0, Reduction::None, true),
    );
    assert_eq!(out.loss.shape(), &[2, 5]);
    assert_close("uniform", &flat(&out.loss), &[4f64.ln(); 10], 1e-15, 0.0);
}

#[test]
fn k_dimensional_without_positions_or_classes_follows_pytorch() {
    // torch 2.15, x (3, 4): W (5, 0, 4) gives 'none' (3, 0), mean NaN, sum 0.0 (−0.0 with
    // probabilities), zero input gradients; W (0, 2, 4) with (3, 0, 2) probabilities gives
    // 'none' −0.0 × (3, 2), mean NaN, sum −0.0.
    let mut rng = Rng::new(36);
    let x = rng.randn(&[3, 4]);
    let w0 = ArrayD::<f64>::zeros(IxDyn(&[5, 0, 4]));
    let t0 = ArrayD::<i64>::zeros(IxDyn(&[3, 0]));
    let p0 = ArrayD::<f64>::zeros(IxDyn(&[3, 5, 0]));
    let wc = ArrayD::<f64>::zeros(IxDyn(&[0, 2, 4]));
    let pc = ArrayD::<f64>::zeros(IxDyn(&[3, 0, 2]));
    let cases = [
        (&w0, CeTarget::Indices(t0.view()), &[3, 0][..], false),
        (&w0, CeTarget::Probs(p0.view()), &[3, 0], true),
        (&wc, CeTarget::Probs(pc.view()), &[3, 2], true),
    ];
    for (wl, t, none_shape, negative_zero) in cases {
        let none = lce(&x, wl, &t, None, opts(None, 0.0, Reduction::None, true));
        assert_eq!(none.loss.shape(), none_shape);
        assert!(none.loss.iter().all(|v| *v == 0.0 && v.is_sign_negative()));
        assert!(none.grad("input").unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(none.grad("linear_weight").unwrap().shape(), wl.shape());
        let mean = lce(&x, wl, &t, None, opts(None, 0.0, Reduction::Mean, true));
        assert!(mean.loss[[]].is_nan());
        assert!(mean.grad("input").unwrap().iter().all(|&v| v == 0.0));
        let sum = lce(&x, wl, &t, None, opts(None, 0.0, Reduction::Sum, false));
        assert_eq!(sum.loss[[]], 0.0);
        assert_eq!(sum.loss[[]].is_sign_negative(), negative_zero);
    }
}

/// torch 2.15 (issue 28): label smoothing with an infinite class weight gives +inf (the
/// logits [0, 1], `inf · logp_1`), not NaN; gradients input [[nan]], linear_weight
/// [[inf], [nan]].
#[test]
fn smoothing_with_an_infinite_weight_follows_pytorch() {
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let x = array![[1.0]].into_dyn();
    let wl = array![[0.0], [1.0]].into_dyn();
    let w = array![1.0, inf].into_dyn();
    let t = array![0i64].into_dyn();
    let t = CeTarget::Indices(t.view());
    for r in [Reduction::None, Reduction::Sum] {
        let out = lce(&x, &wl, &t, None, opts(Some(&w), 0.5, r, true));
        assert_eq!(flat(&out.loss), [inf], "{r:?}");
        assert_close("input", &flat(out.grad("input").unwrap()), &[nan], 0.0, 0.0);
        let dwl = flat(out.grad("linear_weight").unwrap());
        assert_close("linear_weight", &dwl, &[inf, nan], 0.0, 0.0);
    }
}

#[test]
fn smoothed_mean_with_zero_weight_targets_is_nan_as_in_pytorch() {
    // torch 2.15 (kdim_example, class weights [0, 0, 1], label_smoothing 0.2, mean): every
    // non-ignored target has weight 0, so Σ nll / W = 0/0; the loss and every gradient are
    // NaN. The 2-D form with the third sample ignored: NaN, and that sample's input
    // gradient row is 0.
    let [x, wl, b, _] = kdim_example();
    let wz = array![0.0, 0.0, 1.0].into_dyn();
    let t = array![[0i64, 1], [1, -100], [0, 0]].into_dyn();
    let out = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        Some(&b),
        opts(Some(&wz), 0.2, Reduction::Mean, true),
    );
    assert!(out.loss[[]].is_nan());
    assert_eq!(out.grads.len(), 3);
    assert!(out.grads.iter().all(|(_, g)| g.iter().all(|v| v.is_nan())));
    let w2 = wl.slice(s![.., 0, ..]).to_owned().into_dyn();
    let t = array![0i64, 1, -100].into_dyn();
    let out = lce(
        &x,
        &w2,
        &CeTarget::Indices(t.view()),
        None,
        opts(Some(&wz), 0.2, Reduction::Mean, true),
    );
    assert!(out.loss[[]].is_nan());
    let dx = flat(out.grad("input").unwrap());
    assert!(dx[..4].iter().all(|v| v.is_nan()));
    assert_eq!(dx[4..], [0.0, 0.0]);
    assert!(
        out.grad("linear_weight")
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
    // The sum is finite: only the mean divides by W = 0.
    let out = lce(
        &x,
        &w2,
        &CeTarget::Indices(t.view()),
        None,
        opts(Some(&wz), 0.2, Reduction::Sum, true),
    );
    assert!(out.loss[[]].is_finite());
    assert!(
        out.grads
            .iter()
            .all(|(_, g)| g.iter().all(|v| v.is_finite()))
    );
}

#[test]
fn k_dimensional_float32_agrees_with_float64() {
    let mut rng = Rng::new(37);
    let x = rng.randn(&[30, 5]);
    let wl = rng.randn(&[6, 3, 2, 5]);
    let b = rng.randn(&[6, 3, 2]);
    let t = Array::from_iter((0..180).map(|i| (i % 6) as i64))
        .into_shape_with_order(IxDyn(&[30, 3, 2]))
        .unwrap();
    let a = lce(
        &x,
        &wl,
        &CeTarget::Indices(t.view()),
        Some(&b),
        opts(None, 0.1, Reduction::Mean, true),
    );
    let f = |a: &ArrayD<f64>| a.mapv(|v| v as f32);
    let (xf, wf, bf) = (f(&x), f(&wl), f(&b));
    let out = linear_cross_entropy(
        xf.view(),
        wf.view(),
        CeTarget::Indices(t.view()),
        Some(bf.view()),
        CrossEntropyOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.1,
            reduction: Reduction::Mean,
            grad: true,
        },
    )
    .unwrap();
    assert!((a.loss[[]] - f64::from(out.loss[[]])).abs() < 1e-5);
    for name in ["input", "linear_weight", "linear_bias"] {
        let g: Vec<f64> = out.grad(name).unwrap().iter().map(|&v| v.into()).collect();
        assert_eq!(
            out.grad(name).unwrap().shape(),
            a.grad(name).unwrap().shape()
        );
        assert_close(name, &g, &flat(a.grad(name).unwrap()), 1e-4, 1e-6);
    }
}
