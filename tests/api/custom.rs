//! `POST /v1/losses/custom`: expressions checked against PyTorch's values and autograd
//! gradients (`tests/fixtures/custom-cases.jsonl`, made by `tests/torch/gen_custom_cases.py`),
//! hostile expressions, errors, limits, batches and the documentation.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

// The conformance tests load the same file privately; one copy each keeps them independent.
#[allow(clippy::duplicate_mod)]
#[path = "../support/compare.rs"]
mod compare;
use compare::compare;

fn cases() -> Vec<Value> {
    let text = include_str!("../fixtures/custom-cases.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a case is JSON"))
        .collect()
}

fn case(id: &str) -> Value {
    cases()
        .into_iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id}"))
}

async fn custom(app: &TestApp, body: &Value) -> crate::helpers::Reply {
    app.post_json("/v1/losses/custom", body).await
}

/// Runs one fixture case; `Err` describes the difference.
async fn check(app: &TestApp, c: &Value) -> Result<(), String> {
    let r = custom(app, &c["body"]).await;
    let body = String::from_utf8_lossy(&r.bytes);
    if r.status != 200 || r.content_type != "application/json" {
        return Err(format!("status {}: {body}", r.status));
    }
    let got = r.json();
    let want = &c["expect"];
    let (rtol, atol) = (c["rtol"].as_f64().unwrap(), c["atol"].as_f64().unwrap());
    if got["shape"] != want["shape"] || got["dtype"] != want["dtype"] {
        return Err(format!(
            "shape/dtype {} {} but want {} {}",
            got["shape"], got["dtype"], want["shape"], want["dtype"]
        ));
    }
    compare("loss", &got["loss"], &want["loss"], rtol, atol)?;
    let wg = want["grad"].as_object().cloned().unwrap_or_default();
    let gg = got["grad"].as_object().cloned().unwrap_or_default();
    if wg.keys().collect::<Vec<_>>() != gg.keys().collect::<Vec<_>>() {
        return Err(format!(
            "grad keys {:?} but want {:?}",
            gg.keys(),
            wg.keys()
        ));
    }
    for (name, w) in &wg {
        compare(&format!("grad.{name}"), &gg[name], w, rtol, atol)?;
    }
    Ok(())
}

