use super::*;
use crate::ErrorKind;
use crate::testing::{Rng, assert_array_close, assert_close, assert_grad};
use ndarray::{Array1, ArrayD, IxDyn, array};

/// `log_softmax` over the last axis.
fn log_softmax(z: &ArrayD<f64>) -> ArrayD<f64> {
    let mut out = z.clone();
    let c = *z.shape().last().unwrap();
    for row in out.as_slice_mut().unwrap().chunks_mut(c) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
        row.iter_mut().for_each(|v| *v -= lse);
    }
    out
}

/// `ctc_loss` on owned arrays.
fn ctc<T: Real>(
    log_probs: &ArrayD<T>,
    targets: &ArrayD<i64>,
    input_lengths: &ArrayD<i64>,
    target_lengths: &ArrayD<i64>,
    options: CtcOptions,
) -> Result<LossOutput<T>, LossError> {
    let (lp, tg) = (log_probs.view(), targets.view());
    ctc_loss(lp, tg, input_lengths.view(), target_lengths.view(), options)
}

/// The options with `reduction` and `grad`, the others PyTorch's defaults.
fn opts(reduction: Reduction, grad: bool) -> CtcOptions {
    CtcOptions {
        reduction,
        grad,
        ..CtcOptions::default()
    }
}

fn ints(v: &[i64]) -> ArrayD<i64> {
    Array1::from(v.to_vec()).into_dyn()
}

/// The loss by brute force: every path of length `frames` over the `C` classes that
/// collapses (merge repeats, drop blanks) to `target`.
fn brute_force(lp: &[Vec<f64>], frames: usize, target: &[usize], blank: usize) -> f64 {
    let c = lp[0].len();
    let mut total = 0.0;
    let paths = c.pow(frames as u32);
    for mut p in 0..paths {
        let mut path = Vec::new();
        for _ in 0..frames {
            path.push(p % c);
            p /= c;
        }
        let mut collapsed = Vec::new();
        let mut prev = None;
        for &k in &path {
            if Some(k) != prev && k != blank {
                collapsed.push(k);
            }
            prev = Some(k);
        }
        if collapsed == target {
            total += path
                .iter()
                .enumerate()
                .map(|(t, &k)| lp[t][k])
                .sum::<f64>()
                .exp();
        }
    }
    -total.ln()
}

#[test]
fn the_loss_is_the_negative_log_of_the_summed_alignments() {
    let mut rng = Rng::new(1);
    let (t, c) = (5, 4);
    let lp = log_softmax(&rng.randn(&[t, c]));
    let rows: Vec<Vec<f64>> = lp
        .outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    for (target, frames, blank) in [
        (vec![1, 2], 5, 0),
        (vec![1, 1], 5, 0),
        (vec![2, 2, 2], 5, 0),
        (vec![3], 1, 0),
        (vec![], 4, 0),
        (vec![0, 1], 5, 3),
    ] {
        let tg: Vec<i64> = target.iter().map(|&v| v as i64).collect();
        let out = ctc(
            &lp,
            &ints(&tg),
            &ndarray::arr0(frames as i64).into_dyn(),
            &ndarray::arr0(tg.len() as i64).into_dyn(),
            CtcOptions {
                blank: blank as i64,
                ..opts(Reduction::None, false)
            },
        )
        .unwrap();
        let want = brute_force(&rows, frames, &target, blank);
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_close(
            &format!("{target:?} in {frames} frames"),
            out.loss.as_slice().unwrap(),
            &[want],
            1e-12,
            0.0,
        );
    }
}

/// A torch 2.15 case: `lp = torch.log_softmax(z, 2)` with `z` below, targets
/// `[[1, 2, 2], [3, 0, 0]]`, input lengths `[4, 3]`, target lengths `[3, 1]`, blank 0.
fn torch_case() -> (ArrayD<f64>, ArrayD<i64>, ArrayD<i64>, ArrayD<i64>) {
    let z = array![
        [[0.1, 0.5, -0.2, 0.3], [1.0, -1.0, 0.0, 0.5]],
        [[0.4, -0.3, 0.8, 0.0], [0.2, 0.2, -0.5, 1.5]],
        [[-0.6, 0.1, 0.9, 0.2], [0.0, 0.3, 0.3, -0.1]],
        [[0.7, 0.0, 0.2, -0.4], [0.5, 0.5, 0.5, 0.5]],
    ]
    .into_dyn();
    (
        log_softmax(&z),
        array![[1, 2, 2], [3, 0, 0]].into_dyn(),
        ints(&[4, 3]),
        ints(&[3, 1]),
    )
}

