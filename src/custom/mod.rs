//! `POST /v1/losses/custom`: a loss written as an expression over the request's tensors, with
//! gradients by reverse-mode differentiation.
//!
//! - [`parse`]: the lexer and the Pratt parser (an arena in postfix order, no unbounded
//!   recursion), under [`Limits`] on length, node count and nesting depth.
//! - [`compile`]: names resolved, arguments bound, types checked and every shape inferred from
//!   the tensors' shapes before anything is computed; the result is a [`compile::Graph`] in
//!   topological order with its cost (elements touched), checked against the element limit.
//! - [`eval`]: the forward pass in the request dtype and the backward pass, node by node, with
//!   PyTorch's autograd formulas and subgradients.
//! - [`builtin`]: calls of the registered losses through [`crate::losses::Entry::eval`], and
//!   how their gradients chain; their output shapes for `reduction: "none"` and gradient
//!   layouts come from each loss's own [`crate::losses::Info`].
//! - [`docs`]: the catalog entry and the OpenAPI path item.

pub mod builtin;
pub mod compile;
pub mod docs;
pub mod eval;
pub mod parse;

use std::collections::HashMap;
use std::fmt;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use lossd_kernels::ndarray::ArrayD;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::AppState;
use crate::error::{ApiError, Code};
use crate::losses::{Dtype, Job, TensorArg, TensorKind};
use crate::wire::ser::{Encoding, WireFloat};
use crate::wire::{Budget, Tensor};

/// Default longest expression, in characters (`--max-expression-chars`).
pub const MAX_EXPRESSION_CHARS: usize = 10_000;
/// Default most syntax nodes in one expression (`--max-expression-nodes`).
pub const MAX_EXPRESSION_NODES: usize = 1_000;
/// Default deepest nesting of one expression (`--max-expression-depth`).
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// The limits an expression is parsed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest expression, in characters.
    pub max_chars: usize,
    /// The most syntax nodes (numbers, names, operators, calls, arguments' values).
    pub max_nodes: usize,
    /// The deepest nesting of parentheses, calls and operands.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chars: MAX_EXPRESSION_CHARS,
            max_nodes: MAX_EXPRESSION_NODES,
            max_depth: MAX_EXPRESSION_DEPTH,
        }
    }
}

