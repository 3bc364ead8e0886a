//! The protocol's gRPC service, `inference.GRPCInferenceService` (tonic), and the standard
//! `grpc.health.v1` service for Kubernetes' gRPC probes.
//!
//! Tensors come as `raw_input_contents` (what tritonclient sends: little-endian bytes, one
//! entry per input) or as typed `contents`; outputs go as `raw_output_contents`, which is
//! what tritonclient reads (as Triton answers), each a view of the kernel's own buffer.
//! `ModelInfer`'s tensors are decoded as its message arrives ([`receive`]).

mod receive;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::{Request, Response, Status};

use super::{Datatype, Input, Model, Param, Values, check_size};
use crate::AppState;
use crate::error::{ApiError, Code};
use crate::memory::{Reservation, estimate::Family};
use crate::wire::{Budget, Data};
use receive::{Raw, Receipt, Received};

/// The generated messages and service of `proto/grpc_predict_v2.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;
use pb::model_infer_request::InferInputTensor;
use pb::model_metadata_response::TensorMetadata;

/// The status of an error: the protocol's gRPC codes for lossd's HTTP statuses.
pub fn status(e: ApiError) -> Status {
    let code = match super::status(e.code) {
        400 | 405 | 415 => tonic::Code::InvalidArgument,
        404 => tonic::Code::NotFound,
        413 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    let mut s = Status::new(code, e.detail);
    if let Ok(v) = e.code.as_str().parse() {
        s.metadata_mut().insert("lossd-code", v);
    }
    s
}

/// The service: the HTTP routes' state (pool, limits) behind the protocol's RPCs.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

impl Service {
    /// The service over `state`, as a tonic server with the body limit as its message limit;
    /// the API keys are checked before a `ModelInfer` body is read.
    pub fn server(
        state: AppState,
    ) -> InterceptedService<receive::Receive<GrpcInferenceServiceServer<Self>>, KeyCheck> {
        let limit = state.config.max_body_bytes;
        let keys = KeyCheck(state.keys.clone());
        let server = GrpcInferenceServiceServer::new(Self {
            state: state.clone(),
        })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
        InterceptedService::new(receive::Receive::new(server, state), keys)
    }
}

/// The API keys on gRPC (docs/access.md): with keys set, every call of the inference service
/// needs the metadata entry `authorization: Bearer <key>`, else `UNAUTHENTICATED`. The
/// standard health service stays open, as `/v2/health/*` does over HTTP, for probes.
#[derive(Clone)]
pub struct KeyCheck(Option<std::sync::Arc<crate::access::Keys>>);

impl Interceptor for KeyCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(keys) = &self.0 else {
            return Ok(req);
        };
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .and_then(|(scheme, key)| scheme.eq_ignore_ascii_case("bearer").then_some(key));
        match token {
            Some(t) if keys.accepts(t.trim().as_bytes()) => Ok(req),
            _ => Err(Status::unauthenticated(
                "an API key is needed: the metadata entry `authorization: Bearer <key>`",
            )),
        }
    }
}

fn model_of(name: &str, version: &str) -> Result<Model, ApiError> {
    Model::find(name).and_then(|m| m.version(version))
}

fn bad(detail: String) -> ApiError {
    ApiError::tensor(detail)
}

/// A request parameter.
fn param(k: &str, p: &pb::InferParameter) -> Result<Param, ApiError> {
    Ok(match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Param::Bool(*b),
        Some(ParameterChoice::Int64Param(i)) => Param::Int(*i),
        Some(ParameterChoice::Uint64Param(u)) => match i64::try_from(*u) {
            Ok(i) => Param::Int(i),
            Err(_) => Param::UInt(*u),
        },
        Some(ParameterChoice::DoubleParam(f)) => Param::Double(*f),
        Some(ParameterChoice::StringParam(s)) => Param::Str(s.clone()),
        None => {
            return Err(ApiError::new(
                Code::InvalidOption,
                format!("parameter `{k}` has no value"),
            ));
        }
    })
}

/// An input's typed `contents` as `n` elements of `datatype`.
fn typed(
    name: &str,
    contents: Option<pb::InferTensorContents>,
    datatype: Datatype,
    n: usize,
) -> Result<Data, ApiError> {
    let c = contents.unwrap_or_default();
    let (data, count) = match datatype {
        Datatype::Fp64 => {
            let len = c.fp64_contents.len();
            (Data::F64(c.fp64_contents), len)
        }
        Datatype::Fp32 => {
            let len = c.fp32_contents.len();
            (Data::F32(c.fp32_contents), len)
        }
        Datatype::Int64 => {
            let len = c.int64_contents.len();
            (Data::I64(c.int64_contents), len)
        }
        Datatype::Int32 => {
            let len = c.int_contents.len();
            (
                Data::I64(c.int_contents.into_iter().map(i64::from).collect()),
                len,
            )
        }
    };
    if count != n {
        return Err(bad(format!(
            "input `{name}` has {count} elements in its {} contents but its shape makes {n}",
            datatype.as_str()
        )));
    }
    Ok(data)
}

