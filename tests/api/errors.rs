//! Errors from every layer come back as problem documents with the codes of docs/api.md.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    let r = app
        .send(
            "POST",
            "/v1/losses/mse_loss",
            Some("application/json"),
            b"{\"input\": [1,".to_vec(),
        )
        .await;
    r.problem(400, "invalid_json");
    let r = app
        .send(
            "POST",
            "/v1/losses/mse_loss",
            Some("application/json"),
            vec![0xff, 0xfe],
        )
        .await;
    r.problem(400, "invalid_json");
}

#[tokio::test]
async fn a_body_that_is_not_json_by_content_type_is_a_415() {
    let app = spawn_app().await;
    let body = br#"{"input": [1], "target": [1]}"#.to_vec();
    for ct in [
        Some("text/plain"),
        None,
        Some("application/json; charset=latin-1"),
    ] {
        app.send("POST", "/v1/losses/mse_loss", ct, body.clone())
            .await
            .problem(415, "unsupported_media_type");
    }
    let r = app
        .send(
            "POST",
            "/v1/losses/mse_loss",
            Some("application/json; charset=utf-8"),
            body,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_losses_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let p = app
        .loss("no_such_loss", &json!({"input": [1], "target": [1]}))
        .await
        .problem(404, "unknown_loss");
    assert!(
        p["detail"].as_str().unwrap().contains("mse_loss"),
        "the detail lists the losses"
    );
    app.get("/nowhere").await.problem(404, "not_found");
    app.send("PUT", "/healthz", None, vec![])
        .await
        .problem(405, "method_not_allowed");
    app.send("DELETE", "/v1/losses/mse_loss", None, vec![])
        .await
        .problem(405, "method_not_allowed");
}

#[tokio::test]
async fn bodies_and_element_counts_over_the_limits_are_413() {
    let app = spawn_app_with(&["--max-body-bytes", "1000", "--max-elements", "10"]).await;
    let big = json!({"input": vec![0.5; 400], "target": vec![0.5; 400]});
    app.loss("mse_loss", &big)
        .await
        .problem(413, "payload_too_large");
    let many = json!({"input": vec![1; 6], "target": vec![1; 6]});
    app.loss("mse_loss", &many)
        .await
        .problem(413, "payload_too_large");
    // Twelve float64 zeros, consistent with their shape: over the limit of 10.
    let declared = json!({"input": {"shape": [12], "dtype": "float64", "base64": "A".repeat(128)}, "target": 1});
    app.loss("mse_loss", &declared)
        .await
        .problem(413, "payload_too_large");
    // A huge declared shape with data that disagrees: the disagreement, whatever the size.
    let inconsistent = json!({"input": {"shape": [1000000, 1000000], "dtype": "float64", "base64": ""}, "target": 1});
    app.loss("mse_loss", &inconsistent)
        .await
        .problem(422, "invalid_tensor");
    // Too large and otherwise invalid: the other problem wins.
    let both = json!({"input": vec![1; 20], "target": vec![1; 20], "reduction": "avg"});
    app.loss("mse_loss", &both)
        .await
        .problem(422, "invalid_option");
    let ok = json!({"input": vec![1; 5], "target": vec![1; 5]});
    assert_eq!(app.loss("mse_loss", &ok).await.status, 200);
}

#[tokio::test]
async fn bad_tensors_are_invalid_tensor_with_a_pointer() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"input": [[1.0, 2.0], [3.0]], "target": [[1.0, 2.0], [3.0, 4.0]]}),
            "/input/1",
        ),
        (json!({"input": ["one"], "target": [1.0]}), "/input/0"),
        (
            json!({"input": [1.0, 2.0], "target": [1.0, [2.0]]}),
            "/target/1",
        ),
        (
            json!({"input": {"shape": [2], "dtype": "float64", "base64": "!!!"}, "target": [1.0, 2.0]}),
            "/input",
        ),
        (
            json!({"input": {"shape": [3], "data": [1.0, 2.0]}, "target": [1.0, 2.0, 3.0]}),
            "/input",
        ),
        (
            json!({"input": [1.0, null], "target": [1.0, 2.0]}),
            "/input/1",
        ),
        (json!({"input": true, "target": [1.0, 2.0]}), "/input"),
    ];
    for (body, pointer) in cases {
        let p = app
            .loss("mse_loss", &body)
            .await
            .problem(422, "invalid_tensor");
        assert_eq!(p["pointer"], pointer, "{body}: {p}");
    }
}

#[tokio::test]
async fn numbers_out_of_range_and_deep_nesting_are_refused() {
    let app = spawn_app().await;
    let r = app
        .send(
            "POST",
            "/v1/losses/mse_loss",
            Some("application/json"),
            br#"{"input": [1e400], "target": [1]}"#.to_vec(),
        )
        .await;
    r.problem(422, "invalid_tensor");
    let deep = format!(
        r#"{{"input": {}1{}, "target": 1}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = app
        .send(
            "POST",
            "/v1/losses/mse_loss",
            Some("application/json"),
            deep.into_bytes(),
        )
        .await;
    let p = r.problem(422, "invalid_tensor");
    assert!(p["detail"].as_str().unwrap().contains("rank"), "{p}");
}

#[tokio::test]
async fn bad_options_are_invalid_option_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"input": [1.0], "target": [1.0], "reduction": "average"}),
            "/reduction",
        ),
        (
            json!({"input": [1.0], "target": [1.0], "dtype": "float16"}),
            "/dtype",
        ),
        (
            json!({"input": [1.0], "target": [1.0], "reduciton": "sum"}),
            "/reduciton",
        ),
        (json!({"input": [1.0, 2.0]}), "/target"),
        (
            json!({"input": [1.0], "target": [1.0], "grad": "yes"}),
            "/grad",
        ),
        (
            json!({"input": [1.0], "target": [1.0], "encoding": "hex"}),
            "/encoding",
        ),
    ];
    for (body, pointer) in cases {
        let p = app
            .loss("mse_loss", &body)
            .await
            .problem(422, "invalid_option");
        assert_eq!(p["pointer"], pointer, "{body}: {p}");
    }
    let p = app
        .loss(
            "huber_loss",
            &json!({"input": [1.0], "target": [1.0], "delta": 0}),
        )
        .await
        .problem(422, "invalid_option");
    assert_eq!(p["pointer"], "/delta");
    let p = app
        .loss(
            "smooth_l1_loss",
            &json!({"input": [1.0], "target": [1.0], "beta": -1}),
        )
        .await
        .problem(422, "invalid_option");
    assert_eq!(p["pointer"], "/beta");
}

#[tokio::test]
async fn shapes_that_do_not_combine_are_shape_mismatch() {
    let app = spawn_app().await;
    let p = app
        .loss(
            "l1_loss",
            &json!({"input": [[1.0, 2.0], [3.0, 4.0]], "target": [1.0, 2.0, 3.0]}),
        )
        .await
        .problem(422, "shape_mismatch");
    assert_eq!(p["pointer"], "/target");
    assert!(
        p["detail"].as_str().unwrap().contains("[2, 2]")
            && p["detail"].as_str().unwrap().contains("[3]"),
        "{p}"
    );
    let p = app
        .loss(
            "mse_loss",
            &json!({"input": [1.0, 2.0], "target": [1.0, 2.0], "weight": [1.0]}),
        )
        .await
        .problem(422, "shape_mismatch");
    assert_eq!(p["pointer"], "/weight");
}
