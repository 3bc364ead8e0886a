//! Access (docs/access.md): API keys, CORS, compressed request and response bodies, all built
//! from tower-http's layers. [`crate::app`] stacks them, outermost first:
//!
//! - [`cors`]: answers preflight requests itself, so they need no key, and marks every other
//!   answer (a 401 included) for the browser;
//! - [`Compress`]: compresses large answers when `Accept-Encoding` allows ([`compression`]);
//! - [`auth`]: checks `Authorization: Bearer <key>` against [`Keys`] when keys are configured;
//! - [`decompress`]: decodes `Content-Encoding` bodies as the handler reads them, so the body
//!   limit of `routes::read_body` counts decoded bytes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower::layer::util::Identity;
use tower::util::Either;
use tower::{Layer, ServiceExt};
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::decompression::{DecompressionBody, RequestDecompression};
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

use crate::config::{Config, CorsOrigins};
use crate::error::{ApiError, Code};

/// The longest API key, in bytes. Keys are compared as fixed-length blocks of this size, so the
/// time a comparison takes depends on neither key's content nor its length.
pub const MAX_KEY_BYTES: usize = 256;

/// Responses at least this large are compressed when the client accepts an encoding; smaller
/// ones are sent as they are. Below it an answer is a segment or two on the wire, and the
/// encoder's fixed set-up cost is more than the transfer time the saved bytes would buy even
/// on a slow (100 Mbit/s) link; the measurement is in the commit that set it.
pub const COMPRESS_FROM_BYTES: u64 = 4096;

/// One key, padded with zeros to [`MAX_KEY_BYTES`].
struct Key {
    bytes: [u8; MAX_KEY_BYTES],
    len: usize,
}

impl Key {
    /// `token` as a block: its first [`MAX_KEY_BYTES`] bytes and its whole length (a longer
    /// token keeps its length, so it matches no key).
    fn padded(token: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_KEY_BYTES];
        let n = token.len().min(MAX_KEY_BYTES);
        bytes[..n].copy_from_slice(&token[..n]);
        Key {
            bytes,
            len: token.len(),
        }
    }

    /// 1 when the two keys are equal, else 0, looking at every byte of both blocks whatever
    /// they hold: no early exit on a length or content difference.
    fn matches(&self, other: &Key) -> u8 {
        let mut acc = 0u8;
        for (a, b) in self.bytes.iter().zip(other.bytes.iter()) {
            acc |= a ^ b;
        }
        let diff = ((self.len ^ other.len) as u64) | u64::from(acc);
        // `diff | -diff` has its top bit set exactly when `diff` is not zero.
        std::hint::black_box((((diff | diff.wrapping_neg()) >> 63) as u8) ^ 1)
    }
}

/// The API keys in force: those of `--api-keys` and those of `--api-keys-file`, which
/// [`Keys::reload`] reads again (on SIGHUP). Keys are never logged or shown: messages name
/// a key by its position.
pub struct Keys {
    inline: Vec<Arc<Key>>,
    file: Option<PathBuf>,
    current: RwLock<Arc<[Arc<Key>]>>,
}

impl Keys {
    /// The keys of `config`; `None` when no key is configured (the service is then open).
    /// Fails when a key is unusable or the keys file cannot be read.
    pub fn from_config(config: &Config) -> io::Result<Option<Arc<Keys>>> {
        let given = config.api_keys.as_ref().map_or(&[][..], |k| &k.0[..]);
        if given.is_empty() && config.api_keys_file.is_none() {
            return Ok(None);
        }
        let mut inline = Vec::with_capacity(given.len());
        for (i, k) in given.iter().enumerate() {
            inline.push(Arc::new(checked(k, || {
                format!("key {} of --api-keys (LOSSD_API_KEYS)", i + 1)
            })?));
        }
        let keys = Keys {
            inline,
            file: config.api_keys_file.clone(),
            current: RwLock::new(Arc::from(Vec::new())),
        };
        let n = keys.reload()?;
        tracing::info!(keys = n, "API keys required");
        if n == 0 {
            tracing::warn!("the API keys file holds no key: every protected route answers 401");
        }
        Ok(Some(Arc::new(keys)))
    }

    /// Reads the keys file again (when there is one) and puts its keys and those of
    /// `--api-keys` in force; returns how many keys are in force. On an error the keys in
    /// force stay as they were.
    pub fn reload(&self) -> io::Result<usize> {
        let mut all = self.inline.clone();
        if let Some(path) = &self.file {
            all.extend(read_keys_file(path)?.into_iter().map(Arc::new));
        }
        let n = all.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(all);
        Ok(n)
    }

