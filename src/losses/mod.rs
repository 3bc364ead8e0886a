//! One file per loss: its request type (serde + OpenAPI schema), its catalog entry ([`Info`]:
//! names, formula, tensor arguments, the shape of its unreduced output and the layout of its
//! gradients), its examples and the call into its kernel; and [`registry`], the one list that
//! drives routes, the catalog, the OpenAPI document, the loss reference (`docs/losses.md`)
//! and the built-in losses of custom expressions alike.
//!
//! Adding a loss takes four things and touches nothing else:
//!
//! 1. its kernel in `kernels/`;
//! 2. a file here with a [`loss_request!`] struct implementing [`Loss`], whose [`Info`] states
//!    every fact about the loss (a missing one does not compile), with what it shares with
//!    other losses taken from [`shape`], [`TensorArg`]'s constructors or a sibling's file;
//! 3. one line in [`registry`];
//! 4. tests: unit tests beside the kernel, conformance cases through HTTP; the registry-wide
//!    tests (examples run, `reduction: "none"` shapes agree with the kernel, the committed
//!    OpenAPI document and `docs/losses.md` are current) cover the rest; regenerate those two
//!    files as their tests say.

pub mod args;
pub mod binary_cross_entropy;
pub mod binary_cross_entropy_with_logits;
pub mod cosine_embedding_loss;
pub mod cross_entropy;
pub mod ctc_loss;
pub mod gaussian_nll_loss;
pub mod hinge_embedding_loss;
pub mod huber_loss;
pub mod kl_div;
pub mod l1_loss;
pub mod linear_cross_entropy;
pub mod margin_ranking_loss;
pub mod mse_loss;
pub mod multi_margin_loss;
pub mod multilabel_margin_loss;
pub mod multilabel_soft_margin_loss;
pub mod nll_loss;
pub mod poisson_nll_loss;
pub mod shape;
pub mod smooth_l1_loss;
pub mod soft_margin_loss;
pub mod triplet_margin_loss;
pub mod triplet_margin_with_distance_loss;

use std::sync::LazyLock;

use lossd_kernels::LossOutput;
use lossd_kernels::ndarray::ArrayD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

pub use args::{classes, float, float_opt, index, pair, triple, view, weighted};
pub use shape::{ArgShape, Layout, NoneShape};

use crate::error::{ApiError, Code};
use crate::wire::ser::{Encoding, WireFloat, write_shape, write_str, write_tensor};
use crate::wire::skip::SkipKey;
use crate::wire::{Budget, fast};

/// The precision a loss is computed in (`dtype` in a request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Double precision (the default).
    #[default]
    Float64,
    /// Single precision: every tensor is rounded to float32 and the loss computed in float32.
    Float32,
}

/// PyTorch's `reduction` (`none`, `mean`, `sum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// The unreduced loss tensor.
    None,
    /// The mean (PyTorch's denominator for the loss).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

impl From<Reduction> for lossd_kernels::Reduction {
    fn from(r: Reduction) -> Self {
        match r {
            Reduction::None => Self::None,
            Reduction::Mean => Self::Mean,
            Reduction::Sum => Self::Sum,
        }
    }
}

/// The category of a loss, as in the catalog and the OpenAPI tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// `l1_loss`, `mse_loss`, `smooth_l1_loss`, `huber_loss`.
    Regression,
    /// Cross-entropy, NLL, BCE and the margin losses.
    Classification,
    /// KL divergence, Poisson and Gaussian NLL, CTC.
    Probabilistic,
    /// Margin ranking, hinge, cosine and triplet losses.
    RankingAndEmbedding,
}

impl Category {
    /// The tag name used in the OpenAPI document.
    pub fn tag(self) -> &'static str {
        match self {
            Category::Regression => "regression",
            Category::Classification => "classification",
            Category::Probabilistic => "probabilistic",
            Category::RankingAndEmbedding => "ranking and embedding",
        }
    }
}

/// Whether a tensor argument holds floats or integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// Floats (JSON integers are accepted and converted).
    Float,
    /// Integers (class indices, CTC targets and lengths).
    Integer,
    /// Either: floats for probability targets, integers for class indices.
    FloatOrInteger,
}

/// A tensor argument of a loss, for the catalog.
#[derive(Clone, Copy, Debug)]
pub struct TensorArg {
    /// The field name, as the `torch.nn.functional` argument.
    pub name: &'static str,
    /// Float or integer.
    pub kind: TensorKind,
    /// Whether the request must have it.
    pub required: bool,
    /// Whether `grad: true` returns a gradient for it.
    pub differentiable: bool,
    /// The shapes accepted, in PyTorch's notation.
    pub shapes: &'static str,
}

