//! The catalog is generated from the registry and describes every loss; so is the loss
//! reference, docs/losses.md.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_catalog_lists_every_registered_loss_with_its_arguments_and_options() {
    let app = spawn_app().await;
    let r = app.get("/v1/losses").await;
    assert_eq!(r.status, 200);
    let all = r.json();
    let losses = all["losses"].as_array().unwrap();
    // Every registered loss, and the custom-expression route.
    assert_eq!(losses.len(), lossd::losses::registry().len() + 1);
    assert!(losses.iter().any(|e| e["name"] == "custom"));
    for e in losses {
        let name = e["name"].as_str().unwrap();
        if name == "custom" {
            let one = app.get("/v1/losses/custom").await;
            assert_eq!(one.json(), *e);
            continue;
        }
        assert_eq!(e["route"], format!("/v1/losses/{name}"));
        assert_eq!(e["functional"], format!("torch.nn.functional.{name}"));
        for key in ["module", "category", "summary", "formula"] {
            assert!(
                e[key].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {key}"
            );
        }
        assert!(!e["tensors"].as_array().unwrap().is_empty(), "{name}");
        for t in e["tensors"].as_array().unwrap() {
            assert!(t["description"].is_string(), "{name}: {t}");
        }
        for o in e["options"].as_array().unwrap() {
            assert!(
                o["description"].is_string() && o["type"].as_str().is_some_and(|t| !t.is_empty()),
                "{name}: {o}"
            );
        }
        let one = app.get(&format!("/v1/losses/{name}")).await;
        assert_eq!(one.json(), *e);
    }
}

#[tokio::test]
async fn a_catalog_entry_states_defaults_and_differentiable_arguments() {
    let app = spawn_app().await;
    let huber = app.get("/v1/losses/huber_loss").await.json();
    assert_eq!(huber["module"], "HuberLoss");
    assert_eq!(huber["category"], "regression");
    let delta = huber["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "delta")
        .unwrap();
    assert_eq!(delta["default"], 1.0);
    assert_eq!(delta["type"], "number");
    assert_eq!(
        huber["differentiable"],
        serde_json::json!(["input", "target", "weight"])
    );
    let weight = huber["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "weight")
        .unwrap();
    assert_eq!(weight["required"], false);
    assert_eq!(
        huber["common"]["reduction"]["allowed"],
        serde_json::json!(["none", "mean", "sum"])
    );
}

#[tokio::test]
async fn an_unknown_name_in_the_catalog_is_unknown_loss() {
    let app = spawn_app().await;
    let p = app
        .get("/v1/losses/nope")
        .await
        .problem(404, "unknown_loss");
    assert!(p["detail"].as_str().unwrap().contains("nope"));
    let _: Value = p;
}

/// `docs/losses.md` is the catalog written as Markdown; `LOSSD_BLESS=1` rewrites it.
#[test]
fn the_committed_loss_reference_is_what_the_registry_generates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/losses.md");
    let generated = lossd::catalog::reference();
    if std::env::var_os("LOSSD_BLESS").is_some() {
        std::fs::write(path, &generated).expect("docs/losses.md is writable");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/losses.md is stale: run `LOSSD_BLESS=1 cargo test -q --test api loss_reference`"
    );
    for e in lossd::losses::registry() {
        assert!(
            committed.contains(&format!("\n## {}\n", e.info.name)),
            "{} has no section",
            e.info.name
        );
    }
}

#[tokio::test]
async fn every_entry_says_what_reduction_none_returns_and_which_gradients() {
    let app = spawn_app().await;
    for e in lossd::losses::registry() {
        let c = app.get(&format!("/v1/losses/{}", e.info.name)).await.json();
        for key in ["unreduced", "gradient"] {
            assert!(
                c[key].as_str().is_some_and(|s| !s.is_empty()),
                "{}: {key}",
                e.info.name
            );
        }
        assert!(c["differences"].is_string(), "{}", e.info.name);
    }
}