    /// The number of keys in force.
    pub fn len(&self) -> usize {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is in force (every protected route then refuses).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `token` is one of the keys, compared with every key in constant time.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let given = Key::padded(token);
        let keys = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut found = 0u8;
        for k in keys.iter() {
            found |= k.matches(&given);
        }
        found == 1
    }

    /// The keys file, if there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// A key as a [`Key`], or an error naming it by `what` (never by its content).
fn checked(key: &str, what: impl Fn() -> String) -> io::Result<Key> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {why}", what()));
    if key.len() > MAX_KEY_BYTES {
        return Err(bad(&format!("longer than {MAX_KEY_BYTES} bytes")));
    }
    // What a client can send after `Bearer `: visible ASCII, no spaces.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "only visible ASCII characters, without spaces, can be sent as a key",
        ));
    }
    Ok(Key::padded(key.as_bytes()))
}

/// The keys of a keys file: one a line; blank lines and the whitespace around a key are
/// ignored.
fn read_keys_file(path: &Path) -> io::Result<Vec<Key>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read the API keys file {}: {e}", path.display()),
        )
    })?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() {
            continue;
        }
        keys.push(checked(key, || {
            format!("line {} of the API keys file {}", i + 1, path.display())
        })?);
    }
    Ok(keys)
}

