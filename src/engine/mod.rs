//! The inference engine: a pool of ONNX Runtime sessions on dedicated threads behind a
//! bounded queue, plus output decoding. It knows tensors and detections, not HTTP, image
//! files or the memory budget (`imageio` makes the input tensor, `pipeline` reserves,
//! `api` shapes the replies).
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`Engine`]: loading a model into its sessions; what a run returns |
//! | `registry` | the loaded models by name |
//! | `pool` | a model's places: queue, compute stage, recycled input tensors |
//! | `recycle` | recycled output buffers |
//! | `jobs`, `worker` | a run sent to the inference threads and its answer; the threads |
//! | `detect` | outputs to detections, in two phases (boxes, then masks) |
//! | `postprocess`, `layout`, `proto_masks` | NMS over each export layout; masks from prototypes |
//! | `session`, `metadata`, `device` | ONNX Runtime sessions, the model's metadata, devices |

pub mod detect;
pub mod device;
mod jobs;
pub mod layout;
pub mod metadata;
mod pool;
pub mod postprocess;
pub mod proto_masks;
mod recycle;
mod registry;
pub mod session;
mod worker;

pub use detect::{Candidates, MaskBytes};
pub use pool::{Admission, Counted, PoolConfig, Slot, ROOM_HOLD};
pub use recycle::Recycled;
pub use registry::Registry;
pub use worker::run_session;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::mask::BoxMask;
pub use device::{Device, DeviceChoice, DeviceConfig, DeviceError};
use jobs::Job;
pub use layout::OutputLayout;
pub use metadata::Task;
use pool::STAGE_PER_SESSION;
pub use postprocess::FilterOptions;
pub use session::ModelInfo;

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

/// Raw model outputs for one image, copied out of ONNX Runtime's buffers (into recycled
/// ones: see `recycle`).
#[derive(Debug)]
pub struct RawOutput {
    /// `output0` without the batch dimension: [channels, anchors] in the raw layout,
    /// [rows, 6 + nm] in the in-graph ones (see [`OutputLayout`]).
    pub preds: Recycled,
    /// Number of anchors (raw layout) or detection rows (in-graph layouts).
    pub anchors: usize,
    /// Prototypes [m, mh, mw] for segmentation models (mh, mw = the canvas / 4).
    pub protos: Option<(Recycled, [usize; 3])>,
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

/// A model's recycled output buffers, one pool per output; each keeps as many buffers as
/// the model has compute places (requests that can hold outputs at once).
pub(crate) struct OutputPools {
    preds: std::sync::Arc<recycle::Recycler>,
    protos: std::sync::Arc<recycle::Recycler>,
}

impl OutputPools {
    fn new(places: usize) -> OutputPools {
        OutputPools {
            preds: recycle::Recycler::new(places),
            protos: recycle::Recycler::new(places),
        }
    }
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
    /// Where the outputs are copied to, so steady state faults in no new pages.
    outputs: OutputPools,
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
            crate::host::available_cpus()
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
            outputs: OutputPools::new(places),
            output_bytes: Default::default(),
            pending,
            busy,
        });
        // Register both shed series at 0, so dashboards and alerts see a flat line rather
        // than a missing series until the first overload.
        for reason in [SHED_QUEUE_FULL, SHED_QUEUE_TIMEOUT, SHED_MEMORY] {
            shed_counter(name, reason).absolute(0);
        }
        worker::start(built, rx, &inner)?;
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
}
