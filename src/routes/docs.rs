//! `GET /openapi.json` (the committed document, byte for byte) and `GET /docs` (Swagger UI,
//! served from the binary).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// The OpenAPI document.
pub async fn openapi_json() -> Response {
    let mut res = crate::openapi::json().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Routes for the document and Swagger UI (its assets are compiled into the binary).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let ui = SwaggerUi::new("/docs")
        .config(Config::new(["/openapi.json"]).display_request_duration(true));
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(ui)
}