/// The `raw_input_contents` a `ModelInfer` call uses: those decoded as the message arrived
/// (`raw`), or, when none were, the message's own.
pub(crate) fn raw_contents(req: &mut pb::ModelInferRequest, raw: Vec<Raw>) -> Vec<Raw> {
    if raw.is_empty() {
        std::mem::take(&mut req.raw_input_contents)
            .into_iter()
            .map(Raw::Bytes)
            .collect()
    } else {
        raw
    }
}

/// The protocol-independent request of a `ModelInfer` call whose `raw_input_contents` are
/// `raw` (the message's own, or decoded as it arrived).
pub fn request(
    req: pb::ModelInferRequest,
    raw: Vec<Raw>,
    budget: Budget,
) -> Result<super::Request, ApiError> {
    let mut out = super::Request::default();
    // In name order: the parameters are a map, and with two bad ones the error would
    // otherwise name either, from one call to the next.
    let mut params: Vec<_> = req.parameters.iter().collect();
    params.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (k, p) in params {
        out.params.push((k.clone(), param(k, p)?));
    }
    if !req.outputs.is_empty() {
        let mut names = Vec::with_capacity(req.outputs.len());
        for o in &req.outputs {
            // `binary_data` is HTTP's; a KServe client may set it on gRPC too.
            if let Some(k) = o.parameters.keys().filter(|k| *k != "binary_data").min() {
                return Err(ApiError::new(
                    Code::InvalidOption,
                    format!("output `{}`: parameter `{k}` is not supported", o.name),
                ));
            }
            names.push(o.name.clone());
        }
        out.outputs = Some(names);
    }
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs (one for each input, in order)",
            raw.len(),
            req.inputs.len()
        )));
    }
    let mut left = budget.elements;
    let mut sized = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        let InferInputTensor {
            name,
            datatype,
            shape,
            parameters,
            ..
        } = t;
        let dt = Datatype::parse(datatype).ok_or_else(|| {
            bad(format!(
                "input `{name}` has datatype {datatype}; lossd takes FP64, FP32, INT64 and INT32"
            ))
        })?;
        if let Some(k) = parameters.keys().min() {
            return Err(bad(format!(
                "input `{name}`: parameter `{k}` is not supported"
            )));
        }
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| bad(format!("input `{name}`: `shape` must be non-negative")))?;
        let n = check_size(name, &shape, &budget, &mut left)?;
        sized.push((dt, shape, n));
    }
    let mut raw = raw.into_iter();
    for (t, (datatype, shape, n)) in req.inputs.into_iter().zip(sized) {
        let data = match raw.next() {
            Some(raw) => {
                if t.contents.is_some() {
                    return Err(bad(format!(
                        "input `{}` has both contents and raw_input_contents",
                        t.name
                    )));
                }
                match raw {
                    Raw::Bytes(bytes) => super::binary::decode(&t.name, &bytes, datatype, n)?,
                    // Decoded as the input's entry said when it arrived, which is this one.
                    Raw::Decoded {
                        data,
                        datatype: as_,
                        ..
                    } if as_ == datatype && data.len() == n => data,
                    Raw::Decoded { bytes, .. } => {
                        return Err(bad(format!(
                            "input `{}` has {bytes} bytes of data, which its shape and \
                             datatype {} do not make",
                            t.name,
                            datatype.as_str()
                        )));
                    }
                }
            }
            None => typed(&t.name, t.contents, datatype, n)?,
        };
        out.inputs.push(Input {
            name: t.name,
            datatype,
            shape,
            data,
        });
    }
    Ok(out)
}

/// An output's bytes, without a copy when the kernel's buffer is already them. The bytes
/// keep `held` (the request's reservation) until the last of them has been sent.
fn raw(values: Values, held: &Arc<Reservation>) -> Bytes {
    struct Le<T> {
        array: lossd_kernels::ndarray::ArrayD<T>,
        _held: Arc<Reservation>,
    }
    impl<T: bytemuck::Pod> AsRef<[u8]> for Le<T> {
        fn as_ref(&self) -> &[u8] {
            bytemuck::cast_slice(self.array.as_slice().unwrap_or_default())
        }
    }
    struct Owned {
        bytes: Vec<u8>,
        _held: Arc<Reservation>,
    }
    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    let direct = cfg!(target_endian = "little")
        && match &values {
            Values::F64(a) => a.is_standard_layout(),
            Values::F32(a) => a.is_standard_layout(),
        };
    if !direct {
        return Bytes::from_owner(Owned {
            bytes: values.le_bytes().into_owned(),
            _held: held.clone(),
        });
    }
    match values {
        Values::F64(array) => Bytes::from_owner(Le {
            array,
            _held: held.clone(),
        }),
        Values::F32(array) => Bytes::from_owner(Le {
            array,
            _held: held.clone(),
        }),
    }
}

