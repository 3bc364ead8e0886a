use super::*;
use crate::ErrorKind;
use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
use ndarray::{ArrayD, IxDyn, array};

fn mm(
    x: &ArrayD<f64>,
    t: &ArrayD<i64>,
    p: f64,
    margin: f64,
    w: Option<&ArrayD<f64>>,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<f64>, LossError> {
    multi_margin_loss(
        x.view(),
        t.view(),
        p,
        margin,
        w.map(|w| w.view()),
        reduction,
        grad,
    )
}

#[test]
fn matches_the_worked_examples_of_losses_md() {
    let x = array![[0.1, 0.2, 0.4, 0.8]].into_dyn();
    let t = array![3].into_dyn();
    let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Mean, true).unwrap();
    assert_close("loss", out.loss.as_slice().unwrap(), &[0.325], 1e-15, 0.0);
    assert_array_close(
        "grad",
        out.grad("input").unwrap(),
        &[0.25, 0.25, 0.25, -0.75],
        1e-15,
        0.0,
    );
    let w = array![1.0, 2.0, 3.0, 4.0].into_dyn();
    let t = array![1].into_dyn();
    let out = mm(&x, &t, 2.0, 1.0, Some(&w), Reduction::Mean, true).unwrap();
    assert_close("loss", out.loss.as_slice().unwrap(), &[2.405], 1e-15, 0.0);
    assert_array_close(
        "grad",
        out.grad("input").unwrap(),
        &[0.9, -3.7, 1.2, 1.6],
        1e-15,
        0.0,
    );
}

#[test]
fn the_output_shape_follows_the_target_rank() {
    // Checked on torch 2.15: (1, 2) input with 0-d target → 0-d; (2) input with (1,)
    // target → (1,); 0-d input with (1,) target → (1,) holding 0.
    let x = array![[0.3, 0.1]].into_dyn();
    let t0 = ndarray::arr0(0i64).into_dyn();
    let out = mm(&x, &t0, 1.0, 1.0, None, Reduction::None, true).unwrap();
    assert_eq!(out.loss.shape(), &[] as &[usize]);
    assert!((out.loss.first().unwrap() - 0.4).abs() < 1e-15);
    let x1 = array![0.3, 0.1].into_dyn();
    let t1 = array![0i64].into_dyn();
    let out = mm(&x1, &t1, 1.0, 1.0, None, Reduction::None, true).unwrap();
    assert_eq!(out.loss.shape(), &[1]);
    assert_eq!(out.grad("input").unwrap().shape(), &[2]);
    let s = ndarray::arr0(0.3).into_dyn();
    let out = mm(&s, &t1, 1.0, 1.0, None, Reduction::None, true).unwrap();
    assert_eq!(out.loss.as_slice().unwrap(), &[0.0]);
    assert_eq!(out.grad("input").unwrap().shape(), &[] as &[usize]);
    let out = mm(&s, &t0, 1.0, 1.0, None, Reduction::None, false).unwrap();
    assert_eq!(out.loss.shape(), &[] as &[usize]);
}

#[test]
fn a_hinge_at_exactly_zero_contributes_nothing() {
    // z = margin − x_t + x_i = 1 − 1 + 0 = 0 for class 0.
    let x = array![[0.0, 1.0, 0.5]].into_dyn();
    let t = array![1].into_dyn();
    let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Sum, true).unwrap();
    assert_array_close("loss", &out.loss, &[0.5 / 3.0], 1e-15, 0.0);
    assert_array_close(
        "grad",
        out.grad("input").unwrap(),
        &[0.0, -1.0 / 3.0, 1.0 / 3.0],
        1e-15,
        0.0,
    );
}

#[test]
fn a_nan_margin_gives_zero_as_in_pytorch() {
    let x = array![[0.3, 0.1]].into_dyn();
    let t = array![0].into_dyn();
    let out = mm(&x, &t, 1.0, f64::NAN, None, Reduction::None, false).unwrap();
    assert_eq!(out.loss.as_slice().unwrap(), &[0.0]);
}

