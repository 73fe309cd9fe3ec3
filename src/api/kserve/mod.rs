//! The Open Inference Protocol (KServe v2, Triton) over REST: health, metadata and
//! inference for each loaded model, so clients written for those servers work unchanged.
//!
//! The photos travel in one `BYTES` input, `image`, of shape `[N]` (1 to [`wire::MAX_IMAGES`]):
//! as base64 strings in the JSON (what KServe's and Triton's image examples send), or as raw
//! bytes through Triton's binary tensor data extension (what `tritonclient` sends by default;
//! framing in `binary`). Each photo is its own pipeline run, with its own place in the queue
//! and its own memory reservation; their detections come back concatenated, photo by photo,
//! with an `image_index` output saying which photo each row belongs to. Outputs come back as
//! JSON, or as binary data when the request asks (`binary_data`, `binary_data_output`).
//! Errors are `{"error": "..."}` as the protocol asks (our bodies add `error_type`). Per the
//! protocol, a "not ready" answer is a 4xx, not 503.

pub mod binary;
mod codec;
mod health;
pub mod inputs;
pub mod outputs;
pub mod raw;
pub mod raw_http;
pub mod run;
pub mod wire;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::server::Peer;
use super::AppState;
use crate::error::{AppError, ErrorBody};
use health::*;
pub use health::{live, ready};
use run::Parsed;
use wire::{InferRequest, InferResponse};

pub(super) use codec::admitted_body;

/// The protocol's routes, registered with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_metadata))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(model_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(infer))
        .routes(routes!(raw_http::model_config))
        .routes(routes!(model_version_metadata))
        .routes(routes!(model_version_ready))
        .routes(routes!(model_version_infer))
}

/// `POST /v2/models/{name}/infer`: detect (and segment) the objects in one or more images.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)")),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream")),
        description = "One BYTES input `image` of shape [N] (1 to 16 photos, JPEG/PNG/WebP/BMP/GIF/TIFF files): base64 strings in `data`, or the binary tensor data extension (a JSON header of `Inference-Header-Content-Length` bytes, then each photo as a 4-byte little-endian length and its bytes; the input's `binary_data_size` gives their total). Parameters conf, iou, max_det, classes at request or input level; `binary_data_output` (request) or `binary_data` (output) for binary outputs"),
    responses(
        (status = 200, description = "Output tensors, detections of every photo concatenated: boxes [N,4] FP32, scores [N] FP32, class_ids [N] INT64, class_names [N] BYTES, masks [N] BYTES (COCO RLE; segmentation models), image_index [N] INT64 (which photo), image_sizes [images,2] INT64 (height, width). Binary outputs follow the JSON (`Inference-Header-Content-Length` gives its length; `application/octet-stream`)", body = InferResponse),
        (status = 400, description = "Malformed request, bad input, parameter or binary framing", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 413, description = "Body or image over a limit", body = ErrorBody),
        (status = 408, description = "Body not received in time", body = ErrorBody),
        (status = 415, description = "Not JSON or the binary extension, an unknown Content-Encoding, or an unsupported image format", body = ErrorBody),
        (status = 422, description = "Corrupt image", body = ErrorBody),
        (status = 503, description = "Overloaded or not ready; retry", body = ErrorBody)))]
pub async fn infer(
    State(s): State<AppState>,
    Path(name): Path<String>,
    client: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let client = client.map(|Extension(p)| p.0.ip());
    if let Some(engine) = raw::raw_engine(&s, &name)? {
        return raw_http::infer(&s, engine, name, client, headers, body).await;
    }
    let engine = s.engine(Some(&name))?;
    let (parsed, ticket) = codec::read(&s, &engine, &headers, body, client).await?;
    let Parsed {
        id,
        options,
        wanted,
        images,
    } = parsed;
    let (results, held) =
        run::segment_all(&s, &engine, &options, &wanted, images, Some(ticket)).await?;
    codec::respond(&s, &engine, id, results, held, wanted).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`: inference on one version.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)"),
           ("version" = String, Path, description = "Model version (always \"1\")")),
    request_body(content = InferRequest, description = "As for `/v2/models/{name}/infer`"),
    responses(
        (status = 200, description = "As for `/v2/models/{name}/infer`", body = InferResponse),
        (status = 400, description = "Malformed request, bad input or parameter", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 408, description = "Body not received in time", body = ErrorBody),
        (status = 413, description = "Body or image over a limit", body = ErrorBody),
        (status = 415, description = "Not JSON, or an unsupported image format", body = ErrorBody),
        (status = 422, description = "Corrupt image", body = ErrorBody),
        (status = 503, description = "Overloaded or not ready; retry", body = ErrorBody)))]
pub async fn model_version_infer(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    client: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    check_version(&version)?;
    infer(State(s), Path(name), client, headers, body).await
}
