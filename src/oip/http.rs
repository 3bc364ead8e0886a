//! The protocol's HTTP/REST routes under `/v2`: health, server and model metadata, and
//! inference with JSON or binary tensor data.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::json::{self as oj, Num, Value};
use super::{Datatype, Input, Model, Param, Request, Values, binary, check_size};
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::memory::{self, HeldBody, estimate::Family};
use crate::wire::{Budget, Data};

/// The header naming the length of the JSON part of a body with binary data.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The `/v2` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{model}/versions/{version}/infer", post(infer))
}

/// An error in the protocol's form: `{"error": "..."}` with a 400, 404, 413 or 503 (and, so
/// that it is also a problem document as lossd's other errors are, the problem's members).
pub struct OipError(pub ApiError);

impl From<ApiError> for OipError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = super::status(e.code);
        let mut body = json!({
            "error": e.detail,
            "type": "about:blank",
            "title": e.code.title(),
            "status": status,
            "code": e.code.as_str(),
            "detail": e.detail,
        });
        if let Some(p) = &e.pointer {
            body["pointer"] = json!(p);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut res = (status, body.to_string()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if e.code == Code::Overloaded {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res.extensions_mut().insert(e.code);
        res
    }
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    let mut res = (status, v.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The server's metadata (the same for gRPC).
pub fn server_json() -> serde_json::Value {
    json!({
        "name": "lossd",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    })
}

async fn server_metadata() -> Response {
    json_response(StatusCode::OK, server_json())
}

async fn live() -> Response {
    json_response(StatusCode::OK, json!({"live": true}))
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.pool.ready() {
        json_response(StatusCode::OK, json!({"ready": true}))
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false}))
    }
}

/// The model of a path (`{model}` and, under `versions/`, `{version}`).
fn model_of(p: &HashMap<String, String>) -> Result<Model, ApiError> {
    let name = p.get("model").map_or("", String::as_str);
    Model::find(name)?.version(p.get("version").map_or("", String::as_str))
}

/// A model's metadata as JSON.
pub fn model_json(model: Model) -> serde_json::Value {
    let (inputs, outputs) = super::metadata(model);
    let list = |ts: Vec<super::TensorMeta>| -> Vec<serde_json::Value> {
        ts.into_iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect()
    };
    json!({
        "name": model.name(),
        "versions": [super::VERSION],
        "platform": super::PLATFORM,
        "inputs": list(inputs),
        "outputs": list(outputs),
    })
}

async fn model_metadata(Path(p): Path<HashMap<String, String>>) -> Result<Response, OipError> {
    let model = model_of(&p)?;
    Ok(json_response(StatusCode::OK, model_json(model)))
}

async fn model_ready(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, OipError> {
    let model = model_of(&p)?;
    let ready = state.pool.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(
        status,
        json!({"name": model.name(), "ready": ready}),
    ))
}

async fn infer(
    State(state): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, OipError> {
    let model = model_of(&p)?;
    let header_len = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::tensor("Inference-Header-Content-Length is not text"))?
                .to_string(),
        ),
    };
    // The memory budget as on the JSON routes: reserved before the body is read (with binary
    // data: before the tensors are, once the header has told their sizes).
    let family = Family::of(model.name());
    let deadline = state.pool.deadline();
    let budget = state.budget();
    let limits = state.config.expression_limits();
    // Either parsed as it was read (binary data), or a JSON body read whole.
    enum Got {
        Parsed(Parsed),
        Json(axum::body::Bytes),
    }
    let (got, held) = match header_len {
        Some(text) => {
            let n = binary::header_length(&text)?;
            match super::body::read(&state, &headers, body, n, family, deadline).await {
                Ok((parsed, held)) => (Got::Parsed(parsed), held),
                Err(super::body::Failed::Error(e)) => return Err(e.into()),
                Err(super::body::Failed::Refused(res)) => return Ok(in_protocol_form(res).await),
            }
        }
        None => match memory::read_admitted(&state, &headers, body, family, deadline).await {
            Ok((bytes, held)) => (Got::Json(bytes), held),
            Err(refused) => return Ok(in_protocol_form(refused).await),
        },
    };
    let ((body, json_len), held) = state
        .pool
        .run(move || {
            let parsed = match got {
                Got::Parsed(p) => p,
                Got::Json(bytes) => parse(&bytes, &[], budget)?,
            };
            let out = super::infer(model, parsed.request, budget, &limits)?;
            Ok((
                write(model, parsed.id.as_deref(), &out, &parsed.binary),
                held,
            ))
        })
        .await?;
    // Binary tensors were allocated on a connection's thread and freed on the compute worker:
    // when this is the thread that allocated them, its heap takes them back now.
    memory::reclaim_freed();
    let mut res = Response::new(Body::from(body));
    let h = res.headers_mut();
    match json_len {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(HeldBody::wrap(res, held))
}

