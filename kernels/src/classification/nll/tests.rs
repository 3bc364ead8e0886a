use super::*;
use crate::ErrorKind;
use crate::testing::{Rng, assert_close, assert_grad, class_target, scalar};
use ndarray::{Array, ArrayD, IxDyn, array};

fn t1(v: &[i64]) -> ArrayD<i64> {
    Array::from_vec(v.to_vec()).into_dyn()
}

#[test]
fn matches_the_worked_example_of_losses_md() {
    // The worked example: NLLLoss weight=[1,2,0.5] mean on the CE example's x, t=[2,0,1].
    let x = array![[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]].into_dyn();
    let w = array![1.0, 2.0, 0.5].into_dyn();
    let t = t1(&[2, 0, 1]);
    let out = nll_loss(
        x.view(),
        t.view(),
        Some(w.view()),
        -100,
        Reduction::Mean,
        true,
    )
    .unwrap();
    assert_close("loss", &[out.loss[[]]], &[-1.2142857143], 1e-10, 0.0);
    assert_close(
        "grad",
        out.grad("input").unwrap().as_slice().unwrap(),
        &[
            0.0,
            0.0,
            -0.1428571429,
            -0.2857142857,
            0.0,
            0.0,
            0.0,
            -0.5714285714,
            0.0,
        ],
        1e-9,
        0.0,
    );
}

#[test]
fn every_reduction_picks_the_target_entries() {
    let x = array![[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]].into_dyn();
    let t = t1(&[1, 0, 1]);
    let none = nll_loss(x.view(), t.view(), None, -100, Reduction::None, false).unwrap();
    assert_eq!(none.loss.as_slice().unwrap(), &[2.0, 3.0, 6.0]);
    let sum = nll_loss(x.view(), t.view(), None, -100, Reduction::Sum, false).unwrap();
    assert_eq!(sum.loss[[]], 11.0);
    let mean = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, false).unwrap();
    assert_eq!(mean.loss[[]], 11.0 / 3.0);
    assert!(mean.grads.is_empty());
}

#[test]
fn ignored_positions_count_neither_in_the_loss_nor_in_the_mean() {
    let x = array![[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]].into_dyn();
    let w = array![2.0, 0.5].into_dyn();
    let t = t1(&[1, 7, 0]);
    // ignore_index may lie outside [0, C).
    let out = nll_loss(x.view(), t.view(), Some(w.view()), 7, Reduction::Mean, true).unwrap();
    assert_eq!(out.loss[[]], (0.5 * 2.0 + 2.0 * 5.0) / 2.5);
    assert_eq!(
        out.grad("input").unwrap().as_slice().unwrap(),
        &[0.0, -0.2, 0.0, 0.0, -0.8, 0.0]
    );
    let none = nll_loss(
        x.view(),
        t.view(),
        Some(w.view()),
        7,
        Reduction::None,
        false,
    )
    .unwrap();
    assert_eq!(none.loss.as_slice().unwrap(), &[1.0, 0.0, 10.0]);
}

#[test]
fn all_ignored_mean_is_nan_with_a_zero_gradient() {
    let x = array![[-1.0f64, -2.0], [-3.0, -4.0]].into_dyn();
    let t = t1(&[-100, -100]);
    let out = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
    assert!(out.loss[[]].is_nan());
    assert_eq!(out.grad("input").unwrap().as_slice().unwrap(), &[0.0; 4]);
    let sum = nll_loss(x.view(), t.view(), None, -100, Reduction::Sum, false).unwrap();
    assert_eq!(sum.loss[[]], 0.0);
}

#[test]
fn zero_total_weight_gives_nan_and_infinite_gradients_as_pytorch() {
    // Checked on torch 2.15: weight [0,0,1], t=[0,1] → NaN, grad NaN at the targets;
    // weight [1,-1,1] → inf, grad −inf / +inf at the targets.
    let x = array![[0.1f64, 0.5, -0.3], [1.0, 2.0, 0.0]].into_dyn();
    let t = t1(&[0, 1]);
    let w = array![0.0, 0.0, 1.0].into_dyn();
    let out = nll_loss(
        x.view(),
        t.view(),
        Some(w.view()),
        -100,
        Reduction::Mean,
        true,
    )
    .unwrap();
    assert!(out.loss[[]].is_nan());
    let g = out.grad("input").unwrap();
    assert!(g[[0, 0]].is_nan() && g[[1, 1]].is_nan());
    assert_eq!((g[[0, 1]], g[[1, 0]]), (0.0, 0.0));
    let w = array![1.0, -1.0, 1.0].into_dyn();
    let out = nll_loss(
        x.view(),
        t.view(),
        Some(w.view()),
        -100,
        Reduction::Mean,
        true,
    )
    .unwrap();
    assert_eq!(out.loss[[]], f64::INFINITY);
    let g = out.grad("input").unwrap();
    assert_eq!((g[[0, 0]], g[[1, 1]]), (f64::NEG_INFINITY, f64::INFINITY));
}

