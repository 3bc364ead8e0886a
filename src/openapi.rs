//! The OpenAPI 3.1 document, generated from the code: the static routes through
//! `#[utoipa::path]`, and one `POST /v1/losses/{name}` operation per registered loss from the
//! registry (its request schema, examples, and every error response).
//!
//! `lossd openapi` prints it; `openapi/openapi.json` is that output, committed, and a test
//! fails when the two differ. `GET /openapi.json` serves the same bytes.

use std::sync::LazyLock;

use utoipa::OpenApi;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::Ref;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, Required};

use crate::error::{Code, Problem};
use crate::losses::{self, Category, Entry};

/// A tensor in a response: a number (strings for non-finite values) when 0-d, else nested
/// arrays, or a `{shape, dtype, base64}` object with `encoding: "base64"`.
pub struct TensorOut;

impl utoipa::PartialSchema for TensorOut {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let non_finite = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["NaN", "Infinity", "-Infinity"]))
        };
        let element = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(non_finite())
            .item(ArrayBuilder::new());
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(non_finite())
            .item(ArrayBuilder::new().items(element))
            .item(
                ObjectBuilder::new()
                    .property(
                        "shape",
                        ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Integer)),
                    )
                    .property(
                        "dtype",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["float32", "float64"])),
                    )
                    .property("base64", ObjectBuilder::new().schema_type(Type::String))
                    .required("shape")
                    .required("dtype")
                    .required("base64"),
            )
            .description(Some(
                "A number for a 0-d tensor (\"NaN\", \"Infinity\", \"-Infinity\" for non-finite \
                 values); nested arrays; or, with `encoding: \"base64\"`, a {shape, dtype, base64} object.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TensorOut {}

// The service writes this by hand (`losses::respond`); the type documents it.
/// The answer of a loss route: the loss, its shape and dtype, gradients and warnings.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LossResponse {
    /// The loss: a number for a 0-d result (`mean`, `sum`), else a tensor.
    pub loss: TensorOut,
    /// The shape of `loss` (`[]` for `mean` and `sum`).
    pub shape: Vec<usize>,
    /// The precision the loss was computed in.
    pub dtype: losses::Dtype,
    /// Only with `grad: true`: the gradient of the output (of its sum, for `reduction:
    /// "none"`) for each differentiable tensor argument, each with that argument's shape.
    pub grad: Option<std::collections::BTreeMap<String, TensorOut>>,
    /// Only when PyTorch would have warned: the warnings, as sentences.
    pub warnings: Option<Vec<String>>,
}

/// A batch request.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchRequest {
    /// The jobs: each is the request body of `POST /v1/losses/{loss}` plus `"loss"`, the loss
    /// to compute. At most the job limit (1,024 by default); all jobs' tensors together count
    /// against the element limit.
    #[schema(value_type = Vec<Object>, example = json!([
        {"loss": "mse_loss", "input": [1, 2], "target": [1, 3]},
        {"loss": "l1_loss", "input": [[0.1, 2.0]], "target": [[0.0, 1.0]], "grad": true}
    ]))]
    pub jobs: Vec<serde_json::Value>,
}

/// One job's result.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchResult {
    /// Whether the job computed.
    pub ok: bool,
    /// When `ok`: what `POST /v1/losses/{loss}` would have answered.
    pub result: Option<LossResponse>,
    /// When not `ok`: the job's problem (its `pointer` starts with `/jobs/{index}`).
    pub error: Option<Problem>,
}

/// A batch response: one result per job, in job order.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchResponse {
    /// The results, in job order.
    pub results: Vec<BatchResult>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lossd",
        description = "PyTorch's torch.nn losses and their gradients over HTTP.\n\n\
            Every loss of torch.nn (PyTorch 2.15) has its own route, `POST /v1/losses/{name}`, \
            named as in `torch.nn.functional`, with PyTorch's options and defaults. Tensors are \
            nested JSON arrays, `{shape, data}` objects, or `{shape, dtype, base64}` objects of \
            raw little-endian bytes; non-finite values travel as the strings `\"NaN\"`, \
            `\"Infinity\"` and `\"-Infinity\"`. `grad: true` returns the gradient with respect \
            to each differentiable tensor argument. Every error is an RFC 9457 problem document \
            (`application/problem+json`) with a `code` and, when a field is at fault, a JSON \
            Pointer to it."
    ),
    paths(
        crate::routes::catalog::list,
        crate::routes::batch::batch,
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::metrics::metrics,
    ),
    components(schemas(
        Problem,
        Code,
        TensorOut,
        LossResponse,
        BatchRequest,
        BatchResult,
        BatchResponse
    ))
)]
struct Static;

