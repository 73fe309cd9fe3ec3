//! The inference threads: each owns one ONNX Runtime session (`Session::run` needs `&mut`),
//! pulls jobs from the shared bounded queue, optionally groups them into one batched run
//! (dynamic-batch models only), and answers each job on its oneshot.

use std::sync::Weak;
use std::time::{Duration, Instant};

use ort::session::Session;

use super::{EngineError, Inner, Job, ModelInfo, RawOutput};

/// Worker loop; returns when the engine is dropped (the queue disconnects).
pub(crate) fn run(mut session: Session, rx: crossbeam_channel::Receiver<Job>, inner: Weak<Inner>) {
    while let Ok(first) = rx.recv() {
        let Some(inner) = inner.upgrade() else { return };
        let mut batch = vec![first];
        if inner.info.dynamic_batch && inner.pool.max_batch > 1 {
            let deadline = Instant::now() + inner.pool.batch_window;
            while batch.len() < inner.pool.max_batch {
                match rx.recv_deadline(deadline) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            if job.reply.is_closed() {
                continue; // the client went away while queued
            }
            let wait = job.enqueued.elapsed();
            metrics::histogram!("segserve_queue_wait_seconds", "model" => inner.info.name.clone())
                .record(wait.as_secs_f64());
            if wait > inner.pool.queue_timeout {
                super::shed_counter(&inner.info.name, super::SHED_QUEUE_TIMEOUT).increment(1);
                let _ = job.reply.send(Err(EngineError::QueueTimeout));
            } else {
                live.push((job, wait));
            }
        }
        if live.is_empty() {
            continue;
        }
        let started = Instant::now();
        let inputs: Vec<&[f32]> = live.iter().map(|(j, _)| j.input.as_slice()).collect();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&mut session, &inner.info, &inputs)
        }))
        .unwrap_or_else(|_| Err(EngineError::Inference("panic inside Session::run".into())));
        let run_time = started.elapsed();
        metrics::histogram!("segserve_inference_seconds", "model" => inner.info.name.clone())
            .record(run_time.as_secs_f64());
        metrics::histogram!("segserve_batch_size", "model" => inner.info.name.clone())
            .record(live.len() as f64);
        let mut results: Vec<Result<RawOutput, EngineError>> = match outcome {
            Ok(outs) => outs.into_iter().map(Ok).collect(),
            Err(e) => live
                .iter()
                .map(|_| Err(EngineError::Inference(e.to_string())))
                .collect(),
        };
        let mut pool = inner.buffers.lock().expect("buffer pool lock poisoned");
        for ((job, wait), result) in live.into_iter().zip(results.drain(..)) {
            pool.push(job.input);
            let _ = job.reply.send(result.map(|mut raw| {
                raw.queue_wait = wait;
                raw.run_time = run_time;
                raw
            }));
        }
    }
}

/// Runs `session` once on a [3, H, W] tensor and copies the outputs out. Public so the
/// benchmarks measure the bare `Session::run` floor through the same code.
pub fn run_session(
    session: &mut Session,
    info: &ModelInfo,
    input: &[f32],
) -> Result<RawOutput, EngineError> {
    run_batch(session, info, &[input]).map(|mut v| v.remove(0))
}

/// One `Session::run` over several [3, H, W] tensors stacked on the batch dimension.
fn run_batch(
    session: &mut Session,
    info: &ModelInfo,
    inputs: &[&[f32]],
) -> Result<Vec<RawOutput>, EngineError> {
    let fail = |e: ort::Error| EngineError::Inference(e.to_string());
    let (h, w) = info.input_hw;
    let n = inputs.len();
    // A single image is passed as is; a batch needs one contiguous buffer.
    let stacked;
    let data: &[f32] = if n == 1 {
        inputs[0]
    } else {
        stacked = inputs.concat();
        &stacked
    };
    let tensor = ort::value::TensorRef::from_array_view(([n, 3, h, w], data)).map_err(fail)?;
    let outputs = session
        .run(ort::inputs![info.input_name.as_str() => tensor])
        .map_err(fail)?;
    let (shape, preds) = outputs[info.preds_name.as_str()]
        .try_extract_tensor::<f32>()
        .map_err(fail)?;
    let channels = 4 + info.names.len() + info.num_masks;
    if shape.len() != 3 || shape[0] as usize != n || shape[1] as usize != channels {
        return Err(EngineError::Inference(format!(
            "unexpected output0 shape {:?}",
            &shape[..]
        )));
    }
    let anchors = shape[2] as usize;
    let per_image = channels * anchors;
    let protos = match &info.protos_name {
        None => None,
        Some(name) => {
            let (pshape, pdata) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(fail)?;
            if pshape.len() != 4 || pshape[0] as usize != n || pshape[1] as usize != info.num_masks
            {
                return Err(EngineError::Inference(format!(
                    "unexpected prototype shape {:?}",
                    &pshape[..]
                )));
            }
            Some((
                pdata,
                [pshape[1] as usize, pshape[2] as usize, pshape[3] as usize],
            ))
        }
    };
    Ok((0..n)
        .map(|i| RawOutput {
            preds: preds[i * per_image..(i + 1) * per_image].to_vec(),
            anchors,
            protos: protos.as_ref().map(|(p, dims)| {
                let len = dims[0] * dims[1] * dims[2];
                (p[i * len..(i + 1) * len].to_vec(), *dims)
            }),
            queue_wait: Duration::ZERO,
            run_time: Duration::ZERO,
        })
        .collect())
}

/// Runs `session` once for every batch size the pool can send it, on a grey canvas. On a
/// GPU the first run with a new input shape is the slow one (cuDNN's exhaustive algorithm
/// search, TensorRT's engine build: seconds), so this happens before the server reports
/// ready instead of on a client's request.
pub(crate) fn warm_up(
    session: &mut Session,
    info: &ModelInfo,
    max_batch: usize,
) -> Result<(), EngineError> {
    let (h, w) = info.input_hw;
    let canvas = vec![114.0f32 / 255.0; 3 * h * w];
    let largest = if info.dynamic_batch {
        max_batch.max(1)
    } else {
        1
    };
    for n in 1..=largest {
        let inputs = vec![canvas.as_slice(); n];
        run_batch(session, info, &inputs)?;
    }
    Ok(())
}
