//! The inference engine: a pool of ONNX Runtime sessions on dedicated threads behind a
//! bounded queue, plus output decoding. It knows tensors and detections, not HTTP or
//! image files (`imageio` makes the input tensor, `api` shapes the replies).

pub mod device;
pub mod layout;
pub mod metadata;
pub mod postprocess;
pub mod proto_masks;
pub mod session;
mod worker;

pub use worker::run_session;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ndarray::{ArrayView3, Axis};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::budget::{BudgetError, Reservation};
use crate::geometry::Letterbox;
use crate::mask::BoxMask;
pub use device::{Device, DeviceChoice, DeviceConfig, DeviceError};
pub use layout::OutputLayout;
pub use metadata::Task;
pub use postprocess::FilterOptions;
pub use session::ModelInfo;

/// How long a request that finds its model's queue full waits for a place before the 503
/// (see [`Engine::admit_within`]): short beside the queue timeout, long beside a refusal.
pub const ROOM_HOLD: Duration = Duration::from_millis(200);
/// Everything that can go wrong between a ready tensor and detections.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The ONNX Runtime library is missing, too old, or failed to start.
    #[error("ONNX Runtime unavailable: {0}")]
    Runtime(String),
    /// The model file could not be loaded or is not a supported export.
    #[error("cannot load model {0}")]
    ModelLoad(String),
    /// Every session is busy and the queue is full.
    #[error("server is at capacity")]
    Overloaded,
    /// The request waited in the queue longer than allowed.
    #[error("request waited too long in the queue")]
    QueueTimeout,
    /// `Session::run` failed or returned unexpected shapes.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    Closed,
    /// No model by that name is loaded.
    #[error("no model named {0:?} is loaded")]
    UnknownModel(String),
    /// The requested GPU device cannot be used here.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// The loaded models, the default first.
#[derive(Clone)]
pub struct Registry {
    engines: Vec<Engine>,
}

impl Registry {
    /// Wraps loaded engines; the first is the default.
    pub fn new(engines: Vec<Engine>) -> Self {
        assert!(!engines.is_empty(), "a registry needs at least one model");
        Registry { engines }
    }

    /// The named model, or the default when `name` is `None`.
    pub fn get(&self, name: Option<&str>) -> Result<&Engine, EngineError> {
        match name {
            None => Ok(&self.engines[0]),
            Some(n) => self
                .engines
                .iter()
                .find(|e| e.info().name == n)
                .ok_or_else(|| EngineError::UnknownModel(n.to_string())),
        }
    }

    /// All models, default first.
    pub fn all(&self) -> &[Engine] {
        &self.engines
    }
}

/// Pool and queue sizing.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of sessions, each on its own thread.
    pub sessions: usize,
    /// Threads of the intra-op pool the sessions share (see `session::init_runtime`).
    pub threads: usize,
    /// Requests admitted beyond those being computed.
    pub queue_depth: usize,
    /// Longest a request may wait for a session.
    pub queue_timeout: Duration,
    /// Largest batch per run, for models whose batch dimension is dynamic (1 = no batching).
    pub max_batch: usize,
    /// How long a session waits for more requests to fill a batch.
    pub batch_window: Duration,
}

/// Raw model outputs for one image, copied out of ONNX Runtime's buffers.
#[derive(Debug)]
pub struct RawOutput {
    /// `output0` without the batch dimension: [channels, anchors] in the raw layout,
    /// [rows, 6 + nm] in the in-graph ones (see [`OutputLayout`]).
    pub preds: Vec<f32>,
    /// Number of anchors (raw layout) or detection rows (in-graph layouts).
    pub anchors: usize,
    /// Prototypes [m, mh, mw] for segmentation models (mh, mw = the canvas / 4).
    pub protos: Option<(Vec<f32>, [usize; 3])>,
    /// Time spent waiting for a session.
    pub queue_wait: Duration,
    /// Time inside `Session::run`.
    pub run_time: Duration,
}

/// One detected instance, in photo pixels.
#[derive(Debug, Clone)]
pub struct Detection {
    /// x1, y1, x2, y2 in source pixels.
    pub bbox: [f32; 4],
    /// Class id.
    pub class_id: usize,
    /// Score in 0..1.
    pub score: f32,
    /// Full-resolution mask, for segmentation models when masks were asked for.
    pub mask: Option<BoxMask>,
}

