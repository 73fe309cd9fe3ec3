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
pub mod inputs;
pub mod outputs;
pub mod raw;
pub mod raw_http;
pub mod run;
pub mod wire;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::server::Peer;
use super::{body, reply, AppState, NOT_READY};
use crate::budget::{MemoryBudget, Reservation};
use crate::engine::ModelInfo;
use crate::error::{AppError, ErrorBody};
use crate::options::SegmentOptions;
use crate::pipeline::{PipelineError, Ticket};
use binary::{Framing, HEADER_LENGTH};
use inputs::{binary_data_size, images, Image};
use outputs::{ImageResult, Wanted};
use run::{held, Parsed};
use wire::{
    InferRequest, InferResponse, ModelMetadata, OutputData, ReadyBody, ServerMetadata, EXTENSIONS,
    MODEL_VERSION, OUTPUTS,
};

/// The protocol's routes, registered with their OpenAPI entries.
/// A place in `engine`'s queue (taken before the body is read, as for photos), then the
/// body, read under the body limits and held in a new reservation.
pub(super) async fn admitted_body(
    s: &AppState,
    engine: &crate::engine::Engine,
    headers: &HeaderMap,
    body: Body,
    client: Option<std::net::IpAddr>,
) -> Result<(Option<crate::engine::Admission>, Reservation, Bytes), AppError> {
    let admission = engine.admit_within(crate::engine::ROOM_HOLD).await?;
    let mut reservation = s.budget.reservation();
    let raw = body::read_limited(
        body,
        headers,
        s.body_limits(),
        &mut reservation,
        &s.budget,
        client,
    )
    .await?;
    Ok((admission, reservation, raw))
}

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