#[test]
fn an_empty_batch_sums_to_zero_and_averages_to_nan() {
    let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
    let t = ArrayD::<i64>::zeros(IxDyn(&[0]));
    let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Sum, true).unwrap();
    assert_eq!(out.loss.first(), Some(&0.0));
    assert_eq!(out.grad("input").unwrap().shape(), &[0, 3]);
    let out = mm(&x, &t, 1.0, 1.0, None, Reduction::Mean, true).unwrap();
    assert!(out.loss.first().unwrap().is_nan());
    let out = mm(&x, &t, 1.0, 1.0, None, Reduction::None, false).unwrap();
    assert_eq!(out.loss.shape(), &[0]);
}

#[test]
fn p_must_be_one_or_two() {
    let x = array![[0.1, 0.2, 0.3]].into_dyn();
    let t = array![1].into_dyn();
    for p in [3.0, 0.0, 1.5, f64::NAN] {
        let e = mm(&x, &t, p, 1.0, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Option, "p"));
    }
    assert!(mm(&x, &t, 2.0, 1.0, None, Reduction::Mean, false).is_ok());
}

#[test]
fn bad_shapes_are_rejected() {
    let x = array![[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]].into_dyn();
    type Case = (ArrayD<f64>, ArrayD<i64>, Option<ArrayD<f64>>, &'static str);
    let cases: Vec<Case> = vec![
        (
            ArrayD::zeros(IxDyn(&[5, 0])),
            ArrayD::zeros(IxDyn(&[5])),
            None,
            "input",
        ),
        (
            ArrayD::zeros(IxDyn(&[0])),
            ArrayD::zeros(IxDyn(&[1])),
            None,
            "input",
        ),
        (
            ArrayD::zeros(IxDyn(&[2, 3, 1])),
            ArrayD::zeros(IxDyn(&[2])),
            None,
            "input",
        ),
        (x.clone(), ArrayD::zeros(IxDyn(&[3])), None, "target"),
        (x.clone(), ArrayD::zeros(IxDyn(&[2, 1])), None, "target"),
        (
            x.clone(),
            ArrayD::zeros(IxDyn(&[2])),
            Some(ArrayD::ones(IxDyn(&[2]))),
            "weight",
        ),
        (
            x.clone(),
            ArrayD::zeros(IxDyn(&[2])),
            Some(ArrayD::ones(IxDyn(&[1, 3]))),
            "weight",
        ),
        (
            x.clone(),
            ArrayD::zeros(IxDyn(&[2])),
            Some(ArrayD::ones(IxDyn(&[]))),
            "weight",
        ),
    ];
    for (x, t, w, arg) in cases {
        let e = mm(&x, &t, 1.0, 1.0, w.as_ref(), Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
    }
}

#[test]
fn class_indices_out_of_range_are_rejected_at_their_position() {
    let x = array![[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]].into_dyn();
    for bad in [3, -1, i64::MIN, i64::MAX] {
        let t = array![0, bad].into_dyn();
        let e = mm(&x, &t, 1.0, 1.0, None, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Value, "target"));
        assert_eq!(e.index, Some(vec![1]));
    }
    let s = ndarray::arr0(0.5).into_dyn();
    let t = ndarray::arr0(1i64).into_dyn();
    let e = mm(&s, &t, 1.0, 1.0, None, Reduction::Mean, false).unwrap_err();
    assert_eq!((e.arg, e.index), ("target", Some(vec![])));
}

/// The forward alone (branch-free) gives the bits of the forward computed with the
/// gradient (one branch per class), with and without weights (negative and zero ones
/// too), both powers, non-finite inputs, f32 and f64.
#[test]
fn the_forward_alone_gives_the_bits_of_the_forward_with_gradient() {
    let mut rng = Rng::new(11);
    let mut x = rng.randn(&[64, 7]);
    x[[3, 2]] = f64::NAN;
    x[[5, 0]] = f64::INFINITY;
    x[[6, 4]] = f64::NEG_INFINITY;
    x[[7, 1]] = 1e200;
    let t = ndarray::Array1::from_iter((0..64).map(|i| (i * 5 % 7) as i64)).into_dyn();
    let mut w = rng.uniform_tensor(&[7], -1.0, 2.0);
    w[[2]] = 0.0;
    w[[3]] = -0.0;
    for (p, margin) in [(1.0, 1.0), (2.0, 0.5), (1.0, -0.25)] {
        for weight in [None, Some(&w)] {
            let a = mm(&x, &t, p, margin, weight, Reduction::None, false).unwrap();
            let b = mm(&x, &t, p, margin, weight, Reduction::None, true).unwrap();
            let bits = |o: &LossOutput<f64>| o.loss.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&a),
                bits(&b),
                "p={p} margin={margin} weighted={}",
                weight.is_some()
            );
            let (x32, w32) = (x.mapv(|v| v as f32), w.mapv(|v| v as f32));
            let run = |grad| {
                multi_margin_loss(
                    x32.view(),
                    t.view(),
                    p,
                    margin,
                    weight.map(|_| w32.view()),
                    Reduction::None,
                    grad,
                )
                .unwrap()
                .loss
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
            };
            assert_eq!(run(false), run(true), "f32 p={p} margin={margin}");
        }
    }
}

