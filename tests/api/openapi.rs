//! The OpenAPI document: committed copy in sync, served byte for byte, every example runs,
//! Swagger UI served from the binary.

use serde_json::Value;

use crate::helpers::spawn_app;

#[test]
fn the_committed_openapi_document_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json exists");
    assert!(
        committed == lossd::openapi::json(),
        "openapi/openapi.json is stale: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_document_is_served_byte_for_byte_and_is_openapi_3_1() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.bytes, lossd::openapi::json().as_bytes());
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for e in lossd::losses::registry() {
        let op = &doc["paths"][format!("/v1/losses/{}", e.info.name)]["post"];
        assert_eq!(op["operationId"], e.info.name);
        assert_eq!(op["tags"][0], e.info.category.tag());
        for status in ["200", "400", "404", "413", "415", "422", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{}: {status}",
                e.info.name
            );
        }
        let schema = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap();
        let name = schema.rsplit('/').next().unwrap();
        let props = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap();
        for (field, p) in props {
            // An optional field's description may sit in the first branch of its `oneOf`.
            let doc = p
                .get("description")
                .or_else(|| p.get("oneOf")?.get(0)?.get("description"));
            assert!(
                doc.is_some_and(Value::is_string),
                "{}: {field} is undocumented",
                e.info.name
            );
        }
    }
}

#[tokio::test]
async fn every_example_in_the_document_runs() {
    let app = spawn_app().await;
    let doc: Value = serde_json::from_str(lossd::openapi::json()).unwrap();
    let mut ran = 0;
    for e in lossd::losses::registry() {
        let examples = doc["paths"][format!("/v1/losses/{}", e.info.name)]["post"]["requestBody"]["content"]
            ["application/json"]["examples"]
            .as_object()
            .unwrap_or_else(|| panic!("{} has no example", e.info.name));
        assert!(!examples.is_empty());
        for (key, ex) in examples {
            let r = app.loss(e.info.name, &ex["value"]).await;
            assert_eq!(
                r.status,
                200,
                "{}/{key}: {}",
                e.info.name,
                String::from_utf8_lossy(&r.bytes)
            );
            ran += 1;
        }
    }
    let batch = &doc["components"]["schemas"]["BatchRequest"]["properties"]["jobs"]["example"];
    let r = app
        .post_json("/v1/batch", &serde_json::json!({"jobs": batch}))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["ok"] == true)
    );
    assert!(ran >= lossd::losses::registry().len());
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let r = app.get("/docs/").await;
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.bytes).contains("swagger"),
        "the UI page"
    );
    let init = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(init.status, 200);
    assert!(String::from_utf8_lossy(&init.bytes).contains("/openapi.json"));
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, 200);
    assert!(
        bundle.bytes.len() > 100_000,
        "the bundle is vendored into the binary"
    );
}
