//! The catalog (`GET /v1/losses`), generated from the registry: each loss's [`Info`] plus
//! what its request schema says of its fields (types, defaults, allowed values, docs), so the
//! catalog, the routes and the OpenAPI document cannot disagree; and the loss reference
//! `docs/losses.md`, the same entries written as Markdown ([`reference`]).
//!
//! [`Info`]: crate::losses::Info

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::losses::{self, Category, Entry, TensorKind};

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
        "unreduced": info.unreduced,
        "gradient": info.gradient,
        "differences": info.differences,
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

/// A table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A JSON value as a request would write it (`1.0`, `"mean"`, `false`).
fn literal(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        v => format!("`{v}`"),
    }
}

/// The range or the allowed values of an option, from its catalog entry.
fn bounds(o: &Value) -> String {
    if let Some(a) = o["allowed"].as_array() {
        return a.iter().map(literal).collect::<Vec<_>>().join(", ");
    }
    let mut parts = Vec::new();
    for (key, op) in [
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ] {
        if let Some(v) = o.get(key) {
            parts.push(format!("{op} {v}"));
        }
    }
    parts.join(", ")
}

/// A request body on one line, its tensors first in the loss's order, then the other fields.
fn request_text(info: &losses::Info, body: &Value) -> String {
    let Some(fields) = body.as_object() else {
        return body.to_string();
    };
    let mut keys: Vec<&str> = info
        .tensors
        .iter()
        .map(|t| t.name)
        .filter(|n| fields.contains_key(*n))
        .collect();
    keys.extend(
        fields
            .keys()
            .map(String::as_str)
            .filter(|k| !info.is_tensor(k)),
    );
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{}: {}", Value::from(*k), fields[*k]))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// One loss's section of the reference.
fn section(e: &Entry, c: &Value, out: &mut String) {
    use std::fmt::Write;
    let info = e.info;
    let w = &mut *out;
    let _ = writeln!(w, "## {}\n", info.name);
    let _ = writeln!(
        w,
        "`torch.nn.{}` · `torch.nn.functional.{}` · {} · `POST /v1/losses/{}`\n",
        info.module,
        info.name,
        info.category.tag(),
        info.name
    );
    let _ = writeln!(w, "{}\n", info.summary);
    let _ = writeln!(w, "**Formula:** `{}`\n", info.formula);
    let _ = writeln!(w, "**Tensor arguments** (in PyTorch's order):\n");
    let _ = writeln!(
        w,
        "| name | kind | shapes | required | gradient | description |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for t in c["tensors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | {} | {} |",
            t["name"].as_str().unwrap_or(""),
            t["kind"].as_str().unwrap_or("").replace('_', " "),
            cell(t["shapes"].as_str().unwrap_or("")),
            if t["required"] == true { "yes" } else { "no" },
            if t["differentiable"] == true {
                "yes"
            } else {
                "no"
            },
            cell(t["description"].as_str().unwrap_or("")),
        );
    }
    let options = c["options"].as_array().cloned().unwrap_or_default();
    if options.is_empty() {
        let _ = writeln!(w, "\n**Options:** none besides the common fields.\n");
    } else {
        let _ = writeln!(w, "\n**Options:**\n");
        let _ = writeln!(w, "| name | type | default | allowed | description |");
        let _ = writeln!(w, "|---|---|---|---|---|");
        for o in &options {
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} |",
                o["name"].as_str().unwrap_or(""),
                cell(o["type"].as_str().unwrap_or("")),
                literal(&o["default"]),
                cell(&bounds(o)),
                cell(o["description"].as_str().unwrap_or("")),
            );
        }
        w.push('\n');
    }
    let reductions: Vec<String> = info
        .reductions
        .iter()
        .map(|r| {
            if *r == "mean" {
                format!("`{r}` (default)")
            } else {
                format!("`{r}`")
            }
        })
        .collect();
    let _ = writeln!(w, "**Reductions:** {}.\n", reductions.join(", "));
    let _ = writeln!(w, "**With `reduction: \"none\"`:** {}\n", info.unreduced);
    let differentiable: Vec<String> = info
        .tensors
        .iter()
        .filter(|t| t.differentiable)
        .map(|t| format!("`{}`", t.name))
        .collect();
    let _ = writeln!(
        w,
        "**Gradients** (`grad: true` returns them for {}): {}\n",
        differentiable.join(", "),
        info.gradient
    );
    if !info.notes.is_empty() {
        let _ = writeln!(w, "**Notes:** {}\n", info.notes);
    }
    if !info.differences.is_empty() {
        let _ = writeln!(
            w,
            "**Differs from PyTorch** ([differences.md](differences.md)): {}\n",
            info.differences
        );
    }
    // The shortest of the loss's examples (they all run, as a test checks): a request to
    // start from.
    let example = (e.examples)()
        .into_iter()
        .map(|x| (request_text(info, &x.body), x))
        .min_by_key(|(text, _)| text.len());
    if let Some((text, x)) = example {
        let _ = writeln!(w, "**Example** ({}):\n", x.summary);
        let _ = writeln!(w, "```json\n{text}\n```\n");
    }
}