/// The `ModelInfer` response of a computed request. `held` is shrunk to its outputs, which
/// keep it until they have been sent.
pub fn response(
    model: Model,
    id: String,
    out: super::Response,
    mut held: Reservation,
) -> pb::ModelInferResponse {
    let mut res = pb::ModelInferResponse {
        model_name: model.name().to_string(),
        model_version: super::VERSION.to_string(),
        id,
        ..Default::default()
    };
    if !out.warnings.is_empty() {
        res.parameters.insert(
            "warnings".into(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(out.warnings.join("\n"))),
            },
        );
    }
    let bytes: usize = out
        .outputs
        .iter()
        .map(|o| o.values.len() * o.values.datatype().size())
        .sum();
    held.shrink_to(bytes as u64);
    let held = Arc::new(held);
    for o in out.outputs {
        res.outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: o.values.datatype().as_str().to_string(),
                shape: o.values.shape().iter().map(|&d| d as i64).collect(),
                ..Default::default()
            });
        res.raw_output_contents.push(raw(o.values, &held));
    }
    res
}

/// Logs a call as the HTTP access log does, counts it in the metrics as the HTTP middleware
/// does, and gives it a request id.
struct Call {
    method: &'static str,
    id: String,
    start: Instant,
    /// The loss label of the metrics: empty but for `ModelInfer`.
    loss: &'static str,
    /// Whether the memory budget refused it.
    refused_for_memory: bool,
}

impl Call {
    fn new<T>(method: &'static str, req: &Request<T>) -> Self {
        let id = req
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        Self {
            method,
            id,
            start: Instant::now(),
            loss: "",
            refused_for_memory: false,
        }
    }

    fn end<T>(self, r: Result<T, ApiError>) -> Result<Response<T>, Status> {
        let elapsed = self.start.elapsed();
        let (http_status, reason) = match &r {
            Ok(_) => (200, None),
            Err(e) => (
                super::status(e.code),
                match e.code {
                    _ if self.refused_for_memory => Some("memory"),
                    c @ (Code::Overloaded
                    | Code::Timeout
                    | Code::PayloadTooLarge
                    | Code::UnsupportedMediaType) => Some(c.as_str()),
                    _ => None,
                },
            ),
        };
        crate::metrics::record_call(
            &format!("grpc {}", self.method),
            self.loss,
            http_status,
            elapsed,
            reason,
        );
        let r = r.map_err(status);
        let code = match &r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        tracing::info!(
            method = "gRPC",
            route = self.method,
            request_id = self.id.as_str(),
            status = code as i32,
            latency_ms = elapsed.as_nanos() as f64 / 1e6,
            "answered"
        );
        let id = self.id.parse().ok();
        let mut res = match r {
            Ok(v) => Response::new(v),
            Err(mut s) => {
                if let Some(id) = id {
                    s.metadata_mut().insert("x-request-id", id);
                }
                return Err(s);
            }
        };
        if let Some(id) = id {
            res.metadata_mut().insert("x-request-id", id);
        }
        Ok(res)
    }
}

