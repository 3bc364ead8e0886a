use super::*;
use crate::custom::{Limits, compile::compile, parse::parse};
use crate::wire::{Data, Form};

/// Deterministic values in about [-2, 2], avoiding ties and kinks.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect()
}

fn tensor(shape: &[usize], v: Vec<f64>) -> Tensor {
    Tensor {
        shape: shape.to_vec(),
        data: Data::F64(v),
        form: Form::Flat,
    }
}

fn eval(
    src: &str,
    ts: &[(&str, &[usize], Vec<f64>)],
    grad: &[usize],
) -> Result<Output<f64>, String> {
    let ast = parse(src, &Limits::default()).map_err(|e| e.to_string())?;
    let shapes: Vec<(String, Vec<usize>)> = ts
        .iter()
        .map(|(n, s, _)| (n.to_string(), s.to_vec()))
        .collect();
    let graph = compile(src, &ast, &shapes, grad).map_err(|e| e.to_string())?;
    let data = ts.iter().map(|(_, s, v)| tensor(s, v.clone())).collect();
    run::<f64>(&graph, src, data, grad, 16).map_err(|e| e.detail)
}

fn scalar(src: &str, ts: &[(&str, &[usize], Vec<f64>)]) -> f64 {
    let out = eval(src, ts, &[]).unwrap();
    out.value.sum()
}