/// Builds the whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Static::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    for e in losses::registry() {
        let (name, schema, refs) = (e.schema)();
        components.schemas.insert(name, schema);
        for (n, s) in refs {
            components.schemas.insert(n, s);
        }
    }
    // Each loss's path answers POST (compute) and GET (its catalog entry); documenting both
    // keeps the `Allow` header and the document in agreement.
    for e in losses::registry() {
        let mut item = PathItem::new(HttpMethod::Post, operation(e));
        item.get = Some(catalog_operation(e.info.name));
        doc.paths
            .paths
            .insert(format!("/v1/losses/{}", e.info.name), item);
    }
    if let Some((mut item, schemas)) = crate::custom::openapi() {
        item.get = Some(catalog_operation("custom"));
        doc.paths
            .paths
            .insert("/v1/losses/custom".to_string(), item);
        let components = doc.components.get_or_insert_with(Default::default);
        for (n, s) in schemas {
            components.schemas.insert(n, s);
        }
    }
    doc.paths.paths.extend(crate::oip::openapi::paths());
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.extend(crate::oip::openapi::schemas());
    // API keys (docs/access.md): a bearer key, needed only when the server is run with keys
    // (hence the empty alternative), and never by the health checks.
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "An API key, as `Authorization: Bearer <key>`: needed when lossd runs with \
             `--api-keys` or `--api-keys-file`; /healthz, /readyz, /docs and /openapi.json \
             never need one.",
        ))
        .build();
    components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
    for path in ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"] {
        if let Some(op) = doc.paths.paths.get_mut(path).and_then(|p| p.get.as_mut()) {
            op.security = Some(Vec::new());
        }
    }
    let tag = |name: &str, text: &str| TagBuilder::new().name(name).description(Some(text)).build();
    doc.tags = Some(vec![
        tag(
            Category::Regression.tag(),
            "L1, MSE, smooth L1 and Huber losses.",
        ),
        tag(
            Category::Classification.tag(),
            "Cross-entropy, NLL, binary cross-entropy and the margin losses.",
        ),
        tag(
            Category::Probabilistic.tag(),
            "KL divergence, Poisson and Gaussian NLL, CTC.",
        ),
        tag(
            Category::RankingAndEmbedding.tag(),
            "Margin ranking, hinge, cosine and triplet losses.",
        ),
        tag(
            "custom",
            "A loss written as an expression over tensors, with gradients; calls the built-in losses.",
        ),
        tag("batch", "Many loss jobs in one request."),
        tag(
            "catalog",
            "What the service computes, generated from the same registry as the routes.",
        ),
        tag("service", "Health, readiness and metrics."),
        tag(crate::oip::openapi::TAG, crate::oip::openapi::TAG_TEXT),
    ]);
    doc
}

/// The document as served and committed: pretty JSON and a final newline.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let mut s = document()
            .to_pretty_json()
            .expect("the document serializes");
        s.push('\n');
        s
    });
    &JSON
}

/// The `GET /v1/losses/{name}` operation: one loss's catalog entry.
fn catalog_operation(name: &str) -> utoipa::openapi::path::Operation {
    OperationBuilder::new()
        .operation_id(Some(format!("{name}_catalog")))
        .summary(Some(format!("Catalog entry of {name}")))
        .description(Some(format!(
            "What `POST /v1/losses/{name}` takes and returns: PyTorch module and functional \
             names, category, formula, tensor arguments (kind, shapes, differentiable), options \
             with types, defaults and allowed values, reductions, what `reduction: \"none\"` \
             returns, gradients, and where lossd differs from PyTorch."
        )))
        .tag("catalog")
        .responses(
            ResponsesBuilder::new()
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("The catalog entry")
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(
                                    utoipa::openapi::schema::ObjectBuilder::new()
                                        .schema_type(utoipa::openapi::schema::Type::Object),
                                ))
                                .build(),
                        ),
                )
                .build(),
        )
        .build()
}