/// A refusal of the shared body reader or the memory budget (a problem document) in the
/// protocol's form: the same status, headers and fields, plus `error`.
async fn in_protocol_form(res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    let detail = doc
        .get("detail")
        .and_then(|d| d.as_str())
        .unwrap_or("the request was refused")
        .to_string();
    if let Some(map) = doc.as_object_mut() {
        map.insert("error".to_string(), json!(detail));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(doc.to_string()))
}

/// Which outputs go as binary data: the default (`binary_data_output`) and each requested
/// output's own `binary_data`.
#[derive(Debug, Default)]
pub struct BinaryOutputs {
    default: bool,
    each: HashMap<String, bool>,
}

impl BinaryOutputs {
    fn of(&self, name: &str) -> bool {
        self.each.get(name).copied().unwrap_or(self.default)
    }
}

/// A parsed inference request.
#[derive(Debug)]
pub struct Parsed {
    /// The request.
    pub request: Request,
    /// Its `id`, echoed in the response.
    pub id: Option<String>,
    /// How to write the outputs.
    pub binary: BinaryOutputs,
}

fn bad_header(detail: String) -> ApiError {
    ApiError::new(Code::InvalidJson, detail)
}

fn too_many(budget: &Budget) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!(
            "the request's inputs hold more than {} elements (the element limit)",
            budget.elements
        ),
    )
}

/// A request parameter's value.
fn param(k: &str, v: &Value) -> Result<Param, ApiError> {
    Ok(match v {
        Value::Bool(b) => Param::Bool(*b),
        Value::Num(Num::Int(i)) => Param::Int(*i),
        Value::Num(Num::Float(f)) => Param::Double(*f),
        Value::Str(s) => Param::Str(s.clone()),
        other => {
            return Err(ApiError::new(
                Code::InvalidOption,
                format!(
                    "parameter `{k}` must be a bool, a number or a string (got {})",
                    other.kind()
                ),
            ));
        }
    })
}

fn members<'a>(v: &'a Value, what: &str) -> Result<&'a [(String, Value)], ApiError> {
    match v {
        Value::Obj(m) => Ok(m),
        other => Err(bad_header(format!(
            "{what} must be an object (got {})",
            other.kind()
        ))),
    }
}

fn items<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], ApiError> {
    match v {
        Value::Arr(a) => Ok(a),
        Value::Nums(n) if n.is_empty() => Ok(&[]),
        other => Err(bad_header(format!(
            "{what} must be an array of objects (got {})",
            other.kind()
        ))),
    }
}

fn string<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a str, ApiError> {
    match v {
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(bad_header(format!(
            "{what} must be a string (got {})",
            other.kind()
        ))),
        None => Err(bad_header(format!("{what} is missing"))),
    }
}

/// Parses the JSON header and the binary data after it.
pub fn parse(head: &[u8], data: &[u8], budget: Budget) -> Result<Parsed, ApiError> {
    parse_head(head, budget)?.finish(data)
}

/// Where an input's elements are: decoded from the header's JSON, or still to come as
/// binary data of this many bytes.
#[derive(Debug)]
pub enum Slot {
    /// The input's `data`, decoded.
    Json(Data),
    /// `binary_data_size` bytes in the binary data after the header.
    Binary(usize),
}