/// `reason` label of `segserve_requests_shed_total`: every session busy and the queue full.
pub const SHED_QUEUE_FULL: &str = "queue_full";
/// `reason` label of `segserve_requests_shed_total`: waited longer than the queue timeout.
pub const SHED_QUEUE_TIMEOUT: &str = "queue_timeout";
/// `reason` label of `segserve_requests_shed_total`: the memory budget was in use.
pub const SHED_MEMORY: &str = "memory";

/// Requests refused to protect latency (each becomes a 503 with `Retry-After`).
pub fn shed_counter(model: &str, reason: &'static str) -> metrics::Counter {
    metrics::counter!("segserve_requests_shed_total", "model" => model.to_string(), "reason" => reason)
}

/// What a job carries besides its tensor and hands back with the answer: the caller's
/// permits and memory reservation, so they stay held until the run is really over, even if
/// the caller stops waiting.
pub type Carry = Box<dyn std::any::Any + Send>;

pub(crate) struct Job {
    input: Vec<f32>,
    /// Canvas (height, width) of `input`: it varies per photo on dynamic-shape models.
    hw: (usize, usize),
    enqueued: Instant,
    carry: Carry,
    /// The request the job's allocations (the copied outputs) are charged to.
    lease: Option<std::sync::Arc<crate::meter::Lease>>,
    reply: oneshot::Sender<(Result<RawOutput, EngineError>, Carry)>,
}

pub(crate) struct Inner {
    info: ModelInfo,
    pool: PoolConfig,
    device: Device,
    jobs: crossbeam_channel::Sender<Job>,
    admission: Arc<Semaphore>,
    /// Requests allowed to hold decoded pixels and tensors at once (see [`Engine::slot`]).
    stage: Arc<Semaphore>,
    /// Input tensors handed back by workers, so steady state allocates none.
    buffers: Mutex<Vec<Vec<f32>>>,
    /// Bytes of one image's outputs as copied out of ONNX Runtime, measured by the warm-up
    /// run on the full canvas (the largest a request can get), for the memory budget.
    output_bytes: std::sync::atomic::AtomicU64,
    /// `segserve_queue_pending_requests`: requests waiting for a place in `stage` (the
    /// queue depth an autoscaler reads, like Triton's `nv_inference_pending_request_count`).
    pending: metrics::Gauge,
    /// `segserve_compute_busy`: places of `stage` in use.
    busy: metrics::Gauge,
}

/// Cheap-to-clone handle to one loaded model and its session pool.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Proof of admission: while held, the request counts against the queue.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

/// A place in the compute stage (decode, letterbox, inference, postprocessing, encoding),
/// counted in `segserve_compute_busy` while held.
#[derive(Debug)]
pub struct Slot(
    #[allow(dead_code)] OwnedSemaphorePermit,
    #[allow(dead_code)] Counted,
);

/// One in a gauge while alive: the queue gauges stay exact however a wait or a piece of
/// work ends (an answer, an error, a timeout, or a client that leaves and drops the future).
#[derive(Debug)]
pub struct Counted(metrics::Gauge);

impl Counted {
    fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Requests per session allowed in the compute stage: one computing, one being decoded so
/// the session never waits for image work.
const STAGE_PER_SESSION: usize = 2;

impl Engine {
    /// Loads `path` into `pool.sessions` CPU sessions and starts their threads.
    /// The ONNX Runtime library must have been initialised with [`session::init_runtime`].
    pub fn load(path: &Path, name: &str, pool: PoolConfig) -> Result<Engine, EngineError> {
        Self::load_on(path, name, pool, Device::Cpu, &DeviceConfig::default())
    }

