//! The Open Inference Protocol v2 (KServe / Triton) over HTTP ([`http`]) and gRPC ([`grpc`]).
//!
//! A model is a loss (every registry entry by its name, and `custom`); its inputs are the
//! loss's tensor arguments, its request parameters the loss's options. Both transports decode
//! their tensors into the same [`Tensor`]s the JSON routes decode, and [`infer`] hands them to
//! the loss through the JSON route's own decoder: it writes the small JSON request the options
//! make (`{"reduction": "sum", "grad": true, "input": <placeholder>, ...}`) and lets the
//! placeholders take the decoded tensors ([`fast::with_tensors`]). The registry's request
//! types, option checks, kernels and error mapping are thus the JSON route's, and so are the
//! numbers, bit for bit.
//!
//! The protocol is KServe's Open Inference Protocol v2 with Triton's binary tensor data
//! extension; docs/oip.md describes it as lossd serves it, and the mapping.

pub mod binary;
pub mod body;
pub mod grpc;
pub mod http;
pub mod json;
pub mod openapi;

use std::collections::HashMap;
use std::sync::LazyLock;

use lossd_kernels::LossOutput;
use lossd_kernels::ndarray::ArrayD;

use crate::custom::Limits;
use crate::error::{ApiError, Code};
use crate::losses::{self, Computed, Entry, TensorKind};
use crate::wire::ser::WireFloat;
use crate::wire::{Budget, Data, Form, Tensor, fast};

/// The only model version: a loss has one definition.
pub const VERSION: &str = "1";
/// The platform named in model metadata.
pub const PLATFORM: &str = "lossd";
/// The model name of custom expressions.
pub const CUSTOM: &str = "custom";

/// A tensor datatype of the protocol that lossd accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    /// 64-bit floats.
    Fp64,
    /// 32-bit floats.
    Fp32,
    /// 64-bit integers.
    Int64,
    /// 32-bit integers.
    Int32,
}

impl Datatype {
    /// The datatype named `s`; `None` for any other (BYTES, FP16, BOOL, ... are refused).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FP64" => Self::Fp64,
            "FP32" => Self::Fp32,
            "INT64" => Self::Int64,
            "INT32" => Self::Int32,
            _ => return None,
        })
    }

    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp64 => "FP64",
            Self::Fp32 => "FP32",
            Self::Int64 => "INT64",
            Self::Int32 => "INT32",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Fp64 | Self::Int64 => 8,
            Self::Fp32 | Self::Int32 => 4,
        }
    }

    /// Whether it holds floats.
    pub fn is_float(self) -> bool {
        matches!(self, Self::Fp64 | Self::Fp32)
    }
}

/// A request parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An integer past `i64` (gRPC `uint64_param`, or a large JSON integer).
    UInt(u64),
    /// A float (gRPC `double_param`, or a JSON number with a fraction or exponent).
    Double(f64),
    /// A string.
    Str(String),
}

impl Param {
    /// Appends the value as JSON (non-finite floats as the strings the decoders read).
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Param::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Param::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Param::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
            Param::Double(f) => f.write_json(out),
            Param::Str(s) => crate::wire::ser::write_str(out, s),
        }
    }

    /// What kind of value it is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Param::Bool(_) => "a bool",
            Param::Int(_) | Param::UInt(_) => "an integer",
            Param::Double(_) => "a float",
            Param::Str(_) => "a string",
        }
    }
}

/// One decoded input tensor.
#[derive(Debug)]
pub struct Input {
    /// Its name: a tensor argument of the loss.
    pub name: String,
    /// The datatype it came in.
    pub datatype: Datatype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major (`INT32` widened to `i64`).
    pub data: Data,
}

/// An inference request, whatever the transport.
#[derive(Debug, Default)]
pub struct Request {
    /// The inputs, in request order.
    pub inputs: Vec<Input>,
    /// The request parameters (protocol parameters such as `binary_data_output` removed).
    pub params: Vec<(String, Param)>,
    /// The outputs asked for, by name; `None`: all.
    pub outputs: Option<Vec<String>>,
}

/// The elements of an output.
#[derive(Debug)]
pub enum Values {
    /// Computed in float64.
    F64(ArrayD<f64>),
    /// Computed in float32.
    F32(ArrayD<f32>),
}