#[test]
fn float32_matches_float64() {
    let mut rng = Rng::new(2);
    let x = rng.randn(&[4, 5]);
    let t = array![0, 4, 2, 2].into_dyn();
    let w = rng.uniform_tensor(&[5], 0.5, 2.0);
    let a = mm(&x, &t, 2.0, 0.7, Some(&w), Reduction::Mean, true).unwrap();
    let (x32, w32) = (x.mapv(|v| v as f32), w.mapv(|v| v as f32));
    let b = multi_margin_loss(
        x32.view(),
        t.view(),
        2.0,
        0.7,
        Some(w32.view()),
        Reduction::Mean,
        true,
    )
    .unwrap();
    let got: Vec<f64> = b.grad("input").unwrap().iter().map(|&v| v.into()).collect();
    assert_close(
        "grad",
        &got,
        a.grad("input").unwrap().as_slice().unwrap(),
        1e-5,
        1e-6,
    );
    assert!((f64::from(*b.loss.first().unwrap()) - a.loss.first().unwrap()).abs() < 1e-5);
}

#[test]
fn a_raised_cancellation_flag_stops_a_long_computation() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let x = ArrayD::<f64>::zeros(IxDyn(&[100, 1000]));
    let t = ArrayD::<i64>::zeros(IxDyn(&[100]));
    let flag = Arc::new(AtomicBool::new(true));
    let r = crate::cancel::with_flag(flag, || mm(&x, &t, 1.0, 1.0, None, Reduction::Sum, true));
    assert_eq!(r.unwrap_err().kind, ErrorKind::Cancelled);
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(17);
    for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        for (p, margin, weighted) in [(1.0, 1.0, false), (2.0, 0.5, true), (1.0, 2.0, true)] {
            let x = rng.randn(&[4, 5]);
            let t = ndarray::arr1(&[0i64, 3, 4, 1]).into_dyn();
            let w = rng.uniform_tensor(&[5], 0.5, 2.0);
            let w = weighted.then_some(&w);
            let out = mm(&x, &t, p, margin, w, reduction, true).unwrap();
            let what = format!("{reduction:?} p={p} margin={margin} weight={weighted}");
            assert_grad(&what, &x, out.grad("input").unwrap(), |x| {
                scalar(&mm(x, &t, p, margin, w, reduction, false).unwrap())
            });
        }
    }
}
