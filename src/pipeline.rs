//! One photo from bytes to detections: decode and letterbox on the blocking pool, infer on
//! the engine's session threads, decode outputs and masks on the blocking pool again, so
//! one request's image work overlaps another's inference. Shared by the HTTP API and the CLI.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use image::RgbImage;

use crate::engine::{Detection, Engine, EngineError, FilterOptions};
use crate::imageio::{self, DecodeLimits, ImageError};

/// Failure anywhere in the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The upload is not a usable image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// What to do with one photo.
#[derive(Debug, Clone)]
pub struct SegmentRequest {
    /// Encoded image bytes.
    pub bytes: Bytes,
    /// Filtering options.
    pub filter: FilterOptions,
    /// Compute masks (segmentation models only).
    pub masks: bool,
    /// Hand back the decoded photo (for rendering).
    pub keep_image: bool,
}

/// Stage durations of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Image decode.
    pub decode: Duration,
    /// Letterbox into the tensor.
    pub preprocess: Duration,
    /// Waiting for a free session.
    pub queue: Duration,
    /// `Session::run`.
    pub inference: Duration,
    /// Output decoding, NMS, masks.
    pub postprocess: Duration,
    /// Everything, end to end.
    pub total: Duration,
}

/// The result for one photo.
#[derive(Debug, Clone)]
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
    pub image: Option<Arc<RgbImage>>,
}

thread_local! {
    // Resize scratch reused between calls; one per blocking thread avoids locking.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PipelineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))
}

/// Runs the whole pipeline for one photo. Sheds load (`EngineError::Overloaded`) before
/// doing any work when the engine's queue is full.
pub async fn segment(
    engine: &Engine,
    limits: DecodeLimits,
    req: SegmentRequest,
) -> Result<Segmentation, PipelineError> {
    let started = Instant::now();
    let admission = engine.try_admit()?;
    let slot = engine.slot(&admission).await?;
    let slot_wait = started.elapsed();
    let canvas = engine.info().canvas;
    let mut input = engine.input_buffer();
    let bytes = req.bytes.clone();
    let keep = req.keep_image;
    let (img, lb, input, decode, preprocess) = blocking(move || -> Result<_, ImageError> {
        let t0 = Instant::now();
        let img = imageio::decode(&bytes, &limits)?;
        let t1 = Instant::now();
        let lb = canvas.letterbox(img.width(), img.height());
        input.resize(lb.tensor_len(), 0.0);
        SCRATCH.with(|r| imageio::letterbox_into(&img, &lb, &mut r.borrow_mut(), &mut input));
        // Only the renderer needs the pixels again; drop them before waiting on inference.
        Ok((keep.then_some(img), lb, input, t1 - t0, t1.elapsed()))
    })
    .await??;

    let raw = engine.infer(input, lb.canvas_hw(), &slot).await?;
    drop(slot);
    drop(admission);

    let t_post = Instant::now();
    let engine2 = engine.clone();
    let want_masks = req.masks;
    let filter = req.filter.clone();
    let (raw, detections) = blocking(move || {
        let d = engine2.postprocess(&raw, &lb, &filter, want_masks);
        (raw, d)
    })
    .await?;
    let postprocess = t_post.elapsed();
    Ok(Segmentation {
        width: lb.src_w,
        height: lb.src_h,
        detections,
        timing: Timing {
            decode,
            preprocess,
            queue: slot_wait + raw.queue_wait,
            inference: raw.run_time,
            postprocess,
            total: started.elapsed(),
        },
        image: img.map(Arc::new),
    })
}

/// Runs one inference on a neutral grey canvas, so the first real request does not pay
/// for ONNX Runtime's lazy initialisation.
pub async fn warm_up(engine: &Engine) -> Result<(), PipelineError> {
    let admission = engine.try_admit()?;
    let slot = engine.slot(&admission).await?;
    let mut input = engine.input_buffer();
    input.fill(114.0 / 255.0);
    engine.infer(input, engine.info().input_hw, &slot).await?;
    Ok(())
}
