use super::*;
use crate::ErrorKind;
use crate::testing::{Rng, assert_array_close, assert_close, assert_grads3};
use ndarray::{arr0, array};

/// `triplet_margin_loss` on owned arrays.
pub(crate) fn triplet<T: Real>(
    a: &ArrayD<T>,
    p: &ArrayD<T>,
    n: &ArrayD<T>,
    options: TripletMarginOptions,
) -> Result<LossOutput<T>, LossError> {
    triplet_margin_loss(a.view(), p.view(), n.view(), options)
}

/// The options `margin`, `p`, `eps`, `swap`, `reduction`, `grad`, in PyTorch's order.
pub(crate) fn opts(
    margin: f64,
    p: f64,
    eps: f64,
    swap: bool,
    reduction: Reduction,
    grad: bool,
) -> TripletMarginOptions {
    TripletMarginOptions {
        margin,
        p,
        eps,
        swap,
        reduction,
        grad,
    }
}

fn run(
    a: &ArrayD<f64>,
    p: &ArrayD<f64>,
    n: &ArrayD<f64>,
    pn: f64,
    eps: f64,
    swap: bool,
    reduction: Reduction,
) -> LossOutput<f64> {
    triplet(a, p, n, opts(1.0, pn, eps, swap, reduction, true)).unwrap()
}

fn g(out: &LossOutput<f64>, k: &str) -> Vec<f64> {
    out.grad(k).unwrap().iter().copied().collect()
}

/// The inputs of the worked triplet examples (which abbreviate them), reconstructed with
/// torch 2.15 so that every listed value is reproduced.
fn worked_inputs() -> [ArrayD<f64>; 3] {
    [
        array![[0.0, 0.0], [0.0, 0.0]].into_dyn(),
        array![[3.0, 4.0], [0.0, 0.0]].into_dyn(),
        array![[1.0, 0.0], [10.0, 0.0]].into_dyn(),
    ]
}

#[test]
fn matches_the_worked_examples_of_losses_md() {
    let [a, p, n] = worked_inputs();
    for swap in [false, true] {
        let out = run(&a, &p, &n, 2.0, 1e-6, swap, Reduction::None);
        assert_array_close("loss", &out.loss, &[4.9999996, 0.0], 1e-7, 1e-12);
        assert_close(
            "anchor",
            &g(&out, "anchor"),
            &[0.400000032, -0.800001024, 0.0, 0.0],
            1e-7,
            1e-12,
        );
        assert_close(
            "positive",
            &g(&out, "positive"),
            &[0.599999968, 0.800000024, 0.0, 0.0],
            1e-7,
            1e-12,
        );
        assert_close(
            "negative",
            &g(&out, "negative"),
            &[-1.0, 1e-6, 0.0, 0.0],
            1e-7,
            1e-12,
        );
    }
    let out = run(&a, &p, &n, 1.0, 1e-6, false, Reduction::None);
    assert_array_close("loss", &out.loss, &[6.999998, 0.0], 1e-7, 1e-12);
    assert_close(
        "anchor",
        &g(&out, "anchor"),
        &[0.0, -2.0, 0.0, 0.0],
        0.0,
        0.0,
    );
    assert_close(
        "positive",
        &g(&out, "positive"),
        &[1.0, 1.0, 0.0, 0.0],
        0.0,
        0.0,
    );
    assert_close(
        "negative",
        &g(&out, "negative"),
        &[-1.0, 1.0, 0.0, 0.0],
        0.0,
        0.0,
    );
}

#[test]
fn a_one_element_distance_is_its_absolute_value_without_overflow() {
    // torch 2.15: anchor [[0]], positive [[1e200]], negative [[0]] gives loss 1e200 and
    // gradients -2, 1, 1 (the norm of one element is |u|, never squared).
    let a = ndarray::arr2(&[[0.0]]).into_dyn();
    let p = ndarray::arr2(&[[1e200]]).into_dyn();
    let n = ndarray::arr2(&[[0.0]]).into_dyn();
    for pn in [2.0, 0.5, 1.5, 3.0] {
        let out = run(&a, &p, &n, pn, 1e-6, false, Reduction::Mean);
        assert_eq!(out.loss.iter().next().copied(), Some(1e200), "p = {pn}");
    }
    let out = run(&a, &p, &n, 2.0, 1e-6, false, Reduction::Mean);
    assert_eq!(g(&out, "anchor"), vec![-2.0]);
    assert_eq!(g(&out, "positive"), vec![1.0]);
    assert_eq!(g(&out, "negative"), vec![1.0]);
}