/// What the catalog says of a loss beyond its request schema.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// The `torch.nn.functional` name; the route is `/v1/losses/{name}`.
    pub name: &'static str,
    /// The `torch.nn` module (`MSELoss`).
    pub module: &'static str,
    /// The category.
    pub category: Category,
    /// One sentence on what the loss is for.
    pub summary: &'static str,
    /// The formula, in plain text.
    pub formula: &'static str,
    /// What a user should know beyond the formula: validation, PyTorch's quirks lossd keeps.
    pub notes: &'static str,
    /// What `reduction: "none"` returns, in words (the rule `none_shape` computes).
    pub unreduced: &'static str,
    /// The gradient `grad: true` returns for each differentiable argument (of the sum of the
    /// output, for `reduction: "none"`), before the reduction's scaling.
    pub gradient: &'static str,
    /// Where lossd deliberately differs from PyTorch for this loss; empty when it does not.
    pub differences: &'static str,
    /// The tensor arguments, in PyTorch's order.
    pub tensors: &'static [TensorArg],
    /// The reductions accepted.
    pub reductions: &'static [&'static str],
    /// The output shape with `reduction: "none"`, from the tensor arguments' shapes and the
    /// options (the kernel's rule), or why the kernel would refuse them; custom expressions
    /// infer shapes with it before computing.
    pub none_shape: NoneShape,
    /// How the elements of the tensor arguments reach the unreduced output, for custom
    /// expressions' backward pass.
    pub layout: Layout,
}

impl TensorArg {
    /// A required float tensor with a gradient.
    pub const fn float(name: &'static str, shapes: &'static str) -> Self {
        TensorArg {
            name,
            kind: TensorKind::Float,
            required: true,
            differentiable: true,
            shapes,
        }
    }

    /// A required integer tensor (indices, lengths): never differentiable.
    pub const fn integer(name: &'static str, shapes: &'static str) -> Self {
        TensorArg {
            kind: TensorKind::Integer,
            differentiable: false,
            ..Self::float(name, shapes)
        }
    }

    /// A required tensor of floats or integers (the reading depends on its shape), with a
    /// gradient when it holds floats.
    pub const fn float_or_integer(name: &'static str, shapes: &'static str) -> Self {
        TensorArg {
            kind: TensorKind::FloatOrInteger,
            ..Self::float(name, shapes)
        }
    }

    /// The same argument, optional.
    pub const fn optional(self) -> Self {
        TensorArg {
            required: false,
            ..self
        }
    }

    /// The same argument, without a gradient.
    pub const fn no_grad(self) -> Self {
        TensorArg {
            differentiable: false,
            ..self
        }
    }
}

/// PyTorch's three reductions, which every loss but `kl_div` accepts.
pub const REDUCTIONS: &[&str] = &["none", "mean", "sum"];

impl Info {
    /// Whether `field` is one of the tensor arguments.
    pub fn is_tensor(&self, field: &str) -> bool {
        self.tensors.iter().any(|t| t.name == field)
    }
}

/// The fields every loss request has besides its own arguments.
#[derive(Clone, Copy, Debug)]
pub struct Common {
    /// The compute precision.
    pub dtype: Dtype,
    /// Whether to return gradients.
    pub grad: bool,
    /// How to write tensors in the response.
    pub encoding: Encoding,
}

/// A named example request body, for the OpenAPI document (and tested to run).
#[derive(Clone, Debug)]
pub struct Example {
    /// A short key (`"tutorial"`).
    pub name: &'static str,
    /// One line on what it shows.
    pub summary: &'static str,
    /// The request body.
    pub body: serde_json::Value,
}

impl Example {
    /// An example called `name`, described by `summary`.
    pub fn new(name: &'static str, summary: &'static str, body: serde_json::Value) -> Self {
        Example {
            name,
            summary,
            body,
        }
    }
}

/// The fields every request has, which [`loss_request!`] declares and implements.
pub trait Request {
    /// `dtype`, `grad` and `encoding` of this request.
    fn common(&self) -> Common;
}