#[tokio::test]
async fn every_expression_matches_pytorch_values_and_autograd_gradients() {
    let app = spawn_app().await;
    let all = cases();
    let mut failures = Vec::new();
    for c in &all {
        if let Err(e) = check(&app, c).await {
            failures.push(format!("{}: {e}", c["id"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    let f64_cases = all
        .iter()
        .filter(|c| c["expect"]["dtype"] == "float64")
        .count();
    assert!(f64_cases >= 20, "only {f64_cases} float64 cases");
    assert!(
        all.iter()
            .all(|c| c["rtol"].as_f64().unwrap() <= 1e-9 || c["expect"]["dtype"] == "float32")
    );
    for id in [
        "custom-mse",
        "focal-log-softmax",
        "dice",
        "weighted-builtins",
        "logsumexp-dim",
        "broadcasting",
        "where-comparisons",
        "clamp-scalar-bounds",
        "max-min-ties",
        "max-dim-ties",
        "keepdim-negative-dim",
        "negative-dims",
        "f32-api-example",
    ] {
        assert!(all.iter().any(|c| c["id"] == id), "{id} is missing");
    }
}

#[tokio::test]
async fn the_custom_mse_is_mse_loss() {
    let app = spawn_app().await;
    let c = case("custom-mse");
    let mine = custom(&app, &c["body"]).await.json();
    let builtin = custom(&app, &case("builtin-mse")["body"]).await.json();
    let tensors = &c["body"]["tensors"];
    let route = app
        .loss(
            "mse_loss",
            &json!({"input": tensors["input"], "target": tensors["target"], "grad": true}),
        )
        .await
        .json();
    for other in [&builtin, &route] {
        compare("loss", &mine["loss"], &other["loss"], 1e-15, 0.0).unwrap();
        for g in ["input", "target"] {
            compare(g, &mine["grad"][g], &other["grad"][g], 1e-15, 1e-17).unwrap();
        }
    }
}

#[tokio::test]
async fn responses_have_the_shape_of_the_other_loss_routes() {
    let app = spawn_app().await;
    let body = json!({"expression": "x * 2", "tensors": {"x": [[1, 2]]}, "grad": ["x"]});
    let r = custom(&app, &body).await.json();
    assert_eq!(
        r,
        json!({"loss": [[2.0, 4.0]], "shape": [1, 2], "dtype": "float64", "grad": {"x": [[2.0, 2.0]]}})
    );
    let body = json!({"expression": "sum(x) / 0", "tensors": {"x": [1.0]}, "encoding": "base64", "dtype": "float32"});
    let r = custom(&app, &body).await.json();
    assert_eq!(
        r,
        json!({"loss": "Infinity", "shape": [], "dtype": "float32"})
    );
    let body = json!({"expression": "x * 2", "tensors": {"x": [1.5]}, "encoding": "base64"});
    let r = custom(&app, &body).await.json();
    assert_eq!(
        r["loss"],
        json!({"shape": [1], "dtype": "float64", "base64": "AAAAAAAACEA="})
    );
    // A built-in's warning comes through, naming the loss.
    let body =
        json!({"expression": "mse_loss(x, y)", "tensors": {"x": [[1.0], [2.0]], "y": [1.0, 2.0]}});
    let r = custom(&app, &body).await.json();
    assert!(
        r["warnings"][0].as_str().unwrap().starts_with("mse_loss: "),
        "{r}"
    );
}

/// Sends `expression` over `tensors`; asserts a quick 422 of `code` and returns the problem.
async fn refused(app: &TestApp, expression: &str, tensors: Value, code: &str) -> Value {
    let started = Instant::now();
    let r = custom(app, &json!({"expression": expression, "tensors": tensors})).await;
    let p = r.problem(422, code);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{code} took {:?}",
        started.elapsed()
    );
    p
}

#[tokio::test]
async fn hostile_expressions_get_a_quick_422_and_the_server_goes_on() {
    let app = spawn_app().await;
    let t = || json!({"x": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "y": [1.0, 2.0, 3.0]});
    // 1 MB: over the length limit (10,000 characters), well under the body limit.
    let huge = "x + ".repeat(262_144);
    let p = refused(&app, &huge, t(), "invalid_expression").await;
    assert!(
        p["detail"].as_str().unwrap().contains("length limit"),
        "{p}"
    );
    assert_eq!(p["position"], 10_000);
    assert_eq!(p["pointer"], "/expression");
    // 10,000 nested parentheses: over the length limit too; 4,000 are over the depth limit.
    let deep = format!("{}x{}", "(".repeat(10_000), ")".repeat(10_000));
    refused(&app, &deep, t(), "invalid_expression").await;
    let deep = format!("{}x{}", "(".repeat(4_000), ")".repeat(4_000));
    let p = refused(&app, &deep, t(), "invalid_expression").await;
    assert!(p["detail"].as_str().unwrap().contains("depth limit"), "{p}");
    assert_eq!(p["position"], 65);
    let negs = format!("{}x", "-".repeat(9_000));
    refused(&app, &negs, t(), "invalid_expression").await;
    let many = "x+".repeat(2_000) + "x";
    let p = refused(&app, &many, t(), "invalid_expression").await;
    assert!(p["detail"].as_str().unwrap().contains("node limit"), "{p}");
    // Unknown names, wrong arity, unknown keywords, a dim that does not exist.
    let p = refused(&app, "mean(z)", t(), "invalid_expression").await;
    assert_eq!(p["position"], 5);
    assert!(p["detail"].as_str().unwrap().contains("unknown name `z`"));
    let p = refused(&app, "mean(frobnicate(x))", t(), "invalid_expression").await;
    assert_eq!(p["position"], 5);
    let p = refused(&app, "exp(x, y)", t(), "invalid_expression").await;
    assert!(p["detail"].as_str().unwrap().contains("at most 1"), "{p}");
    refused(&app, "where(x > 0, x)", t(), "invalid_expression").await;
    refused(&app, "huber_loss(x, y, x, y)", t(), "invalid_expression").await;
    let p = refused(
        &app,
        "huber_loss(x, y, delat=0.5)",
        t(),
        "invalid_expression",
    )
    .await;
    assert_eq!(p["position"], 17);
    let p = refused(&app, "sum(x, dim=2)", t(), "shape_mismatch").await;
    assert_eq!(p["position"], 11);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("dim 2 does not exist"),
        "{p}"
    );
    refused(&app, "softmax(x, -3)", t(), "shape_mismatch").await;
    // Many tensors (empty ones cost no elements) and a long grad list stay linear.
    let n = 50_000;
    let tensors: serde_json::Map<String, Value> =
        (0..n).map(|i| (format!("t{i}"), json!([]))).collect();
    let grad: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let started = Instant::now();
    let r = custom(
        &app,
        &json!({"expression": "sum(t7) + 1", "tensors": tensors, "grad": grad}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["grad"].as_object().unwrap().len(), n);
    let p = refused(
        &app,
        "sum(u)",
        json!({"a": 1, "b": 2}),
        "invalid_expression",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("tensors are a, b"),
        "{p}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The server still answers, and computes.
    assert_eq!(app.get("/healthz").await.status, 200);
    let r = custom(&app, &json!({"expression": "sum(x)", "tensors": t()})).await;
    assert_eq!(r.json()["loss"], 21.0);
}

#[tokio::test]
async fn errors_say_what_and_where() {
    let app = spawn_app().await;
    let t = || json!({"input": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "target": [1.0, 2.0]});
    let p = refused(&app, "mean(square(input - target))", t(), "shape_mismatch").await;
    let d = p["detail"].as_str().unwrap();
    assert!(
        d.contains("`input - target`") && d.contains("[2, 3]") && d.contains("[2]"),
        "{d}"
    );
    assert_eq!(p["position"], 12);
    let p = refused(&app, "mean(input) +", t(), "invalid_expression").await;
    assert_eq!(p["position"], 13);
    assert!(
        p["detail"].as_str().unwrap().contains("expected a number"),
        "{p}"
    );
    let p = refused(
        &app,
        "a < b < c",
        json!({"a": 1, "b": 2, "c": 3}),
        "invalid_expression",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("chained"));
    // A built-in's own complaint is placed at its call.
    let p = refused(
        &app,
        "1 + huber_loss(input, input, delta=-1)",
        t(),
        "invalid_expression",
    )
    .await;
    assert_eq!(p["position"], 4);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("in `huber_loss(input, input, delta=-1)`"),
        "{p}"
    );
    let p = refused(
        &app,
        "cross_entropy(input, target + 7)",
        t(),
        "invalid_value",
    )
    .await;
    assert_eq!(p["position"], 0);
    // Gradients that cannot flow through an unreduced loss are refused with the reason.
    let body = json!({
        "expression": "sum(w * cross_entropy(input, softmax(input, 1), weight=cw, reduction='none'))",
        "tensors": {"input": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "w": [1.0, 2.0], "cw": [1.0, 0.5, 2.0]},
        "grad": ["cw"],
    });
    let p = custom(&app, &body).await.problem(422, "invalid_expression");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("cannot flow back through `weight`"),
        "{p}"
    );
    assert_eq!(p["position"], 8);
}

#[tokio::test]
async fn request_fields_are_checked() {
    let app = spawn_app().await;
    let r = custom(
        &app,
        &json!({"expression": "x", "tensors": {"x": 1}, "reduction": "sum"}),
    )
    .await;
    let p = r.problem(422, "invalid_option");
    assert_eq!(p["pointer"], "/reduction");
    let r = custom(
        &app,
        &json!({"expression": "x", "tensors": {"x": 1}, "grad": ["y"]}),
    )
    .await;
    assert_eq!(r.problem(422, "invalid_option")["pointer"], "/grad/0");
    let r = custom(
        &app,
        &json!({"expression": "x", "tensors": {"x": 1}, "grad": true}),
    )
    .await;
    r.problem(422, "invalid_option");
    let r = custom(&app, &json!({"expression": "x", "tensors": {"my-x": 1}})).await;
    assert_eq!(r.problem(422, "invalid_option")["pointer"], "/tensors/my-x");
    let r = custom(&app, &json!({"expression": "x", "tensors": {"True": 1}})).await;
    r.problem(422, "invalid_option");
    let r = custom(&app, &json!({"tensors": {"x": 1}})).await;
    r.problem(422, "invalid_option");
    let r = custom(
        &app,
        &json!({"expression": "x", "tensors": {"x": [[1], [2, 3]]}}),
    )
    .await;
    assert_eq!(r.problem(422, "invalid_tensor")["pointer"], "/tensors/x/1");
    let r = app
        .send(
            "POST",
            "/v1/losses/custom",
            Some("application/json"),
            br#"{"expression": "x", "tensors": {"x": 1, "x": 2}}"#.to_vec(),
        )
        .await;
    r.problem(422, "invalid_tensor");
    let r = app
        .send(
            "POST",
            "/v1/losses/custom",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    r.problem(415, "unsupported_media_type");
    let r = app
        .send(
            "POST",
            "/v1/losses/custom",
            Some("application/json"),
            b"{".to_vec(),
        )
        .await;
    r.problem(400, "invalid_json");
}

#[tokio::test]
async fn the_element_limit_bounds_tensors_and_the_work_of_the_expression() {
    let app = spawn_app_with(&["--max-elements", "100"]).await;
    let x: Vec<f64> = (0..40).map(f64::from).collect();
    // 40 elements decoded; sub 40, square 40, mean 41: 121 elements of work > 100.
    let r = custom(
        &app,
        &json!({"expression": "mean(square(x - 1))", "tensors": {"x": x}}),
    )
    .await;
    let p = r.problem(413, "payload_too_large");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("element limit of 100"),
        "{p}"
    );
    let r = custom(&app, &json!({"expression": "mean(x)", "tensors": {"x": x}})).await;
    assert_eq!(r.status, 200);
    // Broadcasting multiplies: 40 × 40 is far past it, found before computing.
    let r = custom(&app, &json!({"expression": "sum(a * b)", "tensors": {"a": {"shape": [40, 1], "data": x}, "b": x}})).await;
    r.problem(413, "payload_too_large");
    // Over the budget with tensors alone: 413, unless the expression is itself broken.
    let big: Vec<f64> = vec![0.0; 101];
    let r = custom(
        &app,
        &json!({"expression": "sum(x)", "tensors": {"x": big}}),
    )
    .await;
    r.problem(413, "payload_too_large");
    let r = custom(&app, &json!({"expression": "sum(x", "tensors": {"x": big}})).await;
    r.problem(422, "invalid_expression");
}

#[tokio::test]
async fn a_custom_job_runs_inside_a_batch() {
    let app = spawn_app().await;
    let c = case("focal-log-softmax");
    let mut job = c["body"].clone();
    job["loss"] = json!("custom");
    let body = json!({"jobs": [job, {"loss": "custom", "expression": "nope(", "tensors": {}},
                              {"loss": "mse_loss", "input": [1, 2], "target": [1, 3]}]});
    let r = app.post_json("/v1/batch", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let out = r.json();
    let first = &out["results"][0];
    assert_eq!(first["ok"], true, "{out}");
    compare(
        "loss",
        &first["result"]["loss"],
        &c["expect"]["loss"],
        1e-9,
        1e-12,
    )
    .unwrap();
    compare(
        "grad",
        &first["result"]["grad"]["input"],
        &c["expect"]["grad"]["input"],
        1e-9,
        1e-12,
    )
    .unwrap();
    assert_eq!(out["results"][1]["ok"], false);
    assert_eq!(out["results"][1]["error"]["code"], "invalid_expression");
    assert_eq!(out["results"][2]["ok"], true);
}

#[tokio::test]
async fn the_catalog_documents_the_language() {
    let app = spawn_app().await;
    let r = app.get("/v1/losses/custom").await;
    assert_eq!(r.status, 200);
    let c = r.json();
    assert_eq!(c["name"], "custom");
    let functions: Vec<&str> = c["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for f in [
        "abs",
        "square",
        "sqrt",
        "exp",
        "log",
        "log1p",
        "expm1",
        "sigmoid",
        "softplus",
        "tanh",
        "relu",
        "clamp",
        "minimum",
        "maximum",
        "pow",
        "where",
        "sum",
        "mean",
        "max",
        "min",
        "logsumexp",
        "softmax",
        "log_softmax",
    ] {
        assert!(functions.contains(&f), "{f}");
    }
    for f in c["functions"].as_array().unwrap() {
        assert!(f["gradient"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    }
    let losses = c["losses"].as_array().unwrap();
    assert_eq!(losses.len(), lossd::losses::registry().len());
    let huber = losses.iter().find(|l| l["name"] == "huber_loss").unwrap();
    assert_eq!(
        huber["signature"],
        "huber_loss(input, target, weight=None, *, reduction='mean', delta=1.0)"
    );
    assert!(
        c["gradients"]
            .as_str()
            .unwrap()
            .contains("reduction 'none'")
    );
    assert_eq!(c["limits"]["max_depth"], 64);
    let all = app.get("/v1/losses").await.json();
    assert!(
        all["losses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "custom")
    );
    // Every example in the catalog runs.
    for ex in c["examples"].as_array().unwrap() {
        let r = custom(&app, &ex["request"]).await;
        assert_eq!(
            r.status,
            200,
            "{}: {}",
            ex["name"],
            String::from_utf8_lossy(&r.bytes)
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_route_and_its_examples_run() {
    let app = spawn_app().await;
    let doc: Value = serde_json::from_str(lossd::openapi::json()).unwrap();
    let op = &doc["paths"]["/v1/losses/custom"]["post"];
    assert_eq!(op["operationId"], "custom");
    for status in ["200", "400", "413", "415", "422", "503"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
    let description = op["description"].as_str().unwrap();
    for needle in [
        "`^`",
        "logsumexp(input, dim=None, keepdim=False)",
        "reduction 'none'",
        "10000 characters",
    ] {
        assert!(description.contains(needle), "{needle}");
    }
    let schema = &doc["components"]["schemas"]["CustomRequest"];
    for field in ["expression", "tensors", "grad", "dtype", "encoding"] {
        assert!(
            schema["properties"][field]["description"].is_string()
                || schema["properties"][field]["oneOf"].is_array()
                || schema["properties"][field]["$ref"].is_string(),
            "{field}"
        );
    }
    let examples = op["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .unwrap();
    assert!(examples.len() >= 4);
    for (key, ex) in examples {
        let r = custom(&app, &ex["value"]).await;
        assert_eq!(
            r.status,
            200,
            "{key}: {}",
            String::from_utf8_lossy(&r.bytes)
        );
    }
}
