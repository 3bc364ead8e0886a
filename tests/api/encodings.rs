//! The three tensor encodings in, both encodings out, non-finite values, dtypes, warnings.

use serde_json::json;

use crate::helpers::spawn_app;

fn b64(values: &[f64]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64_simd::STANDARD.encode_to_string(bytes)
}

#[tokio::test]
async fn the_three_encodings_give_the_same_answer() {
    let app = spawn_app().await;
    let x = [0.5, 1.0, -2.0, 3.25];
    let y = [0.0, 1.5, -2.0, 1.0];
    let nested = json!({"input": [[0.5, 1.0], [-2.0, 3.25]], "target": [[0.0, 1.5], [-2.0, 1.0]], "grad": true});
    let flat = json!({"input": {"shape": [2, 2], "data": x}, "target": {"shape": [2, 2], "data": y}, "grad": true});
    let base = json!({"input": {"shape": [2, 2], "dtype": "float64", "base64": b64(&x)},
                      "target": {"shape": [2, 2], "dtype": "float64", "base64": b64(&y)}, "grad": true});
    let a = app.loss("mse_loss", &nested).await.json();
    assert_eq!(a["loss"], json!((0.25 + 0.25 + 0.0 + 5.0625) / 4.0));
    assert_eq!(a["shape"], json!([]));
    assert_eq!(a["dtype"], "float64");
    assert_eq!(a["grad"]["input"], json!([[0.25, -0.25], [0.0, 1.125]]));
    assert_eq!(a["grad"]["target"], json!([[-0.25, 0.25], [0.0, -1.125]]));
    assert_eq!(app.loss("mse_loss", &flat).await.json(), a);
    assert_eq!(app.loss("mse_loss", &base).await.json(), a);
}

#[tokio::test]
async fn base64_responses_carry_shape_dtype_and_little_endian_bytes() {
    let app = spawn_app().await;
    let body = json!({"input": [[1.0, 2.0]], "target": [[0.0, 0.0]], "reduction": "none", "grad": true, "encoding": "base64"});
    let r = app.loss("l1_loss", &body).await.json();
    assert_eq!(
        r["loss"],
        json!({"shape": [1, 2], "dtype": "float64", "base64": b64(&[1.0, 2.0])})
    );
    assert_eq!(r["grad"]["input"]["base64"], b64(&[1.0, 1.0]));
    let scalar = app
        .loss(
            "l1_loss",
            &json!({"input": [1.0], "target": [0.0], "encoding": "base64"}),
        )
        .await
        .json();
    assert_eq!(scalar["loss"], json!(1.0), "a 0-d result stays a number");
}

#[tokio::test]
async fn non_finite_values_travel_as_strings() {
    let app = spawn_app().await;
    let r = app
        .loss("mse_loss", &json!({"input": [], "target": []}))
        .await
        .json();
    assert_eq!(r["loss"], "NaN");
    let r = app
        .loss("l1_loss", &json!({"input": ["Infinity", "NaN", 1.0], "target": [0.0, 0.0, "-Infinity"], "reduction": "none"}))
        .await
        .json();
    assert_eq!(r["loss"], json!(["Infinity", "NaN", "Infinity"]));
}

#[tokio::test]
async fn float32_computes_in_float32_and_says_so() {
    let app = spawn_app().await;
    let r = app
        .loss(
            "mse_loss",
            &json!({"input": [0.1], "target": [0.0], "dtype": "float32"}),
        )
        .await
        .json();
    assert_eq!(r["dtype"], "float32");
    let want = f64::from(0.1f32 * 0.1f32);
    let got = r["loss"].as_f64().unwrap();
    assert_eq!(got as f32, want as f32);
    let f32_b64 = base64_simd::STANDARD.encode_to_string(0.5f32.to_le_bytes());
    let r = app
        .loss("l1_loss", &json!({"input": {"shape": [1], "dtype": "float32", "base64": f32_b64}, "target": [0], "dtype": "float32", "reduction": "none", "encoding": "base64"}))
        .await
        .json();
    assert_eq!(r["loss"]["dtype"], "float32");
    assert_eq!(r["loss"]["base64"], f32_b64);
}

#[tokio::test]
async fn broadcasting_in_regression_losses_warns_as_pytorch_does() {
    let app = spawn_app().await;
    let r = app
        .loss(
            "mse_loss",
            &json!({"input": [[1.0, 2.0], [3.0, 4.0]], "target": [1.0, 2.0]}),
        )
        .await
        .json();
    let w = r["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("torch.Size([2])") && w.contains("torch.Size([2, 2])"),
        "{w}"
    );
    let r = app
        .loss("mse_loss", &json!({"input": [1.0], "target": [1.0]}))
        .await
        .json();
    assert!(r.get("warnings").is_none());
}

#[tokio::test]
async fn integers_are_accepted_for_float_tensors() {
    let app = spawn_app().await;
    let r = app
        .loss("mse_loss", &json!({"input": [1, 2], "target": [1, 3]}))
        .await
        .json();
    assert_eq!(r["loss"], json!(0.5));
}

/// The fuzzer's reproducer through HTTP: base64 of the right length with short padding was a
/// panic in the decoder (a 500); it is a 422 pointing at the tensor, and the server goes on.
#[tokio::test]
async fn base64_with_short_padding_is_a_422() {
    let app = spawn_app().await;
    let x = json!({"shape": [2, 2, 2], "dtype": "float64",
                   "base64": "TfOOU3Qk9j/BqKROQBPwv/jCZKpgVOI'L9VokGB2z0+xUGuaw5dDwFK4HoXrUcg/cF8HzhlR8b+OdXEbDeAAwA=}"});
    let p = app
        .loss("mse_loss", &json!({"input": x, "target": x}))
        .await
        .problem(422, "invalid_tensor");
    assert_eq!(p["pointer"], "/input");
    // One element short of padding, for each dtype.
    for (dtype, shape) in [("float64", 1), ("float32", 1), ("float32", 2)] {
        let bytes: usize = shape * if dtype == "float64" { 8 } else { 4 };
        let text = "A".repeat(bytes.div_ceil(3) * 4);
        let t = json!({"shape": [shape], "dtype": dtype, "base64": text});
        app.loss("l1_loss", &json!({"input": t, "target": t}))
            .await
            .problem(422, "invalid_tensor");
    }
    let ok = app
        .loss("l1_loss", &json!({"input": [1.0], "target": [0.0]}))
        .await;
    assert_eq!(ok.json()["loss"], 1.0);
}
