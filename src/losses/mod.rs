//! One file per loss: its request type (serde + OpenAPI schema), its catalog entry and the
//! call into its kernel; and [`REGISTRY`], the one list that drives routes, the catalog and
//! the OpenAPI document alike.
//!
//! Adding a loss: write its kernel in `kernels/`, a file here with a [`loss_request!`] struct
//! implementing [`Loss`], and one line in [`registry`].

mod args;
pub mod huber_loss;
pub mod l1_loss;
pub mod mse_loss;
pub mod smooth_l1_loss;
pub mod soft_margin_loss;

use std::sync::LazyLock;

use lossd_kernels::LossOutput;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use args::{float, index};

use crate::error::{ApiError, Code};
use crate::wire::Budget;
use crate::wire::ser::{Encoding, WireFloat, write_shape, write_str, write_tensor};

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
    /// The tensor arguments, in PyTorch's order.
    pub tensors: &'static [TensorArg],
    /// The reductions accepted.
    pub reductions: &'static [&'static str],
}

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

/// A loss the service computes: a request type that decodes itself and calls its kernel.
pub trait Loss: DeserializeOwned + utoipa::ToSchema + Send + 'static {
    /// The catalog entry.
    const INFO: Info;

    /// `dtype`, `grad` and `encoding` of this request.
    fn common(&self) -> Common;

    /// Computes the loss in precision `T`, with gradients when `grad`.
    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError>;
}

/// Declares a loss request struct: the given fields plus `reduction`, `dtype`, `grad` and
/// `encoding`, unknown fields rejected, and its [`Loss::common`] accessor.
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

        impl $name {
            fn common_fields(&self) -> $crate::losses::Common {
                $crate::losses::Common {
                    dtype: self.dtype,
                    grad: self.grad,
                    encoding: self.encoding,
                }
            }
        }
    };
}

/// A registered loss: its catalog entry and its monomorphised entry points.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The catalog entry.
    pub info: &'static Info,
    /// Decodes a request body and computes the response body.
    pub run: fn(&[u8], Budget) -> Result<Vec<u8>, ApiError>,
    /// The request schema's name and schema.
    pub schema: fn() -> (
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    ),
}

fn entry<L: Loss>() -> Entry {
    Entry {
        info: &L::INFO,
        run: run::<L>,
        schema: || (L::name().into_owned(), L::schema()),
    }
}

/// Every loss the service computes, in catalog order.
pub fn registry() -> &'static [Entry] {
    static REGISTRY: LazyLock<Vec<Entry>> = LazyLock::new(|| {
        vec![
            entry::<l1_loss::L1Loss>(),
            entry::<mse_loss::MseLoss>(),
            entry::<smooth_l1_loss::SmoothL1Loss>(),
            entry::<huber_loss::HuberLoss>(),
            entry::<soft_margin_loss::SoftMarginLoss>(),
        ]
    });
    &REGISTRY
}

/// The registered loss called `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    registry().iter().find(|e| e.info.name == name)
}

/// Decodes, computes and encodes one request for loss `L`.
pub fn run<L: Loss>(body: &[u8], budget: Budget) -> Result<Vec<u8>, ApiError> {
    let req: L = decode(body, budget, &L::INFO)?;
    let common = req.common();
    match common.dtype {
        Dtype::Float64 => Ok(respond(&req.compute::<f64>(common.grad)?, common.encoding)),
        Dtype::Float32 => Ok(respond(&req.compute::<f32>(common.grad)?, common.encoding)),
    }
}

/// Writes the 200 response body of a loss.
pub fn respond<T: WireFloat>(out: &LossOutput<T>, encoding: Encoding) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"{\"loss\":");
    write_tensor(&mut buf, &out.loss, encoding);
    buf.extend_from_slice(b",\"shape\":");
    write_shape(&mut buf, out.loss.shape());
    buf.extend_from_slice(b",\"dtype\":\"");
    buf.extend_from_slice(T::DTYPE.as_bytes());
    buf.push(b'"');
    if !out.grads.is_empty() {
        buf.extend_from_slice(b",\"grad\":{");
        for (i, (name, g)) in out.grads.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_str(&mut buf, name);
            buf.push(b':');
            write_tensor(&mut buf, g, encoding);
        }
        buf.push(b'}');
    }
    if !out.warnings.is_empty() {
        buf.extend_from_slice(b",\"warnings\":[");
        for (i, w) in out.warnings.iter().enumerate() {
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

/// Decodes a request body into `L`, mapping every failure to the error API.md names.
///
/// The fast path decodes once without tracking where it is; only when that fails is the body
/// decoded again with [`serde_path_to_error`] to find the JSON Pointer of the failure.
pub fn decode<L: DeserializeOwned>(
    body: &[u8],
    budget: Budget,
    info: &Info,
) -> Result<L, ApiError> {
    let (first, over) = budget.run(|| serde_json::from_slice::<L>(body));
    let err = match first {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if over {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "the request's tensors hold more than {} elements (the element limit)",
                budget.elements
            ),
        ));
    }
    let (tracked, _) = budget.run(|| {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize::<_, L>(&mut de).map(|_| ())
    });
    let (path, err) = match tracked {
        Err(e) => (pointer_of(e.path()), e.into_inner()),
        Ok(()) => (String::new(), err),
    };
    Err(explain(err, path, info))
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
fn explain(err: serde_json::Error, mut pointer: String, info: &Info) -> ApiError {
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
    // A missing or unknown field is about the request's fields, never a tensor's content.
    let field_level = named("missing field `").or_else(|| named("unknown field `"));
    if let Some(field) = &field_level {
        pointer = format!("/{field}");
    }
    let field = pointer.split('/').nth(1).unwrap_or("").to_string();
    let in_tensor = info.is_tensor(&field) && field_level.is_none();
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
