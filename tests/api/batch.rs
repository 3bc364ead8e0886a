//! `POST /v1/batch`: jobs in order, one bad job fails alone, whole-request limits.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn jobs_come_back_in_order_and_a_bad_job_fails_alone() {
    let app = spawn_app().await;
    let body = json!({"jobs": [
        {"loss": "mse_loss", "input": [1, 2], "target": [1, 3]},
        {"input": [[1.0, 2.0], [3.0]], "loss": "l1_loss", "target": [1.0, 2.0]},
        {"loss": "no_such_loss", "input": [1]},
        {"loss": "huber_loss", "input": [0.5, 3.0], "target": [0.0, 0.0], "grad": true},
        {"input": [1.0]},
        {"loss": "mse_loss", "input": [1.0], "target": [1.0], "typo": 1},
    ]});
    let r = app.post_json("/v1/batch", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 6);
    assert_eq!(
        results[0],
        json!({"ok": true, "result": {"loss": 0.5, "shape": [], "dtype": "float64"}})
    );
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["error"]["code"], "invalid_tensor");
    assert_eq!(results[1]["error"]["pointer"], "/jobs/1/input/1");
    assert_eq!(results[2]["error"]["code"], "unknown_loss");
    assert_eq!(results[2]["error"]["pointer"], "/jobs/2/loss");
    let single = app
        .loss(
            "huber_loss",
            &json!({"input": [0.5, 3.0], "target": [0.0, 0.0], "grad": true}),
        )
        .await
        .json();
    assert_eq!(results[3], json!({"ok": true, "result": single}));
    assert_eq!(results[4]["error"]["code"], "invalid_option");
    assert_eq!(results[4]["error"]["pointer"], "/jobs/4/loss");
    assert_eq!(results[5]["error"]["code"], "invalid_option");
    assert_eq!(results[5]["error"]["pointer"], "/jobs/5/typo");
}

#[tokio::test]
async fn whole_request_problems_are_ordinary_errors() {
    let app = spawn_app_with(&["--max-batch-jobs", "3", "--max-elements", "10"]).await;
    let job = json!({"loss": "mse_loss", "input": [1.0], "target": [1.0]});
    app.post_json("/v1/batch", &json!({"jobs": [job, job, job, job]}))
        .await
        .problem(413, "payload_too_large");
    let big = json!({"loss": "mse_loss", "input": [1, 2, 3], "target": [1, 2, 3]});
    app.post_json("/v1/batch", &json!({"jobs": [big, big]}))
        .await
        .problem(413, "payload_too_large");
    app.post_json("/v1/batch", &json!({"work": []}))
        .await
        .problem(422, "invalid_option");
    app.post_json("/v1/batch", &json!([1, 2]))
        .await
        .problem(422, "invalid_option");
    app.send(
        "POST",
        "/v1/batch",
        Some("application/json"),
        b"{\"jobs\": [".to_vec(),
    )
    .await
    .problem(400, "invalid_json");
    app.send("POST", "/v1/batch", Some("text/plain"), b"{}".to_vec())
        .await
        .problem(415, "unsupported_media_type");
    let r = app.post_json("/v1/batch", &json!({"jobs": []})).await;
    assert_eq!(r.json(), json!({"results": []}));
}
