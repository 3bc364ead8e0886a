//! `linear_cross_entropy` (`nn.LinearCrossEntropyLoss`): `cross_entropy(input · Wᵀ + b, target)`
//! without ever holding the whole `(N, C)` logits matrix, LOSSES.md §2.7.
//!
//! The point of the fused loss is memory: with a large vocabulary `C`, the logits (and their
//! gradient) dwarf everything else. Rows are processed in chunks sized so that a chunk's logits
//! hold about a million elements (16 to 1024 rows): one matrix product gives the chunk's
//! logits, the cross-entropy row math of [`super::cross_entropy`] turns each row into its loss
//! and the gradient with respect to its logits, and two more products fold that gradient into
//! the gradients of `input` (the chunk's rows) and `linear_weight`; the bias gradient is the
//! column sum. Peak extra memory is two chunk buffers, whatever `N`.
//!
//! The mean's denominator (the summed class weights of the non-ignored rows) is known before
//! the first chunk: the targets are checked, and the denominator summed, up front. So each
//! chunk's gradient is final when it is computed and nothing is rescaled at the end.
//!
//! lossd's decisions: `linear_weight` must be `(C, in_features)` (PyTorch's K-dimensional
//! `(C, d1.., in_features)` weights are not supported); `ignore_index` defaults to −100 and,
//! with a probability target, any other value is rejected (PyTorch rejects an explicit
//! `ignore_index` there); `label_smoothing` must lie in `[0, 1]` as for `cross_entropy`.
//! Gradients are returned for `input`, `linear_weight` and `linear_bias`, not for a probability
//! target or the class weights (PyTorch's chunked path does not give them either).

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, IxDyn, s};

use super::cross_entropy::{
    CeTarget, RowMath, check_label_smoothing, finish_loss, indices_shape_error, probs_shape_error,
};
use super::nll::{check_class_weight, check_index_target};
use crate::error::fmt_shape;
use crate::reduction::Sum8;
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// About how many logits one chunk holds.
const CHUNK_ELEMS: usize = 1 << 20;

