//! `cosine_embedding_loss` (`nn.CosineEmbeddingLoss`), docs/losses.md.
//!
//! `cos = Σ a·b / sqrt((Σ a² + EPS12)(Σ b² + EPS12))` over the last dimension, with ATen's
//! `float` constant `EPS12 = 1e-12` added to each squared norm (so zero vectors give
//! `cos = 0`); `ℓ = 1 − cos` where `y = 1`, `max(0, cos − margin)` where `y = −1`, and 0 for any
//! other target value (docs/differences.md item 13: mirrored).
//!
//! Shapes follow ATen exactly: `(N, D), (N, D), (N)` or unbatched `(D), (D), ()`; `input1` and
//! `input2` broadcast against each other, but each squared norm is taken over the argument's
//! *own* rows (as ATen's `(input1 * input1).sum(-1)` does), and the target broadcasts against
//! the per-row cosines. Gradients for `input1` and `input2` follow autograd's chain through
//! `prod_sum / sqrt(mag1 · mag2)`; the target gets none.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::margin_ranking::{hinge, hinge_grad};
use crate::broadcast::{broadcast_pair, broadcast_shape, unbroadcast};
use crate::cancel::checkpoint;
use crate::error::fmt_shape;
use crate::reduction::{CHUNK, Sum8, reduce, sum, upstream};
use crate::regression::contiguous;
use crate::{LossError, LossOutput, Real, Reduction};

/// ATen's `constexpr float EPSILON = 1e-12` in `Loss.cpp`, widened from `f32`.
const EPS12: f64 = 1e-12f32 as f64;