/// `F.ctc_loss(lp, ..., reduction='none')` and `lp.grad` after `out.sum().backward()`.
const TORCH_LOSS: [f64; 2] = [5.655567677004159, 1.5478919338022066];
const TORCH_GRAD: [f64; 32] = [
    0.22451498539403927,
    -0.665062999798602,
    0.16632479199599406,
    0.27422322240856983,
    -0.14564842745347006,
    0.06414768542935739,
    0.17437148764032928,
    -0.09287074561621622,
    0.2733188803289699,
    0.13572613922008944,
    -0.5922561439935832,
    0.18321112444452448,
    0.04355178353939988,
    0.16218279957947626,
    0.08053759479891551,
    -0.28627217791779114,
    -0.8971297418982324,
    0.20715526077062038,
    0.4610325113975457,
    0.22894196973006675,
    -0.29313221261854927,
    0.2931572753168786,
    0.2931572753168786,
    -0.29318233801520743,
    0.4105112139855424,
    0.2038538359067909,
    -0.7510123625619152,
    0.13664731266958172,
    0.0,
    0.0,
    0.0,
    0.0,
];

#[test]
fn matches_pytorch_on_a_padded_batch() {
    let (lp, tg, il, tl) = torch_case();
    let out = ctc(&lp, &tg, &il, &tl, opts(Reduction::None, true)).unwrap();
    assert_array_close("loss", &out.loss, &TORCH_LOSS, 1e-12, 0.0);
    let g = out.grad("log_probs").unwrap();
    assert_close("grad", g.as_slice().unwrap(), &TORCH_GRAD, 1e-10, 1e-12);
    // Frame 3 lies beyond input_lengths[1] = 3: its gradient is 0.
    assert!(g.slice(ndarray::s![3, 1, ..]).iter().all(|&v| v == 0.0));
}

#[test]
fn concatenated_targets_give_the_padded_result() {
    let (lp, _, il, tl) = torch_case();
    let flat = ints(&[1, 2, 2, 3]);
    let out = ctc(&lp, &flat, &il, &tl, opts(Reduction::None, false)).unwrap();
    assert_array_close("loss", &out.loss, &TORCH_LOSS, 1e-12, 0.0);
}

#[test]
fn mean_divides_each_loss_by_its_target_length() {
    let (lp, tg, il, tl) = torch_case();
    let run = |r| ctc(&lp, &tg, &il, &tl, opts(r, true)).unwrap();
    let mean = run(Reduction::Mean);
    let want = (TORCH_LOSS[0] / 3.0 + TORCH_LOSS[1] / 1.0) / 2.0;
    assert_close("mean", mean.loss.as_slice().unwrap(), &[want], 1e-12, 0.0);
    let sum = run(Reduction::Sum);
    assert_array_close(
        "sum",
        &sum.loss,
        &[TORCH_LOSS[0] + TORCH_LOSS[1]],
        1e-12,
        0.0,
    );
    assert_eq!(
        sum.grad("log_probs"),
        run(Reduction::None).grad("log_probs")
    );
    // The mean's gradient for sequence b is the sum's divided by N · max(L_b, 1).
    let (gm, gs) = (
        mean.grad("log_probs").unwrap(),
        sum.grad("log_probs").unwrap(),
    );
    for ((t, b, k), &v) in gm
        .view()
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        let scale = 2.0 * [3.0, 1.0][b];
        assert!((v - gs[[t, b, k]] / scale).abs() < 1e-15);
    }
}

#[test]
fn an_empty_target_costs_the_blank_path() {
    let mut rng = Rng::new(2);
    let lp = log_softmax(&rng.randn(&[4, 1, 3]));
    let out = ctc(
        &lp,
        &ints(&[]),
        &ints(&[4]),
        &ints(&[0]),
        opts(Reduction::Mean, false),
    )
    .unwrap();
    let want: f64 = -(0..4).map(|t| lp[[t, 0, 0]]).sum::<f64>();
    // Mean clamps the target length to 1.
    assert_close("loss", out.loss.as_slice().unwrap(), &[want], 1e-14, 0.0);
}