/// Checks every gradient of `src` against central differences of the sum of its value.
fn fd_check(src: &str, ts: &[(&str, &[usize], Vec<f64>)]) {
    let grad: Vec<usize> = (0..ts.len()).collect();
    let out = eval(src, ts, &grad).unwrap_or_else(|e| panic!("{src}: {e}"));
    for (k, (name, _, v)) in ts.iter().enumerate() {
        let analytic: Vec<f64> = out.grads[k].iter().copied().collect();
        for j in 0..v.len() {
            let h = 1e-6 * v[j].abs().max(1.0);
            let mut plus = ts.to_vec();
            plus[k].2[j] += h;
            let mut minus = ts.to_vec();
            minus[k].2[j] -= h;
            let fd = (scalar(src, &plus) - scalar(src, &minus)) / (2.0 * h);
            let a = analytic[j];
            assert!(
                (a - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                "{src}: d/d{name}[{j}] is {a} but finite differences give {fd}"
            );
        }
    }
}

#[test]
fn every_function_matches_finite_differences() {
    let x = || ("x", &[2usize, 3][..], values(6, 1));
    let y = || ("y", &[3usize][..], values(3, 2));
    let pos = || {
        (
            "p",
            &[2usize, 3][..],
            values(6, 3).into_iter().map(|v| v.abs() + 0.5).collect(),
        )
    };
    for src in [
        "-x",
        "x + y",
        "x - y",
        "x * y",
        "x / y",
        "x ^ 2",
        "x ^ 3",
        "2 ^ x",
        "abs(x)",
        "square(x)",
        "exp(x)",
        "tanh(x)",
        "sigmoid(x)",
        "softplus(x)",
        "softplus(x * 15)",
        "relu(x)",
        "expm1(x)",
        "minimum(x, y)",
        "maximum(x, y)",
        "clamp(x, -0.5, 0.5)",
        "clamp(x, min=0.1)",
        "clamp(x, max=y)",
        "clamp(x, y, y + 1)",
        "where(x > y, x * x, y)",
        "(x > 0) * x + (x <= 0) * y",
        "sum(x)",
        "sum(x, 0)",
        "mean(x, -1, True) * x",
        "mean(x)",
        "max(x)",
        "min(x)",
        "max(x, 1)",
        "min(x, dim=0, keepdim=True) * y",
        "logsumexp(x)",
        "logsumexp(x, 1)",
        "logsumexp(x, 0, keepdim=True) - x",
        "softmax(x, 1) * y",
        "log_softmax(x, 0) * x",
        "softmax(x, -1) * log_softmax(x, -1)",
        "huber_loss(x, y, delta=0.5)",
        "mse_loss(x, y, reduction='sum') * 2",
        "sum(x * huber_loss(x, y, reduction='none'))",
        "sum(smooth_l1_loss(x, y, reduction='none', beta=0.7) * x)",
        "sum(l1_loss(x, y, reduction='none') ^ 2)",
        "sum(softmax(x, 1) * mse_loss(x, y, reduction='none'))",
        "mean(binary_cross_entropy_with_logits(x, sigmoid(x + y), reduction='none') * x)",
        "sum(kl_div(log_softmax(x, 1), softmax(y, 0), reduction='none') * x)",
        "mean(soft_margin_loss(x, 1, reduction='none') * x)",
        "sum(hinge_embedding_loss(x, -1, margin=2.5, reduction='none') * x)",
        "sum(poisson_nll_loss(x, 2, reduction='none') * x)",
        "sum(gaussian_nll_loss(x, y, exp(x * y), reduction='none') * x)",
        "sum(gaussian_nll_loss(x, y, exp(sum(x, 1)), reduction='none') * x)",
        "sum(gaussian_nll_loss(x, y, 0.5, reduction='none') * x)",
        "sum(margin_ranking_loss(x, x * y, x * 0 - 1, reduction='none') * x)",
    ] {
        let ts = vec![x(), y()];
        fd_check(src, &ts);
    }
    for src in [
        "sqrt(p)",
        "log(p)",
        "log1p(p)",
        "p ^ x",
        "pow(p, x)",
        "x / p",
    ] {
        fd_check(src, &[x(), pos()]);
    }
}

#[test]
fn row_wise_losses_chain_a_non_uniform_gradient() {
    let logits = ("x", &[4usize, 3][..], values(12, 5));
    let w = ("w", &[4usize][..], values(4, 6));
    let probs = (
        "q",
        &[4usize, 3][..],
        values(12, 7).into_iter().map(|v| v.abs()).collect(),
    );
    for src in [
        "sum(w * cross_entropy(x, softmax(q, 1), reduction='none'))",
        "sum(w * cross_entropy(x, q, reduction='none', label_smoothing=0.1))",
        "sum(w * multilabel_soft_margin_loss(x, sigmoid(q), reduction='none'))",
        "sum(w * triplet_margin_loss(x, q, x * q, reduction='none'))",
    ] {
        fd_check(src, &[logits.clone(), w.clone(), probs.clone()]);
    }
    let t = ("t", &[4usize][..], vec![0.0, 2.0, 1.0, 2.0]);
    let src = "sum(w * cross_entropy(x, t, reduction='none'))";
    let ast = parse(src, &Limits::default()).unwrap();
    let shapes = vec![
        ("x".to_string(), vec![4, 3]),
        ("w".to_string(), vec![4]),
        ("t".to_string(), vec![4]),
    ];
    let graph = compile(src, &ast, &shapes, &[0, 1]).unwrap();
    let data = vec![
        tensor(&[4, 3], logits.2.clone()),
        tensor(&[4], w.2.clone()),
        tensor(&[4], t.2.clone()),
    ];
    let out = run::<f64>(&graph, src, data, &[0, 1], 16).unwrap();
    // By hand: row n of the gradient is w[n] (softmax(x[n]) − onehot(t[n])).
    for n in 0..4 {
        let row = &logits.2[n * 3..n * 3 + 3];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for (c, &r) in row.iter().enumerate() {
            let p = (r - m).exp() / s;
            let want = w.2[n] * (p - if t.2[n] as usize == c { 1.0 } else { 0.0 });
            let got = out.grads[0][[n, c]];
            assert!((got - want).abs() < 1e-12, "{n},{c}: {got} vs {want}");
        }
    }
}

#[test]
fn shared_tensors_of_unreduced_losses_refuse_a_non_uniform_gradient() {
    let x = ("x", &[4usize, 3][..], values(12, 5));
    let w = ("w", &[4usize][..], values(4, 6));
    let cw = ("c", &[3usize][..], vec![1.0, 2.0, 0.5]);
    let p = (
        "q",
        &[4usize, 3][..],
        values(12, 7).into_iter().map(|v| v.abs()).collect(),
    );
    let src = "sum(w * cross_entropy(x, softmax(q, 1), weight=c, reduction='none'))";
    let e = eval(src, &[x.clone(), w.clone(), cw.clone(), p.clone()], &[2]).unwrap_err();
    assert!(e.contains("cannot flow back through `weight`"), "{e}");
    // A uniform upstream gradient is exact whatever the loss.
    let src = "3 * sum(cross_entropy(x, softmax(q, 1), weight=c, reduction='none'))";
    fd_check(src, &[x, cw, p]);
}

#[test]
fn subgradients_are_pytorchs() {
    let g = |src: &str, v: Vec<f64>| {
        let n = v.len();
        let out = eval(src, &[("x", &[n][..], v)], &[0]).unwrap();
        out.grads[0].iter().copied().collect::<Vec<f64>>()
    };
    assert_eq!(g("sum(abs(x))", vec![-1.0, 0.0, 2.0]), vec![-1.0, 0.0, 1.0]);
    assert_eq!(g("sum(relu(x))", vec![-1.0, 0.0, 2.0]), vec![0.0, 0.0, 1.0]);
    assert_eq!(g("max(x)", vec![1.0, 3.0, 3.0]), vec![0.0, 0.5, 0.5]);
    assert_eq!(g("max(x, 0)", vec![1.0, 3.0, 3.0]), vec![0.0, 1.0, 0.0]);
    assert_eq!(g("min(x, 0)", vec![1.0, 1.0, 3.0]), vec![1.0, 0.0, 0.0]);
    assert_eq!(
        g("sum(clamp(x, 1, 2))", vec![0.0, 1.0, 1.5, 2.0, 3.0]),
        vec![0.0, 0.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(
        g("sum(maximum(x, 1 + 0 * x))", vec![0.0, 1.0, 2.0]),
        vec![0.0, 0.5, 1.0]
    );
    assert_eq!(
        g("sum(maximum(x, 1))", vec![0.0, 1.0, 2.0]),
        vec![0.0, 0.5, 1.0]
    );
    let s = g("sum(sqrt(x))", vec![0.0, 4.0]);
    assert!(s[0].is_infinite() && s[1] == 0.25);
    let s = g("sum(sqrt(x) * 0)", vec![0.0]);
    assert!(s[0].is_nan());
    assert_eq!(g("sum(where(x > 1, x, 0))", vec![0.0, 2.0]), vec![0.0, 1.0]);
    assert_eq!(g("sum(x ^ 0)", vec![0.0, 2.0]), vec![0.0, 0.0]);
}

#[test]
fn values_follow_pytorch_on_edge_cases() {
    let v = |src: &str, x: Vec<f64>| {
        let n = x.len();
        eval(src, &[("x", &[n][..], x)], &[]).unwrap().value
    };
    assert!(v("mean(x)", vec![]).sum().is_nan());
    assert_eq!(v("sum(x)", vec![]).sum(), 0.0);
    assert_eq!(v("logsumexp(x)", vec![]).sum(), f64::NEG_INFINITY);
    assert!(v("max(x)", vec![1.0, f64::NAN, 3.0]).sum().is_nan());
    assert_eq!(
        v("logsumexp(x)", vec![1000.0, 1000.0]).sum(),
        1000.0 + 2f64.ln()
    );
    assert_eq!(v("logsumexp(x)", vec![f64::NEG_INFINITY, 0.0]).sum(), 0.0);
    assert_eq!(v("softplus(x)", vec![30.0]).sum(), 30.0);
    let s = v("softmax(x, 0)", vec![1000.0, 1000.0]);
    assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0.5, 0.5]);
    assert_eq!(
        v("(x > 1) + (x == 1) * 10", vec![0.0, 1.0, 2.0]).to_vec(),
        vec![0.0, 10.0, 1.0]
    );
    assert_eq!(v("clamp(x, 2, 1)", vec![0.0, 5.0]).to_vec(), vec![1.0, 1.0]);
    assert!(v("clamp(x, 0, 1)", vec![f64::NAN]).sum().is_nan());
}

trait ToVec {
    fn to_vec(&self) -> Vec<f64>;
}

impl ToVec for ArrayD<f64> {
    fn to_vec(&self) -> Vec<f64> {
        self.iter().copied().collect()
    }
}

#[test]
fn float32_computes_in_float32() {
    let src = "mean(square(x - 0.1))";
    let ast = parse(src, &Limits::default()).unwrap();
    let graph = compile(src, &ast, &[("x".to_string(), vec![2])], &[0]).unwrap();
    let out = run::<f32>(&graph, src, vec![tensor(&[2], vec![1.0, 2.0])], &[0], 16).unwrap();
    let d = [1.0f32 - 0.1f32, 2.0f32 - 0.1f32];
    assert_eq!(
        out.value.sum(),
        (((d[0] * d[0]) as f64 + (d[1] * d[1]) as f64) / 2.0) as f32
    );
    assert_eq!(
        out.grads[0].iter().copied().collect::<Vec<f32>>(),
        vec![d[0], d[1]]
    );
}