impl Values {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Values::F64(a) => a.shape(),
            Values::F32(a) => a.shape(),
        }
    }

    /// The protocol datatype.
    pub fn datatype(&self) -> Datatype {
        match self {
            Values::F64(_) => Datatype::Fp64,
            Values::F32(_) => Datatype::Fp32,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F64(a) => a.len(),
            Values::F32(a) => a.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The little-endian bytes, row-major (no copy for a standard-layout array on a
    /// little-endian machine).
    pub fn le_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        fn of<T: WireFloat>(a: &ArrayD<T>) -> std::borrow::Cow<'_, [u8]> {
            match a.as_slice() {
                Some(s) => T::le_bytes(s),
                None => T::le_bytes(&a.iter().copied().collect::<Vec<T>>())
                    .into_owned()
                    .into(),
            }
        }
        match self {
            Values::F64(a) => of(a),
            Values::F32(a) => of(a),
        }
    }
}

/// One output tensor.
#[derive(Debug)]
pub struct Output {
    /// `loss` or `grad_<argument>`.
    pub name: String,
    /// Its elements and shape.
    pub values: Values,
}

/// The outputs of a request, in order, and the kernel's warnings.
#[derive(Debug)]
pub struct Response {
    /// The outputs asked for.
    pub outputs: Vec<Output>,
    /// Warnings PyTorch would have printed.
    pub warnings: Vec<String>,
}

/// A model: a loss of the registry, or custom expressions.
#[derive(Clone, Copy)]
pub enum Model {
    /// A registered loss.
    Loss(&'static Entry),
    /// `custom`.
    Custom,
}

impl Model {
    /// The model called `name`, or the protocol's 404.
    pub fn find(name: &str) -> Result<Self, ApiError> {
        if name == CUSTOM {
            return Ok(Model::Custom);
        }
        losses::find(name).map(Model::Loss).ok_or_else(|| {
            let names: Vec<&str> = losses::registry().iter().map(|e| e.info.name).collect();
            ApiError::new(
                Code::UnknownLoss,
                format!(
                    "no model named `{name}`; the models are the losses: {}, {CUSTOM}",
                    names.join(", ")
                ),
            )
        })
    }

    /// The model's name.
    pub fn name(self) -> &'static str {
        match self {
            Model::Loss(e) => e.info.name,
            Model::Custom => CUSTOM,
        }
    }

    /// Checks a requested version: empty or `1`.
    pub fn version(self, version: &str) -> Result<Self, ApiError> {
        if version.is_empty() || version == VERSION {
            Ok(self)
        } else {
            Err(ApiError::new(
                Code::NotFound,
                format!(
                    "model `{}` has no version `{version}`; its only version is {VERSION}",
                    self.name()
                ),
            ))
        }
    }
}

/// A tensor of a model's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    /// Its name.
    pub name: String,
    /// Its datatype (`FP64` for floats; lossd also takes `FP32`, and `INT32` for integers).
    pub datatype: &'static str,
    /// `[-1]`: any shape (the loss's documentation says which).
    pub shape: Vec<i64>,
}

/// The metadata of a model: its inputs and outputs.
pub fn metadata(model: Model) -> (Vec<TensorMeta>, Vec<TensorMeta>) {
    let meta = |name: String, datatype| TensorMeta {
        name,
        datatype,
        shape: vec![-1],
    };
    match model {
        Model::Loss(e) => {
            let inputs = e
                .info
                .tensors
                .iter()
                .map(|t| {
                    let dt = match t.kind {
                        TensorKind::Integer => "INT64",
                        TensorKind::Float | TensorKind::FloatOrInteger => "FP64",
                    };
                    meta(t.name.to_string(), dt)
                })
                .collect();
            let mut outputs = vec![meta("loss".into(), "FP64")];
            outputs.extend(
                e.info
                    .tensors
                    .iter()
                    .filter(|t| t.differentiable)
                    .map(|t| meta(format!("grad_{}", t.name), "FP64")),
            );
            (inputs, outputs)
        }
        Model::Custom => (Vec::new(), vec![meta("loss".into(), "FP64")]),
    }
}

/// The HTTP status of an error under the protocol: the JSON route's 422s are 400s.
pub fn status(code: Code) -> u16 {
    match code.status().as_u16() {
        422 | 415 => 400,
        s => s,
    }
}