#[test]
fn unbatched_input_takes_a_0d_or_a_one_element_target() {
    let x = array![-0.5, -1.5, -2.5].into_dyn();
    for t in [ndarray::arr0(1i64).into_dyn(), t1(&[1])] {
        let out = nll_loss(x.view(), t.view(), None, -100, Reduction::None, true).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_eq!(out.loss[[]], 1.5);
        assert_eq!(
            out.grad("input").unwrap().as_slice().unwrap(),
            &[0.0, -1.0, 0.0]
        );
    }
}

#[test]
fn k_dimensional_input_reads_the_class_dimension_with_a_stride() {
    let mut rng = Rng::new(1);
    let x = rng.randn(&[2, 3, 2, 2]);
    let t = ndarray::arr3(&[[[0i64, 1], [2, 0]], [[1, 1], [2, -100]]]).into_dyn();
    let out = nll_loss(x.view(), t.view(), None, -100, Reduction::None, true).unwrap();
    assert_eq!(out.loss.shape(), &[2, 2, 2]);
    for n in 0..2 {
        for i in 0..2 {
            for j in 0..2 {
                let tt = t[[n, i, j]];
                let want = if tt < 0 {
                    0.0
                } else {
                    -x[[n, tt as usize, i, j]]
                };
                assert_eq!(out.loss[[n, i, j]], want);
            }
        }
    }
    let g = out.grad("input").unwrap();
    assert_eq!(g.iter().filter(|v| **v == -1.0).count(), 7);
}

#[test]
fn empty_batches_give_nan_mean_zero_sum_and_empty_none() {
    let x = ArrayD::<f64>::zeros(IxDyn(&[0, 3]));
    let t = t1(&[]);
    let mean = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
    assert!(mean.loss[[]].is_nan());
    assert_eq!(mean.grad("input").unwrap().shape(), &[0, 3]);
    let sum = nll_loss(x.view(), t.view(), None, -100, Reduction::Sum, false).unwrap();
    assert_eq!(sum.loss[[]], 0.0);
    let none = nll_loss(x.view(), t.view(), None, -100, Reduction::None, false).unwrap();
    assert_eq!(none.loss.shape(), &[0]);
}

#[test]
fn targets_out_of_range_are_rejected_with_their_position() {
    let x = array![[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]].into_dyn();
    for bad in [3i64, -2, i64::MIN, i64::MAX] {
        let t = t1(&[0, bad]);
        let e = nll_loss(x.view(), t.view(), None, -100, Reduction::None, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Value, "target"));
        assert_eq!(e.index, Some(vec![1]));
        assert!(e.message.contains(&bad.to_string()), "{}", e.message);
    }
    // Zero classes: every target is out of bounds.
    let x = ArrayD::<f64>::zeros(IxDyn(&[1, 0]));
    let e = nll_loss(x.view(), t1(&[0]).view(), None, -100, Reduction::Sum, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Value);
}

#[test]
fn the_branch_free_count_finds_the_first_bad_target_as_the_scalar_scan() {
    // Unweighted targets go through `count_targets`; weighted ones through the scalar
    // loop. Both must count the same targets and point at the same first bad one.
    let mut rng = Rng::new(11);
    let x = ArrayD::<f64>::zeros(IxDyn(&[300, 5]));
    let w = ArrayD::<f64>::ones(IxDyn(&[5]));
    for case in 0..200 {
        let ignore = [-100i64, 2, 7, -1][case % 4];
        let pool = [0i64, 1, 2, 3, 4, ignore, ignore, 5, -1, i64::MIN, i64::MAX];
        // Good targets (some ignored), and in four cases of five one bad target somewhere.
        let bad_at = (rng.uniform() * 300.0) as usize;
        let t: Vec<i64> = (0..300)
            .map(|i| {
                if i == bad_at && case % 5 != 0 {
                    pool[7 + (case / 4) % 4]
                } else {
                    pool[(rng.uniform() * 7.0) as usize]
                }
            })
            .collect();
        let t = t1(&t);
        let plain = nll_loss(x.view(), t.view(), None, ignore, Reduction::Sum, false);
        let weighted = nll_loss(
            x.view(),
            t.view(),
            Some(w.view()),
            ignore,
            Reduction::Sum,
            false,
        );
        match (plain, weighted) {
            (Ok(a), Ok(b)) => assert_eq!(a.loss, b.loss),
            (Err(a), Err(b)) => {
                assert_eq!((a.index, a.message), (b.index, b.message));
            }
            (a, b) => panic!("case {case}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
        let mean = |w: Option<ArrayViewD<'_, f64>>| {
            nll_loss(x.view(), t.view(), w, ignore, Reduction::Mean, true).map(|o| o.grads)
        };
        if let (Ok(a), Ok(b)) = (mean(None), mean(Some(w.view()))) {
            assert_eq!(
                a, b,
                "case {case}: the count is the denominator of the mean"
            );
        }
    }
}

#[test]
fn shapes_pytorch_rejects_are_rejected() {
    let x2 = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
    let x1 = ArrayD::<f64>::zeros(IxDyn(&[3]));
    let x4 = ArrayD::<f64>::zeros(IxDyn(&[2, 3, 4, 4]));
    let x0 = ndarray::arr0(0.0).into_dyn();
    let cases: Vec<(&ArrayD<f64>, ArrayD<i64>, &str)> = vec![
        (&x2, t1(&[0, 1, 2]), "target"),
        (&x2, ndarray::arr0(0).into_dyn(), "target"),
        (&x2, ArrayD::zeros(IxDyn(&[4, 1])), "target"),
        (&x1, t1(&[0, 1]), "target"),
        (&x1, ArrayD::zeros(IxDyn(&[1, 1])), "target"),
        (&x4, ArrayD::zeros(IxDyn(&[2, 4, 5])), "target"),
        (&x4, ArrayD::zeros(IxDyn(&[2, 4])), "target"),
        (&x0, ndarray::arr0(0).into_dyn(), "input"),
    ];
    for (x, t, arg) in cases {
        let e = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, false).unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, arg), "{}", e.message);
    }
    let t = t1(&[0, 1, 2, 0]);
    for w in [
        ArrayD::<f64>::ones(IxDyn(&[4])),
        ArrayD::<f64>::ones(IxDyn(&[1, 3])),
    ] {
        let e = nll_loss(
            x2.view(),
            t.view(),
            Some(w.view()),
            -100,
            Reduction::Mean,
            false,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "weight"));
        assert!(e.message.contains("[4]") || e.message.contains("[1, 3]"));
    }
}

