//! The documentation of custom losses: the catalog entry (`GET /v1/losses/custom`) and the
//! OpenAPI path item of `POST /v1/losses/custom`, both generated from the same tables the
//! compiler uses ([`FUNCTIONS`], the loss registry), so they cannot drift from the language.

use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::response::ResponsesBuilder;
use utoipa::{PartialSchema, ToSchema};

use super::compile::FUNCTIONS;
use super::{CustomRequest, Limits};
use crate::losses::{self, ArgShape, Entry, Example, NamedSchema, sample};
use crate::openapi::{answer, problem, request_body};

/// The grammar, as a user reads it.
pub const GRAMMAR: &str = "\
expression  = comparison
comparison  = sum [ ('<' | '<=' | '>' | '>=' | '==' | '!=') sum ]      (not chainable)
sum         = product { ('+' | '-') product }                          (left-associative)
product     = unary { ('*' | '/') unary }                              (left-associative)
unary       = ('-' | '+') unary | power
power       = atom [ ('^' | '**') unary ]                              (right-associative)
atom        = number | name | call | '(' expression ')'
call        = function '(' [ argument { ',' argument } [','] ] ')'
argument    = expression | keyword '=' expression                      (positional first)
number      = digits ['.' digits] [('e'|'E') ['+'|'-'] digits] | 'inf' | 'nan'
literal     = number | 'string' | \"string\" | True | False | None    (options, dims, bounds)";

/// Precedence, tightest first.
pub const PRECEDENCE: &str = "`^` (or `**`), right-associative and tighter than a unary minus on its left \
(`-x^2` is `-(x^2)`, `2^-x` is `2^(-x)`, as Python's `**`); then unary `-` and `+`; then `*` and `/`; \
then `+` and `-` (both left-associative); then the comparisons `< <= > >= == !=`, which give 1 where \
true and 0 where false, pass no gradient, and cannot be chained (`a < b < c` is an error: write \
`(a < b) * (b < c)`).";