/// A loss the service computes: a request type that decodes itself and calls its kernel.
pub trait Loss: Request + DeserializeOwned + utoipa::ToSchema + Send + 'static {
    /// The catalog entry.
    const INFO: Info;

    /// Computes the loss in precision `T`, with gradients when `grad`.
    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError>;

    /// Example request bodies; the first is the one Swagger UI shows.
    fn examples() -> Vec<Example>;
}

/// Declares a loss request struct: the given fields plus `reduction`, `dtype`, `grad` and
/// `encoding`, unknown fields rejected, and its [`Request`] implementation.
#[macro_export]
macro_rules! loss_request {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
        reduction: $red:ty;
    ) => {
        #[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// How the unreduced loss is reduced.
            #[serde(default)]
            #[schema(default = "mean")]
            pub reduction: $red,
            /// The precision the loss is computed in.
            #[serde(default)]
            #[schema(default = "float64")]
            pub dtype: $crate::losses::Dtype,
            /// Also return the gradient of the output (of its sum, for `reduction: "none"`)
            /// with respect to each differentiable tensor argument.
            #[serde(default)]
            #[schema(default = false)]
            pub grad: bool,
            /// How tensors in the response are written.
            #[serde(default)]
            #[schema(default = "json")]
            pub encoding: $crate::wire::ser::Encoding,
        }

        impl $crate::losses::Request for $name {
            fn common(&self) -> $crate::losses::Common {
                $crate::losses::Common {
                    dtype: self.dtype,
                    grad: self.grad,
                    encoding: self.encoding,
                }
            }
        }
    };
}

/// A decoded request, ready to compute: returns the response body.
pub type Job = Box<dyn FnOnce() -> Result<Vec<u8>, ApiError> + Send>;

/// Decodes a request body (hiding the top-level key given, if any) into a [`Job`], spending
/// the element budget.
pub type Prepare = fn(&[u8], &mut Budget, Option<&str>) -> Result<Job, ApiError>;

/// A named schema.
pub type NamedSchema = (String, RefOr<Schema>);

/// A request schema's name and schema, and the schemas it refers to.
pub type SchemaFn = fn() -> (String, RefOr<Schema>, Vec<NamedSchema>);

/// A registered loss: its catalog entry and its monomorphised entry points.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The catalog entry.
    pub info: &'static Info,
    /// Decodes a request body into a ready job.
    pub prepare: Prepare,
    /// The request schema.
    pub schema: SchemaFn,
    /// Example request bodies.
    pub examples: fn() -> Vec<Example>,
    /// Decodes a request body and computes it, returning the kernel's output itself (for
    /// callers that compose losses, such as custom expressions).
    pub eval: fn(&[u8], &mut Budget) -> Result<Computed, ApiError>,
}

/// A kernel's output in the precision the request asked for.
#[derive(Debug)]
pub enum Computed {
    /// Computed in float64.
    F64(LossOutput<f64>),
    /// Computed in float32.
    F32(LossOutput<f32>),
}

impl Entry {
    /// Decodes and computes one request body.
    pub fn run(&self, body: &[u8], mut budget: Budget) -> Result<Vec<u8>, ApiError> {
        (self.prepare)(body, &mut budget, None)?()
    }
}

fn entry<L: Loss>() -> Entry {
    Entry {
        info: &L::INFO,
        prepare: prepare::<L>,
        schema: || {
            let mut refs = Vec::new();
            L::schemas(&mut refs);
            (L::name().into_owned(), L::schema(), refs)
        },
        examples: L::examples,
        eval: eval::<L>,
    }
}

fn eval<L: Loss>(body: &[u8], budget: &mut Budget) -> Result<Computed, ApiError> {
    let req: L = decode(body, budget, &L::INFO, None)?;
    let common = req.common();
    Ok(match common.dtype {
        Dtype::Float64 => Computed::F64(req.compute::<f64>(common.grad)?),
        Dtype::Float32 => Computed::F32(req.compute::<f32>(common.grad)?),
    })
}

