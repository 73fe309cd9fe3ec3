//! The OpenAPI document and the pages that serve it: `GET /openapi.json` (generated from
//! the handlers' `#[utoipa::path]` attributes by `api::routes`) and `GET /docs`, a small
//! self-contained page that renders it. No CDN and no build-time download: the page is
//! compiled in with `include_str!`, so the docs work offline and in air-gapped clusters.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

/// Title, description and tags; the paths come from `api::routes`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "segserve",
        description = "Instance segmentation over HTTP with YOLO ONNX models. Three ways in: \
            the PixelLib-compatible `/segmentapi`, the richer `/v1/segment`, and the Open Inference \
            Protocol (KServe v2 / Triton) under `/v2`. Errors are JSON `{\"error\", \"error_type\"}`; \
            any route can also answer 500 (details only in the server log)."
    ),
    tags(
        (name = "segserve", description = "Native API"),
        (name = "pixellib", description = "Drop-in for PixelLib's Flask REST API"),
        (name = "kserve", description = "Open Inference Protocol (KServe v2 / Triton) over REST"),
        (name = "operations", description = "Probes, metrics and these docs"),
    )
)]
pub struct ApiDoc;

/// The query options every segmenting route takes besides its own (documentation only:
/// `crate::options` parses them, and refuses any other key with 400).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FilterQuery {
    /// Score threshold, 0..1 (0.25).
    conf: Option<f32>,
    /// NMS IoU threshold, 0..1 (0.7).
    iou: Option<f32>,
    /// Most detections kept, 1..=1000 (300).
    max_det: Option<usize>,
    /// Keep only these classes: names or ids, comma-separated (on /v1/background, what stays
    /// in front: PixelLib's `detect=`).
    classes: Option<String>,
    /// Model name (file stem); default: the first --model.
    model: Option<String>,
}

/// The errors of every route that takes a photo and segments it (documentation only).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum UploadErrors {
    /// No image, or a bad parameter (the message names it).
    #[response(status = 400)]
    BadRequest(crate::error::ErrorBody),
    /// No such model.
    #[response(status = 404)]
    NotFound(crate::error::ErrorBody),
    /// Body not received in time.
    #[response(status = 408)]
    Timeout(crate::error::ErrorBody),
    /// Body or image over a limit, or more work than the memory budget can ever hold.
    #[response(status = 413)]
    TooLarge(crate::error::ErrorBody),
    /// Unsupported content type, Content-Encoding or image format.
    #[response(status = 415)]
    Unsupported(crate::error::ErrorBody),
    /// Corrupt image.
    #[response(status = 422)]
    Corrupt(crate::error::ErrorBody),
    /// Overloaded (queue or memory budget) or not ready; retry after `Retry-After`.
    #[response(status = 503)]
    Busy(crate::error::ErrorBody),
}

/// The whole spec as JSON, built once.
pub fn spec_json() -> &'static str {
    static SPEC: OnceLock<String> = OnceLock::new();
    SPEC.get_or_init(|| {
        super::routes()
            .into_openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this server.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec_json()).into_response()
}
