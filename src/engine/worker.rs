//! The inference threads: each owns one ONNX Runtime session (`Session::run` needs `&mut`),
//! pulls jobs from the shared bounded queue, optionally groups them into one batched run
//! (dynamic-batch models only; only jobs whose tensors have the same height and width, since
//! dynamic-shape models get a canvas per photo), and answers each job on its oneshot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ort::session::Session;

use super::jobs::Job;
use super::{EngineError, Inner, ModelInfo, OutputPools, RawOutput, Recycled};

/// Starts one thread per session; each warms its session up, then runs jobs from `rx`.
/// Returns once every session is warm, or with the first warm-up's error.
///
/// Every session is warmed up on the thread that will run it, before the server is ready:
/// the first run of a session is the slow one (ONNX Runtime's lazy setup; on a GPU also
/// cuDNN's algorithm search or TensorRT's engine build, and the CUDA provider keeps its
/// handles per thread). One session at a time: cuDNN's search times the candidate kernels,
/// and two searches at once would time each other.
pub(super) fn start(
    sessions: Vec<Session>,
    rx: crossbeam_channel::Receiver<Job>,
    inner: &Arc<Inner>,
) -> Result<(), EngineError> {
    let name = &inner.info.name;
    let (warm_tx, warm_rx) = std::sync::mpsc::channel::<Result<(), EngineError>>();
    let one_at_a_time = Arc::new(Mutex::new(()));
    let mut started = 0;
    for (i, mut s) in sessions.into_iter().enumerate() {
        let rx = rx.clone();
        let weak = Arc::downgrade(inner);
        let (report, lock) = (warm_tx.clone(), one_at_a_time.clone());
        let (info, max_batch) = (inner.info.clone(), inner.pool.max_batch);
        std::thread::Builder::new()
            .name(format!("segserve-infer-{name}-{i}"))
            .spawn(move || {
                let outcome = {
                    let _turn = lock.lock().unwrap_or_else(|p| p.into_inner());
                    warm_up(&mut s, &info, max_batch, weak.upgrade().as_deref())
                };
                let failed = outcome.is_err();
                let _ = report.send(outcome);
                if !failed {
                    run(s, rx, weak)
                }
            })
            .map_err(|e| EngineError::ModelLoad(format!("cannot start inference thread: {e}")))?;
        started += 1;
    }
    drop(warm_tx);
    for _ in 0..started {
        // A failed warm-up drops `inner` on return, which stops the other workers.
        warm_rx.recv().map_err(|_| {
            EngineError::ModelLoad("an inference thread died during warm-up".into())
        })??;
    }
    Ok(())
}

/// Worker loop; returns when the engine is dropped (the queue disconnects and every job
/// already taken has been answered).
pub(crate) fn run(mut session: Session, rx: crossbeam_channel::Receiver<Job>, inner: Weak<Inner>) {
    // Between jobs (and for batches of several requests) allocations are the server's own.
    let _server = crate::meter::enter_server();
    // Jobs taken from the queue while filling a batch of another shape; they go first next time.
    let mut held: VecDeque<Job> = VecDeque::new();
    while let Some(first) = held.pop_front().or_else(|| rx.recv().ok()) {
        let Some(inner) = inner.upgrade() else { return };
        let limit = if inner.info.dynamic_batch {
            inner.pool.max_batch.min(inner.info.batch_limit).max(1)
        } else {
            1
        };
        let batch = gather(first, &mut held, &rx, limit, inner.pool.batch_window);
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            if job.reply.is_closed() {
                continue; // the client went away while queued (what it handed over is dropped here)
            }
            let wait = job.enqueued.elapsed();
            metrics::histogram!("segserve_queue_wait_seconds", "model" => inner.info.name.clone())
                .record(wait.as_secs_f64());
            if wait > inner.pool.queue_timeout {
                super::shed_counter(&inner.info.name, super::SHED_QUEUE_TIMEOUT).increment(1);
                job.reply.send(Err(EngineError::QueueTimeout));
            } else {
                live.push((job, wait));
            }
        }
        if live.is_empty() {
            continue;
        }
        let started = Instant::now();
        let hw = live[0].0.hw;
        let inputs: Vec<&[f32]> = live.iter().map(|(j, _)| j.input.as_slice()).collect();
        // A lone job's outputs are its request's bytes.
        let job_scope = match live.as_slice() {
            [(job, _)] => job.lease.as_ref().map(crate::meter::Lease::enter),
            _ => None,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&mut session, &inner.info, hw, &inputs, Some(&inner.outputs))
        }))
        .unwrap_or_else(|_| Err(EngineError::Inference("panic inside Session::run".into())));
        drop(job_scope);
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
            let result = result.map(|mut raw| {
                raw.queue_wait = wait;
                raw.run_time = run_time;
                raw
            });
            job.reply.send(result);
        }
    }
}

