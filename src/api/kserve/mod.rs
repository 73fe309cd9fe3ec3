//! The Open Inference Protocol (KServe v2, Triton) over REST: health, metadata and
//! inference for each loaded model, so clients written for those servers work unchanged.
//!
//! The image travels as one `BYTES` element. The protocol's JSON form carries BYTES as a
//! string, so we take base64 (what KServe's and Triton's image examples send); the binary
//! tensor extension is not implemented. Errors are `{"error": "..."}` as the protocol asks
//! (our bodies add `error_type`). Per the protocol, a "not ready" answer is a 4xx, not 503.

pub mod tensors;
pub mod wire;

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{body, reply, AppState, NOT_READY};
use crate::error::{AppError, ErrorBody};
use crate::options::SegmentOptions;
use crate::pipeline::{self, PipelineError, SegmentRequest, Ticket};
use tensors::{image_bytes, option_error, outputs, parameter_pairs, wanted_outputs};
use wire::{
    InferRequest, InferResponse, ModelMetadata, Parameters, ReadyBody, ServerMetadata,
    MODEL_VERSION,
};

/// The protocol's routes, registered with their OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_metadata))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(model_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(infer))
        .routes(routes!(model_version_metadata))
        .routes(routes!(model_version_ready))
        .routes(routes!(model_version_infer))
}

fn ready_or_400(s: &AppState) -> Result<(), AppError> {
    if s.ready.load(Ordering::Acquire) {
        Ok(())
    } else {
        // The protocol: "a 4xx status code indicates false".
        Err(AppError::BadRequest(NOT_READY.into()))
    }
}

/// `GET /v2`: server metadata.
#[utoipa::path(get, path = "/v2", tag = "kserve",
    responses((status = 200, description = "Server name, version, extensions", body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "segserve".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec![],
    })
}

/// `GET /v2/health/live`: the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve",
    responses((status = 200, description = "Alive", body = ReadyBody)))]
pub async fn live() -> Json<ReadyBody> {
    Json(ReadyBody {
        name: None,
        ready: true,
    })
}

/// `GET /v2/health/ready`: every model is loaded and warmed up.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 400, description = "Not ready (loading or shutting down)", body = ErrorBody)))]
pub async fn ready(State(s): State<AppState>) -> Result<Json<ReadyBody>, AppError> {
    ready_or_400(&s)?;
    Ok(Json(ReadyBody {
        name: None,
        ready: true,
    }))
}

/// `GET /v2/models/{name}/ready`: the model exists and can serve.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)")),
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 400, description = "Not ready (loading or shutting down)", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody)))]
pub async fn model_ready(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ReadyBody>, AppError> {
    ready_or_400(&s)?;
    s.engine(Some(&name))?;
    Ok(Json(ReadyBody {
        name: Some(name),
        ready: true,
    }))
}

/// `GET /v2/models/{name}`: model metadata.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)")),
    responses(
        (status = 200, description = "Inputs and outputs of the model", body = ModelMetadata),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 503, description = "Models still loading", body = ErrorBody)))]
pub async fn model_metadata(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, AppError> {
    let engine = s.engine(Some(&name))?;
    Ok(Json(
        ModelMetadata::new(engine.info()).with_device(engine.device().as_str()),
    ))
}

/// `POST /v2/models/{name}/infer`: detect (and segment) the objects in one image.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)")),
    request_body(content = InferRequest, description = "One BYTES input `image` holding the base64 of a JPEG/PNG/WebP/BMP/GIF/TIFF file; parameters conf, iou, max_det, classes at request or input level"),
    responses(
        (status = 200, description = "Output tensors boxes [N,4] FP32, scores [N] FP32, class_ids [N] INT64, class_names [N] BYTES, masks [N] BYTES (COCO RLE; segmentation models)", body = InferResponse),
        (status = 400, description = "Malformed request, bad input or parameter", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 413, description = "Body or image over a limit", body = ErrorBody),
        (status = 408, description = "Body not received in time", body = ErrorBody),
        (status = 415, description = "Not JSON, or an unsupported image format", body = ErrorBody),
        (status = 422, description = "Corrupt image", body = ErrorBody),
        (status = 503, description = "Overloaded or not ready; retry", body = ErrorBody)))]
