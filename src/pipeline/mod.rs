//! One photo from bytes to an answer, shared by the HTTP API and the CLI: decode and
//! letterbox on the blocking pool, infer on the engine's session threads, then decode
//! outputs, masks and the caller's `finish` step (serialising JSON, drawing) on the blocking
//! pool again, so one request's image work overlaps another's inference.
//!
//! Every stage runs under the engine's compute-stage slot and against the request's memory
//! reservation, and both are *moved* into the work (blocking closures, the inference job):
//! a client that disconnects stops the pipeline between stages, but cannot free capacity
//! or budget while a stage it started is still running.

use std::time::{Duration, Instant};

use image::RgbImage;
use tracing::Instrument;

mod request;

pub use request::{SegmentRequest, Ticket, Wants};

use crate::budget::{Refusal, Reservation};
use crate::engine::{Detection, Engine, EngineError};
use crate::imageio::{self, DecodeLimits, DecodeMode, ImageError, Probe};

/// Failure anywhere in the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The upload is not a usable image.
    #[error(transparent)]
    Image(ImageError),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The work does not fit the memory budget (now, or ever), or passed its reservation.
    #[error(transparent)]
    Budget(#[from] Refusal),
    /// A blocking task panicked.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl From<ImageError> for PipelineError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Budget(error) => PipelineError::Budget(error.refusing(
                "decoding this image",
                "send a smaller image (fewer pixels, or 8 bits per channel)",
            )),
            other => PipelineError::Image(other),
        }
    }
}

/// The settings every request of a server shares: the image limits and how JPEGs decode
/// when a request does not say. Cheap to copy; the handle requests run through.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pipeline {
    limits: DecodeLimits,
    decode: DecodeMode,
}

impl Pipeline {
    /// The pipeline for `limits`, decoding JPEGs as `decode` unless a request says.
    pub fn new(limits: DecodeLimits, decode: DecodeMode) -> Self {
        Pipeline { limits, decode }
    }

    /// The image limits (also for pictures decoded outside the pipeline).
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }
}

/// Stage durations of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Image decode.
    pub decode: Duration,
    /// Letterbox into the tensor.
    pub preprocess: Duration,
    /// Waiting for a free slot and session.
    pub queue: Duration,
    /// `Session::run`.
    pub inference: Duration,
    /// Output decoding, NMS, masks.
    pub postprocess: Duration,
    /// Everything before `finish`, end to end.
    pub total: Duration,
}

/// The result for one photo, as `finish` gets it.
#[derive(Debug)]
pub struct Segmentation {
    /// Upright photo width.
    pub width: u32,
    /// Upright photo height.
    pub height: u32,
    /// Detections sorted by score, descending.
    pub detections: Vec<Detection>,
    /// Stage timings.
    pub timing: Timing,
    /// The decoded photo, when asked for.
    pub image: Option<RgbImage>,
}

/// What `finish` made, with the reservation that must live as long as it does (e.g. while a
/// response body is being sent).
#[derive(Debug)]
pub struct Finished<T> {
    /// `finish`'s output.
    pub value: T,
    /// Bytes still held for `value`.
    pub reservation: Reservation,
}

/// The input tensor's bytes.
fn input_bytes(engine: &Engine) -> u64 {
    let (h, w) = engine.info().input_hw;
    (3 * h * w * 4) as u64
}

/// Runs `f` on the blocking pool inside the caller's span, so its log lines and stage spans
/// belong to the request.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PipelineError> {
    let span = tracing::Span::current();
    crate::meter::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))
}

/// The places a request holds while it is worked on; moved with the work.
struct Held {
    _ticket: Ticket,
    reservation: Reservation,
}

impl Held {
    /// Ends a stage (see `Reservation::check`).
    fn check(&self, stage: &'static str, what: &str) -> Result<(), PipelineError> {
        self.reservation
            .check(stage)
            .map_err(|e| e.refusing(what, "retry later").into())
    }
}