/// The batch `first` starts: with `limit` > 1, more jobs of the same tensor shape, from
/// those held back and then from the queue until `window` has passed. Jobs of another shape
/// are held for the next batch; the window closes early once a batch's worth is held, so a
/// worker does not sit on work another one could run.
fn gather(
    first: Job,
    held: &mut VecDeque<Job>,
    rx: &crossbeam_channel::Receiver<Job>,
    limit: usize,
    window: Duration,
) -> Vec<Job> {
    let mut batch = vec![first];
    if limit <= 1 {
        return batch;
    }
    let hw = batch[0].hw;
    let mut i = 0;
    while i < held.len() && batch.len() < limit {
        if held[i].hw == hw {
            batch.extend(held.remove(i));
        } else {
            i += 1;
        }
    }
    let deadline = Instant::now() + window;
    while batch.len() < limit && held.len() < limit {
        match rx.recv_deadline(deadline) {
            Ok(job) if job.hw == hw => batch.push(job),
            Ok(job) => held.push_back(job),
            Err(_) => break,
        }
    }
    batch
}

/// Runs `session` once on a [3, H, W] tensor at the model's full `input_hw` and copies the
/// outputs out. Public so the benchmarks measure the bare `Session::run` floor through the
/// same code.
pub fn run_session(
    session: &mut Session,
    info: &ModelInfo,
    input: &[f32],
) -> Result<RawOutput, EngineError> {
    run_batch(session, info, info.input_hw, &[input], None).map(|mut v| v.remove(0))
}

/// One `Session::run` over several [3, H, W] tensors, `hw` = (H, W), stacked on the batch
/// dimension. The outputs are copied into `pools`' buffers, or fresh ones without.
fn run_batch(
    session: &mut Session,
    info: &ModelInfo,
    (h, w): (usize, usize),
    inputs: &[&[f32]],
    pools: Option<&OutputPools>,
) -> Result<Vec<RawOutput>, EngineError> {
    let fail = |e: ort::Error| EngineError::Inference(e.to_string());
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
    let anchors = info
        .layout
        .rows_of(&shape[..], info.names.len(), info.num_masks)
        .map_err(EngineError::Inference)?;
    if shape[0] as usize != n {
        return Err(EngineError::Inference(format!(
            "output0 shape {:?} does not hold {n} images",
            &shape[..]
        )));
    }
    let per_image = anchors * info.layout.row_width(info.names.len(), info.num_masks);
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
    let copy = |pool: Option<&std::sync::Arc<super::recycle::Recycler>>, values: &[f32]| match pool
    {
        Some(pool) => pool.copy_of(values),
        None => Recycled::from(values.to_vec()),
    };
    Ok((0..n)
        .map(|i| RawOutput {
            preds: copy(
                pools.map(|p| &p.preds),
                &preds[i * per_image..(i + 1) * per_image],
            ),
            anchors,
            protos: protos.as_ref().map(|(p, dims)| {
                let len = dims[0] * dims[1] * dims[2];
                let values = &p[i * len..(i + 1) * len];
                (copy(pools.map(|p| &p.protos), values), *dims)
            }),
            queue_wait: Duration::ZERO,
            run_time: Duration::ZERO,
        })
        .collect())
}

/// Runs `session` once for every batch size the pool can send it, on a grey canvas. On a
/// GPU the first run with a new input shape is the slow one (cuDNN's exhaustive algorithm
/// search, TensorRT's engine build: seconds), so this happens before the server reports
/// ready instead of on a client's request. The outputs go through the model's pools, so
/// each session leaves a buffer per output there before the first request.
pub(crate) fn warm_up(
    session: &mut Session,
    info: &ModelInfo,
    max_batch: usize,
    inner: Option<&Inner>,
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
        run_batch(session, info, (h, w), &inputs, inner.map(|i| &i.outputs))?;
    }
    Ok(())
}