#[test]
fn eps_is_added_to_every_component() {
    let a = array![[1.0, 2.0, 3.0]].into_dyn();
    let out = triplet(
        &a,
        &a,
        &a,
        opts(1.0, 2.0, 0.5, false, Reduction::None, false),
    )
    .unwrap();
    // d(a, a) = ‖(½, ½, ½)‖ on both sides: the loss is the margin.
    assert_eq!(out.loss.as_slice().unwrap(), &[1.0]);
    let u = array![[0.0, 0.0]].into_dyn();
    let v = array![[1.0, -1.0]].into_dyn();
    for (pn, want) in [
        (1.0, 0.5 + 1.5),
        (2.0, (0.25f64 + 2.25).sqrt()),
        (3.0, (0.125f64 + 3.375).powf(1.0 / 3.0)),
        (0.0, 2.0),
        (f64::INFINITY, 1.5),
        (f64::NEG_INFINITY, 0.5),
        (0.5, (0.5f64.sqrt() + 1.5f64.sqrt()).powi(2)),
        (-1.0, 1.0 / (2.0 + 1.0 / 1.5)),
    ] {
        let out = triplet(
            &u,
            &v,
            &u,
            opts(1.0, pn, 0.5, false, Reduction::None, false),
        )
        .unwrap();
        // d(u, v) = ‖(−½, 3/2)‖_p = want, d(u, u) = ‖(½, ½)‖_p.
        let self_d = match pn {
            0.0 => 2.0,
            f64::INFINITY | f64::NEG_INFINITY => 0.5,
            _ => (2.0 * 0.5f64.powf(pn)).powf(1.0 / pn),
        };
        assert_close(
            &format!("p = {pn}"),
            out.loss.as_slice().unwrap(),
            &[(1.0 + want - self_d).max(0.0)],
            1e-14,
            1e-14,
        );
    }
}

#[test]
fn infinity_norm_ties_share_the_gradient() {
    let a = array![[3.0, -3.0, 1.0]].into_dyn();
    let p = array![[0.0, 0.0, 0.0]].into_dyn();
    let n = array![[10.0, 10.0, 10.0]].into_dyn();
    let out = triplet(
        &a,
        &p,
        &n,
        opts(100.0, f64::INFINITY, 0.0, false, Reduction::Sum, true),
    )
    .unwrap();
    // d_ap = 3 attained twice; d_an = 13 attained once (component 1).
    assert_eq!(out.loss.first(), Some(&90.0));
    assert_eq!(g(&out, "positive"), vec![-0.5, 0.5, 0.0]);
    assert_eq!(g(&out, "negative"), vec![0.0, -1.0, 0.0]);
    assert_eq!(g(&out, "anchor"), vec![0.5, 0.5, 0.0]);
}

#[test]
fn a_swap_tie_gives_half_to_each_branch() {
    // d(a, n) = d(p, n) = 5 (eps 0), d(a, p) = 0.
    let a = array![[0.0, 0.0]].into_dyn();
    let p = array![[0.0, 0.0]].into_dyn();
    let n = array![[3.0, 4.0]].into_dyn();
    let out = triplet(&a, &p, &n, opts(10.0, 2.0, 0.0, true, Reduction::Sum, true)).unwrap();
    assert_eq!(out.loss.first(), Some(&5.0));
    // ∂d/∂n = (n − a)/5 on each branch, halved, twice.
    assert_close("negative", &g(&out, "negative"), &[-0.6, -0.8], 1e-15, 0.0);
    assert_close("anchor", &g(&out, "anchor"), &[0.3, 0.4], 1e-15, 0.0);
    assert_close("positive", &g(&out, "positive"), &[0.3, 0.4], 1e-15, 0.0);
}

#[test]
fn swap_uses_the_positive_negative_distance_when_smaller() {
    let a = array![[0.0]].into_dyn();
    let p = array![[1.0]].into_dyn();
    let n = array![[1.5]].into_dyn();
    let out = triplet(&a, &p, &n, opts(1.0, 1.0, 0.0, true, Reduction::Sum, true)).unwrap();
    // d_ap = 1, d_an = 1.5, d_pn = 0.5: ℓ = 1 + 1 − 0.5.
    assert_eq!(out.loss.first(), Some(&1.5));
    assert_eq!(g(&out, "anchor"), vec![-1.0]);
    assert_eq!(g(&out, "positive"), vec![1.0 + 1.0]);
    assert_eq!(g(&out, "negative"), vec![-1.0]);
}

#[test]
fn zero_differences_have_zero_gradient() {
    let a = array![[1.0, 2.0]].into_dyn();
    let n = array![[5.0, 5.0]].into_dyn();
    for pn in [1.0, 2.0, 3.0, 1.5, 0.5, f64::INFINITY] {
        let out = triplet(&a, &a, &n, opts(10.0, pn, 0.0, false, Reduction::Sum, true)).unwrap();
        // d(a, a) = 0 contributes nothing: positive's gradient is 0.
        assert!(
            g(&out, "positive").iter().all(|&v| v == 0.0),
            "p = {pn}: {:?}",
            g(&out, "positive")
        );
    }
}