/// Every loss the service computes, in catalog order.
pub fn registry() -> &'static [Entry] {
    static REGISTRY: LazyLock<Vec<Entry>> = LazyLock::new(|| {
        vec![
            entry::<l1_loss::L1Loss>(),
            entry::<mse_loss::MseLoss>(),
            entry::<smooth_l1_loss::SmoothL1Loss>(),
            entry::<huber_loss::HuberLoss>(),
            entry::<cross_entropy::CrossEntropy>(),
            entry::<nll_loss::NllLoss>(),
            entry::<binary_cross_entropy::BinaryCrossEntropy>(),
            entry::<binary_cross_entropy_with_logits::BinaryCrossEntropyWithLogits>(),
            entry::<multi_margin_loss::MultiMarginLoss>(),
            entry::<multilabel_margin_loss::MultilabelMarginLoss>(),
            entry::<multilabel_soft_margin_loss::MultilabelSoftMarginLoss>(),
            entry::<soft_margin_loss::SoftMarginLoss>(),
            entry::<linear_cross_entropy::LinearCrossEntropy>(),
            entry::<kl_div::KlDiv>(),
            entry::<poisson_nll_loss::PoissonNllLoss>(),
            entry::<gaussian_nll_loss::GaussianNllLoss>(),
            entry::<ctc_loss::CtcLoss>(),
            entry::<margin_ranking_loss::MarginRankingLoss>(),
            entry::<hinge_embedding_loss::HingeEmbeddingLoss>(),
            entry::<cosine_embedding_loss::CosineEmbeddingLoss>(),
            entry::<triplet_margin_loss::TripletMarginLoss>(),
            entry::<triplet_margin_with_distance_loss::TripletMarginWithDistanceLoss>(),
        ]
    });
    &REGISTRY
}

/// The registered loss called `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    registry().iter().find(|e| e.info.name == name)
}

fn prepare<L: Loss>(body: &[u8], budget: &mut Budget, skip: Option<&str>) -> Result<Job, ApiError> {
    let before = budget.elements;
    let req: L = decode(body, budget, &L::INFO, skip)?;
    crate::metrics::global().add_elements(before - budget.elements);
    Ok(Box::new(move || {
        let common = req.common();
        match common.dtype {
            Dtype::Float64 => Ok(respond(&req.compute::<f64>(common.grad)?, common.encoding)),
            Dtype::Float32 => Ok(respond(&req.compute::<f32>(common.grad)?, common.encoding)),
        }
    }))
}

/// Deterministic example data: nested arrays of `shape` with values in about [-2, 2], four
/// decimals, different for each `seed` (like `torch.randn(shape)` in a tutorial).
pub fn sample(shape: &[usize], seed: u64) -> serde_json::Value {
    fn build(shape: &[usize], state: &mut u64) -> serde_json::Value {
        match shape.split_first() {
            None => {
                // SplitMix64, then a sum of uniforms shaped like a normal sample.
                let mut u = || {
                    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = *state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
                };
                let v = (u() + u() + u() - 1.5) * 2.0;
                serde_json::json!((v * 1e4).round() / 1e4)
            }
            Some((&n, rest)) => (0..n).map(|_| build(rest, state)).collect(),
        }
    }
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    build(shape, &mut state)
}

/// Writes the 200 response body of a loss.
pub fn respond<T: WireFloat>(out: &LossOutput<T>, encoding: Encoding) -> Vec<u8> {
    let grads = out.grads.iter().map(|(name, g)| (*name, g));
    write_response(&out.loss, grads, &out.warnings, encoding)
}

/// Writes a 200 response body: the loss, its shape and dtype, the gradients (when there are
/// any) and the warnings (when there are any). Custom expressions answer in the same form.
pub fn write_response<'a, T: WireFloat + 'a>(
    loss: &ArrayD<T>,
    grads: impl ExactSizeIterator<Item = (&'a str, &'a ArrayD<T>)>,
    warnings: &[String],
    encoding: Encoding,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"{\"loss\":");
    write_tensor(&mut buf, loss, encoding);
    buf.extend_from_slice(b",\"shape\":");
    write_shape(&mut buf, loss.shape());
    buf.extend_from_slice(b",\"dtype\":\"");
    buf.extend_from_slice(T::DTYPE.as_bytes());
    buf.push(b'"');
    if grads.len() > 0 {
        buf.extend_from_slice(b",\"grad\":{");
        for (i, (name, g)) in grads.enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(&mut buf, name);
            buf.push(b':');
            write_tensor(&mut buf, g, encoding);
        }
        buf.push(b'}');
    }
    if !warnings.is_empty() {
        buf.extend_from_slice(b",\"warnings\":[");
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(&mut buf, w);
        }
        buf.push(b']');
    }
    buf.push(b'}');
    buf
}

/// Decodes a request body into loss request `L` (see [`decode_fields`]).
pub fn decode<L: DeserializeOwned>(
    body: &[u8],
    budget: &mut Budget,
    info: &Info,
    skip: Option<&str>,
) -> Result<L, ApiError> {
    decode_fields(body, budget, info.tensors, skip)
}