/// The scalar options of each loss (its request fields that are neither tensors nor the
/// fields every request has), from the request schema.
fn options(entry: &Entry) -> &'static [String] {
    static OPTIONS: LazyLock<HashMap<&'static str, Vec<String>>> = LazyLock::new(|| {
        losses::registry()
            .iter()
            .map(|e| {
                let (_, schema, _) = (e.schema)();
                let value = serde_json::to_value(&schema).unwrap_or_default();
                let names = value
                    .get("properties")
                    .and_then(|p| p.as_object())
                    .map(|p| {
                        p.keys()
                            .filter(|k| {
                                !e.info.is_tensor(k)
                                    && !matches!(k.as_str(), "dtype" | "grad" | "encoding")
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (e.info.name, names)
            })
            .collect()
    });
    OPTIONS.get(entry.info.name).map_or(&[], Vec::as_slice)
}

/// The parameters a model takes, for messages and metadata.
pub fn parameters(model: Model) -> Vec<String> {
    let mut names: Vec<String> = match model {
        Model::Loss(e) => options(e).to_vec(),
        Model::Custom => vec!["expression".into()],
    };
    names.extend(["grad".into(), "dtype".into()]);
    names
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidOption, detail)
}

/// Checks an input's element count and rank, and spends its elements from `left`.
pub fn check_size(
    name: &str,
    shape: &[usize],
    budget: &Budget,
    left: &mut usize,
) -> Result<usize, ApiError> {
    if shape.len() > budget.rank {
        return Err(ApiError::tensor(format!(
            "input `{name}` has {} dimensions, more than the rank limit of {}",
            shape.len(),
            budget.rank
        )));
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= *left)
        .ok_or_else(|| {
            ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the request's inputs hold more than {} elements (the element limit)",
                    budget.elements
                ),
            )
        })?;
    *left -= n;
    Ok(n)
}

/// Computes a request: the loss and, as asked, its gradients.
pub fn infer(
    model: Model,
    req: Request,
    budget: Budget,
    limits: &Limits,
) -> Result<Response, ApiError> {
    let mut seen = std::collections::HashSet::new();
    for input in &req.inputs {
        if !seen.insert(input.name.as_str()) {
            return Err(ApiError::tensor(format!(
                "input `{}` is given twice",
                input.name
            )));
        }
    }
    let elements: usize = req.inputs.iter().map(|i| i.data.len()).sum();
    crate::metrics::global().add_elements(elements);
    match model {
        Model::Loss(entry) => infer_loss(entry, req, budget),
        Model::Custom => infer_custom(req, budget, limits),
    }
}

/// The `dtype` of a request: the parameter's when given, else float32 when every floating
/// input is FP32, else float64.
fn dtype_of(req: &Request) -> Result<&'static str, ApiError> {
    match req.params.iter().find(|(k, _)| k == "dtype") {
        Some((_, Param::Str(s))) if s == "float64" => Ok("float64"),
        Some((_, Param::Str(s))) if s == "float32" => Ok("float32"),
        Some((_, p)) => Err(bad(format!(
            "parameter `dtype` must be \"float64\" or \"float32\" (got {})",
            match p {
                Param::Str(s) => format!("\"{s}\""),
                p => p.kind().to_string(),
            }
        ))),
        None => {
            let mut floats = req.inputs.iter().filter(|i| i.datatype.is_float());
            let all32 =
                floats.clone().next().is_some() && floats.all(|i| i.datatype == Datatype::Fp32);
            Ok(if all32 { "float32" } else { "float64" })
        }
    }
}

/// The input as the decoders' tensor, as if it came as nested arrays: error pointers then
/// index it (`/input/1/2`), and a 0-d input is a plain number as in the JSON route (which
/// `gaussian_nll_loss` reads as PyTorch's Python-float `var`).
fn tensor(input: Input) -> Tensor {
    Tensor {
        shape: input.shape,
        data: input.data,
        form: Form::Nested,
    }
}

/// Writes `"key":` into a JSON object under construction.
fn key(body: &mut Vec<u8>, k: &str) {
    if body.len() > 1 {
        body.push(b',');
    }
    crate::wire::ser::write_str(body, k);
    body.push(b':');
}

/// The placeholder of slot `i`, as JSON text.
fn placeholder(body: &mut Vec<u8>, i: usize) {
    body.extend_from_slice(format!("\"\\u0000lossd:{i}\"").as_bytes());
}

/// Runs `f` (a decode of a body with placeholders) with `tensors` in the slots; its result
/// whether or not it took them all (a decode that failed early took only some).
fn with_tensors<R>(
    tensors: Vec<Tensor>,
    f: impl FnOnce() -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let mut out = None;
    let all = fast::with_tensors(tensors, || out = Some(f())).is_some();
    let out = out.unwrap_or_else(|| Err(ApiError::internal("the decode did not run")));
    match out {
        Ok(_) if !all => Err(ApiError::internal("a decoded input was not used")),
        r => r,
    }
}

