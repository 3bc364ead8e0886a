//! The `/v2` routes in the OpenAPI document (the HTTP/REST half of the protocol).

use serde_json::{Value, json};
use utoipa::openapi::path::PathItem;

/// The tag of the `/v2` operations.
pub const TAG: &str = "open inference protocol";

/// The tag's description.
pub const TAG_TEXT: &str = "The Open Inference Protocol v2 (KServe, Triton): every loss as a \
    model, for tritonclient and KServe clients; also over gRPC (docs/oip.md).";

fn error_responses(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for &c in codes {
        let text = match c {
            "400" => {
                "A malformed request, a wrong datatype or shape, an unknown parameter, or values the loss refuses"
            }
            "404" => "No such model (loss) or version",
            "413" => "The body or its tensors are over the limits",
            _ => "Overloaded, past the time limit, or draining",
        };
        m.insert(
            c.to_string(),
            json!({"description": text, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/OipError"}}}}),
        );
    }
    Value::Object(m)
}

fn get(summary: &str, id: &str, ok: Value, errors: &[&str], params: Value) -> Value {
    let mut responses = error_responses(errors);
    responses["200"] = ok;
    json!({"get": {
        "tags": [TAG], "summary": summary, "operationId": id,
        "parameters": params, "responses": responses,
    }})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn path_params(version: bool) -> Value {
    let mut p = vec![json!({"name": "model", "in": "path", "required": true,
        "description": "A loss of the catalog by name, or `custom`", "schema": {"type": "string"}})];
    if version {
        p.push(json!({"name": "version", "in": "path", "required": true,
            "description": "The model version: `1`", "schema": {"type": "string"}}));
    }
    Value::Array(p)
}

/// The `/v2` path items, by path.
pub fn paths() -> Vec<(String, PathItem)> {
    let flag = |name: &str| json!({"type": "object", "required": [name], "properties": {name: {"type": "boolean"}}});
    let mut out: Vec<(String, Value)> = vec![
        (
            "/v2".into(),
            get(
                "Server metadata",
                "oip_server_metadata",
                ok(
                    "The server's name, version and protocol extensions",
                    json!({"$ref": "#/components/schemas/OipServerMetadata"}),
                ),
                &[],
                json!([]),
            ),
        ),
        (
            "/v2/health/live".into(),
            get(
                "Liveness",
                "oip_live",
                ok("`{\"live\": true}`", flag("live")),
                &[],
                json!([]),
            ),
        ),
        (
            "/v2/health/ready".into(),
            get(
                "Readiness",
                "oip_ready",
                ok("`{\"ready\": true}`", flag("ready")),
                &[],
                json!([]),
            ),
        ),
    ];
    for version in [false, true] {
        let base = if version {
            "/v2/models/{model}/versions/{version}"
        } else {
            "/v2/models/{model}"
        };
        let suffix = if version { "_version" } else { "" };
        let mut ready = get(
            "Model readiness",
            &format!("oip_model_ready{suffix}"),
            ok(
                "The model is ready",
                json!({"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}),
            ),
            &["404"],
            path_params(version),
        );
        ready["get"]["responses"]["503"] = json!({"description": "Draining", "content": {"application/json": {"schema": {"type": "object"}}}});
        out.push((
            base.to_string(),
            get(
                "Model metadata: the loss's inputs and outputs",
                &format!("oip_model_metadata{suffix}"),
                ok(
                    "Inputs and outputs with datatype and shape (-1: any)",
                    json!({"$ref": "#/components/schemas/OipModelMetadata"}),
                ),
                &["404"],
                path_params(version),
            ),
        ));
        out.push((format!("{base}/ready"), ready));
        let mut responses = error_responses(&["400", "404", "413", "503"]);
        responses["200"] = json!({
            "description": "The outputs: `loss` and, with the parameter `grad`, `grad_<input>` for each differentiable input. With binary data, the JSON part is `Inference-Header-Content-Length` bytes long and the outputs' bytes follow.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/OipInferResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        });
        out.push((
            format!("{base}/infer"),
            json!({"post": {
                "tags": [TAG],
                "summary": "Computes the loss (and its gradients)",
                "description": "Inputs are the loss's tensor arguments by name (FP64 or FP32 floats, INT64 or INT32 integers), with their data in `data` (flat or nested, row-major; NaN, Infinity and -Infinity as bare tokens) or as binary data after the JSON (`binary_data_size`, `Inference-Header-Content-Length`). Parameters: `reduction`, the loss's options by their PyTorch names, `grad`, `dtype`; for `custom`, `expression` and `grad` (comma-separated tensor names).",
                "operationId": format!("oip_infer{suffix}"),
                "parameters": path_params(version),
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OipInferRequest"}}}},
                "responses": responses,
            }}),
        ));
    }
    out.into_iter()
        .map(|(p, v)| (p, serde_json::from_value(v).expect("a valid path item")))
        .collect()
}

/// The schemas the `/v2` paths refer to.
pub fn schemas() -> Vec<(
    String,
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
)> {
    let tensor_meta = json!({"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}});
    let params = json!({"type": "object", "additionalProperties": {"type": ["boolean", "number", "string"]}});
    let list = [
        (
            "OipError",
            json!({
            "description": "The protocol's error (`error`), which is also a problem document as lossd's other errors",
            "type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "code": {"type": "string"}, "detail": {"type": "string"},
                "pointer": {"type": "string"}}}),
        ),
        (
            "OipServerMetadata",
            json!({"type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}}),
        ),
        (
            "OipModelMetadata",
            json!({"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"], "properties": {
            "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": tensor_meta},
            "outputs": {"type": "array", "items": tensor_meta}}}),
        ),
        (
            "OipInferRequest",
            json!({"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"},
            "parameters": params,
            "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": ["FP64", "FP32", "INT64", "INT32"]},
                "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                "data": {"type": ["array", "number"], "description": "The elements, row-major: a flat or nested array of numbers (NaN, Infinity and -Infinity as bare tokens), or one number for shape []"}}}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}}},
            "example": {"inputs": [
                {"name": "input", "shape": [2], "datatype": "FP64", "data": [0.5, 1.5]},
                {"name": "target", "shape": [2], "datatype": "FP64", "data": [1.0, 1.0]}],
                "parameters": {"reduction": "sum", "grad": true}}}),
        ),
        (
            "OipInferResponse",
            json!({"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": params,
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
                "name": {"type": "string"}, "datatype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "parameters": {"type": "object"},
                "data": {"type": "array"}}}}}}),
        ),
    ];
    list.into_iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                serde_json::from_value(v).expect("a valid schema"),
            )
        })
        .collect()
}