#[test]
fn infeasible_alignments_cost_infinity_with_a_nan_gradient() {
    // Checked on torch 2.15: T_b = 3 for target [1, 1, 1] (needs 5 frames) gives inf and
    // a NaN gradient for t < 3, 0 after; T_b = 0 with L > 0 gives inf and a 0 gradient;
    // T_b = 0 with L = 0 gives 0.
    let mut rng = Rng::new(3);
    let lp = log_softmax(&rng.randn(&[4, 3, 3]));
    let tg = array![[1, 2, 0], [1, 1, 1], [0, 0, 0]].into_dyn();
    let il = ints(&[0, 3, 0]);
    let tl = ints(&[2, 3, 0]);
    let out = ctc(&lp, &tg, &il, &tl, opts(Reduction::None, true)).unwrap();
    assert_eq!(
        out.loss.as_slice().unwrap(),
        &[f64::INFINITY, f64::INFINITY, 0.0]
    );
    let g = out.grad("log_probs").unwrap();
    for t in 0..4 {
        for k in 0..3 {
            assert_eq!(g[[t, 0, k]], 0.0);
            assert_eq!(g[[t, 1, k]].is_nan(), t < 3);
            assert_eq!(g[[t, 2, k]], 0.0);
        }
    }
}

#[test]
fn zero_infinity_zeroes_infinite_losses_and_their_gradients() {
    let mut rng = Rng::new(4);
    let lp = log_softmax(&rng.randn(&[3, 2, 3]));
    let tg = array![[1, 1], [1, 2]].into_dyn();
    let (il, tl) = (ints(&[3, 3]), ints(&[2, 2]));
    let run = |zi, r| {
        ctc(
            &lp,
            &tg,
            &il,
            &tl,
            CtcOptions {
                zero_infinity: zi,
                ..opts(r, true)
            },
        )
        .unwrap()
    };
    // [1, 1] needs 3 frames: feasible. Shorten to make it infeasible.
    let il2 = ints(&[2, 3]);
    let out = ctc(
        &lp,
        &tg,
        &il2,
        &tl,
        CtcOptions {
            zero_infinity: true,
            ..opts(Reduction::Sum, true)
        },
    )
    .unwrap();
    let feasible = run(false, Reduction::None);
    assert_array_close("sum", &out.loss, &[feasible.loss[[1]]], 1e-15, 0.0);
    let g = out.grad("log_probs").unwrap();
    assert!(g.slice(ndarray::s![.., 0, ..]).iter().all(|&v| v == 0.0));
    assert_eq!(
        g.slice(ndarray::s![.., 1, ..]),
        feasible
            .grad("log_probs")
            .unwrap()
            .slice(ndarray::s![.., 1, ..])
    );
    let none = ctc(
        &lp,
        &tg,
        &il2,
        &tl,
        CtcOptions {
            zero_infinity: true,
            ..opts(Reduction::None, false)
        },
    )
    .unwrap();
    assert_eq!(none.loss[[0]], 0.0);
    let _ = run(true, Reduction::Mean);
}

#[test]
fn the_gradient_is_the_logits_gradient_through_log_softmax() {
    // PyTorch's value exp(lp) − γ is exactly d loss / d logits for lp = log_softmax(z).
    let mut rng = Rng::new(5);
    let z = rng.randn(&[5, 3, 4]);
    let tg = array![[1, 2, 2], [3, 0, 0], [2, 1, 0]].into_dyn();
    let il = ints(&[5, 4, 3]);
    let tl = ints(&[3, 1, 0]);
    for blank in [0i64, 3] {
        let tg = if blank == 0 {
            tg.clone()
        } else {
            array![[1, 2, 2], [0, 1, 1], [2, 1, 0]].into_dyn()
        };
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            let run = |z: &ArrayD<f64>, grad| {
                ctc(
                    &log_softmax(z),
                    &tg,
                    &il,
                    &tl,
                    CtcOptions {
                        blank,
                        ..opts(reduction, grad)
                    },
                )
                .unwrap()
            };
            let out = run(&z, true);
            assert_grad(
                &format!("blank={blank} {reduction:?}"),
                &z,
                out.grad("log_probs").unwrap(),
                |z| run(z, false).loss.sum(),
            );
        }
    }
}