    /// Loads `path` into `pool.sessions` sessions on `device` and starts their threads.
    /// On a GPU every session is warmed up, for every batch size, before this returns.
    pub fn load_on(
        path: &Path,
        name: &str,
        pool: PoolConfig,
        device: Device,
        device_cfg: &DeviceConfig,
    ) -> Result<Engine, EngineError> {
        let sessions = pool.sessions.max(1);
        let providers = match device {
            Device::Cpu => Vec::new(),
            // TensorRT needs the input's shape range up front; a one-thread CPU session
            // reads it from the model (cheap next to an engine build).
            Device::TensorRt => {
                let probe = session::inspect(&session::build_session(path, 1)?, name)?;
                let profile = device::TrtProfile::for_model(&probe, pool.max_batch);
                device::execution_providers(device, device_cfg, profile.as_ref())
            }
            Device::Cuda => device::execution_providers(device, device_cfg, None),
        };
        let mut built = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            built.push(session::build_session_with(
                path,
                session::Threads::Shared,
                &providers,
            )?);
        }
        let info = session::inspect(&built[0], name)?;
        // On a GPU the session threads leave the cores free, so every core may decode and
        // letterbox while the GPU computes; on the CPU they would compete with inference.
        let decoders = if device.is_gpu() {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            0
        };
        let (tx, rx) = crossbeam_channel::bounded::<Job>(sessions + pool.queue_depth);
        // Enough to fill a batch while the previous one computes.
        let places = sessions * STAGE_PER_SESSION.max(pool.max_batch + 1) + decoders;
        // Present from startup, so an autoscaler's query has a series to read.
        let model = name.to_string();
        let pending = metrics::gauge!("segserve_queue_pending_requests", "model" => model.clone());
        let busy = metrics::gauge!("segserve_compute_busy", "model" => model.clone());
        pending.set(0.0);
        busy.set(0.0);
        metrics::gauge!("segserve_compute_places", "model" => model).set(places as f64);
        let inner = Arc::new(Inner {
            info,
            admission: Arc::new(Semaphore::new(sessions + pool.queue_depth)),
            stage: Arc::new(Semaphore::new(places)),
            pool,
            device,
            jobs: tx,
            buffers: Mutex::new(Vec::new()),
            output_bytes: Default::default(),
            pending,
            busy,
        });
        // Register both shed series at 0, so dashboards and alerts see a flat line rather
        // than a missing series until the first overload.
        for reason in [SHED_QUEUE_FULL, SHED_QUEUE_TIMEOUT, SHED_MEMORY] {
            shed_counter(name, reason).absolute(0);
        }
        // Every session is warmed up on the thread that will run it, before the server is
        // ready: the first run of a session is the slow one (ONNX Runtime's lazy setup; on a
        // GPU also cuDNN's algorithm search or TensorRT's engine build, and the CUDA provider
        // keeps its handles per thread). One session at a time: cuDNN's search times the
        // candidate kernels, and two searches at once would time each other.
        let (warm_tx, warm_rx) = std::sync::mpsc::channel::<Result<(), EngineError>>();
        let one_at_a_time = Arc::new(Mutex::new(()));
        let mut started = 0;
        for (i, mut s) in built.into_iter().enumerate() {
            let rx = rx.clone();
            let weak = Arc::downgrade(&inner);
            let (report, lock) = (warm_tx.clone(), one_at_a_time.clone());
            let (info, max_batch) = (inner.info.clone(), inner.pool.max_batch);
            std::thread::Builder::new()
                .name(format!("segserve-infer-{name}-{i}"))
                .spawn(move || {
                    let outcome = {
                        let _turn = lock.lock().unwrap_or_else(|p| p.into_inner());
                        worker::warm_up(&mut s, &info, max_batch)
                    };
                    let failed = outcome.is_err();
                    let _ = report.send(outcome);
                    if !failed {
                        worker::run(s, rx, weak)
                    }
                })
                .map_err(|e| {
                    EngineError::ModelLoad(format!("cannot start inference thread: {e}"))
                })?;
            started += 1;
        }
        drop(warm_tx);
        for _ in 0..started {
            // A failed warm-up drops `inner` on return, which stops the other workers.
            warm_rx.recv().map_err(|_| {
                EngineError::ModelLoad("an inference thread died during warm-up".into())
            })??;
        }
        Ok(Engine { inner })
    }