/// Re-reads the keys file on SIGHUP, for as long as the process runs; logs how many keys are
/// in force, or why the file could not be read (the keys in force then stay).
pub fn reload_on_sighup(keys: Arc<Keys>) {
    #[cfg(unix)]
    {
        let Some(path) = keys.file().map(Path::to_path_buf) else {
            return;
        };
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: the API keys file will not be re-read");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match keys.reload() {
                    Ok(n) => {
                        tracing::info!(keys = n, file = %path.display(), "API keys reloaded")
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        keys = keys.len(),
                        "API keys not reloaded: the keys in force stay"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = keys;
}

/// Routes that never need a key: the health checks (load balancers and orchestrators call
/// them without credentials) and the documentation (a browser must load Swagger UI before
/// its Authorize button can take a key).
pub fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/docs")
        || path.starts_with("/docs/")
        || path.starts_with("/v2/health/")
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let head = value.get(..SCHEME.len())?;
    if !head.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The check of `Authorization: Bearer <key>`, for tower-http's `ValidateRequestHeaderLayer`.
#[derive(Clone)]
pub struct Bearer(Arc<Keys>);

impl ValidateRequest<Body> for Bearer {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request) -> Result<(), Response> {
        if is_open(req.uri().path()) {
            return Ok(());
        }
        let value = req.headers().get(header::AUTHORIZATION);
        let detail = match value.map(|v| bearer_token(v.as_bytes())) {
            Some(Some(token)) if self.0.accepts(token) => return Ok(()),
            Some(Some(_)) => "the API key is not valid",
            Some(None) => "the Authorization header must be `Bearer <API key>`",
            None => "this route needs an API key: send `Authorization: Bearer <key>`",
        };
        Err(unauthorized(detail))
    }
}

/// The 401 answer.
fn unauthorized(detail: &str) -> Response {
    let mut res = ApiError::new(Code::Unauthorized, detail).into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// The key check when keys are configured, else nothing.
pub fn auth(keys: Option<&Arc<Keys>>) -> Either<ValidateRequestHeaderLayer<Bearer>, Identity> {
    match keys {
        Some(keys) => Either::Left(ValidateRequestHeaderLayer::custom(Bearer(keys.clone()))),
        None => Either::Right(Identity::new()),
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// CORS for the origins of `--cors-origins`, else nothing. A preflight is answered here, before
/// the key check; other answers get `Access-Control-Allow-Origin` when the origin is allowed.
pub fn cors(config: &Config) -> Either<CorsLayer, Identity> {
    let Some(origins) = &config.cors_origins else {
        return Either::Right(Identity::new());
    };
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    Either::Left(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::CONTENT_ENCODING,
                X_REQUEST_ID.clone(),
            ])
            .expose_headers([
                X_REQUEST_ID.clone(),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Which answers may be compressed: at least [`COMPRESS_FROM_BYTES`], and neither images nor
/// problem documents.
type CompressWhen = And<And<SizeAbove, NotForContentType>, NotForContentType>;

fn compress_when() -> CompressWhen {
    SizeAbove::new(COMPRESS_FROM_BYTES)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::const_new("application/problem+json"))
}

/// Compression of answers of at least [`COMPRESS_FROM_BYTES`] when `Accept-Encoding` allows
/// (gzip, deflate, br, zstd), at each encoder's fastest level: on the networks lossd serves,
/// time spent compressing is time the client waits. Problem documents and images are never
/// compressed.
pub fn compression() -> CompressionLayer<CompressWhen> {
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(compress_when())
}

/// [`compression`] for the requests that carry `Accept-Encoding`; a request without it gets
/// its answer as it is, with only the `Vary: Accept-Encoding` that the layer adds to an
/// answer it could have compressed, so the answers are the same. Why: the layer's body type
/// holds every encoder's state inline (kilobytes), and every answer, compressed or not, was
/// moved and boxed in it: `memmove` was a visible part of a small request's CPU in perf.
#[derive(Clone, Debug)]
pub struct Compress<S> {
    inner: S,
}

impl<S> Compress<S> {
    /// `inner`, its answers compressed when asked.
    pub fn new(inner: S) -> Self {
        Compress { inner }
    }
}

impl<S> tower::Service<Request> for Compress<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either2<Plain<S::Future>, BoxedAnswer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !req.headers().contains_key(header::ACCEPT_ENCODING) {
            return Either2::Left {
                inner: Plain {
                    inner: self.inner.call(req),
                },
            };
        }
        let answer = compression()
            .layer(take_ready(&mut self.inner))
            .oneshot(req);
        Either2::Right {
            inner: Box::pin(async move { Ok(answer.await?.map(Body::new)) }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to a request without `Accept-Encoding`, marked `Vary: Accept-Encoding`
    /// where tower-http's compression would have marked it.
    pub struct Plain<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for Plain<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Ok(mut res) = std::task::ready!(self.project().inner.poll(cx));
        // The layer's own test (tower-http 0.7, compression/future.rs): an answer it may
        // compress is marked, unless a `Vary` already names `Accept-Encoding`.
        let compressible = !res.headers().contains_key(header::CONTENT_ENCODING)
            && !res.headers().contains_key(header::CONTENT_RANGE)
            && compress_when().should_compress(&res);
        let marked = res
            .headers()
            .get_all(header::VARY)
            .iter()
            .any(|v| names_accept_encoding(v.as_bytes()));
        if compressible && !marked {
            res.headers_mut()
                .append(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        Poll::Ready(Ok(res))
    }
}

/// Whether a `Vary` value contains `accept-encoding`, in any case (as tower-http tests it).
fn names_accept_encoding(value: &[u8]) -> bool {
    const NAME: &[u8] = b"accept-encoding";
    value
        .windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME))
}

/// A request body that did not decode: the handler answers 400 `invalid_body`.
#[derive(Debug, thiserror::Error)]
#[error("the body is not valid {encoding}: {source}")]
pub struct CorruptBody {
    encoding: &'static str,
    source: tower_http::BoxError,
}

/// Decodes a `Content-Encoding: gzip, deflate, br or zstd` body with tower-http's
/// `RequestDecompression` as the handler reads it; an unknown encoding is a 415. A request
/// without `Content-Encoding` goes straight on, its body untouched and nothing boxed (a
/// plain `Service` for that, rather than axum's `from_fn`, which boxes on every request).
#[derive(Clone, Debug)]
pub struct Decompress<S> {
    inner: S,
}

impl<S> Decompress<S> {
    /// `inner`, with bodies decoded.
    pub fn new(inner: S) -> Self {
        Decompress { inner }
    }
}

type BoxedAnswer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request> for Decompress<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either2<S::Future, BoxedAnswer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !req.headers().contains_key(header::CONTENT_ENCODING) {
            return Either2::Left {
                inner: self.inner.call(req),
            };
        }
        Either2::Right {
            inner: Box::pin(decompress(req, take_ready(&mut self.inner))),
        }
    }
}

/// The service `poll_ready` made ready, to go with the request into a future of its own; a
/// clone takes its place.
fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

pin_project_lite::pin_project! {
    /// One of two futures with the same output.
    #[project = Either2Proj]
    pub enum Either2<A, B> {
        Left { #[pin] inner: A },
        Right { #[pin] inner: B },
    }
}

impl<A, B> Future for Either2<A, B>
where
    A: Future,
    B: Future<Output = A::Output>,
{
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.project() {
            Either2Proj::Left { inner } => inner.poll(cx),
            Either2Proj::Right { inner } => inner.poll(cx),
        }
    }
}

/// [`Decompress`] for a request with `Content-Encoding`.
async fn decompress<S>(req: Request, next: S) -> Result<Response, Infallible>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return next.oneshot(req).await;
    };
    let encoding = match value.as_bytes() {
        b"gzip" => "gzip",
        b"deflate" => "deflate",
        b"br" => "br",
        b"zstd" => "zstd",
        b"identity" => "identity",
        other => {
            let shown = std::str::from_utf8(other)
                .ok()
                .filter(|s| s.len() <= 40)
                .map_or_else(String::new, |s| format!(" `{s}`"));
            let mut res = ApiError::new(
                Code::UnsupportedMediaType,
                format!(
                    "the content encoding{shown} is not supported: send the body as it is, or \
                     as gzip, deflate, br or zstd"
                ),
            )
            .into_response();
            res.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip,deflate,br,zstd,identity"),
            );
            return Ok(res);
        }
    };
    let inner = next.map_request(move |req: Request<DecompressionBody<Body>>| {
        req.map(|body| Body::new(body.map_err(move |source| CorruptBody { encoding, source })))
    });
    match RequestDecompression::new(inner).oneshot(req).await {
        Ok(res) => Ok(res.into_response()),
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    /// Answers of every kind the compression layer treats apart: large and small, a problem
    /// document, a large error that is not one, an image, one already encoded, one with a
    /// range, and ones whose `Vary` already names (or does not name) `Accept-Encoding`.
    fn router() -> Router {
        let big = "x".repeat(COMPRESS_FROM_BYTES as usize + 10);
        let answer =
            |ct: &'static str, body: String, extra: &'static [(&'static str, &'static str)]| {
                move || {
                    let body = body.clone();
                    async move {
                        let mut res = ([(header::CONTENT_TYPE, ct)], body).into_response();
                        for (k, v) in extra {
                            res.headers_mut().append(*k, HeaderValue::from_static(v));
                        }
                        res
                    }
                }
            };
        Router::new()
            .route("/big", get(answer("application/json", big.clone(), &[])))
            .route("/small", get(answer("application/json", "{}".into(), &[])))
            .route(
                "/problem",
                get(answer("application/problem+json", big.clone(), &[])),
            )
            .route("/image", get(answer("image/png", big.clone(), &[])))
            .route(
                "/error",
                get(|| async { (http::StatusCode::BAD_REQUEST, "e".repeat(5000)) }),
            )
            .route(
                "/encoded",
                get(answer(
                    "application/json",
                    big.clone(),
                    &[("content-encoding", "gzip")],
                )),
            )
            .route(
                "/range",
                get(answer(
                    "application/json",
                    big.clone(),
                    &[("content-range", "bytes 0-9/20")],
                )),
            )
            .route(
                "/vary-origin",
                get(answer(
                    "application/json",
                    big.clone(),
                    &[("vary", "origin")],
                )),
            )
            .route(
                "/vary-both",
                get(answer(
                    "application/json",
                    big,
                    &[("vary", "Origin, Accept-Encoding")],
                )),
            )
    }

    async fn answer<S>(
        svc: S,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>)
    where
        S: tower::Service<Request, Error = Infallible>,
        S::Response: IntoResponse,
    {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        if let Some(a) = accept {
            req.headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_str(a).unwrap());
        }
        let res = svc.oneshot(req).await.unwrap().into_response();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn answers_are_those_of_the_compression_layer() {
        let paths = [
            "/big",
            "/small",
            "/problem",
            "/error",
            "/image",
            "/encoded",
            "/range",
            "/vary-origin",
            "/vary-both",
        ];
        // Without `Accept-Encoding`, the case `Compress` answers itself; with one (the layer
        // answers), that the answer comes through it whole.
        for path in paths {
            for (method, accept) in [
                (Method::GET, None),
                (Method::HEAD, None),
                (Method::GET, Some("gzip")),
            ] {
                let ours = answer(Compress::new(router()), method.clone(), path, accept).await;
                let layer = answer(compression().layer(router()), method, path, accept).await;
                assert_eq!(ours, layer, "{path} {accept:?}");
            }
        }
        // And the test sees the difference it is about: the mark on a large answer.
        let (_, headers, _) = answer(Compress::new(router()), Method::GET, "/big", None).await;
        assert!(headers.contains(&("vary".into(), "accept-encoding".into())));
        let (_, headers, _) = answer(Compress::new(router()), Method::GET, "/small", None).await;
        assert!(!headers.iter().any(|(k, _)| k == "vary"));
    }
}