/// A problem with the expression itself, at a character offset.
#[derive(Clone, Debug, PartialEq)]
pub struct ExprError {
    /// `invalid_expression` or `shape_mismatch`.
    pub code: Code,
    /// The character (not byte) offset in the expression.
    pub position: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ExprError {
    /// An `invalid_expression` at byte `at` of `src`.
    pub fn syntax(src: &str, at: usize, message: String) -> Self {
        Self::new(Code::InvalidExpression, src, at, message)
    }

    /// An error of `code` at byte `at` of `src`.
    pub fn new(code: Code, src: &str, at: usize, message: String) -> Self {
        let at = at.min(src.len());
        let position = src.get(..at).map_or(at, |s| s.chars().count());
        Self {
            code,
            position,
            message,
        }
    }

    /// The problem document's error.
    pub fn into_api(self) -> ApiError {
        ApiError {
            code: self.code,
            detail: format!("{} (at character {})", self.message, self.position),
            pointer: Some("/expression".into()),
            position: Some(self.position),
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.position)
    }
}

impl From<ExprError> for ApiError {
    fn from(e: ExprError) -> Self {
        e.into_api()
    }
}

/// The request's tensors, by name, in the order given; a name given twice is refused.
#[derive(Debug, Default)]
pub struct Tensors(pub Vec<(String, Tensor)>);

impl<'de> Deserialize<'de> for Tensors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tensors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping tensor names to tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tensors, A::Error> {
                let mut out: Vec<(String, Tensor)> = Vec::new();
                let mut names: std::collections::HashSet<String> = Default::default();
                while let Some(name) = map.next_key::<String>()? {
                    if !names.insert(name.clone()) {
                        return Err(de::Error::custom(format_args!(
                            "tensor `{name}` is given twice"
                        )));
                    }
                    let t: Tensor = map.next_value()?;
                    out.push((name, t));
                }
                Ok(Tensors(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Request body of `POST /v1/losses/custom`: an expression over named tensors.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomRequest {
    /// The loss, written in the expression language (see the route's description and
    /// `GET /v1/losses/custom`): numbers, the names of `tensors`, `+ - * / ^` and comparisons
    /// with broadcasting, element-wise functions, reductions, softmax, and every built-in
    /// loss by name. At most 10,000 characters, 1,000 nodes and 64 levels of nesting.
    #[schema(
        example = "mean(square(input - target)) + 0.1 * huber_loss(input, target, delta=0.5)"
    )]
    pub expression: String,
    /// The tensors the expression names: an object from name (letters, digits and `_`, not
    /// starting with a digit) to a tensor in any of the three encodings. Integer tensors are
    /// converted to the compute dtype (built-in losses read class indices back exactly).
    #[schema(value_type = std::collections::BTreeMap<String, crate::wire::Tensor>)]
    pub tensors: Tensors,
    /// The names of the tensors to differentiate: the response's `grad` holds the gradient
    /// of the result (of its sum, when it is not a scalar) with respect to each, with its
    /// shape. A tensor the expression does not use gets zeros.
    #[serde(default)]
    #[schema(default = json!([]))]
    pub grad: Vec<String>,
    /// The precision the expression is computed in.
    #[serde(default)]
    #[schema(default = "float64")]
    pub dtype: Dtype,
    /// How tensors in the response are written.
    #[serde(default)]
    #[schema(default = "json")]
    pub encoding: Encoding,
}

/// What the decode error mapping needs to know of the custom route: `tensors` holds tensors.
const TENSORS: &[TensorArg] = &[TensorArg {
    name: "tensors",
    kind: TensorKind::FloatOrInteger,
    required: true,
    differentiable: true,
    shapes: "any",
}];

/// Computes a custom loss.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    crate::routes::require_json(&headers)?;
    use crate::memory::{self, estimate};
    // Waiting for memory (before the body is read) is bounded by the time limit too.
    let deadline = state.pool.deadline();
    let family = estimate::Family::Heavy;
    let (bytes, mut held) =
        match memory::read_admitted(&state, &headers, body, family, deadline).await {
            Ok(read) => read,
            Err(refused) => return Ok(refused),
        };
    // The time limit for computing starts once the body has arrived, as without a budget.
    let deadline = state.pool.deadline();
    let mut budget = state.budget();
    let limits = state.config.expression_limits();
    let len = bytes.len() as u64;
    let small = len <= crate::compute::SMALL_BODY as u64;
    let (job, decoded, cost) = state
        .pool
        .run_small(deadline, small, move || {
            let start = budget.elements;
            let (job, cost) = prepare_costed(&bytes, &mut budget, None, &limits)?;
            Ok((job, (start - budget.elements) as u64, cost as u64))
        })
        .await?;
    // The expression's intermediates (values, and gradients when asked) on top of the decoded
    // tensors: reserved before they are computed.
    let need = family
        .bytes(len, decoded)
        .saturating_add(cost.saturating_mul(2 * estimate::ELEMENT));
    if need > held.bytes() {
        if let Err(r) = held.grow(need - held.bytes(), deadline).await {
            return Ok(memory::refusal(r, need, state.memory.capacity()));
        }
    } else {
        held.shrink_to(need);
    }
    let out = state.pool.run_until(deadline, false, job).await?;
    let mut res = out.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(memory::HeldBody::wrap(res, held))
}

/// Decodes a custom job of a batch (the `"loss"` key hidden).
pub fn prepare_job(job: &[u8], budget: &mut Budget, limits: &Limits) -> Result<Job, ApiError> {
    prepare(job, budget, Some("loss"), limits)
}

/// Decodes, parses and checks a custom request (hiding the top-level key `skip`, if any),
/// spending the element budget on its tensors; the returned job computes it.
///
/// The expression's cost (the elements every operation touches, from the statically inferred
/// shapes) must not exceed the element budget as it was before the tensors were decoded.
pub fn prepare(
    body: &[u8],
    budget: &mut Budget,
    skip: Option<&str>,
    limits: &Limits,
) -> Result<Job, ApiError> {
    prepare_costed(body, budget, skip, limits).map(|(job, _)| job)
}

/// [`prepare`], with the expression's cost (the elements its operations read or write).
pub fn prepare_costed(
    body: &[u8],
    budget: &mut Budget,
    skip: Option<&str>,
    limits: &Limits,
) -> Result<(Job, usize), ApiError> {
    let start = *budget;
    let req: CustomRequest = match crate::losses::decode_fields(body, budget, TENSORS, skip) {
        Ok(r) => r,
        // Too large but otherwise valid JSON: a broken expression still gets its 422.
        Err(e) if e.code == Code::PayloadTooLarge => {
            return Err(expression_problem(body, limits).unwrap_or(e));
        }
        Err(e) => return Err(e),
    };
    crate::metrics::global().add_elements(start.elements - budget.elements);
    let CustomRequest {
        expression,
        tensors: Tensors(tensors),
        grad,
        dtype,
        encoding,
    } = req;
    for (name, _) in &tensors {
        check_name(name)?;
    }
    let index: HashMap<&str, usize> = tensors
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let mut wanted: Vec<usize> = Vec::with_capacity(grad.len());
    let mut seen = vec![false; tensors.len()];
    for (i, g) in grad.iter().enumerate() {
        let Some(&k) = index.get(g.as_str()) else {
            return Err(ApiError::option(
                "grad",
                format!(
                    "grad names `{g}`, which is not one of the tensors ({})",
                    list_names(tensors.iter().map(|(n, _)| n.as_str()))
                ),
            )
            .at(format!("/grad/{i}")));
        };
        if std::mem::replace(&mut seen[k], true) {
            return Err(ApiError::option("grad", format!("grad names `{g}` twice"))
                .at(format!("/grad/{i}")));
        }
        wanted.push(k);
    }
    let ast = parse::parse(&expression, limits)?;
    let shapes: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone()))
        .collect();
    let graph = compile::compile(&expression, &ast, &shapes, &wanted)?;
    if graph.cost > start.elements {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "evaluating the expression touches about {} elements (the sum over its operations \
                 of the elements each reads or writes), more than the element limit of {}",
                graph.cost, start.elements
            ),
        ));
    }
    let rank = start.rank;
    let cost = graph.cost;
    let job: Job = Box::new(move || {
        let data: Vec<Tensor> = tensors.into_iter().map(|(_, t)| t).collect();
        let names: Vec<String> = grad;
        match dtype {
            Dtype::Float64 => {
                let out = eval::run::<f64>(&graph, &expression, data, &wanted, rank)?;
                Ok(respond(&out, &names, encoding))
            }
            Dtype::Float32 => {
                let out = eval::run::<f32>(&graph, &expression, data, &wanted, rank)?;
                Ok(respond(&out, &names, encoding))
            }
        }
    });
    Ok((job, cost))
}

