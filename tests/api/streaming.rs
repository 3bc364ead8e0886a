//! Large bodies whose base64 tensors are decoded as they arrive give what the same body
//! decoded whole gives: the same values, bit for bit, and the same errors.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Elements per tensor: one makes a body past the 1 MiB from which it is streamed.
const N: usize = 100_000;

fn b64(values: &[f64]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// `{shape, dtype, base64}` as the reader follows it (shape and dtype first), or with the text
/// first, which it does not follow: that body is decoded whole, the reference.
fn tensor(values: &[f64], streamed: bool) -> String {
    let (shape, text) = (values.len(), b64(values));
    if streamed {
        format!(r#"{{"shape": [{shape}], "dtype": "float64", "base64": "{text}"}}"#)
    } else {
        format!(r#"{{"base64": "{text}", "shape": [{shape}], "dtype": "float64"}}"#)
    }
}

fn values(seed: f64) -> Vec<f64> {
    (0..N)
        .map(|i| ((i as f64) * 0.37 + seed).sin() * 3.0)
        .collect()
}

/// The reply to `body`, a template with `{x}` and `{y}` for the two tensors, sent both ways;
/// asserts that both ways give the same status and body (a problem's `instance` aside).
async fn both_ways(app: &TestApp, loss: &str, body: &str) -> (u16, Value) {
    let (x, y) = (values(0.0), values(1.5));
    let mut replies = Vec::new();
    for streamed in [true, false] {
        let text = body
            .replace("{x}", &tensor(&x, streamed))
            .replace("{y}", &tensor(&y, streamed));
        assert!(text.len() > 1 << 20);
        let r = app
            .send(
                "POST",
                &format!("/v1/losses/{loss}"),
                Some("application/json"),
                text.into_bytes(),
            )
            .await;
        let mut v = r.json();
        if let Some(doc) = v.as_object_mut() {
            doc.remove("instance");
        }
        replies.push((r.status, v));
    }
    assert_eq!(
        replies[0],
        replies[1],
        "{loss}: {}",
        &body[..body.len().min(200)]
    );
    replies.remove(0)
}

#[tokio::test]
async fn large_base64_bodies_decoded_as_they_arrive_give_the_whole_bodys_answer() {
    let app = spawn_app().await;
    let (status, v) = both_ways(
        &app,
        "mse_loss",
        r#"{"input": {x}, "target": {y}, "reduction": "none", "grad": true, "encoding": "base64"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["loss"]["shape"], json!([N]));
    let (status, v) = both_ways(
        &app,
        "smooth_l1_loss",
        "{\n\"input\" :\t{x} , \"beta\": 0.5, \"target\": {y}}\n",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["loss"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn large_base64_bodies_decoded_as_they_arrive_give_the_whole_bodys_errors() {
    let app = spawn_app().await;
    for (loss, body) in [
        // The rest of the body is wrong: decoded where zeros stand in for the tensors.
        (
            "mse_loss",
            r#"{"input": {x}, "target": {y}, "reduction": "bogus"}"#,
        ),
        ("mse_loss", r#"{"input": {x}, "target": {y}, "unknown": 1}"#),
        (
            "mse_loss",
            r#"{"input": {x}, "target": {y}, "grad": "yes"}"#,
        ),
        ("mse_loss", r#"{"input": {x}, "target": {y}, "grad": true"#),
        ("mse_loss", r#"{"input": {x}}"#),
        // A tensor under a key the loss does not take, or given twice: decoded whole.
        ("mse_loss", r#"{"input": {x}, "target": {y}, "other": {y}}"#),
        ("mse_loss", r#"{"input": {x}, "input": {y}}"#),
        // Errors of the computation, after a decode that succeeds.
        ("nll_loss", r#"{"input": {x}, "target": {y}}"#),
        (
            "mse_loss",
            r#"{"input": {x}, "target": {y}, "weight": {y}, "reduction": "sum"}"#,
        ),
    ] {
        let (status, v) = both_ways(&app, loss, body).await;
        assert!((400..500).contains(&status) || status == 200, "{body}: {v}");
    }
}

#[tokio::test]
async fn a_streamed_body_past_the_element_limit_is_refused_as_a_whole_one_is() {
    let app = spawn_app_with(&["--max-elements", "150000"]).await;
    let (status, v) = both_ways(&app, "mse_loss", r#"{"input": {x}, "target": {y}}"#).await;
    assert_eq!(status, 413, "{v}");
}