/// An input as the JSON header describes it.
#[derive(Debug)]
pub struct InputHead {
    /// Its name.
    pub name: String,
    /// Its datatype.
    pub datatype: Datatype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The elements its shape makes.
    pub count: usize,
    /// Where its elements are.
    pub slot: Slot,
}

/// A parsed JSON header: the request with its inputs still apart.
#[derive(Debug)]
pub struct Head {
    /// The request, `inputs` empty until [`Head::finish`] or [`Head::finish_with`].
    pub parsed: Parsed,
    /// The inputs, in request order.
    pub inputs: Vec<InputHead>,
}

impl Head {
    /// The elements of all inputs.
    pub fn elements(&self) -> usize {
        self.inputs.iter().map(|i| i.count).sum()
    }

    /// The bytes of binary data the inputs take, in all.
    pub fn binary_bytes(&self) -> usize {
        self.inputs
            .iter()
            .map(|i| match i.slot {
                Slot::Binary(n) => n,
                Slot::Json(_) => 0,
            })
            .sum()
    }

    /// The request, its binary inputs decoded from `data` (every byte of it theirs).
    pub fn finish(self, data: &[u8]) -> Result<Parsed, ApiError> {
        let sizes: Vec<Option<usize>> = self
            .inputs
            .iter()
            .map(|i| match i.slot {
                Slot::Binary(n) => Some(n),
                Slot::Json(_) => None,
            })
            .collect();
        let pieces = binary::pieces(data, &sizes)?;
        let mut decoded = Vec::new();
        for (i, piece) in self.inputs.iter().zip(pieces) {
            if let Some(bytes) = piece {
                decoded.push(binary::decode(&i.name, bytes, i.datatype, i.count)?);
            }
        }
        self.finish_with(decoded)
    }

    /// The request, with `binary` the binary inputs' elements, in input order.
    pub fn finish_with(self, binary: Vec<Data>) -> Result<Parsed, ApiError> {
        let Head { mut parsed, inputs } = self;
        let mut binary = binary.into_iter();
        for i in inputs {
            let data = match i.slot {
                Slot::Json(d) => d,
                Slot::Binary(_) => binary
                    .next()
                    .ok_or_else(|| ApiError::internal("a binary input was not read"))?,
            };
            parsed.request.inputs.push(Input {
                name: i.name,
                datatype: i.datatype,
                shape: i.shape,
                data,
            });
        }
        Ok(parsed)
    }
}

