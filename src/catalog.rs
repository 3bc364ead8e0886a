//! The catalog (`GET /v1/losses`), generated from the registry: each loss's [`Info`] plus
//! what its request schema says of its fields (types, defaults, allowed values, docs), so the
//! catalog, the routes and the OpenAPI document cannot disagree.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::losses::{self, Entry, TensorKind};

/// Fields every loss request has; the catalog lists them once, under `common`.
pub const COMMON_FIELDS: [&str; 4] = ["reduction", "dtype", "grad", "encoding"];

/// Every catalog entry, in registry order.
pub fn entries() -> &'static [Value] {
    static ENTRIES: LazyLock<Vec<Value>> =
        LazyLock::new(|| losses::registry().iter().map(build).collect());
    &ENTRIES
}

/// The catalog entry of `name`.
pub fn entry(name: &str) -> Option<&'static Value> {
    let i = losses::registry()
        .iter()
        .position(|e| e.info.name == name)?;
    entries().get(i)
}

/// The request schema of `e` as JSON, with the schemas it refers to.
pub fn schema_json(e: &Entry) -> (Value, BTreeMap<String, Value>) {
    let (_, schema, refs) = (e.schema)();
    let refs = refs
        .into_iter()
        .map(|(n, s)| (n, serde_json::to_value(s).expect("schemas serialize")))
        .collect();
    (
        serde_json::to_value(schema).expect("schemas serialize"),
        refs,
    )
}

/// Follows a `$ref` to a component schema.
fn resolve<'a>(p: &'a Value, refs: &'a BTreeMap<String, Value>) -> &'a Value {
    p.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .and_then(|name| refs.get(name))
        .unwrap_or(p)
}

/// The type of an option, from its schema: `number`, `integer`, `boolean`, `string`, or a
/// combination (`number | string`).
fn type_of(p: &Value, refs: &BTreeMap<String, Value>) -> String {
    let p = resolve(p, refs);
    if let Some(t) = p.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| *s != "null")
                .collect(),
            _ => vec![],
        };
        return names.join(" | ");
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alts)) = p.get(key) {
            let mut names: Vec<String> = alts
                .iter()
                .map(|a| type_of(a, refs))
                .filter(|t| !t.is_empty() && t != "null")
                .collect();
            names.dedup();
            return names.join(" | ");
        }
    }
    String::new()
}

fn build(e: &Entry) -> Value {
    let info = e.info;
    let (schema, refs) = schema_json(e);
    let props = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // An optional field's description may sit inside its `oneOf`.
    let description = |name: &str| {
        let p = props.get(name)?;
        p.get("description")
            .or_else(|| p.get("oneOf")?.get(0)?.get("description"))
            .cloned()
    };

    let tensors: Vec<Value> = info
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "kind": match t.kind {
                    TensorKind::Float => "float",
                    TensorKind::Integer => "integer",
                    TensorKind::FloatOrInteger => "float_or_integer",
                },
                "required": t.required,
                "differentiable": t.differentiable,
                "shapes": t.shapes,
                "description": description(t.name),
            })
        })
        .collect();

    let mut options = Vec::new();
    for (name, p) in &props {
        if info.is_tensor(name) || COMMON_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let resolved = resolve(p, &refs);
        let mut o = Map::new();
        o.insert("name".into(), json!(name));
        o.insert("type".into(), json!(type_of(p, &refs)));
        for key in [
            "default",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
        ] {
            if let Some(v) = p.get(key).or_else(|| resolved.get(key)) {
                o.insert(key.into(), v.clone());
            }
        }
        if let Some(v) = resolved.get("enum") {
            o.insert("allowed".into(), v.clone());
        }
        o.insert(
            "description".into(),
            description(name).unwrap_or(Value::Null),
        );
        options.push(Value::Object(o));
    }

    json!({
        "name": info.name,
        "module": info.module,
        "functional": format!("torch.nn.functional.{}", info.name),
        "category": info.category,
        "route": format!("/v1/losses/{}", info.name),
        "summary": info.summary,
        "formula": info.formula,
        "notes": info.notes,
        "tensors": tensors,
        "options": options,
        "reductions": info.reductions,
        "differentiable": info.tensors.iter().filter(|t| t.differentiable).map(|t| t.name).collect::<Vec<_>>(),
        "common": {
            "reduction": {"default": "mean", "allowed": info.reductions},
            "dtype": {"default": "float64", "allowed": ["float64", "float32"]},
            "grad": {"default": false},
            "encoding": {"default": "json", "allowed": ["json", "base64"]},
        },
    })
}