fn tensors(ts: Vec<super::TensorMeta>) -> Vec<TensorMetadata> {
    ts.into_iter()
        .map(|t| TensorMetadata {
            name: t.name,
            datatype: t.datatype.to_string(),
            shape: t.shape,
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        req: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Call::new("ServerLive", &req).end(Ok(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        req: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.state.pool.ready();
        Call::new("ServerReady", &req).end(Ok(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let call = Call::new("ModelReady", &req);
        let r = req.get_ref();
        let r = model_of(&r.name, &r.version).map(|_| pb::ModelReadyResponse {
            ready: self.state.pool.ready(),
        });
        call.end(r)
    }

    async fn server_metadata(
        &self,
        req: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Call::new("ServerMetadata", &req).end(Ok(pb::ServerMetadataResponse {
            name: "lossd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["binary_tensor_data".into()],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let call = Call::new("ModelMetadata", &req);
        let r = req.get_ref();
        let r = model_of(&r.name, &r.version).map(|model| {
            let (inputs, outputs) = super::metadata(model);
            pb::ModelMetadataResponse {
                name: model.name().into(),
                versions: vec![super::VERSION.into()],
                platform: super::PLATFORM.into(),
                inputs: tensors(inputs),
                outputs: tensors(outputs),
            }
        });
        call.end(r)
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let mut call = Call::new("ModelInfer", &req);
        let receipt = req.extensions().get::<Receipt>().and_then(Receipt::take);
        let req = req.into_inner();
        let received = match receipt {
            Some(Ok(received)) => Some(received),
            Some(Err(refused)) => {
                // Refused for memory while it arrived; a model that does not exist is
                // still that first.
                return match Model::find(&refused.model) {
                    Ok(model) => {
                        call.loss = model.name();
                        call.refused_for_memory = true;
                        call.end(Err(refused.error))
                    }
                    Err(e) => {
                        call.loss = "unknown";
                        call.end(Err(e))
                    }
                };
            }
            None => None,
        };
        let model = match model_of(&req.model_name, &req.model_version) {
            Ok(m) => m,
            Err(e) => {
                // A name that is no model is `unknown`, so that clients cannot grow the labels.
                call.loss = Model::find(&req.model_name).map_or("unknown", Model::name);
                return call.end(Err(e));
            }
        };
        call.loss = model.name();
        let state = &self.state;
        // The memory budget as over HTTP: the message and the working set of its elements,
        // reserved before anything is computed. What the message holds as it arrived is
        // reserved already, and this tops it up.
        let (len, raw, held) = match received {
            Some(Received { raw, held, len }) => (len, raw, held),
            None => (prost::Message::encoded_len(&req) as u64, Vec::new(), None),
        };
        let need = Family::of(model.name())
            .bytes(len, elements(&req).min(state.config.max_elements as u64));
        let deadline = state.pool.deadline();
        let reserved = match held {
            Some(mut held) => match need.checked_sub(held.bytes()) {
                Some(more) if more > 0 => held.grow(more, deadline).await.map(|()| held),
                _ => Ok(held),
            },
            None => state.memory.reserve(need, deadline).await,
        };
        let held = match reserved {
            Ok(held) => held,
            Err(r) => {
                call.refused_for_memory = true;
                // The HTTP routes' 413 and 503, which the gRPC status mapping makes
                // RESOURCE_EXHAUSTED and UNAVAILABLE.
                return call.end(Err(crate::memory::refusal_error(
                    r,
                    need,
                    state.memory.capacity(),
                )));
            }
        };
        let mut req = req;
        let raw = raw_contents(&mut req, raw);
        let budget = state.budget();
        let limits = state.config.expression_limits();
        let id = req.id.clone();
        let r = state
            .pool
            .run(move || {
                let r = request(req, raw, budget)?;
                let out = super::infer(model, r, budget, &limits)?;
                Ok(response(model, id, out, held))
            })
            .await;
        call.end(r)
    }
}

/// The elements a request's shapes make, in all (saturating: the limits refuse too many).
fn elements(req: &pb::ModelInferRequest) -> u64 {
    req.inputs
        .iter()
        .map(|t| {
            t.shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(u64::try_from(d).unwrap_or(0)))
                .unwrap_or(u64::MAX)
        })
        .fold(0u64, u64::saturating_add)
}

/// The largest HTTP/2 frame the server accepts: a 16.8 MB message in 64 frames instead of
/// h2's default of a thousand (16 KiB), each small enough to still be in cache when its
/// tensor bytes are copied out.
const FRAME: u32 = 256 << 10;
/// The bytes a client may send on one call before the server has read them. Larger windows
/// let h2 read ahead of the call into buffers that are cold by the time they are decoded
/// (tritonclient, 16.8 MB messages: 8 MiB cost 5.9 to 7.5 ms of CPU a request, 2 MiB 4.4 to
/// 5.3 ms); 2 MiB still fills 2 GB/s at a millisecond of round trip.
const STREAM_WINDOW: u32 = 2 << 20;

/// Serves the gRPC services on `listener` until `shutdown` resolves, then finishes the
/// calls in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<GrpcInferenceServiceServer<Service>>()
        .await;
    let pool = state.pool.clone();
    let signal = async move {
        shutdown.await;
        // Draining: probes see NOT_SERVING while the calls in flight finish.
        health
            .set_not_serving::<GrpcInferenceServiceServer<Service>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        drop(pool);
    };
    tonic::transport::Server::builder()
        // Large tensors come in few frames, read as they are decoded (see FRAME).
        .max_frame_size(Some(FRAME))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(2 * STREAM_WINDOW))
        .add_service(health_service)
        .add_service(Service::server(state))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        )
        .await
}