/// Parses the JSON header: everything but the binary data. Every size is checked against
/// the limits before anything is allocated for it.
pub fn parse_head(head: &[u8], budget: Budget) -> Result<Head, ApiError> {
    let root = oj::parse(head, budget.elements).map_err(|e| match e {
        oj::Error::TooMany => too_many(&budget),
        oj::Error::Syntax(what, at) => bad_header(format!(
            "the inference request is not JSON: {what} at byte {at}"
        )),
    })?;
    let top = members(&root, "the inference request")?;
    let mut parsed = Parsed {
        request: Request::default(),
        id: None,
        binary: BinaryOutputs::default(),
    };
    if let Some(id) = root.get("id") {
        parsed.id = Some(string(Some(id), "`id`")?.to_string());
    }
    if let Some(params) = root.get("parameters") {
        for (k, v) in members(params, "`parameters`")? {
            match k.as_str() {
                "binary_data_output" => match v {
                    Value::Bool(b) => parsed.binary.default = *b,
                    _ => {
                        return Err(ApiError::new(
                            Code::InvalidOption,
                            "parameter `binary_data_output` must be a bool",
                        ));
                    }
                },
                _ => parsed.request.params.push((k.clone(), param(k, v)?)),
            }
        }
    }
    if let Some(outputs) = root.get("outputs") {
        let mut names = Vec::new();
        for o in items(outputs, "`outputs`")? {
            members(o, "an output")?;
            let name = string(o.get("name"), "an output's `name`")?.to_string();
            if let Some(params) = o.get("parameters") {
                for (k, v) in members(params, "an output's `parameters`")? {
                    match (k.as_str(), v) {
                        ("binary_data", Value::Bool(b)) => {
                            parsed.binary.each.insert(name.clone(), *b);
                        }
                        _ => {
                            return Err(ApiError::new(
                                Code::InvalidOption,
                                format!(
                                    "output `{name}`: parameter `{k}` is not supported (lossd \
                                     takes binary_data, a bool)"
                                ),
                            ));
                        }
                    }
                }
            }
            names.push(name);
        }
        parsed.request.outputs = Some(names);
    }
    if !top.iter().any(|(k, _)| k == "inputs") {
        return Err(bad_header("`inputs` is missing".into()));
    }
    let inputs = items(root.get("inputs").unwrap_or(&Value::Null), "`inputs`")?;
    // First the sizes, so that nothing is allocated for a request over the limits.
    let mut left = budget.elements;
    let mut heads = Vec::with_capacity(inputs.len());
    for v in inputs {
        members(v, "an input")?;
        let name = string(v.get("name"), "an input's `name`")?;
        let dt_name = string(v.get("datatype"), &format!("input `{name}`: `datatype`"))?;
        let datatype = Datatype::parse(dt_name).ok_or_else(|| {
            ApiError::tensor(format!(
                "input `{name}` has datatype {dt_name}; lossd takes FP64, FP32, INT64 and INT32"
            ))
        })?;
        let shape = match v.get("shape") {
            Some(Value::Nums(dims)) => dims
                .iter()
                .map(|d| match d {
                    Num::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err(ApiError::tensor(format!(
                        "input `{name}`: `shape` must hold non-negative integers"
                    ))),
                })
                .collect::<Result<Vec<usize>, _>>()?,
            _ => {
                return Err(ApiError::tensor(format!(
                    "input `{name}`: `shape` must be an array of integers"
                )));
            }
        };
        let mut size = None;
        if let Some(params) = v.get("parameters") {
            for (k, p) in members(params, &format!("input `{name}`: `parameters`"))? {
                match (k.as_str(), p) {
                    ("binary_data_size", Value::Num(Num::Int(n))) if *n >= 0 => {
                        size = Some(*n as usize);
                    }
                    _ => {
                        return Err(ApiError::tensor(format!(
                            "input `{name}`: parameter `{k}` is not supported (lossd takes \
                             binary_data_size, a byte count)"
                        )));
                    }
                }
            }
        }
        let count = check_size(name, &shape, &budget, &mut left)?;
        let json = v.get("data");
        match (json.is_some(), size.is_some()) {
            (true, true) => {
                return Err(ApiError::tensor(format!(
                    "input `{name}` has both `data` and binary_data_size"
                )));
            }
            (false, false) => {
                return Err(ApiError::tensor(format!(
                    "input `{name}` has no data: give `data`, or binary data with \
                     binary_data_size"
                )));
            }
            _ => {}
        }
        heads.push((name, datatype, shape, count, json, size));
    }
    let mut out = Vec::with_capacity(heads.len());
    for (name, datatype, shape, count, json, size) in heads {
        let slot = match (size, json) {
            (Some(n), _) => Slot::Binary(n),
            (None, Some(v)) => Slot::Json(json_data(name, v, datatype, count)?),
            (None, None) => unreachable!("checked above"),
        };
        out.push(InputHead {
            name: name.to_string(),
            datatype,
            shape,
            count,
            slot,
        });
    }
    Ok(Head {
        parsed,
        inputs: out,
    })
}

/// The numbers of `data` (flat or nested, row-major).
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a [Num]>, depth: usize) -> Result<(), ()> {
    match v {
        Value::Nums(n) => out.push(n),
        Value::Num(n) if depth == 0 => out.push(std::slice::from_ref(n)),
        Value::Arr(items) => {
            for i in items {
                flatten(i, out, depth + 1)?;
            }
        }
        _ => return Err(()),
    }
    Ok(())
}