/// The forward-only sum (no weight, no unreduced losses, no gradient) takes a path of its
/// own; it gives the bits of the general path, ignored positions anywhere in the blocks,
/// for (N, C) and K-dimensional inputs.
#[test]
fn the_plain_forward_gives_the_bits_of_the_general_path() {
    fn check<T: Real>(shape: &[usize], rng: &mut Rng) {
        let x: Vec<T> = (0..shape.iter().product::<usize>())
            .map(|_| T::of(rng.range(-3.0, 1.0)))
            .collect();
        let x = ArrayD::from_shape_vec(IxDyn(shape), x).unwrap();
        let mut tshape = shape.to_vec();
        let c = tshape.remove(1);
        let n: usize = tshape.iter().product();
        let t: Vec<i64> = (0..n)
            .map(|i| {
                if i % 7 == 3 || (250..262).contains(&(i % 512)) {
                    -100
                } else {
                    (rng.next_u64() % c as u64) as i64
                }
            })
            .collect();
        let t = ArrayD::from_shape_vec(IxDyn(&tshape), t).unwrap();
        for reduction in [Reduction::Sum, Reduction::Mean] {
            let fast = nll_loss(x.view(), t.view(), None, -100, reduction, false).unwrap();
            let general = nll_loss(x.view(), t.view(), None, -100, reduction, true).unwrap();
            let bits =
                |o: &LossOutput<T>| o.loss.iter().map(|v| v.f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&general), "{shape:?} {reduction:?}");
        }
    }
    let mut rng = Rng::new(21);
    for shape in [&[1000, 10][..], &[3, 5, 301], &[517, 1], &[0, 4]] {
        check::<f32>(shape, &mut rng);
        check::<f64>(shape, &mut rng);
    }
}

#[test]
fn float32_matches_float64() {
    let mut rng = Rng::new(5);
    let x = rng.randn(&[6, 4]);
    let t = t1(&[0, 1, 2, 3, 0, 1]);
    let a = nll_loss(x.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
    let xf = x.mapv(|v| v as f32);
    let b = nll_loss(xf.view(), t.view(), None, -100, Reduction::Mean, true).unwrap();
    assert!((a.loss[[]] - f64::from(b.loss[[]])).abs() < 1e-6);
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(9);
    let w = rng.uniform_tensor(&[4], 0.5, 2.0);
    for shape in [&[5, 4][..], &[2, 4, 3], &[4]] {
        let x = rng.randn(shape);
        let t = class_target(&mut rng, shape, 4, -100);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            for use_w in [false, true] {
                let wv = use_w.then_some(&w);
                let out = nll_loss(
                    x.view(),
                    t.view(),
                    wv.map(|w| w.view()),
                    -100,
                    reduction,
                    true,
                )
                .unwrap();
                assert_grad(
                    &format!("{shape:?} {reduction:?} weight={use_w}"),
                    &x,
                    out.grad("input").unwrap(),
                    |x| {
                        scalar(
                            &nll_loss(
                                x.view(),
                                t.view(),
                                wv.map(|w| w.view()),
                                -100,
                                reduction,
                                false,
                            )
                            .unwrap(),
                        )
                    },
                );
            }
        }
    }
}