/// How gradients are computed, in a paragraph; the losses named are those whose layout says
/// so (`Info::layout`).
pub fn gradients() -> String {
    let names = |elementwise: bool| {
        losses::registry()
            .iter()
            .filter(|e| e.info.layout.is_elementwise() == elementwise)
            .map(|e| e.info.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "`grad` lists the tensors to differentiate. The gradient is PyTorch's autograd on the \
         same expression (reverse mode over the expression graph, with PyTorch's formulas and \
         subgradients, listed per function); for a result that is not a scalar it is the \
         gradient of its sum. Built-in losses contribute their own gradient kernels: with \
         reduction 'mean', 'sum' or 'batchmean' (a scalar) the chain rule is exact. With \
         reduction 'none' a kernel gives the gradient of the sum of its output, which is exact \
         whenever the gradient arriving at the loss is the same for every element (e.g. sum(...) \
         or mean(...) of it); otherwise lossd still differentiates exactly where each input \
         element reaches a single output element: element-wise losses ({}) are called again \
         with their tensors broadcast to the output's shape, and row-wise losses ({}) scale each \
         row's gradient (which tensors, per loss: `reduction_none_gradient` in \
         `GET /v1/losses/custom`). A tensor that feeds many output elements (class weights, \
         linear_weight, a broadcast row) cannot be differentiated through an unreduced loss \
         weighted unequally: that is a 422 invalid_expression at the call, explaining why.",
        names(true),
        names(false)
    )
}

/// Ready-made expressions: (name, summary, expression, tensors, grad).
fn examples() -> Vec<(&'static str, &'static str, Value)> {
    let logits = sample(&[4, 3], 11);
    let onehot = json!([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]);
    let masks = json!([[1, 1, 0, 0], [0, 1, 1, 0]]);
    vec![
        (
            "tutorial",
            "MSE plus a tenth of a Huber loss, with the gradient",
            json!({
                "expression": "mean(square(input - target)) + 0.1 * huber_loss(input, target, delta=0.5)",
                "tensors": {"input": sample(&[3, 5], 1), "target": sample(&[3, 5], 2)},
                "grad": ["input"],
            }),
        ),
        (
            "focal",
            "Focal loss (gamma = 2) from log_softmax, with one-hot targets",
            json!({
                "expression": "mean(sum(-target * (1 - softmax(input, 1)) ^ 2 * log_softmax(input, 1), dim=1))",
                "tensors": {"input": logits, "target": onehot},
                "grad": ["input"],
            }),
        ),
        (
            "focal-ce",
            "Focal loss from the unreduced cross-entropy with class indices",
            json!({
                "expression": "mean((1 - exp(-cross_entropy(input, target, reduction='none'))) ^ 2 * cross_entropy(input, target, reduction='none'))",
                "tensors": {"input": sample(&[4, 3], 11), "target": [0, 1, 2, 1]},
                "grad": ["input"],
            }),
        ),
        (
            "dice",
            "Soft Dice loss on logits, with smoothing 1",
            json!({
                "expression": "1 - (2 * sum(sigmoid(input) * target) + 1) / (sum(sigmoid(input)) + sum(target) + 1)",
                "tensors": {"input": sample(&[2, 4], 12), "target": masks},
                "grad": ["input"],
            }),
        ),
        (
            "regularised-mse",
            "MSE plus an L2 penalty on a weight tensor",
            json!({
                "expression": "mse_loss(input, target) + 0.01 * sum(square(weight))",
                "tensors": {"input": sample(&[3, 2], 13), "target": sample(&[3, 2], 14), "weight": sample(&[2, 2], 15)},
                "grad": ["input", "weight"],
            }),
        ),
    ]
}

/// The request bodies of the examples, for tests.
pub fn example_bodies() -> Vec<(&'static str, Value)> {
    examples().into_iter().map(|(n, _, b)| (n, b)).collect()
}

/// How a built-in is called: `huber_loss(input, target, weight=None, *, reduction='mean', delta=1.0)`.
fn signature(e: &Entry, catalog: &Value) -> String {
    let mut parts: Vec<String> = e
        .info
        .tensors
        .iter()
        .map(|t| {
            if t.required {
                t.name.to_string()
            } else {
                format!("{}=None", t.name)
            }
        })
        .collect();
    parts.push("*".into());
    parts.push("reduction='mean'".into());
    for o in catalog["options"].as_array().into_iter().flatten() {
        let name = o["name"].as_str().unwrap_or("");
        let d = match &o["default"] {
            Value::String(s) => format!("'{s}'"),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Null => "None".into(),
            v => v.to_string(),
        };
        parts.push(format!("{name}={d}"));
    }
    format!("{}({})", e.info.name, parts.join(", "))
}

/// What `reduction='none'` allows for the gradient of loss `e`, from its layout.
fn none_gradient(e: &Entry) -> String {
    let layout = e.info.layout;
    if layout.is_elementwise() {
        return "exact for any gradient arriving at the unreduced loss (element-wise: the tensors \
                are broadcast to the output and the loss called again)"
            .into();
    }
    let shapes: Vec<ArgShape> = e
        .info
        .tensors
        .iter()
        .map(|t| ArgShape {
            name: t.name,
            shape: vec![2, 2, 2],
            literal: false,
        })
        .collect();
    let rows: Vec<&str> = shapes
        .iter()
        .map(|a| a.name)
        .filter(|t| layout.row_axes(t, &shapes).is_some())
        .collect();
    if rows.is_empty() {
        return "only when the gradient arriving at the unreduced loss is uniform (e.g. its sum or mean)"
            .into();
    }
    format!(
        "exact for {} whatever the gradient arriving at the unreduced loss, wherever each of \
         its elements feeds a single output element (its row); other tensors only when that \
         gradient is uniform (e.g. its sum or mean)",
        rows.iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn losses_json() -> Vec<Value> {
    losses::registry()
        .iter()
        .map(|e| {
            let catalog = crate::catalog::entry(e.info.name)
                .cloned()
                .unwrap_or(Value::Null);
            let names: Vec<&'static str> = e.info.tensors.iter().map(|t| t.name).collect();
            json!({
                "name": e.info.name,
                "signature": signature(e, &catalog),
                "summary": e.info.summary,
                "tensors": names,
                "differentiable": catalog["differentiable"],
                "options": catalog["options"],
                "reductions": e.info.reductions,
                "reduction_none_gradient": none_gradient(e),
                "catalog": format!("/v1/losses/{}", e.info.name),
            })
        })
        .collect()
}

/// The catalog entry.
pub fn catalog() -> Value {
    let limits = Limits::default();
    let functions: Vec<Value> = FUNCTIONS
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "signature": f.signature,
                "group": f.group,
                "summary": f.summary,
                "gradient": f.gradient,
            })
        })
        .collect();
    let examples: Vec<Value> = examples()
        .into_iter()
        .map(|(name, summary, body)| {
            json!({"name": name, "summary": summary, "expression": body["expression"], "request": body})
        })
        .collect();
    json!({
        "name": "custom",
        "route": "/v1/losses/custom",
        "summary": "A loss written as an expression over the request's tensors, with gradients by reverse-mode differentiation.",
        "request": {
            "expression": "the expression (string)",
            "tensors": "an object from name to tensor (any of the three encodings)",
            "grad": "the names of the tensors to differentiate (default: none)",
            "dtype": {"default": "float64", "allowed": ["float64", "float32"]},
            "encoding": {"default": "json", "allowed": ["json", "base64"]},
        },
        "grammar": GRAMMAR,
        "precedence": PRECEDENCE,
        "operators": [
            {"operator": "a + b, a - b, a * b, a / b", "gradient": "PyTorch's; broadcasting, each gradient summed back to its operand's shape"},
            {"operator": "a ^ b, a ** b", "gradient": "as pow(a, b)"},
            {"operator": "-a", "gradient": "−g"},
            {"operator": "a < b, a <= b, a > b, a >= b, a == b, a != b", "gradient": "none (1 where true, 0 where false)"},
        ],
        "literals": "Numbers (1, 0.5, 1e-3, inf, nan) are 0-d tensors wherever a tensor is expected; strings ('none' or \"none\"), True/False and None only as option values; dims and keepdim must be literals.",
        "functions": functions,
        "losses": losses_json(),
        "losses_calling": "Every built-in loss, by its torch.nn.functional name: tensors positionally in the order listed (PyTorch's) or by keyword, options and reduction by keyword as literals; None leaves an optional tensor out.",
        "gradients": gradients(),
        "limits": {
            "max_chars": limits.max_chars,
            "max_nodes": limits.max_nodes,
            "max_depth": limits.max_depth,
            "cost": "the sum over operations of the elements each reads and writes (built-in losses with reduction 'none' count twice), from the shapes inferred before computing, must not exceed the element limit (413 payload_too_large)",
        },
        "errors": {
            "invalid_expression": "syntax, unknown names and functions, wrong arity, unknown keywords, options of the wrong type, the limits above; `position` is the character offset",
            "shape_mismatch": "operands that do not broadcast, a dim that does not exist, max/min of nothing; the detail quotes the sub-expression",
            "invalid_option": "unknown fields, a tensor name that is not an identifier, grad naming an unknown tensor",
        },
        "examples": examples,
    })
}