/// Decodes a request body into `L`, mapping every failure to its error code (docs/api.md,
/// Errors); `tensors` are the fields whose content is a tensor.
///
/// A body whose top-level tensors [`fast::prepare`] can take is decoded that way first; any
/// other body, or one that then fails, is decoded by serde alone, once without tracking where
/// it is; only when that fails is it decoded again with [`serde_path_to_error`] to find the
/// JSON Pointer of the failure.
pub fn decode_fields<L: DeserializeOwned>(
    body: &[u8],
    budget: &mut Budget,
    tensors: &[TensorArg],
    skip: Option<&str>,
) -> Result<L, ApiError> {
    let start = *budget;
    // The fast path (top-level tensors decoded in one pass of our own), when the body is one
    // it follows and it decodes; otherwise the body again, the plain way.
    let mut fast_budget = start;
    let (fast, fast_over) = fast_budget.run(|| {
        let prepared = fast::prepare(body)?;
        fast::with_tensors(prepared.tensors, || {
            from_slice::<L>(&prepared.body, skip).ok()
        })?
    });
    let (first, over) = match fast {
        Some(v) => {
            *budget = fast_budget;
            (Ok(v), fast_over)
        }
        None => budget.run(|| from_slice::<L>(body, skip)),
    };
    // Over the element budget, a request that is otherwise valid is too large; one with
    // another problem gets that problem, whatever its size.
    let err = match first {
        Ok(_) if over => {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the request's tensors hold more than {} elements (the element limit)",
                    start.elements
                ),
            ));
        }
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut again = start;
    let (tracked, _) = again.run(|| {
        let mut de = serde_json::Deserializer::from_slice(body);
        match skip {
            Some(key) => serde_path_to_error::deserialize::<_, L>(SkipKey {
                inner: &mut de,
                key,
            }),
            None => serde_path_to_error::deserialize::<_, L>(&mut de),
        }
        .map(|_| ())
    });
    let (path, err) = match tracked {
        Err(e) => (pointer_of(e.path()), e.into_inner()),
        Ok(()) => (String::new(), err),
    };
    Err(explain(err, path, tensors))
}

/// Deserializes a whole body, hiding the top-level key `skip` if given.
fn from_slice<L: DeserializeOwned>(body: &[u8], skip: Option<&str>) -> serde_json::Result<L> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = match skip {
        Some(key) => L::deserialize(SkipKey {
            inner: &mut de,
            key,
        }),
        None => L::deserialize(&mut de),
    }?;
    de.end().map(|()| v)
}

/// Turns a serde path into an RFC 6901 pointer.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut p = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => {
                p.push('/');
                p.push_str(&index.to_string());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                p.push('/');
                p.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => {}
        }
    }
    p
}

/// Maps a decode error at `pointer` to a problem: syntax → `invalid_json`, a tensor field →
/// `invalid_tensor`, anything else (unknown, missing or mistyped options) → `invalid_option`.
fn explain(err: serde_json::Error, mut pointer: String, tensors: &[TensorArg]) -> ApiError {
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    // serde names the field in the message for missing and unknown fields.
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    // A missing, unknown or repeated field is about the request's fields, never a tensor's
    // content.
    let field_level = named("missing field `")
        .or_else(|| named("unknown field `"))
        .or_else(|| named("duplicate field `"));
    if let Some(field) = &field_level {
        pointer = format!("/{field}");
    }
    let field = pointer.split('/').nth(1).unwrap_or("").to_string();
    let in_tensor = tensors.iter().any(|t| t.name == field) && field_level.is_none();
    let code = match err.classify() {
        serde_json::error::Category::Data => {
            if in_tensor {
                Code::InvalidTensor
            } else {
                Code::InvalidOption
            }
        }
        // A number out of range inside a tensor is the tensor's problem, not the JSON's.
        serde_json::error::Category::Syntax
            if in_tensor && message.contains("number out of range") =>
        {
            Code::InvalidTensor
        }
        _ => Code::InvalidJson,
    };
    let detail = match code {
        Code::InvalidJson => format!("the body is not valid JSON: {full}"),
        _ if field.is_empty() || field_level.is_some() => message,
        _ => format!("{field}: {message}"),
    };
    let e = ApiError::new(code, detail);
    if pointer.is_empty() || code == Code::InvalidJson {
        e
    } else {
        e.at(pointer)
    }
}