#[test]
fn float32_agrees_with_float64() {
    let (lp, tg, il, tl) = torch_case();
    let lp32 = lp.mapv(|v| v as f32);
    let out = ctc(&lp32, &tg, &il, &tl, opts(Reduction::None, true)).unwrap();
    let got: Vec<f64> = out.loss.iter().map(|&v| f64::from(v)).collect();
    assert_close("loss", &got, &TORCH_LOSS, 1e-6, 1e-6);
    let g: Vec<f64> = out
        .grad("log_probs")
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_close("grad", &g, &TORCH_GRAD, 1e-5, 1e-6);
}

fn err(
    lp: &ArrayD<f64>,
    tg: &ArrayD<i64>,
    il: &ArrayD<i64>,
    tl: &ArrayD<i64>,
    blank: i64,
) -> LossError {
    ctc(
        lp,
        tg,
        il,
        tl,
        CtcOptions {
            blank,
            ..opts(Reduction::Mean, true)
        },
    )
    .unwrap_err()
}

#[test]
fn malformed_shapes_are_rejected_like_pytorch() {
    let lp = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5]));
    let tg = array![[1, 2, 3], [1, 1, 0]].into_dyn();
    let (il, tl) = (ints(&[6, 6]), ints(&[3, 2]));
    let shape = |e: LossError| (e.kind, e.arg);
    let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 2, 5]));
    assert_eq!(
        shape(err(&empty, &tg, &il, &tl, 0)),
        (ErrorKind::Shape, "log_probs")
    );
    let rank4 = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5, 1]));
    assert_eq!(
        shape(err(&rank4, &tg, &il, &tl, 0)),
        (ErrorKind::Shape, "log_probs")
    );
    let tg3 = ArrayD::<i64>::ones(IxDyn(&[1, 2, 3]));
    assert_eq!(
        shape(err(&lp, &tg3, &il, &tl, 0)),
        (ErrorKind::Shape, "targets")
    );
    assert_eq!(
        shape(err(&lp, &tg, &ints(&[6, 6, 6]), &tl, 0)),
        (ErrorKind::Shape, "input_lengths")
    );
    assert_eq!(
        shape(err(&lp, &tg, &il, &ints(&[3]), 0)),
        (ErrorKind::Shape, "target_lengths")
    );
    // Padded: one row per sequence, at least max(target_lengths) columns.
    let one_row = array![[1, 2, 3]].into_dyn();
    let e = err(&lp, &one_row, &il, &tl, 0);
    assert_eq!(shape(e.clone()), (ErrorKind::Shape, "targets"));
    assert!(e.message.contains("[1, 3]"));
    let e = err(&lp, &tg, &il, &ints(&[4, 2]), 0);
    assert_eq!(shape(e.clone()), (ErrorKind::Shape, "targets"));
    assert!(e.message.contains("longest target length is 4"));
    // Concatenated: exactly Σ target_lengths labels.
    let e = err(&lp, &ints(&[1, 2, 3, 1]), &il, &tl, 0);
    assert_eq!(shape(e.clone()), (ErrorKind::Shape, "targets"));
    assert!(e.message.contains("sum to 5"));
    // Unbatched: a 1-D target must have exactly target_length labels.
    let lp2 = ArrayD::<f64>::zeros(IxDyn(&[6, 5]));
    let e = ctc(
        &lp2,
        &ints(&[1, 2, 3, 4]),
        &ndarray::arr0(6i64).into_dyn(),
        &ndarray::arr0(3i64).into_dyn(),
        opts(Reduction::None, false),
    )
    .unwrap_err();
    assert_eq!(shape(e), (ErrorKind::Shape, "targets"));
}

#[test]
fn bad_lengths_and_blank_are_rejected_like_pytorch() {
    let lp = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5]));
    let tg = array![[1, 2, 3], [1, 1, 0]].into_dyn();
    let (il, tl) = (ints(&[6, 6]), ints(&[3, 2]));
    for blank in [5, -1] {
        let e = err(&lp, &tg, &il, &tl, blank);
        assert_eq!((e.kind, e.arg), (ErrorKind::Option, "blank"));
    }
    let e = err(&lp, &tg, &ints(&[7, 6]), &tl, 0);
    assert_eq!(
        (e.kind, e.arg, e.index.clone()),
        (ErrorKind::Value, "input_lengths", Some(vec![0]))
    );
    assert!(e.message.contains("7") && e.message.contains("6 time steps"));
    let e = err(&lp, &tg, &ints(&[6, -1]), &tl, 0);
    assert_eq!(
        (e.kind, e.arg, e.index),
        (ErrorKind::Value, "input_lengths", Some(vec![1]))
    );
    let e = err(&lp, &tg, &il, &ints(&[-1, 4]), 0);
    assert_eq!(
        (e.kind, e.arg, e.index),
        (ErrorKind::Value, "target_lengths", Some(vec![0]))
    );
    // PyTorch checks the targets before the input lengths.
    let e = err(&lp, &tg, &ints(&[7, 6]), &ints(&[4, 2]), 0);
    assert_eq!(e.arg, "targets");
}