impl Pipeline {
    /// Runs the whole pipeline for one photo, then `finish` on the blocking pool with the
    /// segmentation and the reservation (which `finish` grows for what it builds). Sheds load
    /// (`EngineError::Overloaded`) before doing any work when the engine's queue is full.
    pub async fn segment<T, F>(
        &self,
        engine: &Engine,
        req: SegmentRequest,
        finish: F,
    ) -> Result<Finished<T>, PipelineError>
    where
        T: Send + 'static,
        F: FnOnce(Segmentation, &mut Reservation) -> Result<T, PipelineError> + Send + 'static,
    {
        let limits = self.limits;
        let started = Instant::now();
        let ticket = match req.ticket {
            Some(t) => t,
            None => {
                Ticket::take(engine, req.admission)
                    .instrument(tracing::debug_span!("queue"))
                    .await?
            }
        };
        let slot_wait = ticket.waited;
        let canvas = engine.info().canvas;
        let mut input = engine.input_buffer();
        let SegmentRequest {
            bytes,
            reservation,
            wants,
            filter,
            decode,
            ticket: _,
            admission: _,
        } = req;
        let (want_masks, keep_image) = (wants.masks(), wants.photo());
        let mode = decode.unwrap_or(self.decode);
        let mut held = Held {
            _ticket: ticket,
            reservation,
        };
        held.reservation.set_model(&engine.info().name);
        // The input tensor, and the outputs ONNX Runtime's results are copied into.
        let tensor = input_bytes(engine) + engine.output_bytes();
        let (img, lb, input, held, decode, preprocess) = blocking(move || {
            let t0 = Instant::now();
            let probe = imageio::probe(&bytes, &limits)?;
            let (w, h) = (probe.width(), probe.height());
            let lb = canvas.letterbox(w, h);
            input.resize(lb.tensor_len(), 0.0);
            let what = || format!("decoding this {w}x{h} image");
            let advice = "send a smaller image (fewer pixels, or 8 bits per channel)";
            let refuse = |err: ImageError| match err {
                ImageError::Budget(b) => b.refusing(what(), advice).into(),
                other => PipelineError::from(other),
            };
            // Only the picture routes need the photo itself: for the others a JPEG or PNG
            // goes straight from the decoder's rows into the tensor, and never exists whole.
            let streamed = !keep_image && probe.streams();
            let _decode = tracing::debug_span!("decode", streamed, width = w, height = h).entered();
            let (img, preprocess) = if streamed {
                let denom = match mode {
                    DecodeMode::Fast => probe.fast_denominator(&lb),
                    DecodeMode::Exact => 1,
                };
                held.reservation
                    .grow(probe.stream_peak_bytes(&lb, denom) + tensor)
                    .map_err(|err| err.refusing(what(), advice))?;
                probe
                    .stream_into(&lb, &mut input, &mut held.reservation, denom)
                    .map_err(refuse)?;
                (None, Duration::ZERO)
            } else {
                decode_whole(probe, &lb, &mut input, &mut held.reservation, tensor)
                    .map_err(refuse)
                    .map(|(img, t)| (keep_image.then_some(img), t))?
            };
            // Drop the upload (and the photo, unless the renderer needs it) before waiting on
            // inference, and hold only what is still alive.
            drop(bytes);
            let kept = img
                .as_ref()
                .map_or(0, |i: &RgbImage| i.as_raw().len() as u64);
            held.check("decode", &what())?;
            held.reservation.shrink_to(kept + tensor);
            Ok::<_, PipelineError>((img, lb, input, held, t0.elapsed() - preprocess, preprocess))
        })
        .await??;

        let inference = tracing::debug_span!(
            "inference",
            queue_ms = tracing::field::Empty,
            run_ms = tracing::field::Empty
        );
        let (raw, held) = engine
            .infer(input, lb.canvas_hw(), held)
            .instrument(inference.clone())
            .await?;
        inference.record("queue_ms", raw.queue_wait.as_secs_f64() * 1e3);
        inference.record("run_ms", raw.run_time.as_secs_f64() * 1e3);
        drop(inference);

        let t_post = Instant::now();
        let (queue_wait, run_time) = (raw.queue_wait, raw.run_time);
        let e = engine.clone();
        let done = blocking(move || {
            let mut held = held;
            held.check("inference", "running the model")?;
            let masks = tracing::debug_span!("masks", detections = tracing::field::Empty).entered();
            let cands = e.candidates(&raw, &lb, &filter);
            let detections = if want_masks {
                // Reserved once the boxes are known, before any mask exists; the logits go
                // before the masks are handed on.
                let need = cands.mask_bytes(&raw);
                held.reservation
                    .grow(need.masks + need.logits)
                    .map_err(|err| {
                        err.refusing(
                            "the masks of these detections",
                            "ask for masks=none, a higher conf or a lower max_det",
                        )
                    })?;
                let detections = e.masks(&raw, cands);
                held.reservation
                    .shrink_to(held.reservation.held() - need.logits);
                detections
            } else {
                cands.into_boxes()
            };
            metrics::histogram!("segserve_detections_per_image").record(detections.len() as f64);
            masks.record("detections", detections.len());
            drop(masks);
            drop(raw);
            held.check("masks", "the masks of these detections")?;
            // The input went back to the engine's buffer pool and the outputs are gone.
            held.reservation
                .shrink_to(held.reservation.held().saturating_sub(tensor));
            let postprocess = t_post.elapsed();
            let seg = Segmentation {
                width: lb.src_w,
                height: lb.src_h,
                detections,
                timing: Timing {
                    decode,
                    preprocess,
                    queue: slot_wait + queue_wait,
                    inference: run_time,
                    postprocess,
                    total: started.elapsed(),
                },
                image: img,
            };
            let value =
                tracing::debug_span!("encode").in_scope(|| finish(seg, &mut held.reservation))?;
            held.check("answer", "building the answer")?;
            Ok::<_, PipelineError>(Finished {
                value,
                reservation: held.reservation,
            })
        })
        .await??;
        Ok(done)
    }
}