/// The description of the route, in Markdown.
fn description() -> String {
    let limits = Limits::default();
    let mut d = String::from(
        "A loss written as an expression over the request's named tensors, evaluated in the \
         request's dtype with PyTorch's semantics (broadcasting, NaN handling), with gradients by \
         reverse-mode differentiation for the tensors listed in `grad`. The answer has the shape \
         of every loss route's. Also usable in `/v1/batch` as `\"loss\": \"custom\"`.\n\n\
         **Grammar:**\n\n```\n",
    );
    d.push_str(GRAMMAR);
    d.push_str("\n```\n\n**Precedence:** ");
    d.push_str(PRECEDENCE);
    d.push_str(
        "\n\n**Functions** (the gradient follows PyTorch's autograd, subgradients included):\n\n",
    );
    for f in FUNCTIONS {
        d.push_str(&format!(
            "- `{}`: {}. *Gradient:* {}.\n",
            f.signature, f.summary, f.gradient
        ));
    }
    d.push_str(
        "\n**Built-in losses:** every loss of the service by its `torch.nn.functional` name, \
         tensors positionally in PyTorch's order or by keyword, options and `reduction` by \
         keyword (literals), e.g. `huber_loss(input, target, delta=0.5, reduction='none')`. \
         `GET /v1/losses/custom` lists each one's signature.\n\n**Gradients:** ",
    );
    d.push_str(&gradients());
    d.push_str(&format!(
        "\n\n**Limits:** at most {} characters, {} syntax nodes and {} levels of nesting \
         (422 `invalid_expression`; the parser never recurses past the depth limit, so any input \
         is refused quickly); the cost — the elements all operations read and write, from the \
         shapes inferred before computing — must not exceed the element limit (413 \
         `payload_too_large`). There are no loops or recursion: every expression terminates.\n\n\
         **Errors** carry `position`, the character offset in the expression, and point at \
         `/expression`: `invalid_expression` for syntax, names, arity, keywords and option types; \
         `shape_mismatch` for shapes that do not broadcast and dims that do not exist, quoting the \
         sub-expression.",
        limits.max_chars, limits.max_nodes, limits.max_depth
    ));
    d
}