pub async fn infer(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let engine = s.engine(Some(&name))?;
    check_json(&headers)?;
    let mut reservation = s.budget.reservation();
    let raw = body::read_limited(body, &headers, s.body_limits(), &mut reservation).await?;
    // Parsing and base64 are CPU work on a body of up to --max-body-bytes: done on the
    // blocking pool, under a place in the engine's stage, with the parsed copy reserved.
    let ticket = Ticket::take(&engine).await?;
    reservation
        .grow(raw.len() as u64)
        .map_err(body::budget_refusal)?;
    let e = engine.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let parse = || -> Result<_, AppError> {
            let req: InferRequest = serde_json::from_slice(&raw)
                .map_err(|e| AppError::BadRequest(format!("malformed inference request: {e}")))?;
            drop(raw);
            let [input] = req.inputs.as_slice() else {
                return Err(AppError::BadRequest(format!(
                    "expected exactly one input (`image`), got {}",
                    req.inputs.len()
                )));
            };
            // Request-level options first, then the input's: later pairs win.
            let mut pairs = parameter_pairs(req.parameters.as_ref())?;
            pairs.extend(parameter_pairs(input.parameters.as_ref())?);
            let options = SegmentOptions::parse(&pairs, &e.info().names).map_err(option_error)?;
            let wanted = wanted_outputs(&req, e.info())?;
            let image = image_bytes(input)?;
            Ok((req.id, options, wanted, image))
        };
        let out = parse();
        (out, ticket, reservation)
    })
    .await
    .map_err(|e| AppError::internal("parsing an inference request", e))?;
    let (result, ticket, mut reservation) = parsed;
    let (id, options, wanted, image) = result?;
    // Only the decoded image is left of the body.
    let _ = reservation.set(image.len() as u64);
    let req = SegmentRequest {
        bytes: Bytes::from(image),
        reservation,
        filter: options.filter,
        masks: wanted.contains(&"masks"),
        keep_image: false,
        ticket: Some(ticket),
    };
    let e = engine.clone();
    let done = pipeline::segment(&engine, s.config.runtime.limits, req, move |seg, res| {
        let estimate =
            super::types::SegmentResponse::size_estimate(&seg, crate::options::MaskFormat::Rle);
        let resp = InferResponse {
            model_name: e.info().name.clone(),
            model_version: MODEL_VERSION.into(),
            id,
            parameters: Parameters::from([
                ("image_width".to_string(), seg.width.into()),
                ("image_height".to_string(), seg.height.into()),
            ]),
            outputs: outputs(e.info(), &seg, &wanted),
        };
        reply::to_json(&resp, estimate, res)
    })
    .await
    .map_err(|e: PipelineError| AppError::from(e))?;
    Ok(reply::json(done.value, done.reservation))
}

/// The protocol's optional `/versions/{version}` paths name the one version we serve.
fn check_version(version: &str) -> Result<(), AppError> {
    if version == MODEL_VERSION {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "model version {version:?} is not served; the only version is {MODEL_VERSION:?}"
        )))
    }
}

/// `GET /v2/models/{name}/versions/{version}`: model metadata of one version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)"),
           ("version" = String, Path, description = "Model version (always \"1\")")),
    responses(
        (status = 200, description = "Inputs and outputs of the model", body = ModelMetadata),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 503, description = "Models still loading", body = ErrorBody)))]
pub async fn model_version_metadata(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, AppError> {
    check_version(&version)?;
    model_metadata(State(s), Path(name)).await
}

/// `GET /v2/models/{name}/versions/{version}/ready`: readiness of one version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)"),
           ("version" = String, Path, description = "Model version (always \"1\")")),
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 400, description = "Not ready (loading or shutting down)", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody)))]
pub async fn model_version_ready(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ReadyBody>, AppError> {
    check_version(&version)?;
    model_ready(State(s), Path(name)).await
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
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    check_version(&version)?;
    infer(State(s), Path(name), headers, body).await
}

/// Inference requests are JSON (the binary tensor extension is not implemented).
fn check_json(headers: &HeaderMap) -> Result<(), AppError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let is_json = ctype
        .parse::<mime::Mime>()
        .is_ok_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    if is_json {
        Ok(())
    } else {
        Err(AppError::UnsupportedMediaType(format!(
            "content type {ctype:?} is not supported; send application/json (the binary tensor extension is not implemented)"
        )))
    }
}