/// The `POST /v1/losses/{name}` operation of one loss.
fn operation(e: &Entry) -> utoipa::openapi::path::Operation {
    let info = e.info;
    let (schema_name, _, _) = (e.schema)();
    let mut description = format!(
        "**{module}** (`torch.nn.functional.{name}`). {summary}\n\n**Formula:** {formula}\n\n**Tensor arguments:**\n",
        module = info.module,
        name = info.name,
        summary = info.summary,
        formula = info.formula,
    );
    for t in info.tensors {
        description.push_str(&format!(
            "- `{}` ({}{}{}): {}\n",
            t.name,
            match t.kind {
                losses::TensorKind::Float => "float",
                losses::TensorKind::Integer => "integer",
                losses::TensorKind::FloatOrInteger => "float or integer",
            },
            if t.required {
                ", required"
            } else {
                ", optional"
            },
            if t.differentiable {
                ", differentiable"
            } else {
                ""
            },
            t.shapes
        ));
    }
    description.push_str(&format!(
        "\n**Reductions:** {}.",
        info.reductions
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    description.push_str(&format!(
        "\n\n**With `reduction: \"none\"`:** {}\n\n**Gradients:** {}",
        info.unreduced, info.gradient
    ));
    if !info.notes.is_empty() {
        description.push_str(&format!("\n\n**Notes:** {}", info.notes));
    }
    if !info.differences.is_empty() {
        description.push_str(&format!(
            "\n\n**Differs from PyTorch** (docs/differences.md): {}",
            info.differences
        ));
    }
    let body = request_body(schema_name, (e.examples)());
    OperationBuilder::new()
        .operation_id(Some(info.name))
        .summary(Some(format!("{} ({})", info.name, info.module)))
        .description(Some(description))
        .tag(info.category.tag())
        .request_body(Some(body))
        .responses(responses())
        .build()
}

/// The responses every loss route can give.
fn responses() -> utoipa::openapi::Responses {
    ResponsesBuilder::new()
        .response(
            "200",
            ResponseBuilder::new()
                .description("The loss, its shape and dtype; gradients with `grad: true`; PyTorch's warnings when it would have warned.")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("LossResponse")))
                        .build(),
                )
                .build(),
        )
        .response("400", problem("`invalid_json`: the body is not JSON; `invalid_body`: a compressed body does not decode."))
        .response("401", problem("`unauthorized`: API keys are required and the request has no valid `Authorization: Bearer` key."))
        .response("404", problem("`unknown_loss`: no loss of that name."))
        .response("413", problem("`payload_too_large`: the body or the element count is over the limit."))
        .response("415", problem("`unsupported_media_type`: the content type is not `application/json`, or the content encoding is not gzip, deflate, br or zstd."))
        .response(
            "422",
            problem(
                "`invalid_tensor` (ragged arrays, non-numbers, bad base64, shape and data disagree, a fraction where an integer is needed), \
                 `shape_mismatch` (tensors PyTorch would refuse to combine), \
                 `invalid_option` (unknown or missing field, a bad reduction, dtype or option value), \
                 `invalid_value` (values PyTorch rejects).",
            ),
        )
        .response(
            "503",
            problem("`overloaded` (the compute queue is full; `Retry-After` says when to retry) or `timeout` (past the time limit)."),
        )
        .build()
}

/// The request body of a computing route: the schema called `schema` and the examples.
pub fn request_body(schema: String, examples: Vec<losses::Example>) -> RequestBody {
    // Example maps are sorted by key; a numeric prefix keeps the route's own order, so the
    // first example (the one Swagger UI fills in) is the tutorial one.
    let examples = examples.into_iter().enumerate().map(|(i, x)| {
        (
            format!("{}-{}", i + 1, x.name),
            ExampleBuilder::new()
                .summary(x.summary)
                .value(Some(x.body))
                .build(),
        )
    });
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .examples_from_iter(examples)
                .build(),
        )
        .build()
}

/// A 200 response of a loss route (a [`LossResponse`]), described by `text`.
pub fn answer(text: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(text)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("LossResponse")))
                .build(),
        )
        .build()
}

/// An error response (a [`Problem`]), described by `text`.
pub fn problem(text: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(text)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}
