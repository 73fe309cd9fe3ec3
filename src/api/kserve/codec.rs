//! The REST framing of an inference request and its answer: reading the body (JSON, or
//! Triton's binary tensor data extension) into a checked request, and serialising the
//! photos' results back the same way.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;

use super::binary::{self, Framing, HEADER_LENGTH};
use super::inputs::{binary_data_size, images, Image};
use super::outputs::{self, ImageResult, Wanted};
use super::run::{self, held, Parsed};
use super::wire::{InferRequest, InferResponse, OutputData, MODEL_VERSION, OUTPUTS};
use crate::api::{body, reply, AppState};
use crate::budget::{MemoryBudget, Reservation};
use crate::engine::{Admission, Engine, ModelInfo, ROOM_HOLD};
use crate::error::AppError;
use crate::options::SegmentOptions;
use crate::pipeline::{PipelineError, Ticket};

/// A place in `engine`'s queue (taken before the body is read, as for photos), then the
/// body, read under the body limits and held in a new reservation.
pub(in crate::api) async fn admitted_body(
    s: &AppState,
    engine: &Engine,
    headers: &HeaderMap,
    body: Body,
    client: Option<IpAddr>,
) -> Result<(Option<Admission>, Reservation, Bytes), AppError> {
    let admission = engine.admit_within(ROOM_HOLD).await?;
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

/// The request's place in the queue, its body and its parse: parsing and base64 are CPU
/// work on a body of up to --max-body-bytes, so they run on the blocking pool, under a
/// place in the engine's stage (the ticket returned), with the parsed copy reserved.
pub(super) async fn read(
    s: &AppState,
    engine: &Engine,
    headers: &HeaderMap,
    body: Body,
    client: Option<IpAddr>,
) -> Result<(Parsed, Ticket), AppError> {
    let framing = binary::framing(headers, s.config.max_body_bytes)?;
    let (admission, mut reservation, raw) = admitted_body(s, engine, headers, body, client).await?;
    let ticket = Ticket::take(engine, admission).await?;
    let json_len = match framing {
        Framing::Json => raw.len(),
        Framing::Binary { header } => header.min(raw.len()),
        Framing::Raw => 0,
    };
    reservation
        .grow(json_len as u64)
        .map_err(body::budget_refusal)?;
    let (e, budget) = (engine.clone(), s.budget.clone());
    let parsed =
        crate::meter::spawn_blocking(move || parse(raw, framing, reservation, e.info(), &budget))
            .await
            .map_err(|e| AppError::internal("parsing an inference request", e))??;
    Ok((parsed, ticket))
}

/// The answer of the photos' results, encoded on the blocking pool; it holds its bytes'
/// reservation until sent.
pub(super) async fn respond(
    s: &AppState,
    engine: &Engine,
    id: Option<String>,
    results: Vec<ImageResult>,
    held: Vec<Reservation>,
    wanted: Vec<Wanted>,
) -> Result<Response, AppError> {
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
pub(super) fn answer(
    (bytes, header_len): (Vec<u8>, Option<usize>),
    reservation: Reservation,
) -> Response {
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
pub(super) fn serialise(
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