    /// The model's metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Bytes of one image's copied-out outputs (0 until the warm-up run measured them).
    pub fn output_bytes(&self) -> u64 {
        self.inner
            .output_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records what the warm-up run's outputs took (see [`Engine::output_bytes`]).
    pub fn record_output_bytes(&self, raw: &RawOutput) {
        let floats = raw.preds.len() + raw.protos.as_ref().map_or(0, |(p, _)| p.len());
        self.inner
            .output_bytes
            .store(floats as u64 * 4, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pool configuration in force.
    pub fn pool(&self) -> &PoolConfig {
        &self.inner.pool
    }

    /// Where this model's sessions run.
    pub fn device(&self) -> Device {
        self.inner.device
    }

    /// Looks for room in the queue before a request's body is read, waiting up to `hold`
    /// ([`ROOM_HOLD`] on the routes) when it is full: refusing from the headers costs next to
    /// nothing, where reading and parsing an upload only to refuse it costs as much as
    /// serving it. With room at once nothing is taken
    /// (`None`: the place is taken with [`Engine::try_admit`] once the photo is in, so slow
    /// uploads never hold places). When it had to wait, the place it got is kept (`Some`):
    /// a look that let it go would wake every waiter to read its body and be refused after
    /// all. Clients that retry a 503 at once (ignoring `Retry-After`) would otherwise turn
    /// refusals into a busy loop that takes the CPUs from the work being served; held for
    /// a moment, each costs one refusal per `hold`. Nothing is read or reserved while it
    /// waits: the body stays in the socket.
    pub async fn admit_within(&self, hold: Duration) -> Result<Option<Admission>, EngineError> {
        if self.inner.admission.available_permits() > 0 {
            return Ok(None);
        }
        match tokio::time::timeout(hold, self.inner.admission.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(Admission(p))),
            _ => {
                shed_counter(&self.inner.info.name, SHED_QUEUE_FULL).increment(1);
                Err(EngineError::Overloaded)
            }
        }
    }

    /// Takes a place in the queue, or fails at once when it is full (the caller sheds load).
    pub fn try_admit(&self) -> Result<Admission, EngineError> {
        self.inner
            .admission
            .clone()
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| {
                shed_counter(&self.inner.info.name, SHED_QUEUE_FULL).increment(1);
                EngineError::Overloaded
            })
    }

    /// Waits (up to the queue timeout) for a place in the compute stage. Queued requests
    /// wait here holding only their compressed bytes, so memory under load stays flat:
    /// decoded photos and tensors exist for at most `2 x sessions` requests at a time.
    pub async fn slot(&self, _admission: &Admission) -> Result<Slot, EngineError> {
        let sem = self.inner.stage.clone();
        let _pending = Counted::new(self.inner.pending.clone());
        match tokio::time::timeout(self.inner.pool.queue_timeout, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot(p, Counted::new(self.inner.busy.clone()))),
            Ok(Err(_)) => Err(EngineError::Closed),
            Err(_) => {
                shed_counter(&self.inner.info.name, SHED_QUEUE_TIMEOUT).increment(1);
                Err(EngineError::QueueTimeout)
            }
        }
    }

    /// A zeroed-or-recycled input buffer of the model's full size, [3, H, W] at `input_hw`.
    /// A rect canvas (dynamic-shape models) is never larger: `resize` it to
    /// [`Letterbox::tensor_len`], which then only shortens it.
    pub fn input_buffer(&self) -> Vec<f32> {
        let (h, w) = self.inner.info.input_hw;
        let recycled = self
            .inner
            .buffers
            .lock()
            .expect("buffer pool lock poisoned")
            .pop();
        let mut b = recycled.unwrap_or_default();
        if b.capacity() < 3 * h * w {
            // Pooled buffers outlive the request that first needed one, so they are the
            // server's bytes (a request reserves the tensor it uses, not the pool's growth).
            let _server = crate::meter::enter_server();
            b.reserve_exact(3 * h * w - b.len());
        }
        b.resize(3 * h * w, 0.0);
        b
    }

