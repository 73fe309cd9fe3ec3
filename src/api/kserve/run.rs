//! The transport-neutral half of an inference request, shared by the REST route (the parent
//! module) and gRPC (`api::grpc`): checking a parsed request against the model (its one
//! input, parameters, wanted outputs), then running each photo through the pipeline. How a
//! request is read and how its answer is written stay with each front end.

use bytes::Bytes;

use super::inputs::{flag, image_count, option_error, parameter_pairs, Image};
use super::outputs::{wanted_outputs, ImageResult, Wanted};
use super::wire::{InferRequest, RequestInput};
use crate::api::AppState;
use crate::budget::Reservation;
use crate::engine::{Engine, ModelInfo};
use crate::error::AppError;
use crate::options::SegmentOptions;
use crate::pipeline::{SegmentRequest, Ticket, Wants};

/// What a front end makes of a request before any photo is decoded.
pub struct Parsed {
    /// The request's id, echoed in the answer.
    pub id: Option<String>,
    /// Detection options from the request's and the input's parameters.
    pub options: SegmentOptions,
    /// The outputs to send, in order.
    pub wanted: Vec<Wanted>,
    /// The encoded photos, each with its reservation.
    pub images: Vec<Image>,
}

/// A request's checks that do not depend on how its tensors travel: exactly one input (the
/// `image` input, returned with its image count), known parameters (request-level first,
/// then the input's, which win), and the outputs it asks for. `binary_default` is what an
/// output not saying `binary_data` gets when the request does not say `binary_data_output`.
pub fn checked<'a>(
    req: &'a InferRequest,
    info: &ModelInfo,
    binary_default: bool,
) -> Result<(&'a RequestInput, usize, SegmentOptions, Vec<Wanted>), AppError> {
    let [input] = req.inputs.as_slice() else {
        return Err(AppError::BadRequest(format!(
            "expected exactly one input (`image`), got {}",
            req.inputs.len()
        )));
    };
    let mut pairs = parameter_pairs(req.parameters.as_ref())?;
    pairs.extend(parameter_pairs(input.parameters.as_ref())?);
    let options = SegmentOptions::parse(&pairs, &info.names).map_err(option_error)?;
    let binary_output =
        flag(req.parameters.as_ref(), "binary_data_output")?.unwrap_or(binary_default);
    let wanted = wanted_outputs(req, info, binary_output)?;
    let n = image_count(input)?;
    Ok((input, n, options, wanted))
}

/// Runs each photo of `parsed` through the pipeline (see `Pipeline::segment_all`); `ticket`
/// is the place the first photo starts from, when the caller took one. Returns each
/// photo's result with the reservation that holds it.
pub async fn segment_all(
    s: &AppState,
    engine: &Engine,
    options: &SegmentOptions,
    wanted: &[Wanted],
    images: Vec<Image>,
    ticket: Option<Ticket>,
) -> Result<(Vec<ImageResult>, Vec<Reservation>), AppError> {
    let n = images.len();
    let wants = Wants::boxes_or_masks(wanted.iter().any(|w| w.name == "masks"));
    let mut first = ticket;
    let requests = images
        .into_iter()
        .map(|image| {
            SegmentRequest::new(image.bytes, image.reservation, wants)
                .options(options)
                .holding(first.take())
        })
        .collect();
    let done = s
        .pipeline
        .segment_all(engine, requests, ImageResult::new)
        .await
        .map_err(|(i, e)| about_image(AppError::from(e), i, n))?;
    Ok(done.into_iter().map(|f| (f.value, f.reservation)).unzip())
}

/// A received body that carries its memory reservation: slices of it (the photos of a
/// binary request) keep both alive, and the last one to go releases both.
struct HeldBody {
    bytes: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// `bytes` tied to `reservation` (shrunk to their length): it is released with the last
/// slice of them.
pub fn held(bytes: Bytes, mut reservation: Reservation) -> Bytes {
    // The parsed copy is gone by now; the body itself is what stays.
    reservation.shrink_to(bytes.len() as u64);
    Bytes::from_owner(HeldBody {
        bytes,
        _reservation: reservation,
    })
}

/// Names the photo an error is about, when the request has several.
fn about_image(e: AppError, i: usize, n: usize) -> AppError {
    if n == 1 {
        return e;
    }
    let tag = |m: String| format!("image {i} (image_index {i} of {n}): {m}");
    match e {
        AppError::BadRequest(m) => AppError::BadRequest(tag(m)),
        AppError::PayloadTooLarge(m) => AppError::PayloadTooLarge(tag(m)),
        AppError::UnsupportedMediaType(m) => AppError::UnsupportedMediaType(tag(m)),
        AppError::InvalidImage(m) => AppError::InvalidImage(tag(m)),
        AppError::Overloaded(m) => AppError::Overloaded(tag(m)),
        AppError::ServerTimeout(m) => AppError::ServerTimeout(tag(m)),
        other => other,
    }
}