fn infer_loss(entry: &'static Entry, req: Request, budget: Budget) -> Result<Response, ApiError> {
    let info = entry.info;
    for input in &req.inputs {
        let Some(arg) = info.tensors.iter().find(|t| t.name == input.name) else {
            return Err(ApiError::tensor(format!(
                "`{}` is not an input of {}; its inputs are: {}",
                input.name,
                info.name,
                info.tensors
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let ok = match arg.kind {
            TensorKind::Float => input.datatype.is_float(),
            TensorKind::Integer => !input.datatype.is_float(),
            TensorKind::FloatOrInteger => true,
        };
        if !ok {
            let want = match arg.kind {
                TensorKind::Integer => "INT64 or INT32",
                _ => "FP64 or FP32",
            };
            return Err(ApiError::tensor(format!(
                "input `{}` has datatype {}; {} takes {want} for it",
                input.name,
                input.datatype.as_str(),
                info.name
            )));
        }
    }
    if let Some(missing) = info
        .tensors
        .iter()
        .find(|t| t.required && !req.inputs.iter().any(|i| i.name == t.name))
    {
        return Err(ApiError::tensor(format!(
            "input `{}` is missing; {} needs {}",
            missing.name,
            info.name,
            info.tensors
                .iter()
                .filter(|t| t.required)
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let dtype = dtype_of(&req)?;
    let grad = grad_flag(&req)?;
    let known = options(entry);
    // Options first, tensors last: a decode that fails on an option fails before it takes
    // any tensor, so its error (found again by the path-tracking decode) is the option's.
    let mut body = vec![b'{'];
    for (k, v) in &req.params {
        match k.as_str() {
            "dtype" | "grad" => continue,
            k if known.iter().any(|o| o == k) => {}
            _ => {
                return Err(bad(format!(
                    "unknown parameter `{k}`; the parameters of {} are: {}",
                    info.name,
                    parameters(Model::Loss(entry)).join(", ")
                )));
            }
        }
        key(&mut body, k);
        v.write_json(&mut body);
    }
    key(&mut body, "dtype");
    crate::wire::ser::write_str(&mut body, dtype);
    key(&mut body, "grad");
    body.extend_from_slice(if grad { b"true" } else { b"false" });
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.into_iter().enumerate() {
        key(&mut body, &input.name.clone());
        placeholder(&mut body, i);
        tensors.push(tensor(input));
    }
    body.push(b'}');
    let mut budget = budget;
    let computed = with_tensors(tensors, || (entry.eval)(&body, &mut budget))?;
    let (mut outputs, warnings) = match computed {
        Computed::F64(out) => outputs_of(out, Values::F64),
        Computed::F32(out) => outputs_of(out, Values::F32),
    };
    select(&mut outputs, req.outputs, info.name)?;
    Ok(Response { outputs, warnings })
}

/// Whether gradients are asked for: the `grad` parameter, else whether a `grad_` output is.
fn grad_flag(req: &Request) -> Result<bool, ApiError> {
    match req.params.iter().find(|(k, _)| k == "grad") {
        Some((_, Param::Bool(b))) => Ok(*b),
        Some((_, p)) => Err(bad(format!(
            "parameter `grad` must be a bool (got {})",
            p.kind()
        ))),
        None => Ok(req
            .outputs
            .as_ref()
            .is_some_and(|o| o.iter().any(|n| n.starts_with("grad_")))),
    }
}

fn outputs_of<T>(out: LossOutput<T>, wrap: fn(ArrayD<T>) -> Values) -> (Vec<Output>, Vec<String>) {
    let mut outputs = vec![Output {
        name: "loss".into(),
        values: wrap(out.loss),
    }];
    outputs.extend(out.grads.into_iter().map(|(n, g)| Output {
        name: format!("grad_{n}"),
        values: wrap(g),
    }));
    (outputs, out.warnings)
}

/// Keeps the outputs asked for, in the order asked.
fn select(
    outputs: &mut Vec<Output>,
    wanted: Option<Vec<String>>,
    model: &str,
) -> Result<(), ApiError> {
    let Some(wanted) = wanted else {
        return Ok(());
    };
    let mut all: Vec<Option<Output>> = std::mem::take(outputs).into_iter().map(Some).collect();
    for name in wanted {
        let found = all
            .iter_mut()
            .find(|o| o.as_ref().is_some_and(|o| o.name == name))
            .and_then(Option::take);
        match found {
            Some(o) => outputs.push(o),
            None => {
                return Err(bad(format!(
                    "output `{name}` is not one {model} gives for this request (it gives `loss`, \
                     and `grad_<input>` for each differentiable input with the parameter grad)"
                )));
            }
        }
    }
    Ok(())
}

fn infer_custom(req: Request, budget: Budget, limits: &Limits) -> Result<Response, ApiError> {
    let dtype = dtype_of(&req)?;
    let mut expression = None;
    let mut grad: Vec<String> = Vec::new();
    for (k, v) in &req.params {
        match (k.as_str(), v) {
            ("expression", Param::Str(s)) => expression = Some(s.clone()),
            ("grad", Param::Str(s)) => {
                grad = s
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
            ("expression" | "grad", p) => {
                return Err(bad(format!(
                    "parameter `{k}` must be a string (got {})",
                    p.kind()
                )));
            }
            ("dtype", _) => {}
            _ => {
                return Err(bad(format!(
                    "unknown parameter `{k}`; the parameters of custom are: expression, grad \
                     (tensor names, comma-separated), dtype"
                )));
            }
        }
    }
    let expression =
        expression.ok_or_else(|| bad("parameter `expression` is missing: the loss to compute"))?;
    if let Some(wanted) = &req.outputs {
        for name in wanted.iter().filter_map(|n| n.strip_prefix("grad_")) {
            if !grad.iter().any(|g| g == name) {
                grad.push(name.to_string());
            }
        }
    }
    let mut body = vec![b'{'];
    key(&mut body, "expression");
    crate::wire::ser::write_str(&mut body, &expression);
    key(&mut body, "grad");
    body.push(b'[');
    for (i, g) in grad.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        crate::wire::ser::write_str(&mut body, g);
    }
    body.push(b']');
    key(&mut body, "dtype");
    crate::wire::ser::write_str(&mut body, dtype);
    key(&mut body, "encoding");
    body.extend_from_slice(b"\"base64\"");
    key(&mut body, "tensors");
    body.push(b'{');
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        crate::wire::ser::write_str(&mut body, &input.name.clone());
        body.push(b':');
        placeholder(&mut body, i);
        tensors.push(tensor(input));
    }
    body.extend_from_slice(b"}}");
    let mut budget = budget;
    let job = with_tensors(tensors, || {
        crate::custom::prepare(&body, &mut budget, None, limits)
    })?;
    // The custom route's own response, with its tensors in base64: read back exactly.
    let text = job()?;
    #[derive(serde::Deserialize)]
    struct Answer {
        loss: Tensor,
        dtype: losses::Dtype,
        #[serde(default)]
        grad: crate::custom::Tensors,
        #[serde(default)]
        warnings: Vec<String>,
    }
    let answer: Answer = serde_json::from_slice(&text).map_err(ApiError::internal)?;
    let values = |t: Tensor| -> Result<Values, ApiError> {
        let shape = lossd_kernels::ndarray::IxDyn(&t.shape);
        let wrong = || ApiError::internal("a custom result does not fit its shape");
        Ok(match (answer.dtype, t.data) {
            (losses::Dtype::Float64, Data::F64(v)) => {
                Values::F64(ArrayD::from_shape_vec(shape, v).map_err(|_| wrong())?)
            }
            (losses::Dtype::Float32, Data::F32(v)) => {
                Values::F32(ArrayD::from_shape_vec(shape, v).map_err(|_| wrong())?)
            }
            // A 0-d result is written as a number.
            (losses::Dtype::Float32, Data::F64(v)) => Values::F32(
                ArrayD::from_shape_vec(shape, v.into_iter().map(|x| x as f32).collect())
                    .map_err(|_| wrong())?,
            ),
            _ => return Err(wrong()),
        })
    };
    let mut outputs = vec![Output {
        name: "loss".into(),
        values: values(answer.loss)?,
    }];
    for (name, t) in answer.grad.0 {
        outputs.push(Output {
            name: format!("grad_{name}"),
            values: values(t)?,
        });
    }
    select(&mut outputs, req.outputs, CUSTOM)?;
    Ok(Response {
        outputs,
        warnings: answer.warnings,
    })
}

/// The gRPC server of [`crate::serve`], while it runs.
pub type GrpcTask = Option<tokio::task::JoinHandle<()>>;

/// Binds and starts the gRPC service at `--grpc-addr` (nothing when it is `off`); the sender
/// stops it, after which [`join_grpc`] waits for its calls in flight.
pub async fn spawn_grpc(
    state: &crate::AppState,
) -> std::io::Result<(tokio::sync::oneshot::Sender<()>, GrpcTask)> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let Some(addr) = state.config.grpc_addr.0 else {
        return Ok((tx, None));
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for gRPC on {addr}: {e}"))
    })?;
    tracing::info!(addr = %listener.local_addr()?, "gRPC (Open Inference Protocol) listening");
    let state = state.clone();
    let task = tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        if let Err(e) = grpc::serve(listener, state, stop).await {
            tracing::error!(error = %e, "gRPC server error");
        }
    });
    Ok((tx, Some(task)))
}

/// Waits for the gRPC server to finish.
pub async fn join_grpc(task: GrpcTask) {
    if let Some(t) = task {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            elements: 1 << 20,
            rank: 16,
        }
    }

    fn input(name: &str, shape: &[usize], data: Data) -> Input {
        let datatype = match &data {
            Data::F64(_) => Datatype::Fp64,
            Data::F32(_) => Datatype::Fp32,
            Data::I64(_) => Datatype::Int64,
        };
        Input {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn every_loss_has_its_options() {
        let mse = Model::find("mse_loss").unwrap();
        assert_eq!(parameters(mse), ["reduction", "grad", "dtype"]);
        let Model::Loss(ce) = Model::find("cross_entropy").unwrap() else {
            panic!()
        };
        let o = options(ce);
        assert!(o.iter().any(|o| o == "ignore_index"), "{o:?}");
        assert!(o.iter().any(|o| o == "label_smoothing"), "{o:?}");
    }

    #[test]
    fn mse_matches_the_json_route() {
        let model = Model::find("mse_loss").unwrap();
        let req = Request {
            inputs: vec![
                input("input", &[3], Data::F64(vec![1.0, 2.5, -1.0])),
                input("target", &[3], Data::F64(vec![0.5, 2.0, 1.0])),
            ],
            params: vec![
                ("reduction".into(), Param::Str("sum".into())),
                ("grad".into(), Param::Bool(true)),
            ],
            outputs: None,
        };
        let out = infer(model, req, budget(), &Limits::default()).unwrap();
        let json = losses::find("mse_loss")
            .unwrap()
            .run(
                br#"{"input":[1.0,2.5,-1.0],"target":[0.5,2.0,1.0],"reduction":"sum","grad":true}"#,
                budget(),
            )
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let Values::F64(loss) = &out.outputs[0].values else {
            panic!()
        };
        assert_eq!(loss.shape(), &[] as &[usize]);
        assert_eq!(json["loss"].as_f64().unwrap(), loss[[]]);
        assert_eq!(out.outputs[1].name, "grad_input");
        assert_eq!(out.outputs[2].name, "grad_target");
    }

    #[test]
    fn errors_are_the_json_routes() {
        let model = Model::find("mse_loss").unwrap();
        let req = |params: Vec<(String, Param)>| Request {
            inputs: vec![
                input("input", &[2], Data::F64(vec![1.0, 2.0])),
                input("target", &[2], Data::F64(vec![0.5, 2.0])),
            ],
            params,
            outputs: None,
        };
        let e = infer(
            model,
            req(vec![("reduction".into(), Param::Str("max".into()))]),
            budget(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidOption);
        assert_eq!(e.pointer.as_deref(), Some("/reduction"));
        let e = infer(
            model,
            req(vec![("margin".into(), Param::Double(1.0))]),
            budget(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.detail.contains("unknown parameter `margin`"), "{e:?}");
        let e = infer(
            model,
            Request {
                inputs: vec![input("input", &[2], Data::F64(vec![1.0, 2.0]))],
                ..Default::default()
            },
            budget(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.detail.contains("`target` is missing"), "{e:?}");
    }

    #[test]
    fn custom_reads_back_exactly() {
        let req = Request {
            inputs: vec![input("a", &[2], Data::F64(vec![0.1, 0.7]))],
            params: vec![
                ("expression".into(), Param::Str("sum(a * a)".into())),
                ("grad".into(), Param::Str("a".into())),
            ],
            outputs: None,
        };
        let out = infer(Model::Custom, req, budget(), &Limits::default()).unwrap();
        let Values::F64(loss) = &out.outputs[0].values else {
            panic!()
        };
        assert_eq!(loss[[]], 0.1 * 0.1 + 0.7 * 0.7);
        let Values::F64(g) = &out.outputs[1].values else {
            panic!()
        };
        assert_eq!(g.as_slice().unwrap(), &[0.2, 1.4]);
    }
}