/// An input's JSON `data` as `n` elements of `datatype`.
fn json_data(name: &str, v: &Value, datatype: Datatype, n: usize) -> Result<Data, ApiError> {
    let mut parts = Vec::new();
    flatten(v, &mut parts, 0).map_err(|()| {
        ApiError::tensor(format!(
            "input `{name}`: `data` must be an array of numbers (flat or nested)"
        ))
    })?;
    let count: usize = parts.iter().map(|p| p.len()).sum();
    if count != n {
        return Err(ApiError::tensor(format!(
            "input `{name}` has {count} elements in `data` but its shape makes {n}"
        )));
    }
    let nums = parts.into_iter().flatten().copied();
    let whole = |x: Num| -> Result<i64, ApiError> {
        match x {
            Num::Int(i) => Ok(i),
            Num::Float(f) => Err(ApiError::tensor(format!(
                "input `{name}` is {} but holds {f}",
                datatype.as_str()
            ))),
        }
    };
    Ok(match datatype {
        Datatype::Fp64 => Data::F64(nums.map(Num::as_f64).collect()),
        Datatype::Fp32 => Data::F32(nums.map(|x| x.as_f64() as f32).collect()),
        Datatype::Int64 => Data::I64(nums.map(whole).collect::<Result<_, _>>()?),
        Datatype::Int32 => Data::I64(
            nums.map(|x| {
                let i = whole(x)?;
                i32::try_from(i)
                    .map(i64::from)
                    .map_err(|_| ApiError::tensor(format!("input `{name}` is INT32 but holds {i}")))
            })
            .collect::<Result<_, _>>()?,
        ),
    })
}

/// Appends a float as the protocol's JSON writes it (non-finite values as bare tokens).
fn write_num<T: crate::wire::ser::WireFloat>(out: &mut Vec<u8>, x: T) {
    if x.is_finite() {
        x.write_json(out);
    } else if x.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if x > T::zero() {
        out.extend_from_slice(b"Infinity");
    } else {
        out.extend_from_slice(b"-Infinity");
    }
}

fn write_data<T: crate::wire::ser::WireFloat>(
    out: &mut Vec<u8>,
    a: &lossd_kernels::ndarray::ArrayD<T>,
) {
    out.push(b'[');
    for (i, &x) in a.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_num(out, x);
    }
    out.push(b']');
}

/// Writes the response: the JSON header, then the binary outputs; the header's length when
/// there is binary data.
pub fn write(
    model: Model,
    id: Option<&str>,
    out: &super::Response,
    binary: &BinaryOutputs,
) -> (Vec<u8>, Option<usize>) {
    use crate::wire::ser::{write_shape, write_str};
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"{\"model_name\":");
    write_str(&mut head, model.name());
    head.extend_from_slice(b",\"model_version\":\"1\"");
    if let Some(id) = id {
        head.extend_from_slice(b",\"id\":");
        write_str(&mut head, id);
    }
    if !out.warnings.is_empty() {
        head.extend_from_slice(b",\"parameters\":{\"warnings\":");
        write_str(&mut head, &out.warnings.join("\n"));
        head.push(b'}');
    }
    head.extend_from_slice(b",\"outputs\":[");
    let mut raw: Vec<std::borrow::Cow<'_, [u8]>> = Vec::new();
    for (i, o) in out.outputs.iter().enumerate() {
        if i > 0 {
            head.push(b',');
        }
        head.extend_from_slice(b"{\"name\":");
        write_str(&mut head, &o.name);
        head.extend_from_slice(b",\"datatype\":\"");
        head.extend_from_slice(o.values.datatype().as_str().as_bytes());
        head.extend_from_slice(b"\",\"shape\":");
        write_shape(&mut head, o.values.shape());
        if binary.of(&o.name) {
            let bytes = o.values.le_bytes();
            head.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            head.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
            head.push(b'}');
            raw.push(bytes);
        } else {
            head.extend_from_slice(b",\"data\":");
            match &o.values {
                Values::F64(a) => write_data(&mut head, a),
                Values::F32(a) => write_data(&mut head, a),
            }
        }
        head.push(b'}');
    }
    head.extend_from_slice(b"]}");
    if raw.is_empty() {
        return (head, None);
    }
    let n = head.len();
    head.reserve_exact(raw.iter().map(|r| r.len()).sum());
    for r in raw {
        head.extend_from_slice(&r);
    }
    (head, Some(n))
}