#[test]
fn p_zero_has_no_gradient() {
    let mut rng = Rng::new(1);
    let [a, p, n] = [rng.randn(&[3, 4]), rng.randn(&[3, 4]), rng.randn(&[3, 4])];
    let out = run(&a, &p, &n, 0.0, 1e-6, true, Reduction::Mean);
    for k in ["anchor", "positive", "negative"] {
        assert!(g(&out, k).iter().all(|&v| v == 0.0));
    }
}

#[test]
fn a_nan_makes_the_loss_and_the_p2_gradients_nan() {
    let a = array![[f64::NAN, 0.0], [1.0, 0.0]].into_dyn();
    let p = array![[0.0, 0.0], [0.0, 0.0]].into_dyn();
    let n = array![[1.0, 1.0], [0.0, 5.0]].into_dyn();
    let out = run(&a, &p, &n, 2.0, 1e-6, false, Reduction::None);
    let l = out.loss.as_slice().unwrap();
    assert!(l[0].is_nan() && !l[1].is_nan());
    // The hinge sends 0 upstream, and 0 · (u/‖u‖) with a NaN u is NaN, as in torch.
    assert!(g(&out, "anchor")[..2].iter().all(|v| v.is_nan()));
    assert!(g(&out, "anchor")[2..].iter().all(|v| v.is_finite()));
}

#[test]
fn nan_p_gives_nan() {
    let a = array![[1.0, 2.0]].into_dyn();
    let p = array![[0.0, 0.0]].into_dyn();
    let out = run(&a, &p, &p, f64::NAN, 1e-6, false, Reduction::Mean);
    assert!(out.loss.first().unwrap().is_nan());
}

#[test]
fn margin_must_be_positive() {
    let a = array![[1.0]].into_dyn();
    for margin in [0.0, -1.0, f64::NAN] {
        let e = triplet(
            &a,
            &a,
            &a,
            opts(margin, 2.0, 1e-6, false, Reduction::Mean, false),
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Option, "margin"));
        assert!(e.message.contains("greater than 0"));
    }
}

#[test]
fn ranks_must_agree_and_pairs_must_broadcast() {
    let m = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
    let v = ArrayD::<f64>::zeros(IxDyn(&[3]));
    let call = |a: &ArrayD<f64>, p: &ArrayD<f64>, n: &ArrayD<f64>, swap: bool| {
        triplet(a, p, n, opts(1.0, 2.0, 1e-6, swap, Reduction::Mean, false))
    };
    let e = call(&m, &v, &m, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "positive"));
    assert!(e.message.contains("anchor 2D"), "{}", e.message);
    let e = call(&m, &m, &v, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "negative"));
    let m4 = ArrayD::<f64>::zeros(IxDyn(&[2, 4]));
    let e = call(&m, &m4, &m, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "positive"));
    let e = call(&m, &m, &m4, false).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "negative"));
    // Positive and negative need not agree on the last dimension without swap (anchor
    // broadcasts against each), but must with it.
    let a1 = ArrayD::<f64>::zeros(IxDyn(&[2, 1]));
    let out = call(&a1, &m, &m4, false).unwrap();
    assert!(out.loss.first().unwrap().is_finite());
    let e = call(&a1, &m, &m4, true).unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "negative"));
    // Distances (2) and (3) do not broadcast.
    let e = call(
        &ArrayD::zeros(IxDyn(&[1, 3])),
        &m,
        &ArrayD::zeros(IxDyn(&[3, 3])),
        false,
    )
    .unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "negative"));
}

#[test]
fn a_last_dimension_of_one_is_repeated_not_summed_once() {
    // anchor (1, 1) against positive (1, 3): ATen's a − p is (1, 3).
    let a = array![[2.0]].into_dyn();
    let p = array![[0.0, 0.0, 0.0]].into_dyn();
    let n = array![[2.0]].into_dyn();
    let out = triplet(&a, &p, &n, opts(1.0, 2.0, 0.0, false, Reduction::Sum, true)).unwrap();
    assert_array_close("loss", &out.loss, &[1.0 + 12.0f64.sqrt()], 1e-15, 0.0);
    // ∂/∂a of ‖(a, a, a)‖ = √3; ∂/∂n of ‖a − n‖ at 0 is 0.
    assert_close("anchor", &g(&out, "anchor"), &[3.0f64.sqrt()], 1e-15, 0.0);
    assert_eq!(out.grad("positive").unwrap().shape(), &[1, 3]);
}