impl Pipeline {
    /// Runs several photos of one request, each with its own reservation, at most as many
    /// at once as the model's compute stage takes (so a request of many photos holds few
    /// places in the queue while it waits), in order. The first error ends the rest and is
    /// returned with the index of its photo.
    pub async fn segment_all<T, F>(
        &self,
        engine: &Engine,
        requests: Vec<SegmentRequest>,
        finish: F,
    ) -> Result<Vec<Finished<T>>, (usize, PipelineError)>
    where
        T: Send + 'static,
        F: Fn(Segmentation, &mut Reservation) -> Result<T, PipelineError> + Clone + Send + 'static,
    {
        use futures_util::{StreamExt, TryStreamExt};
        // Two per session: the engine's compute stage (one computing, one being decoded).
        let at_once = (engine.pool().sessions * 2).max(1);
        let runs = requests.into_iter().enumerate().map(|(i, req)| {
            let finish = finish.clone();
            async move { self.segment(engine, req, finish).await.map_err(|e| (i, e)) }
        });
        futures_util::stream::iter(runs)
            .buffered(at_once)
            .try_collect()
            .await
    }
}

/// Decodes the whole photo and letterboxes it into `input`; returns the photo and the
/// letterbox's time. `reservation` grows by the decode's peak and `tensor`.
fn decode_whole(
    probe: Probe<'_>,
    lb: &crate::geometry::Letterbox,
    input: &mut [f32],
    reservation: &mut Reservation,
    tensor: u64,
) -> Result<(RgbImage, Duration), ImageError> {
    reservation.grow(probe.peak_bytes() + tensor)?;
    let img = probe.decode(reservation)?;
    let t = Instant::now();
    let _letterbox = tracing::debug_span!("letterbox").entered();
    imageio::letterbox_into(&img, lb, input);
    Ok((img, t.elapsed()))
}

/// Runs one inference on a neutral grey canvas, so the first real request does not pay
/// for ONNX Runtime's lazy initialisation.
pub async fn warm_up(engine: &Engine) -> Result<(), PipelineError> {
    let ticket = Ticket::take(engine, None).await?;
    let mut input = engine.input_buffer();
    input.fill(114.0 / 255.0);
    let (raw, _) = engine.infer(input, engine.info().input_hw, ticket).await?;
    engine.record_output_bytes(&raw);
    Ok(())
}