/// The loss reference, `docs/losses.md`: every registered loss, generated from the catalog
/// entries; a test keeps the committed file equal to it.
pub fn reference() -> String {
    use std::fmt::Write;
    let mut out = String::from(REFERENCE_INTRO);
    let categories = [
        Category::Regression,
        Category::Classification,
        Category::Probabilistic,
        Category::RankingAndEmbedding,
    ];
    out.push_str("## Contents\n\n");
    for cat in categories {
        let names: Vec<String> = losses::registry()
            .iter()
            .filter(|e| e.info.category == cat)
            .map(|e| format!("[{0}](#{0})", e.info.name))
            .collect();
        let mut tag = cat.tag().to_string();
        tag[..1].make_ascii_uppercase();
        let _ = writeln!(out, "- {tag}: {}", names.join(", "));
    }
    out.push('\n');
    for (e, c) in losses::registry().iter().zip(entries()) {
        section(e, c, &mut out);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The opening of the reference: what it is, how it is made, what every loss shares.
const REFERENCE_INTRO: &str = "\
# Loss reference

<!-- Generated from the loss registry by lossd::catalog::reference; do not edit by hand. -->

Every loss lossd computes, with the semantics of PyTorch 2.15's `torch.nn` losses: its tensor
arguments and their shapes, its options and defaults, the reductions it accepts, what
`reduction: \"none\"` returns, the gradients `grad: true` returns, and where lossd deliberately
differs from PyTorch.

This file is generated from the registry in `src/losses/` (one file per loss), the same data
that drives the routes, the catalog (`GET /v1/losses`, `GET /v1/losses/{name}`) and the OpenAPI
document (`GET /openapi.json`), so the three cannot disagree. A test fails when it is stale;
after changing a loss, regenerate it with

```sh
LOSSD_BLESS=1 cargo test -q --test api loss_reference
```

How requests and responses are written (tensor encodings, errors, limits, batches, custom
expressions) is in [api.md](api.md); the differences from PyTorch that concern every loss (one
compute dtype per request, validation before computing) are in [differences.md](differences.md).

## Common to every loss

Each loss is `POST /v1/losses/{name}`, `{name}` its `torch.nn.functional` name. Besides its own
tensors and options, every request may set:

| field | default | allowed | meaning |
|---|---|---|---|
| `reduction` | `\"mean\"` | `\"none\"`, `\"mean\"`, `\"sum\"` (`kl_div` also `\"batchmean\"`) | how the unreduced loss is reduced |
| `dtype` | `\"float64\"` | `\"float64\"`, `\"float32\"` | the precision every tensor is converted to and the loss computed in |
| `grad` | `false` | `true`, `false` | also return the gradient of the output with respect to each differentiable tensor |
| `encoding` | `\"json\"` | `\"json\"`, `\"base64\"` | how tensors in the response are written |

`mean` divides by the number of elements of the unreduced loss unless a loss says otherwise
(weighted means, `batchmean`, CTC's per-target-length mean). An empty unreduced loss gives NaN
for `mean` and 0 for `sum`. With `reduction: \"none\"` the returned gradient is that of the
*sum* of the output; with `mean` and `sum` it is that of the scalar. Each gradient has its
argument's shape (summed over the dimensions it was broadcast along).

";