/// The responses of the route.
fn responses() -> utoipa::openapi::Responses {
    ResponsesBuilder::new()
        .response(
            "200",
            answer("The expression's value (`loss`), its shape and dtype; `grad` with the gradient of each tensor listed in `grad` (of the sum of the value when it is not a scalar); the built-in losses' warnings, if any."),
        )
        .response("400", problem("`invalid_json`: the body is not JSON."))
        .response("413", problem("`payload_too_large`: the body or the element count is over the limit, or evaluating the expression would touch more elements than the element limit."))
        .response("415", problem("`unsupported_media_type`: the content type is not `application/json`."))
        .response(
            "422",
            problem(
                "`invalid_expression` (the expression does not parse or type-check, or is over the length, node or depth limit; `position` is the character offset), \
                 `shape_mismatch` (operands that do not broadcast, a dim that does not exist; the sub-expression is quoted), \
                 `invalid_tensor` (ragged arrays, non-numbers, bad base64, shape and data disagree), \
                 `invalid_option` (unknown or missing field, a bad tensor name, `grad` naming an unknown tensor), \
                 `invalid_value` (values a built-in loss rejects).",
            ),
        )
        .response(
            "503",
            problem("`overloaded` (the compute queue is full; `Retry-After` says when to retry) or `timeout` (past the time limit)."),
        )
        .build()
}

/// The OpenAPI path item and the schemas it uses.
pub fn openapi() -> (PathItem, Vec<NamedSchema>) {
    let mut schemas: Vec<NamedSchema> = Vec::new();
    <CustomRequest as ToSchema>::schemas(&mut schemas);
    schemas.push((
        <CustomRequest as ToSchema>::name().into_owned(),
        <CustomRequest as PartialSchema>::schema(),
    ));
    let examples = examples()
        .into_iter()
        .map(|(name, summary, body)| Example::new(name, summary, body))
        .collect();
    let body = request_body(<CustomRequest as ToSchema>::name().into_owned(), examples);
    let op = OperationBuilder::new()
        .operation_id(Some("custom"))
        .summary(Some("custom (a loss written as an expression)"))
        .description(Some(description()))
        .tag("custom")
        .request_body(Some(body))
        .responses(responses())
        .build();
    (PathItem::new(HttpMethod::Post, op), schemas)
}