/// The class-index targets or probability rows of the whole batch.
enum Targets<'a, T: Clone> {
    Indices(std::borrow::Cow<'a, [i64]>),
    Probs(std::borrow::Cow<'a, [T]>),
}

/// `F.linear_cross_entropy(input, linear_weight, target, linear_bias=, weight=, reduction=,
/// ignore_index=, label_smoothing=)`: [`cross_entropy`](super::cross_entropy::cross_entropy)
/// of the logits `input · linear_weightᵀ + linear_bias`, computed in chunks of rows.
///
/// Shapes: `input` `(in_features)` or `(N, in_features)`; `linear_weight` `(C, in_features)`;
/// `linear_bias` `(C)`; `weight` `(C)`. `target` as for `cross_entropy` with logits `(C)` or
/// `(N, C)`: class indices `()`/`(1,)` or `(N)`, or probabilities of the logits' shape (the
/// caller picks [`CeTarget::Probs`] exactly when the shapes are equal). `'none'` returns `()`
/// or `(N)`.
///
/// Gradients: `input`, `linear_weight`, and `linear_bias` when given.
///
/// Errors: `label_smoothing` (option) outside `[0, 1]`; `input` (shape) unless 1-D or 2-D;
/// `linear_weight` (shape) unless 2-D with `in_features` columns; `linear_bias` (shape) unless
/// `(C)`; `ignore_index` (option) other than −100 with probabilities; then those of
/// `cross_entropy` for `target` and `weight`.
#[allow(clippy::too_many_arguments)]
pub fn linear_cross_entropy<T: Real>(
    input: ArrayViewD<'_, T>,
    linear_weight: ArrayViewD<'_, T>,
    target: CeTarget<'_, T>,
    linear_bias: Option<ArrayViewD<'_, T>>,
    weight: Option<ArrayViewD<'_, T>>,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    check_label_smoothing(label_smoothing)?;
    let in_shape = input.shape().to_vec();
    let w_shape = linear_weight.shape().to_vec();
    if !(1..=2).contains(&in_shape.len()) {
        return Err(LossError::shape(
            "input",
            format!(
                "input has shape {}: expected (in_features) or (N, in_features)",
                fmt_shape(&in_shape)
            ),
        ));
    }
    let in_features = in_shape[in_shape.len() - 1];
    if w_shape.len() != 2 || w_shape[1] != in_features {
        return Err(LossError::shape(
            "linear_weight",
            format!(
                "linear_weight has shape {} but input has shape {}: expected (C, {in_features}), one row of in_features = {in_features} per class",
                fmt_shape(&w_shape),
                fmt_shape(&in_shape)
            ),
        ));
    }
    let classes = w_shape[0];
    if let Some(b) = &linear_bias
        && b.shape() != [classes]
    {
        return Err(LossError::shape(
            "linear_bias",
            format!(
                "linear_bias has shape {} but linear_weight has shape {}: expected [{classes}]",
                fmt_shape(b.shape()),
                fmt_shape(&w_shape)
            ),
        ));
    }
    let logits_shape: Vec<usize> = match in_shape.as_slice() {
        [n, _] => vec![*n, classes],
        _ => vec![classes],
    };

    // Targets, class weights and the mean's denominator, all checked before any product.
    let (layout, targets, class_w, denominator) = match &target {
        CeTarget::Indices(t) => {
            if t.shape() == logits_shape.as_slice() {
                return Err(indices_shape_error(t.shape(), &logits_shape));
            }
            let checked = check_index_target(&logits_shape, t, &weight, ignore_index)?;
            (
                checked.layout,
                Targets::Indices(checked.targets),
                checked.weight,
                checked.total_weight,
            )
        }
        CeTarget::Probs(p) => {
            if ignore_index != -100 {
                return Err(LossError::option(
                    "ignore_index",
                    format!(
                        "ignore_index cannot be specified when target contains probabilities (got {ignore_index})"
                    ),
                ));
            }
            if p.shape() != logits_shape.as_slice() {
                return Err(probs_shape_error(p.shape(), &logits_shape));
            }
            let layout = super::nll::ClassLayout::of(&logits_shape)?;
            let w = check_class_weight(&weight, classes)?;
            let numel = layout.positions() * classes;
            let denominator = if numel == 0 {
                f64::NAN
            } else {
                layout.positions() as f64
            };
            (
                layout,
                Targets::Probs(contiguous(p, &logits_shape)),
                w,
                denominator,
            )
        }
    };
    let rows = layout.positions();
    let g_hat = match reduction {
        Reduction::Mean => T::of(1.0 / denominator),
        Reduction::Sum | Reduction::None => T::one(),
    };
    let math = RowMath::new(
        classes,
        class_w.as_deref(),
        ignore_index,
        label_smoothing,
        g_hat,
    );

    let x = contiguous(&input, &in_shape);
    let x = ArrayView2::from_shape((rows, in_features), &x).expect("input is (N, in_features)");
    let wl = contiguous(&linear_weight, &w_shape);
    let wl = ArrayView2::from_shape((classes, in_features), &wl).expect("checked shape");
    let bias = linear_bias.as_ref().map(|b| contiguous(b, &[classes]));

    let chunk = (CHUNK_ELEMS / classes.max(1))
        .clamp(16, 1024)
        .min(rows.max(1));
    let mut logits = vec![T::zero(); chunk * classes];
    let mut glogits = if grad {
        vec![T::zero(); chunk * classes]
    } else {
        Vec::new()
    };
    let mut dx = if grad {
        Array2::<T>::zeros((rows, in_features))
    } else {
        Array2::zeros((0, 0))
    };
    let mut dw = if grad {
        Array2::<T>::zeros((classes, in_features))
    } else {
        Array2::zeros((0, 0))
    };
    let mut db = vec![0.0f64; if grad && bias.is_some() { classes } else { 0 }];

    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { rows } else { 0 });
    // Probability mode sums −ℓ and negates at the end, as in `cross_entropy`.
    let sign = if matches!(targets, Targets::Probs(_)) {
        -1.0
    } else {
        1.0
    };
    let mut total = Sum8::new();
    for r0 in (0..rows).step_by(chunk) {
        crate::cancel::checkpoint()?;
        let m = chunk.min(rows - r0);
        let xs = x.slice(s![r0..r0 + m, ..]);
        let lg = &mut logits[..m * classes];
        {
            let mut lgv = ArrayViewMut2::from_shape((m, classes), &mut *lg).expect("chunk");
            general_mat_mul(T::one(), &xs, &wl.t(), T::zero(), &mut lgv);
        }
        if let Some(b) = &bias {
            for row in lg.chunks_exact_mut(classes.max(1)) {
                row.iter_mut().zip(b.iter()).for_each(|(l, &bc)| *l += bc);
            }
        }
        let gl = if grad {
            Some(&mut glogits[..m * classes])
        } else {
            None
        };
        let mut gl = gl;
        for i in 0..m {
            let r = i * classes..(i + 1) * classes;
            let g = gl.as_deref_mut().map(|g| &mut g[r.clone()]);
            let l = match &targets {
                Targets::Indices(t) => math.index_row(&lg[r], t[r0 + i], g),
                Targets::Probs(p) => {
                    let pr = &p[(r0 + i) * classes..(r0 + i + 1) * classes];
                    math.prob_row(&lg[r], pr, g, None, None)
                }
            };
            total.add(sign * l.f64());
            if keep {
                losses.push(l);
            }
        }
        if let Some(gl) = gl {
            let glv = ArrayView2::from_shape((m, classes), &*gl).expect("chunk");
            let mut dxs = dx.slice_mut(s![r0..r0 + m, ..]);
            general_mat_mul(T::one(), &glv, &wl, T::zero(), &mut dxs);
            general_mat_mul(T::one(), &glv.t(), &xs, T::one(), &mut dw);
            if !db.is_empty() {
                for row in gl.chunks_exact(classes.max(1)) {
                    db.iter_mut().zip(row).for_each(|(acc, &g)| *acc += g.f64());
                }
            }
        }
    }

    let loss = finish_loss(
        reduction,
        &layout.out_shape,
        losses,
        sign * total.total(),
        denominator,
    );
    let mut out = LossOutput::new(loss);
    if grad {
        let dx = dx
            .into_shape_with_order(IxDyn(&in_shape))
            .expect("input's size");
        out.grads.push(("input", dx));
        out.grads.push(("linear_weight", dw.into_dyn()));
        if bias.is_some() {
            let db: Vec<T> = db.into_iter().map(T::of).collect();
            out.grads.push((
                "linear_bias",
                ArrayD::from_shape_vec(IxDyn(&[classes]), db).expect("C classes"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::classification::cross_entropy::cross_entropy;
    use crate::testing::{Rng, assert_close, assert_grad, scalar};
    use ndarray::{Array, Ix2, array};

    fn flat(a: &ArrayD<f64>) -> Vec<f64> {
        a.iter().copied().collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn lce(
        x: &ArrayD<f64>,
        wl: &ArrayD<f64>,
        t: &CeTarget<'_, f64>,
        b: Option<&ArrayD<f64>>,
        w: Option<&ArrayD<f64>>,
        eps: f64,
        reduction: Reduction,
        grad: bool,
    ) -> LossOutput<f64> {
        linear_cross_entropy(
            x.view(),
            wl.view(),
            t.clone(),
            b.map(|b| b.view()),
            w.map(|w| w.view()),
            -100,
            eps,
            reduction,
            grad,
        )
        .unwrap()
    }

    /// The unfused computation: explicit logits, `cross_entropy`, and the chain rule by hand.
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
        let w2 = wl.view().into_dimensionality::<Ix2>().unwrap();
        let mut logits = x2.dot(&w2.t());
        if let Some(b) = b {
            logits += &b.view().into_dimensionality::<ndarray::Ix1>().unwrap();
        }
        let logits = logits.into_dyn();
        let out = cross_entropy(
            logits.view(),
            t.clone(),
            w.map(|w| w.view()),
            -100,
            eps,
            reduction,
            true,
        )
        .unwrap();
        let gl = out
            .grad("input")
            .unwrap()
            .view()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .to_owned();
        let mut grads = vec![
            ("input", gl.dot(&w2).into_dyn()),
            ("linear_weight", gl.t().dot(&x2).into_dyn()),
        ];
        if b.is_some() {
            grads.push(("linear_bias", gl.sum_axis(ndarray::Axis(0)).into_dyn()));
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
                    let got = lce(&x, &wl, &target, bv, wv, eps, reduction, true);
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
            None,
            0.0,
            Reduction::Sum,
            true,
        );
        for t in [ndarray::arr0(2i64).into_dyn(), tb.clone()] {
            let out = lce(
                &x,
                &wl,
                &CeTarget::Indices(t.view()),
                None,
                None,
                0.0,
                Reduction::None,
                true,
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
            None,
            0.0,
            Reduction::None,
            true,
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
            None,
            0.1,
            Reduction::Mean,
            true,
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
            None,
            0.0,
            Reduction::Mean,
            true,
        );
        assert!(out.loss[[]].is_nan());
        assert_eq!(out.grad("input").unwrap().shape(), &[0, 2]);
        assert_eq!(out.grad("linear_weight").unwrap().shape(), &[3, 2]);
        let out = lce(
            &x,
            &wl,
            &CeTarget::Indices(t.view()),
            None,
            None,
            0.0,
            Reduction::None,
            false,
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
            None,
            0.0,
            Reduction::Sum,
            true,
        );
        let bl = b.clone().insert_axis(ndarray::Axis(0));
        let bl = ndarray::concatenate![ndarray::Axis(0), bl, bl].into_dyn();
        let want = cross_entropy(
            bl.view(),
            CeTarget::Indices(t.view()),
            None,
            -100,
            0.0,
            Reduction::Sum,
            false,
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
                w.map(|w| w.view()),
                ii,
                eps,
                Reduction::Mean,
                false,
            )
            .unwrap_err()
        };
        let idx = || CeTarget::Indices(t.view());
        let x3 = ArrayD::<f64>::zeros(IxDyn(&[1, 2, 3]));
        let wl3 = ArrayD::<f64>::zeros(IxDyn(&[4, 1, 3]));
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
                    lce(x, wl, &target, Some(b), Some(&w), 0.1, reduction, grad)
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
            None,
            0.0,
            Reduction::Mean,
            true,
        );
        let (xf, wf) = (x.mapv(|v| v as f32), wl.mapv(|v| v as f32));
        let b = linear_cross_entropy(
            xf.view(),
            wf.view(),
            CeTarget::Indices(t.view()),
            None,
            None,
            -100,
            0.0,
            Reduction::Mean,
            true,
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
}