/// `F.cosine_embedding_loss(input1, input2, target, margin, reduction)`.
///
/// Accepts `(N, D), (N, D), (N)` (`none` returns `(N)`) or `(D), (D), ()` (returns `()`);
/// `input1`/`input2` broadcast against each other and `target` against the per-row cosines.
/// `margin` is not validated. Gradients: `input1` and `input2`.
///
/// Errors, all [`LossError::shape`]: `target` when it is not 0-D or 1-D or does not broadcast
/// against the cosines; `input1`/`input2` when their rank does not suit the target's (2-D for a
/// 1-D target, 1-D for a 0-D target); `input2` when it does not broadcast with `input1`.
pub fn cosine_embedding_loss<T: Real>(
    input1: ArrayViewD<'_, T>,
    input2: ArrayViewD<'_, T>,
    target: ArrayViewD<'_, T>,
    margin: f64,
    reduction: Reduction,
    grad: bool,
) -> Result<LossOutput<T>, LossError> {
    let (s1, s2, st) = (input1.shape(), input2.shape(), target.shape());
    let batched = match st.len() {
        1 => true,
        0 => false,
        _ => {
            return Err(LossError::shape(
                "target",
                format!(
                    "0D or 1D target tensor expected, multi-target not supported (target has shape {})",
                    fmt_shape(st)
                ),
            ));
        }
    };
    let rank = if batched { 2 } else { 1 };
    if s1.len() != rank || s2.len() != rank {
        let arg = if s1.len() != rank { "input1" } else { "input2" };
        return Err(LossError::shape(
            arg,
            format!(
                "{}D target tensor expects {rank}D input tensors, but found inputs with sizes {} and {}",
                st.len(),
                fmt_shape(s1),
                fmt_shape(s2)
            ),
        ));
    }
    let full = broadcast_pair("input1", s1, "input2", s2)?;
    // Rows: N of the broadcast (1 unbatched); d: the broadcast last dimension.
    let (rows, d) = if batched {
        (full[0], full[1])
    } else {
        (1, full[0])
    };
    let (rows1, d1) = if batched { (s1[0], s1[1]) } else { (1, s1[0]) };
    let (rows2, d2) = if batched { (s2[0], s2[1]) } else { (1, s2[0]) };
    let cos_shape: &[usize] = if batched { &[rows] } else { &[] };
    let out_shape = broadcast_shape(cos_shape, st).map_err(|m| {
        LossError::shape(
            "target",
            format!(
                "target has shape {} but there are {} cosines (one per row of input1/input2), \
                 which do not broadcast: {m}",
                fmt_shape(st),
                fmt_shape(cos_shape)
            ),
        )
    })?;

    let a = contiguous(&input1, &full);
    let b = contiguous(&input2, &full);
    let (a_own, b_own) = (contiguous(&input1, s1), contiguous(&input2, s2));
    let y = contiguous(&target, &out_shape);
    let eps = T::of(EPS12);
    let m = T::of(margin);

    // Squared norms over each argument's own rows (ATen sums `input * input` before any
    // broadcast with the other input).
    let mut scratch = vec![T::zero(); d.max(d1).max(d2)];
    let mut sq_norms = |x: &[T], rows: usize, d: usize| -> Result<Vec<T>, LossError> {
        let mut out = Vec::with_capacity(rows);
        for (r, row) in x.chunks_exact(d.max(1)).take(rows).enumerate() {
            if r % (CHUNK / d.max(1)).max(1) == 0 {
                checkpoint()?;
            }
            let sq = &mut scratch[..d];
            sq.iter_mut().zip(row).for_each(|(s, &v)| *s = v * v);
            out.push(T::of(sum(sq)) + eps);
        }
        // `d = 0`: every row sums nothing.
        out.resize(rows, eps);
        Ok(out)
    };
    let mag1 = sq_norms(&a_own[..], rows1, d1)?;
    let mag2 = sq_norms(&b_own[..], rows2, d2)?;
    let pick1 = |i: usize| if rows1 == rows { i } else { 0 };
    let pick2 = |i: usize| if rows2 == rows { i } else { 0 };

    // Per row: the dot product, the denominator and the cosine.
    let mut prod = Vec::with_capacity(rows);
    let mut den = Vec::with_capacity(rows);
    let mut cos = Vec::with_capacity(rows);
    for i in 0..rows {
        if i % (CHUNK / d.max(1)).max(1) == 0 {
            checkpoint()?;
        }
        let (ar, br) = (&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d]);
        let sq = &mut scratch[..d];
        sq.iter_mut()
            .zip(ar.iter().zip(br))
            .for_each(|(s, (&u, &v))| *s = u * v);
        let p = T::of(sum(sq));
        let dn = (mag1[pick1(i)] * mag2[pick2(i)]).sqrt();
        prod.push(p);
        den.push(dn);
        cos.push(p / dn);
    }

    let n: usize = out_shape.iter().product();
    let up = T::of(upstream(reduction, n));
    let keep = reduction == Reduction::None;
    let mut losses = Vec::with_capacity(if keep { n } else { 0 });
    let mut total = Sum8::new();
    // ∂L/∂cos per row, in f64: a row's cosine feeds several outputs when the target is longer.
    let mut gcos = vec![0.0f64; if grad { rows } else { 0 }];
    let (one, zero) = (T::one(), T::zero());
    for o in 0..n {
        let ci = if rows == n { o } else { 0 };
        let (c, t) = (cos[ci], y[o]);
        let pos = if t == one { one - c } else { zero };
        let neg = if t == -one { hinge(c - m) } else { zero };
        let l = pos + neg;
        total.add(l.f64());
        if keep {
            losses.push(l);
        }
        if grad {
            let g_pos = if t == one { up } else { zero };
            let g_neg = if t == -one { up } else { zero };
            gcos[ci] += (-g_pos + hinge_grad(c - m, g_neg)).f64();
        }
    }
    let mut out = LossOutput::new(reduce(reduction, &out_shape, losses, total.total(), n));
    if !grad {
        return Ok(out);
    }

    // Backward of `cos = prod / sqrt(mag1 · mag2)`, step by step as autograd takes it, so that
    // zero-vector and non-finite rows give PyTorch's values.
    let mut da = vec![zero; rows * d];
    let mut db = vec![zero; rows * d];
    let mut dmag1 = vec![0.0f64; rows1];
    let mut dmag2 = vec![0.0f64; rows2];
    for i in 0..rows {
        if i % (CHUNK / d.max(1)).max(1) == 0 {
            checkpoint()?;
        }
        let (i1, i2) = (pick1(i), pick2(i));
        let g = T::of(gcos[i]);
        let dn = den[i];
        let d_prod = g / dn;
        let d_den = -g * prod[i] / (dn * dn);
        let d_mags = d_den / (dn + dn);
        dmag1[i1] += (d_mags * mag2[i2]).f64();
        dmag2[i2] += (d_mags * mag1[i1]).f64();
        let (ar, br) = (&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d]);
        let (gar, gbr) = (&mut da[i * d..(i + 1) * d], &mut db[i * d..(i + 1) * d]);
        for j in 0..d {
            gar[j] = d_prod * br[j];
            gbr[j] = d_prod * ar[j];
        }
    }
    let full_grad = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(&full), v).expect("rows·d elements");
    let mut ga = unbroadcast(full_grad(da), s1);
    let mut gb = unbroadcast(full_grad(db), s2);
    // The squared norms' share: `x·x` sends `g·x` through each factor.
    let add_sq = |g: &mut ArrayD<T>, x: &[T], dmag: &[f64], d: usize| {
        let gs = g
            .as_slice_mut()
            .expect("unbroadcast returns a standard-layout array");
        for (r, (grow, xrow)) in gs
            .chunks_exact_mut(d.max(1))
            .zip(x.chunks_exact(d.max(1)))
            .enumerate()
        {
            let dm = T::of(dmag[r]);
            for (gv, &xv) in grow.iter_mut().zip(xrow) {
                let t = dm * xv;
                *gv += t + t;
            }
        }
    };
    add_sq(&mut ga, &a_own[..], &dmag1, d1);
    add_sq(&mut gb, &b_own[..], &dmag2, d2);
    out.grads.push(("input1", ga));
    out.grads.push(("input2", gb));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::testing::{Rng, assert_array_close, assert_close, assert_grad, scalar};
    use ndarray::{arr0, array};

    #[test]
    fn matches_the_worked_example_of_losses_md() {
        // The worked example: margin −0.5, target [1, −1], none → [0.5, 0.0]; gradients
        // input1 [0.25, −0.5, −0.25, 0, 0, 0], input2 [−0.5, 0.25, −0.25, 0, 0, 0]. The inputs
        // are not listed; these (found by search with torch 2.15) reproduce every value.
        let a = array![[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]].into_dyn();
        let b = array![[0.0, 1.0, 1.0], [-1.0, 0.0, 0.0]].into_dyn();
        let y = array![1.0, -1.0].into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), -0.5, Reduction::None, true)
            .unwrap();
        assert_array_close("loss", &out.loss, &[0.5, 0.0], 1e-10, 1e-12);
        assert_array_close(
            "input1",
            out.grad("input1").unwrap(),
            &[0.25, -0.5, -0.25, 0.0, 0.0, 0.0],
            1e-10,
            1e-12,
        );
        assert_array_close(
            "input2",
            out.grad("input2").unwrap(),
            &[-0.5, 0.25, -0.25, 0.0, 0.0, 0.0],
            1e-10,
            1e-12,
        );
    }

    #[test]
    fn zero_vectors_have_cosine_zero() {
        let a = array![[0.0, 0.0], [3.0, 4.0]].into_dyn();
        let b = array![[1.0, 2.0], [0.0, 0.0]].into_dyn();
        let y = array![1.0, -1.0].into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[1.0, 0.0]);
        let ga = out.grad("input1").unwrap();
        // ∂cos/∂a at a = 0 is b/den with den = sqrt(EPS12·(|b|² + EPS12)): huge but finite.
        let want = -1.0 / (EPS12 * (5.0 + EPS12)).sqrt();
        assert_close("grad", &[ga[[0, 0]]], &[want], 1e-12, 0.0);
        assert!(out.grad("input2").unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn targets_other_than_plus_or_minus_one_give_zero() {
        let a = array![[1.0, 2.0], [1.0, 2.0]].into_dyn();
        let b = array![[2.0, 1.0], [2.0, 1.0]].into_dyn();
        let y = array![0.0, 2.0].into_dyn();
        let out =
            cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert!(out.grad("input1").unwrap().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_hinge_has_zero_gradient_at_the_margin() {
        let a = array![1.0, 0.0].into_dyn();
        let b = array![1.0, 0.0].into_dyn();
        let y = arr0(-1.0).into_dyn();
        let c = 1.0 / (1.0 + EPS12);
        let out =
            cosine_embedding_loss(a.view(), b.view(), y.view(), c, Reduction::Sum, true).unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        assert!(out.grad("input1").unwrap().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn unbatched_inputs_give_a_scalar() {
        let a = array![1.0, 2.0, 3.0].into_dyn();
        let b = array![-1.0, 0.5, 2.0].into_dyn();
        let y = arr0(1.0).into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.shape(), &[] as &[usize]);
        let cos = 6.0 / ((14.0 + EPS12) * (5.25 + EPS12)).sqrt();
        assert_array_close("loss", &out.loss, &[1.0 - cos], 1e-15, 0.0);
    }

    #[test]
    fn inputs_and_target_broadcast() {
        // (3, 2) against (1, 2), target (1,): three rows.
        let a = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]].into_dyn();
        let b = array![[1.0, 0.0]].into_dyn();
        let y = array![1.0].into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.shape(), &[3]);
        assert_eq!(out.grad("input2").unwrap().shape(), &[1, 2]);
        // One row, target (4,): the cosine is reused four times.
        let a = array![[1.0, 2.0]].into_dyn();
        let b = array![[2.0, 1.0]].into_dyn();
        let y = array![1.0, 1.0, -1.0, 0.0].into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.shape(), &[4]);
        assert_eq!(out.grad("input1").unwrap().shape(), &[1, 2]);
    }

    #[test]
    fn the_squared_norm_is_over_each_inputs_own_row() {
        // input1 (2, 1) broadcast against input2 (2, 3): ATen's mag1 is x², not 3·x².
        let a = array![[2.0], [-1.0]].into_dyn();
        let b = array![[1.0, 2.0, 2.0], [1.0, 0.0, 0.0]].into_dyn();
        let y = array![1.0, 1.0].into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::None, false)
            .unwrap();
        let c0 = 10.0 / ((4.0 + EPS12) * (9.0 + EPS12)).sqrt();
        let c1 = -1.0 / ((1.0 + EPS12) * (1.0 + EPS12)).sqrt();
        assert_array_close("loss", &out.loss, &[1.0 - c0, 1.0 - c1], 1e-15, 0.0);
    }

    #[test]
    fn every_shape_check_of_losses_md_is_made() {
        let v = array![1.0, 2.0, 3.0, 4.0, 5.0].into_dyn();
        let m = ArrayD::<f64>::zeros(IxDyn(&[3, 5]));
        let t2 = ArrayD::<f64>::zeros(IxDyn(&[3, 1]));
        let t1 = array![1.0, 1.0, 1.0].into_dyn();
        let t0 = arr0(1.0).into_dyn();
        let run = |a: &ArrayD<f64>, b: &ArrayD<f64>, t: &ArrayD<f64>| {
            cosine_embedding_loss(a.view(), b.view(), t.view(), 0.0, Reduction::Mean, false)
                .unwrap_err()
        };
        let e = run(&m, &m, &t2);
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        assert!(e.message.contains("0D or 1D target tensor expected"));
        let e = run(&v, &v, &t1);
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input1"));
        assert!(
            e.message.contains(
                "1D target tensor expects 2D input tensors, but found inputs with sizes [5] and [5]"
            ),
            "{}",
            e.message
        );
        let e = run(&m, &m, &t0);
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input1"));
        assert!(
            e.message
                .contains("0D target tensor expects 1D input tensors")
        );
        let e = run(&m, &v, &t1);
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
        let m6 = ArrayD::<f64>::zeros(IxDyn(&[1, 6]));
        let m5 = ArrayD::<f64>::zeros(IxDyn(&[1, 5]));
        let e = run(&m5, &m6, &array![1.0].into_dyn());
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "input2"));
        let e = run(&m, &m, &array![1.0, 1.0].into_dyn());
        assert_eq!((e.kind, e.arg), (ErrorKind::Shape, "target"));
        // (3, 5) with (1, 5) and a (1,) target are fine.
        let ok = cosine_embedding_loss(
            m.view(),
            m5.view(),
            array![1.0].into_dyn().view(),
            0.0,
            Reduction::Mean,
            false,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn an_empty_batch_gives_nan_mean_and_zero_sum() {
        let a = ArrayD::<f64>::zeros(IxDyn(&[0, 4]));
        let y = ArrayD::<f64>::zeros(IxDyn(&[0]));
        let out = cosine_embedding_loss(a.view(), a.view(), y.view(), 0.0, Reduction::Mean, true)
            .unwrap();
        assert!(out.loss.first().unwrap().is_nan());
        assert_eq!(out.grad("input1").unwrap().shape(), &[0, 4]);
        let out = cosine_embedding_loss(a.view(), a.view(), y.view(), 0.0, Reduction::Sum, false)
            .unwrap();
        assert_eq!(out.loss.first(), Some(&0.0));
        let a = ArrayD::<f64>::zeros(IxDyn(&[2, 0]));
        let y = array![1.0, -1.0].into_dyn();
        let out = cosine_embedding_loss(a.view(), a.view(), y.view(), 0.0, Reduction::None, true)
            .unwrap();
        assert_eq!(out.loss.as_slice().unwrap(), &[1.0, 0.0]);
    }

    #[test]
    fn float32_uses_the_float_epsilon() {
        let a = array![[0.0f32, 0.0]].into_dyn();
        let b = array![[1.0f32, 0.0]].into_dyn();
        let y = array![1.0f32].into_dyn();
        let out = cosine_embedding_loss(a.view(), b.view(), y.view(), 0.0, Reduction::Mean, true)
            .unwrap();
        assert_eq!(out.loss.first(), Some(&1.0));
        let want = -1.0 / (1e-12f32 * (1.0 + 1e-12f32)).sqrt();
        let got = out.grad("input1").unwrap()[[0, 0]];
        assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(9);
        let cases: [[&[usize]; 3]; 4] = [
            [&[4, 5], &[4, 5], &[4]],
            [&[4, 5], &[1, 5], &[4]],
            [&[3, 1], &[3, 4], &[1]],
            [&[5], &[5], &[]],
        ];
        for [s1, s2, st] in cases {
            for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let a = rng.randn(s1);
                let b = rng.randn(s2);
                let y = rng.randn(st).mapv(|v| if v > 0.0 { 1.0 } else { -1.0 });
                let run = |a: &ArrayD<f64>, b: &ArrayD<f64>| {
                    cosine_embedding_loss(a.view(), b.view(), y.view(), -0.2, reduction, true)
                        .unwrap()
                };
                let out = run(&a, &b);
                let what = format!("{s1:?}/{s2:?} {reduction:?}");
                assert_grad(&what, &a, out.grad("input1").unwrap(), |v| {
                    scalar(&run(v, &b))
                });
                assert_grad(&what, &b, out.grad("input2").unwrap(), |v| {
                    scalar(&run(&a, v))
                });
            }
        }
    }
}