/// The expression's own problem, if it has one, for a request that is too large: only its
/// syntax and limits can be checked without the tensors.
fn expression_problem(body: &[u8], limits: &Limits) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct Head {
        expression: Option<String>,
    }
    let head: Head = serde_json::from_slice(body).ok()?;
    parse::parse(&head.expression?, limits)
        .err()
        .map(ExprError::into_api)
}

/// Names for a message: the first twenty, and how many more.
pub(crate) fn list_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = names.len();
    if n == 0 {
        return "none".into();
    }
    let first: Vec<&str> = names.take(20).collect();
    let more = n - first.len();
    let mut out = first.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// Refuses tensor names the expression could not refer to.
fn check_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let pointer = format!("/tensors/{}", name.replace('~', "~0").replace('/', "~1"));
    if !ok {
        return Err(ApiError::new(
            Code::InvalidOption,
            format!(
                "tensor name `{name}` cannot appear in an expression: use letters, digits and `_`, \
                 not starting with a digit"
            ),
        )
        .at(pointer));
    }
    if parse::RESERVED.contains(&name) {
        return Err(ApiError::new(
            Code::InvalidOption,
            format!("tensor name `{name}` is reserved: in an expression it is a literal"),
        )
        .at(pointer));
    }
    Ok(())
}