#[test]
fn empty_last_dimension_is_rejected_only_where_the_norm_has_no_value() {
    let e = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
    for pn in [f64::INFINITY, f64::NEG_INFINITY, -1.0] {
        let err = triplet(
            &e,
            &e,
            &e,
            opts(1.0, pn, 1e-6, false, Reduction::Mean, false),
        )
        .unwrap_err();
        assert_eq!((err.kind, err.arg), (ErrorKind::Shape, "anchor"));
    }
    for pn in [0.0, 0.5, 1.0, 2.0, 3.0, f64::NAN] {
        let out = run(&e, &e, &e, pn, 1e-6, true, Reduction::None);
        assert_eq!(out.loss.as_slice().unwrap(), &[1.0, 1.0], "p = {pn}");
        assert_eq!(out.grad("anchor").unwrap().shape(), &[2, 0]);
    }
}

#[test]
fn unbatched_zero_dimensional_and_empty_batches() {
    let a = array![1.0, 2.0].into_dyn();
    let p = array![1.0, 2.5].into_dyn();
    let n = array![2.0, 2.0].into_dyn();
    let out = run(&a, &p, &n, 2.0, 0.0, false, Reduction::None);
    assert_eq!(out.loss.shape(), &[] as &[usize]);
    assert_close("loss", out.loss.as_slice().unwrap(), &[0.5], 1e-15, 0.0);
    // 0-D: the norm of a scalar is |u|.
    let out = run(
        &arr0(1.0).into_dyn(),
        &arr0(0.5).into_dyn(),
        &arr0(3.0).into_dyn(),
        2.0,
        1e-6,
        false,
        Reduction::None,
    );
    assert_eq!(out.loss.shape(), &[] as &[usize]);
    assert_eq!(out.loss.first(), Some(&0.0));
    assert_eq!(out.grad("anchor").unwrap().shape(), &[] as &[usize]);
    // Batch of three dims: (B, N, D) → (B, N).
    let mut rng = Rng::new(4);
    let x = rng.randn(&[2, 3, 4]);
    let out = run(&x, &x, &x, 2.0, 1e-6, false, Reduction::None);
    assert_eq!(out.loss.shape(), &[2, 3]);
    let e = ArrayD::<f64>::zeros(IxDyn(&[0, 4]));
    let out = run(&e, &e, &e, 2.0, 1e-6, false, Reduction::Mean);
    assert!(out.loss.first().unwrap().is_nan());
    assert_eq!(out.grad("negative").unwrap().shape(), &[0, 4]);
    let out = run(&e, &e, &e, 2.0, 1e-6, false, Reduction::Sum);
    assert_eq!(out.loss.first(), Some(&0.0));
}

#[test]
fn float32_matches_float64_within_its_precision() {
    let mut rng = Rng::new(8);
    let [a, p, n] = [rng.randn(&[5, 7]), rng.randn(&[5, 7]), rng.randn(&[5, 7])];
    let f = |x: &ArrayD<f64>| x.mapv(|v| v as f32);
    for pn in [1.0, 2.0, 3.0, f64::INFINITY] {
        let want = run(&a, &p, &n, pn, 1e-6, true, Reduction::Mean);
        let (a32, p32, n32) = (f(&a), f(&p), f(&n));
        let got = triplet(
            &a32,
            &p32,
            &n32,
            opts(1.0, pn, 1e-6, true, Reduction::Mean, true),
        )
        .unwrap();
        let widen = |x: &ArrayD<f32>| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
        assert_close("loss", &widen(&got.loss), &[want.loss[[]]], 1e-5, 1e-6);
        for k in ["anchor", "positive", "negative"] {
            assert_close(k, &widen(got.grad(k).unwrap()), &g(&want, k), 1e-4, 1e-5);
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(21);
    let shapes: [[&[usize]; 3]; 3] = [
        [&[3, 4], &[3, 4], &[3, 4]],
        [&[3, 4], &[1, 4], &[3, 1]],
        [&[5], &[5], &[5]],
    ];
    for [sa, sp, sn] in shapes {
        for pn in [1.0, 2.0, 3.0, 1.5, 0.7, -1.5, f64::INFINITY] {
            for swap in [false, true] {
                for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                    let a = rng.randn(sa);
                    let p = rng.randn(sp);
                    let n = rng.randn(sn);
                    let f = |a: &ArrayD<f64>, p: &ArrayD<f64>, n: &ArrayD<f64>| {
                        triplet(a, p, n, opts(2.0, pn, 1e-3, swap, reduction, true)).unwrap()
                    };
                    let what = format!("{sa:?} p={pn} swap={swap} {reduction:?}");
                    let args = [&a, &p, &n];
                    assert_grads3(&what, args, ["anchor", "positive", "negative"], f);
                }
            }
        }
    }
}