    /// Runs the model on a prepared [3, H, W] tensor, `hw` = (H, W), on one of the pool's
    /// sessions. `carry` (the caller's slot, permits, reservation) travels with the job and
    /// comes back with the answer; if the caller stops waiting it is dropped only once the
    /// run is done.
    pub async fn infer<C: Send + 'static>(
        &self,
        input: Vec<f32>,
        hw: (usize, usize),
        carry: C,
    ) -> Result<(RawOutput, C), EngineError> {
        if input.len() != 3 * hw.0 * hw.1 {
            return Err(EngineError::Inference(format!(
                "input has {} values, not 3 x {} x {}",
                input.len(),
                hw.0,
                hw.1
            )));
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            input,
            hw,
            enqueued: Instant::now(),
            carry: Box::new(carry),
            lease: crate::meter::current(),
            reply: tx,
        };
        self.try_queue(job)?;
        let (result, carry) = rx.await.map_err(|_| EngineError::Closed)?;
        let carry = *carry
            .downcast::<C>()
            .expect("a job hands back the carry it was given");
        Ok((result?, carry))
    }

    fn try_queue(&self, job: Job) -> Result<(), EngineError> {
        self.inner.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                shed_counter(&self.inner.info.name, SHED_QUEUE_FULL).increment(1);
                EngineError::Overloaded
            }
            crossbeam_channel::TrySendError::Disconnected(_) => EngineError::Closed,
        })
    }

    /// Decodes raw outputs into detections in source pixels, with masks if asked.
    /// Detections whose mask comes out empty are dropped, as Ultralytics does. The masks'
    /// memory (a byte per pixel of each box, and the logits) is reserved from `budget`
    /// once the boxes are known and before any mask exists.
    pub fn postprocess(
        &self,
        raw: &RawOutput,
        lb: &Letterbox,
        opts: &FilterOptions,
        want_masks: bool,
        budget: &mut Reservation,
    ) -> Result<Vec<Detection>, BudgetError> {
        let info = &self.inner.info;
        let (nc, nm) = (info.names.len(), info.num_masks);
        // Boxes and masks are mapped back the way Ultralytics' scale_boxes/scale_masks do:
        // from the canvas size alone (a rect canvas can differ from the letterbox by a pixel).
        let lb = &lb.as_mapped_back();
        let cands = match info.layout {
            OutputLayout::Raw => postprocess::decode(&raw.preds, raw.anchors, nc, lb, opts),
            l => layout::decode_rows(l, &raw.preds, raw.anchors, nc, nm, lb, opts),
        };
        let protos = match (&raw.protos, want_masks) {
            (Some((p, dims)), true) if !cands.is_empty() => Some((p, dims)),
            _ => {
                return Ok(cands
                    .into_iter()
                    .map(|c| Detection {
                        bbox: c.source_box,
                        class_id: c.class_id,
                        score: c.score,
                        mask: None,
                    })
                    .collect())
            }
        };
        let logit_bytes = (cands.len() * protos.map_or(0, |(_, d)| d[1] * d[2]) * 4) as u64;
        budget
            .grow(proto_masks::bytes_for_boxes(cands.iter().map(|c| c.source_box)) + logit_bytes)?;
        let (p, dims) = protos.expect("checked above");
        let protos = ArrayView3::from_shape((dims[0], dims[1], dims[2]), p)
            .expect("prototype length checked by the worker");
        let coeffs = ndarray::Array2::from_shape_fn((cands.len(), dims[0]), |(i, k)| {
            info.layout
                .coefficient(&raw.preds, raw.anchors, nc, nm, cands[i].anchor, k)
        });
        let logits = proto_masks::logits(coeffs.view(), protos);
        let detections = cands
            .into_iter()
            .zip(logits.axis_iter(Axis(0)))
            .filter_map(|(c, l)| {
                let l = l
                    .into_shape_with_order((dims[1], dims[2]))
                    .expect("logit row has mh*mw values");
                let mask = proto_masks::mask_for_box(l, lb, c.source_box)?;
                (mask.area() > 0).then_some(Detection {
                    bbox: c.source_box,
                    class_id: c.class_id,
                    score: c.score,
                    mask: Some(mask),
                })
            })
            .collect();
        drop(logits);
        // The logits are gone; the masks stay until the answer is written.
        budget.set(budget.held() - logit_bytes)?;
        Ok(detections)
    }
}
