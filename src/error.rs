//! [`ApiError`]: every error the service returns, as `application/problem+json` (RFC 9457).
//!
//! [`Code`] is the single table of status, code and title. Internal details of a 500 are
//! logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lossd_kernels::{ErrorKind, LossError};
use serde::Serialize;

/// The machine-readable error codes (docs/api.md, Errors), each with its status and title.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// 400: the body is not JSON.
    InvalidJson,
    /// 400: a compressed body that does not decode (`Content-Encoding` and the bytes disagree).
    InvalidBody,
    /// 401: API keys are configured and the request has none, or not a valid one.
    Unauthorized,
    /// 404: no loss of that name.
    UnknownLoss,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 406: `Accept-Encoding` refuses every encoding lossd can answer in, `identity` included.
    NotAcceptable,
    /// 413: body over the limit, or more elements or jobs than the limit.
    PayloadTooLarge,
    /// 415: the content type is not `application/json`, or the content encoding is unknown.
    UnsupportedMediaType,
    /// 422: ragged arrays, non-numbers, bad base64, shape and data disagree, a fraction where
    /// an integer is needed.
    InvalidTensor,
    /// 422: tensors PyTorch would refuse to combine.
    ShapeMismatch,
    /// 422: unknown field, missing required field, a bad reduction, dtype or option value.
    InvalidOption,
    /// 422: a custom-loss expression that does not parse or type-check.
    InvalidExpression,
    /// 422: values PyTorch rejects.
    InvalidValue,
    /// 503: the compute queue is full.
    Overloaded,
    /// 503: the request ran past the time limit.
    Timeout,
    /// 500: a bug.
    Internal,
}

impl Code {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        use Code::*;
        match self {
            InvalidJson | InvalidBody => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            UnknownLoss | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidTensor | ShapeMismatch | InvalidOption | InvalidExpression | InvalidValue => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Overloaded | Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears in the problem body.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidBody => "invalid_body",
            Unauthorized => "unauthorized",
            UnknownLoss => "unknown_loss",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            NotAcceptable => "not_acceptable",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            InvalidTensor => "invalid_tensor",
            ShapeMismatch => "shape_mismatch",
            InvalidOption => "invalid_option",
            InvalidExpression => "invalid_expression",
            InvalidValue => "invalid_value",
            Overloaded => "overloaded",
            Timeout => "timeout",
            Internal => "internal",
        }
    }

    /// A short human-readable summary of the problem type.
    pub fn title(self) -> &'static str {
        use Code::*;
        match self {
            InvalidJson => "Invalid JSON",
            InvalidBody => "Invalid body",
            Unauthorized => "Unauthorized",
            UnknownLoss => "Unknown loss",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            NotAcceptable => "Not acceptable",
            PayloadTooLarge => "Payload too large",
            UnsupportedMediaType => "Unsupported media type",
            InvalidTensor => "Invalid tensor",
            ShapeMismatch => "Shape mismatch",
            InvalidOption => "Invalid option",
            InvalidExpression => "Invalid expression",
            InvalidValue => "Invalid value",
            Overloaded => "Overloaded",
            Timeout => "Timeout",
            Internal => "Internal error",
        }
    }

    /// Every code, for documentation.
    pub const ALL: [Code; 17] = [
        Code::InvalidJson,
        Code::InvalidBody,
        Code::Unauthorized,
        Code::UnknownLoss,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::NotAcceptable,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::InvalidTensor,
        Code::ShapeMismatch,
        Code::InvalidOption,
        Code::InvalidExpression,
        Code::InvalidValue,
        Code::Overloaded,
        Code::Timeout,
        Code::Internal,
    ];
}

/// An error answer: a [`Code`], a detail sentence a client can act on, and a JSON Pointer to
/// the offending field when there is one.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ApiError {
    /// What kind of problem.
    pub code: Code,
    /// What is wrong, naming the field and the bad value or shapes.
    pub detail: String,
    /// RFC 6901 pointer into the request body.
    pub pointer: Option<String>,
    /// For `invalid_expression`: the character offset in the expression.
    pub position: Option<usize>,
}

impl ApiError {
    /// An error without a pointer.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            pointer: None,
            position: None,
        }
    }

    /// Points the error at a field: `pointer` is an RFC 6901 pointer such as `/target/1`.
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// Shorthand for an `invalid_option` error pointing at `field`.
    pub fn option(field: &str, detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidOption, detail).at(format!("/{field}"))
    }

    /// Shorthand for an `invalid_tensor` error.
    pub fn tensor(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidTensor, detail)
    }

    /// A 500 whose detail is logged here and replaced by a generic sentence.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(Code::Internal, "internal error; it has been logged")
    }

    /// The problem document as JSON bytes.
    pub fn body(&self) -> Vec<u8> {
        let p = Problem {
            kind: "about:blank".into(),
            title: self.code.title().into(),
            status: self.code.status().as_u16(),
            code: self.code,
            detail: self.detail.clone(),
            pointer: self.pointer.clone(),
            position: self.position,
        };
        serde_json::to_vec(&p).expect("a problem serializes")
    }
}

/// Renders a pointer to `index` within the tensor argument `arg` (nested-array form).
pub fn element_pointer(arg: &str, index: &[usize]) -> String {
    let mut s = format!("/{arg}");
    for i in index {
        s.push('/');
        s.push_str(&i.to_string());
    }
    s
}

impl From<LossError> for ApiError {
    fn from(e: LossError) -> Self {
        let code = match e.kind {
            ErrorKind::Shape => Code::ShapeMismatch,
            ErrorKind::Value => Code::InvalidValue,
            ErrorKind::Option => Code::InvalidOption,
            ErrorKind::TooLarge => Code::PayloadTooLarge,
            ErrorKind::Cancelled => Code::Timeout,
        };
        let pointer = (!e.arg.is_empty()).then(|| match &e.index {
            Some(idx) => element_pointer(e.arg, idx),
            None => format!("/{}", e.arg),
        });
        Self {
            code,
            detail: e.message,
            pointer,
            position: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.code.status(), self.body()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        // Every 503 (`overloaded`, `timeout`): the server is busy, the request may be retried.
        if self.code.status() == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res.extensions_mut().insert(self.code);
        res
    }
}

/// The problem document, for the OpenAPI description.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The machine-readable code.
    pub code: Code,
    /// What is wrong, naming the field and the bad value or shapes.
    pub detail: String,
    /// A JSON Pointer (RFC 6901) to the offending field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// For `invalid_expression`: the character offset where the problem was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}
