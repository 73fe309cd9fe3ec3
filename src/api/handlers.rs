//! The native API and the probes, one async function per endpoint: extract, call the
//! pipeline, shape the reply.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::params::Params;
use super::reply;
use super::upload::ImageUpload;
use super::{AppState, NOT_READY};
use crate::error::{AppError, ErrorBody};
use crate::options::MaskFormat;
use crate::pipeline::Wants;
use crate::schema::{ModelCard, ModelsResponse, SegmentResponse};

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 once the models are loaded and warmed up; 503 before and while draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = Object),
        (status = 503, description = "Loading models or shutting down", body = ErrorBody)))]
pub async fn readyz(State(s): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    if s.lifecycle.is_ready() {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(AppError::NotReady(NOT_READY.into()))
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format, series prefixed `segserve_`", body = String, content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    // Read at scrape time: the meter's counters are plain atomics, a gauge per scrape is enough.
    metrics::gauge!("segserve_memory_heap_bytes").set(crate::meter::heap_bytes() as f64);
    metrics::gauge!("segserve_memory_measured_bytes").set(crate::meter::measured_bytes() as f64);
    metrics::gauge!("segserve_memory_unreserved_bytes")
        .set(crate::meter::unreserved_bytes() as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/models`: every loaded model with its classes.
#[utoipa::path(get, path = "/v1/models", tag = "segserve",
    responses(
        (status = 200, description = "Loaded models, default first", body = ModelsResponse),
        (status = 503, description = "Models still loading", body = ErrorBody)))]
pub async fn models(State(s): State<AppState>) -> Result<Json<ModelsResponse>, AppError> {
    Ok(Json(ModelsResponse {
        models: s
            .registry()?
            .all()
            .iter()
            .enumerate()
            .map(|(i, e)| ModelCard {
                device: Some(e.device().as_str().to_string()),
                ..ModelCard::new(e.info(), i == 0)
            })
            .collect(),
    }))
}

/// `POST /v1/segment`: multipart field `image` or a raw `image/*` body; options in the query.
#[utoipa::path(post, path = "/v1/segment", tag = "segserve",
    params(super::openapi::FilterQuery,
        ("masks" = Option<String>, Query, description = "`rle` (default, COCO RLE), `polygon` (outer contours in pixels), `png` (a single-channel PNG of each mask's rectangle, base64, in `mask_png`) or `none`"),
        ("tolerance" = Option<f64>, Query, description = "With masks=polygon: Douglas-Peucker tolerance in pixels (1.0)"),
        ("decode" = Option<String>, Query, description = "`exact` (OpenCV's pixels, Ultralytics' results) or `fast` (JPEG photos at least twice the model's input decoded at 1/2, 1/4 or 1/8 scale: faster, approximate); default from --decode (exact)"),
    ),
    request_body(content(
        (ImageForm = "multipart/form-data"),
        (Vec<u8> = "image/*"),
        (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "Detections", body = SegmentResponse),
        super::openapi::UploadErrors))]
pub async fn segment(
    State(s): State<AppState>,
    params: Params,
    upload: ImageUpload,
) -> Result<Response, AppError> {
    let Params {
        engine, options, ..
    } = params;
    let req = upload
        .request(Wants::boxes_or_masks(options.masks != MaskFormat::None))
        .options(&options);
    let e = engine.clone();
    let (format, tolerance) = (options.masks, options.tolerance);
    let done = s.pipeline.segment(&engine, req, move |seg, res| {
        // The answer's structure (RLE strings, polygons) and its tracing scratch are held
        // while they exist, the JSON text by `to_json`; only the text stays held after.
        let estimate = SegmentResponse::size_estimate(&seg, format);
        let base = res.held();
        res.grow(estimate + SegmentResponse::scratch_estimate(&seg, format))
            .map_err(|error| {
                error.refusing(
                    "building the answer",
                    "ask for fewer or smaller masks (masks=none or rle, a higher conf, a lower max_det)",
                )
            })?;
        let body = SegmentResponse::with_masks(e.info(), &seg, format, tolerance);
        let json = reply::to_json(&body, estimate, res)?;
        drop(body);
        res.shrink_to(base + json.capacity() as u64);
        Ok(json)
    })
    .await?;
    Ok(reply::json(done.value, done.reservation))
}

/// The multipart form the upload routes take (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ImageForm {
    /// The photo: JPEG, PNG, WebP, BMP, GIF or TIFF.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// Unknown routes: JSON 404 rather than an empty body.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such route; see GET /docs for the API".into())
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