#[test]
fn labels_equal_to_blank_or_out_of_range_are_rejected() {
    let lp = ArrayD::<f64>::zeros(IxDyn(&[6, 2, 5]));
    let (il, tl) = (ints(&[6, 6]), ints(&[3, 2]));
    for (bad, at) in [(0i64, vec![1, 1]), (5, vec![1, 1]), (-2, vec![1, 1])] {
        let tg = array![[1, 2, 3], [1, bad, 0]].into_dyn();
        let e = err(&lp, &tg, &il, &tl, 0);
        assert_eq!((e.kind, e.arg), (ErrorKind::Value, "targets"), "{bad}");
        assert_eq!(e.index, Some(at));
        assert!(e.message.contains(&bad.to_string()));
    }
    // Padding past the target length is never read.
    let tg = array![[1, 2, 3], [1, 1, -7]].into_dyn();
    assert!(ctc(&lp, &tg, &il, &tl, opts(Reduction::Mean, false)).is_ok());
    // Concatenated targets point at the flat position.
    let e = err(&lp, &ints(&[1, 2, 3, 4, 9]), &il, &tl, 0);
    assert_eq!(e.index, Some(vec![4]));
}

#[test]
fn lengths_may_have_any_shape_with_one_value_per_sequence() {
    let (lp, tg, il, tl) = torch_case();
    let il2 = il.clone().into_shape_with_order(IxDyn(&[2, 1])).unwrap();
    let out = ctc(&lp, &tg, &il2, &tl, opts(Reduction::None, false)).unwrap();
    assert_array_close("loss", &out.loss, &TORCH_LOSS, 1e-12, 0.0);
}

#[test]
fn unbatched_inputs_give_a_0_d_loss_and_a_2_d_gradient() {
    let (lp, tg, _, _) = torch_case();
    let seq0 = lp.slice(ndarray::s![.., 0, ..]).to_owned().into_dyn();
    let targets = tg.slice(ndarray::s![0, ..]).to_owned().into_dyn();
    for (il, tl) in [
        (
            ndarray::arr0(4i64).into_dyn(),
            ndarray::arr0(3i64).into_dyn(),
        ),
        (ints(&[4]), ints(&[3])),
    ] {
        let out = ctc(&seq0, &targets, &il, &tl, opts(Reduction::None, true)).unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        assert_array_close("loss", &out.loss, &TORCH_LOSS[..1], 1e-12, 0.0);
        assert_eq!(out.grad("log_probs").unwrap().shape(), &[4, 4]);
    }
    // A (1, S) padded target also works unbatched.
    let padded = targets.clone().insert_axis(ndarray::Axis(0));
    let out = ctc(
        &seq0,
        &padded,
        &ints(&[4]),
        &ints(&[3]),
        opts(Reduction::Mean, false),
    )
    .unwrap();
    assert_array_close("mean", &out.loss, &[TORCH_LOSS[0] / 3.0], 1e-12, 0.0);
}

#[test]
fn huge_sequences_are_refused_before_allocating() {
    let lp = ArrayD::<f64>::zeros(IxDyn(&[1 << 14, 1, 2]));
    let tg = ArrayD::<i64>::ones(IxDyn(&[1, 1 << 13]));
    let e = ctc(
        &lp,
        &tg,
        &ints(&[1 << 14]),
        &ints(&[1 << 13]),
        opts(Reduction::Sum, true),
    )
    .unwrap_err();
    assert_eq!((e.kind, e.arg), (ErrorKind::TooLarge, "log_probs"));
}

#[test]
fn a_raised_cancellation_flag_stops_the_computation() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let (lp, tg, il, tl) = torch_case();
    let flag = Arc::new(AtomicBool::new(true));
    let r = crate::cancel::with_flag(flag, || ctc(&lp, &tg, &il, &tl, opts(Reduction::Sum, true)));
    assert_eq!(r.unwrap_err().kind, ErrorKind::Cancelled);
}
