//! One async function per endpoint: extract, call the pipeline, shape the reply.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::types::{
    query_pairs, MaskFormat, ModelCard, ModelsResponse, PixelLibResponse, SegmentQuery,
    SegmentResponse,
};
use super::upload::{read_image, Accept};
use super::AppState;
use crate::error::{AppError, ErrorBody};
use crate::pipeline::{self, SegmentRequest};

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
    if s.ready.load(Ordering::Acquire) {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(AppError::NotReady(
            "not ready: loading models or shutting down".into(),
        ))
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format, series prefixed `segserve_`", body = String, content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
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
    let reg = s
        .models
        .get()
        .ok_or_else(|| AppError::NotReady("the models are not loaded yet".into()))?;
    Ok(Json(ModelsResponse {
        models: reg
            .all()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let info = e.info();
                ModelCard {
                    name: info.name.clone(),
                    task: info.task.as_str().to_string(),
                    input_size: [info.input_hw.0, info.input_hw.1],
                    stride: info.stride,
                    class_names: info.names.clone(),
                    default: i == 0,
                    device: Some(e.device().as_str().to_string()),
                }
            })
            .collect(),
    }))
}

/// `POST /segmentapi`: PixelLib-compatible (multipart field `image`).
#[utoipa::path(post, path = "/segmentapi", tag = "pixellib",
    params(("mask_values" = Option<bool>, Query, description = "Add the dense H x W x N mask booleans (large)")),
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "PixelLib's reply shape", body = PixelLibResponse),
        (status = 400, description = "No `image` field, or a bad parameter", body = ErrorBody),
        (status = 408, description = "Body not received in time", body = ErrorBody),
        (status = 413, description = "Body or image over a limit", body = ErrorBody),
        (status = 415, description = "Not multipart, or an unsupported image format", body = ErrorBody),
        (status = 422, description = "Corrupt image", body = ErrorBody),
        (status = 503, description = "Overloaded or not ready; retry", body = ErrorBody)))]
pub async fn segmentapi(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let mut mask_values = false;
    for (k, v) in query_pairs(q.as_deref())? {
        match (k.as_str(), v.as_str()) {
            ("mask_values", "true" | "1") => mask_values = true,
            ("mask_values", "false" | "0") => mask_values = false,
            ("mask_values", other) => {
                return Err(AppError::BadRequest(format!(
                    "mask_values must be true or false, got {other:?}"
                )))
            }
            _ => {} // PixelLib clients send nothing else; stay lenient for them.
        }
    }
    let engine = s.engine(None)?;
    let bytes = read_image(
        &headers,
        body,
        s.config.max_body_bytes,
        s.config.body_timeout,
        s.config.form,
        Accept::MultipartOnly,
    )
    .await?;
    let req = SegmentRequest {
        bytes,
        filter: Default::default(),
        masks: mask_values,
        keep_image: false,
    };
    let seg = pipeline::segment(&engine, s.config.runtime.limits, req).await?;
    record_detections(&seg);
    // The dense mask array can run to tens of MB of JSON: serialise it off the runtime threads.
    let body = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&PixelLibResponse::new(engine.info(), &seg, mask_values))
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /v1/segment`: multipart field `image` or a raw `image/*` body; options in the query.
#[utoipa::path(post, path = "/v1/segment", tag = "segserve",
    params(
        ("conf" = Option<f32>, Query, description = "Score threshold, 0..1 (0.25)"),
        ("iou" = Option<f32>, Query, description = "NMS IoU threshold, 0..1 (0.7)"),
        ("max_det" = Option<usize>, Query, description = "Most detections returned, 1..=1000 (300)"),
        ("classes" = Option<String>, Query, description = "Keep only these classes: names or ids, comma-separated"),
        ("masks" = Option<String>, Query, description = "`rle` (default, COCO RLE), `polygon` (outer contours in pixels) or `none`"),
        ("tolerance" = Option<f64>, Query, description = "With masks=polygon: Douglas-Peucker tolerance in pixels (1.0)"),
        ("model" = Option<String>, Query, description = "Model name (file stem); default: the first --model"),
    ),
    request_body(content(
        (ImageForm = "multipart/form-data"),
        (Vec<u8> = "image/*"),
        (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "Detections", body = SegmentResponse),
        (status = 400, description = "No image, or a bad parameter", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 408, description = "Body not received in time", body = ErrorBody),
        (status = 413, description = "Body or image over a limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type or image format", body = ErrorBody),
        (status = 422, description = "Corrupt image", body = ErrorBody),
        (status = 503, description = "Overloaded or not ready; retry", body = ErrorBody)))]
pub async fn segment(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SegmentResponse>, AppError> {
    let pairs = query_pairs(q.as_deref())?;
    let query = SegmentQuery::parse(&pairs, |name| Ok(s.engine(name)?.info().names.clone()))?;
    let engine = s.engine(query.model.as_deref())?;
    let bytes = read_image(
        &headers,
        body,
        s.config.max_body_bytes,
        s.config.body_timeout,
        s.config.form,
        Accept::MultipartOrRaw,
    )
    .await?;
    let req = SegmentRequest {
        bytes,
        filter: query.filter,
        masks: query.masks != MaskFormat::None,
        keep_image: false,
    };
    let seg = pipeline::segment(&engine, s.config.runtime.limits, req).await?;
    record_detections(&seg);
    Ok(Json(SegmentResponse::with_masks(
        engine.info(),
        &seg,
        query.masks,
        query.tolerance,
    )))
}

/// The multipart form both upload routes take (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ImageForm {
    /// The photo: JPEG, PNG, WebP, BMP, GIF or TIFF.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

pub(super) fn record_detections(seg: &pipeline::Segmentation) {
    metrics::histogram!("segserve_detections_per_image").record(seg.detections.len() as f64);
}

/// Unknown routes: JSON 404 rather than an empty body.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such route; see README for the API".into())
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> Response {
    let body = Json(
        json!({"error": "method not allowed for this route", "error_type": "method_not_allowed"}),
    );
    (StatusCode::METHOD_NOT_ALLOWED, body).into_response()
}