fn ready_or_400(s: &AppState) -> Result<(), AppError> {
    if s.lifecycle.is_ready() {
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
        extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
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
    let framing = binary::framing(&headers, s.config.max_body_bytes)?;
    let (admission, mut reservation, raw) =
        admitted_body(&s, &engine, &headers, body, client).await?;
    // Parsing and base64 are CPU work on a body of up to --max-body-bytes: done on the
    // blocking pool, under a place in the engine's stage, with the parsed copy reserved.
    let ticket = Ticket::take(&engine, admission).await?;
    let json_len = match framing {
        Framing::Json => raw.len(),
        Framing::Binary { header } => header.min(raw.len()),
        Framing::Raw => 0,
    };
    reservation
        .grow(json_len as u64)
        .map_err(body::budget_refusal)?;
    let (e, budget) = (engine.clone(), s.budget.clone());
    let (parsed, ticket) = crate::meter::spawn_blocking(move || {
        (parse(raw, framing, reservation, e.info(), &budget), ticket)
    })
    .await
    .map_err(|e| AppError::internal("parsing an inference request", e))?;
    let Parsed {
        id,
        options,
        wanted,
        images,
    } = parsed?;
    let (results, held) =
        run::segment_all(&s, &engine, &options, &wanted, images, Some(ticket)).await?;
    let (e, budget) = (engine.clone(), s.budget.clone());
    let (encoded, reservation) = crate::meter::spawn_blocking(move || {
        let mut reservation = budget.reservation();
        let estimate = 1024 + held.iter().map(Reservation::held).sum::<u64>();
        let encoded = encode(e.info(), id, &results, &wanted, estimate, &mut reservation);
        // The compact results go now; the answer's bytes stay held until sent.
        drop((results, held));
        (encoded, reservation)
    })
    .await
    .map_err(|e| AppError::internal("encoding an inference answer", e))?;
    Ok(answer(encoded.map_err(AppError::from)?, reservation))
}

/// The HTTP answer of a serialised inference response (see [`serialise`]), holding its
/// reservation until sent.
fn answer((bytes, header_len): (Vec<u8>, Option<usize>), reservation: Reservation) -> Response {
    match header_len {
        None => reply::json(bytes, reservation),
        Some(len) => {
            let mut resp = reply::bytes(bytes, "application/octet-stream", reservation);
            resp.headers_mut()
                .insert(HEADER_LENGTH.clone(), HeaderValue::from(len));
            resp
        }
    }
}

/// Parses a request body of any framing into options, outputs and photos. `reservation`
/// holds the body and its parsed copy; it ends with the body's slices (binary) or here.
fn parse(
    raw: Bytes,
    framing: Framing,
    reservation: Reservation,
    info: &ModelInfo,
    budget: &Arc<MemoryBudget>,
) -> Result<Parsed, AppError> {
    let header = match framing {
        Framing::Json => raw.len(),
        Framing::Binary { header } => header,
        Framing::Raw => {
            // No JSON: the body is the one photo, and every output comes back binary (the
            // extension's raw binary request).
            let body = held(raw, reservation);
            let wanted = OUTPUTS
                .into_iter()
                .filter(|n| *n != "masks" || info.task == crate::engine::Task::Segment)
                .map(|name| Wanted { name, binary: true })
                .collect();
            return Ok(Parsed {
                id: None,
                options: SegmentOptions::default(),
                wanted,
                images: vec![Image {
                    bytes: binary::raw_element(&body),
                    reservation: budget.reservation(),
                }],
            });
        }
    };
    let (json, _) = binary::split(&raw, header)?;
    let req: InferRequest = serde_json::from_slice(&json)
        .map_err(|e| AppError::BadRequest(format!("malformed inference request: {e}")))?;
    drop(json);
    let (input, _, options, wanted) = run::checked(&req, info, false)?;
    let after_json = raw.len() - header;
    let images = match (binary_data_size(input)?, framing) {
        (Some(size), Framing::Binary { .. }) => {
            if size != after_json as u64 {
                return Err(AppError::BadRequest(format!(
                    "input `image` has binary_data_size {size} but {after_json} bytes follow the JSON header"
                )));
            }
            let body = held(raw, reservation);
            images(input, Some(body.slice(header..)), budget)?
        }
        (Some(_), _) => {
            return Err(AppError::BadRequest(
                "input `image` has binary_data_size but the request has no Inference-Header-Content-Length \
                 header; send it with the length of the JSON part"
                    .into(),
            ))
        }
        (None, _) if after_json > 0 => {
            return Err(AppError::BadRequest(format!(
                "{after_json} bytes follow the JSON header but no input has binary_data_size"
            )))
        }
        (None, _) => {
            let images = images(input, None, budget)?;
            // The decoded photos hold their own reservations; the body and its parse go.
            drop((raw, reservation));
            images
        }
    };
    Ok(Parsed {
        id: req.id,
        options,
        wanted,
        images,
    })
}

/// Serialises the answer: the JSON, then (if any output is binary) each binary output's
/// data; returns the body and the JSON's length when binary data follows it.
fn encode(
    info: &ModelInfo,
    id: Option<String>,
    images: &[ImageResult],
    wanted: &[Wanted],
    estimate: u64,
    reservation: &mut Reservation,
) -> Result<(Vec<u8>, Option<usize>), PipelineError> {
    let (outputs, binary_data) = outputs::outputs(info, images, wanted);
    let resp = InferResponse {
        model_name: info.name.clone(),
        model_version: MODEL_VERSION.into(),
        id,
        parameters: outputs::answer_parameters(images),
        outputs,
    };
    serialise(&resp, &binary_data, estimate, reservation)
}

/// Serialises `resp`, then each of `binary_data` (the binary outputs' values, in order)
/// after it; returns the body and the JSON's length when binary data follows it.
fn serialise(
    resp: &InferResponse,
    binary_data: &[OutputData],
    estimate: u64,
    reservation: &mut Reservation,
) -> Result<(Vec<u8>, Option<usize>), PipelineError> {
    let mut buf = reply::to_json(resp, estimate, reservation)?;
    if binary_data.is_empty() {
        return Ok((buf, None));
    }
    let header_len = buf.len();
    let extra: usize = binary_data.iter().map(binary::encoded_size).sum();
    reservation.grow(extra as u64).map_err(|error| {
        PipelineError::Budget(error.refusing(
            "the binary answer",
            "ask for fewer outputs (or, of a photo model, fewer masks: a higher conf, a lower max_det, or no `masks` output)",
        ))
    })?;
    buf.reserve_exact(extra);
    for d in binary_data {
        binary::encode(d, &mut buf);
    }
    Ok((buf, Some(header_len)))
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
    client: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    check_version(&version)?;
    infer(State(s), Path(name), client, headers, body).await
}