/// The result of an evaluation: the value, the gradients asked for and the warnings.
#[derive(Debug)]
pub struct Output<T> {
    /// The expression's value.
    pub value: ArrayD<T>,
    /// One gradient per name of `grad`, in that order.
    pub grads: Vec<ArrayD<T>>,
    /// Warnings of the built-in losses called, each once.
    pub warnings: Vec<String>,
}

/// Writes the 200 response body, as the other loss routes do.
pub fn respond<T: WireFloat>(out: &Output<T>, names: &[String], encoding: Encoding) -> Vec<u8> {
    let grads = names.iter().map(String::as_str).zip(&out.grads);
    crate::losses::write_response(&out.value, grads, &out.warnings, encoding)
}

/// The catalog entry of `custom`: the language, its functions and the losses it can call.
pub fn catalog_entry() -> Option<serde_json::Value> {
    static CATALOG: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(docs::catalog);
    Some(CATALOG.clone())
}

/// The OpenAPI path item and the schemas it uses.
pub fn openapi() -> Option<(
    utoipa::openapi::path::PathItem,
    Vec<crate::losses::NamedSchema>,
)> {
    Some(docs::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            elements: 1000,
            rank: 16,
        }
    }

    fn answer(job: Job) -> serde_json::Value {
        serde_json::from_slice(&job().unwrap()).unwrap()
    }

    #[test]
    fn a_batch_job_decodes_with_its_loss_key_hidden() {
        let job = br#"{"loss": "custom", "expression": "sum(x * x)", "tensors": {"x": [1, 2]}, "grad": ["x"]}"#;
        let mut b = budget();
        let out = answer(prepare_job(job, &mut b, &Limits::default()).unwrap());
        assert_eq!(
            out,
            serde_json::json!({"loss": 5.0, "shape": [], "dtype": "float64", "grad": {"x": [2.0, 4.0]}})
        );
        assert_eq!(
            b.elements, 998,
            "the tensors' elements are spent from the shared budget"
        );
        let e = prepare_job(
            br#"{"loss": "custom", "expression": "x", "tensors": {}, "extra": 1}"#,
            &mut budget(),
            &Limits::default(),
        )
        .err()
        .unwrap();
        assert_eq!(
            (e.code, e.pointer.as_deref()),
            (Code::InvalidOption, Some("/extra"))
        );
    }

    #[test]
    fn limits_are_parameters() {
        let body = br#"{"expression": "x + x + x", "tensors": {"x": 1}}"#;
        let tight = Limits {
            max_nodes: 3,
            ..Limits::default()
        };
        let e = prepare(body, &mut budget(), None, &tight).err().unwrap();
        assert_eq!(e.code, Code::InvalidExpression);
        assert!(e.detail.contains("node limit"));
        assert!(prepare(body, &mut budget(), None, &Limits::default()).is_ok());
    }

    #[test]
    fn tensor_names_must_be_usable_in_expressions() {
        assert!(check_name("input_2").is_ok());
        assert!(check_name("_x").is_ok());
        for bad in ["2x", "a-b", "", "é", "None", "inf"] {
            assert_eq!(
                check_name(bad).unwrap_err().code,
                Code::InvalidOption,
                "{bad}"
            );
        }
    }
}
