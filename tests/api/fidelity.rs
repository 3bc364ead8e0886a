//! Edge cases where lossd once disagreed with PyTorch 2.15 (found by random differential
//! testing), through HTTP: each body with PyTorch's answer.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// A JSON number, or one of the strings the wire uses for non-finite values.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok().filter(|v| !v.is_finite()),
        _ => None,
    }
}

/// `|got − want| <= rtol·|want|` element by element; non-finite values exactly.
fn compare(what: &str, got: &Value, want: &Value, rtol: f64) -> Result<(), String> {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => g
            .iter()
            .zip(w)
            .enumerate()
            .try_for_each(|(i, (g, w))| compare(&format!("{what}[{i}]"), g, w, rtol)),
        _ => match (number(got), number(want)) {
            (Some(g), Some(w))
                if (g - w).abs() <= rtol * w.abs() || g == w || (g.is_nan() && w.is_nan()) =>
            {
                Ok(())
            }
            _ => Err(format!("{what}: got {got} but want {want}")),
        },
    }
}

/// Posts `body` to `loss` and compares the loss and each gradient of `want` with PyTorch's
/// values (relative 1e-12; non-finite values exactly).
async fn expect(loss: &str, body: Value, want_loss: Value, want_grads: &[(&str, Value)]) {
    let app = spawn_app().await;
    let r = app.loss(loss, &body).await;
    let text = String::from_utf8_lossy(&r.bytes).into_owned();
    assert_eq!(r.status, 200, "{loss} {body}: {text}");
    let got = r.json();
    let check = |what: &str, g: &Value, w: &Value| {
        compare(what, g, w, 1e-12).unwrap_or_else(|e| panic!("{loss} {body}: {e}\n{text}"))
    };
    check("loss", &got["loss"], &want_loss);
    for (name, want) in want_grads {
        check(&format!("grad.{name}"), &got["grad"][name], want);
    }
}

/// A `beta` that rounds to 0 in float32: loss |d|, gradient 0 at d = 0 (not 0/0).
#[tokio::test]
async fn smooth_l1_beta_that_rounds_to_zero_in_float32() {
    expect(
        "smooth_l1_loss",
        json!({"input": [0.5], "target": [0.5], "beta": 1e-300, "dtype": "float32", "grad": true}),
        json!(0.0),
        &[("input", json!([0.0])), ("target", json!([0.0]))],
    )
    .await;
    expect(
        "smooth_l1_loss",
        json!({"input": [0.5, 0.75, -1.0], "target": [0.5, 0.5, 0.5], "beta": 1e-300,
               "dtype": "float32", "reduction": "none", "grad": true}),
        json!([0.0, 0.25, 1.5]),
        &[
            ("input", json!([0.0, 1.0, -1.0])),
            ("target", json!([0.0, -1.0, 1.0])),
        ],
    )
    .await;
}

/// A subnormal target broadcast over the input: autograd sums the upstream gradient before
/// the target's own `y/y`, so the target gradient is `log y + 1`.
#[tokio::test]
async fn kl_div_target_gradient_of_a_broadcast_subnormal_target() {
    for reduction in ["mean", "batchmean"] {
        expect(
            "kl_div",
            json!({"input": [0, 0, 0], "target": [5e-324], "reduction": reduction, "grad": true}),
            json!(-3.676e-321),
            &[
                ("input", json!([-0.0, -0.0, -0.0])),
                ("target", json!([-743.4400719213812])),
            ],
        )
        .await;
    }
}

/// Label smoothing with an infinite class weight: `−Σ w_c·logp_c` is +inf.
#[tokio::test]
async fn cross_entropy_smoothing_with_an_infinite_weight() {
    expect(
        "cross_entropy",
        json!({"input": [[0, 1]], "target": [0], "label_smoothing": 0.5,
               "weight": [1, "Infinity"], "reduction": "none"}),
        json!(["Infinity"]),
        &[],
    )
    .await;
    expect(
        "cross_entropy",
        json!({"input": [[0, 1], [2, 0]], "target": [0, 1], "label_smoothing": 0.5,
               "weight": [1, "Infinity"], "reduction": "none", "ignore_index": 1, "grad": true}),
        json!(["Infinity", 0.0]),
        &[("input", json!([["Infinity", "NaN"], ["NaN", "NaN"]]))],
    )
    .await;
}

#[tokio::test]
async fn linear_cross_entropy_smoothing_with_an_infinite_weight() {
    expect(
        "linear_cross_entropy",
        json!({"input": [[1]], "linear_weight": [[0], [1]], "target": [0],
               "label_smoothing": 0.5, "weight": [1, "Infinity"], "reduction": "none",
               "grad": true}),
        json!(["Infinity"]),
        &[
            ("input", json!([["NaN"]])),
            ("linear_weight", json!([["Infinity"], ["NaN"]])),
        ],
    )
    .await;
}

/// Targets near the float range, an infinite weight with a target outside [0, 1], and a
/// broadcast target under a float32 weight at the top of the range: the gradients follow
/// autograd's own steps.
#[tokio::test]
async fn multilabel_soft_margin_gradients_at_the_float_range() {
    expect(
        "multilabel_soft_margin_loss",
        json!({"input": [[0.5, -2.0], [3.0, 0.0]], "target": [[1.5e308, -1.7e308], [1.7e308, 2.0]],
               "reduction": "sum", "grad": true}),
        json!("-Infinity"),
        &[
            (
                "input",
                json!([
                    [-7.5e307, 8.499999999999999e307],
                    [-8.500000000000001e307, -0.75]
                ]),
            ),
            ("target", json!([[-0.25, 1.0], [-1.5, 0.0]])),
        ],
    )
    .await;
    expect(
        "multilabel_soft_margin_loss",
        json!({"input": [[-1.0, 0.5]], "target": [[2.0, 0.3]], "weight": [1.0, "Infinity"],
               "grad": true}),
        json!("Infinity"),
        &[
            ("input", json!([[-0.8655292893150024, "NaN"]])),
            ("target", json!([[0.5, "NaN"]])),
            ("weight", json!([1.1566308437591113, 0.41203849209005333])),
        ],
    )
    .await;
}
