//! Every case of PyTorch's conformance file, through HTTP. Cases of losses the service does
//! not compute yet are skipped by name (and counted), never by failure.

use serde_json::Value;

use crate::helpers::spawn_app;

#[path = "../support/compare.rs"]
mod compare;
use compare::compare;

/// The 22 losses of torch.nn: a case of one of these that the registry lacks is skipped.
const TORCH_LOSSES: [&str; 22] = [
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "soft_margin_loss",
    "linear_cross_entropy",
    "kl_div",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "ctc_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
];

/// Runs one case; `Err` describes the failure.
async fn check(app: &crate::helpers::TestApp, case: &Value) -> Result<(), String> {
    let reply = app
        .loss(case["loss"].as_str().unwrap(), &case["body"])
        .await;
    let expect = &case["expect"];
    let body = String::from_utf8_lossy(&reply.bytes);
    let status = expect["status"].as_u64().unwrap() as u16;
    if reply.status != status {
        return Err(format!("status {} but want {status}: {body}", reply.status));
    }
    let got = reply.json();
    if status != 200 {
        if reply.content_type != "application/problem+json" || got["code"] != expect["code"] {
            return Err(format!("want code {} but got {body}", expect["code"]));
        }
        return Ok(());
    }
    let rtol = case["rtol"].as_f64().unwrap_or(1e-7);
    let atol = case["atol"].as_f64().unwrap_or(1e-10);
    if got["shape"] != expect["shape"] {
        return Err(format!(
            "shape {} but want {}",
            got["shape"], expect["shape"]
        ));
    }
    compare("loss", &got["loss"], &expect["loss"], rtol, atol)?;
    if let Some(grads) = expect.get("grad").and_then(Value::as_object) {
        for (name, want) in grads {
            compare(
                &format!("grad.{name}"),
                &got["grad"][name],
                want,
                rtol,
                atol,
            )?;
        }
    }
    Ok(())
}

/// Runs every case of a JSONL fixture; returns how many passed.
async fn run_file(text: &str) -> usize {
    let app = spawn_app().await;
    let (mut passed, mut skipped, mut failures) = (0, Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let loss = case["loss"].as_str().unwrap();
        if TORCH_LOSSES.contains(&loss) && lossd::losses::find(loss).is_none() {
            skipped.push(case["id"].as_str().unwrap().to_string());
            continue;
        }
        match check(&app, &case).await {
            Ok(()) => passed += 1,
            Err(e) => failures.push(format!("{}: {e}", case["id"].as_str().unwrap())),
        }
    }
    eprintln!(
        "{passed} passed, {} skipped (loss not implemented)",
        skipped.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    passed
}

#[tokio::test]
async fn every_pytorch_conformance_case_of_an_implemented_loss_passes() {
    let passed = run_file(include_str!("../fixtures/pytorch-cases.jsonl")).await;
    assert!(passed > 0);
}

/// More cases made by `tests/torch/gen_torch_cases.py` with PyTorch 2.15: every option, shape
/// form, edge case and error path, gradients of every differentiable argument.
#[tokio::test]
async fn every_generated_pytorch_case_passes() {
    let passed = run_file(include_str!("../fixtures/torch-extra.jsonl")).await;
    assert!(passed > 0);
}
