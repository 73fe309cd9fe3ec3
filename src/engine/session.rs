//! Loads the ONNX Runtime library once, builds `ort` sessions, and checks a model's
//! inputs, outputs and Ultralytics metadata before anything is served with it: which output
//! layout it has (`layout`), and whether photos go on the full square canvas or the minimum
//! rectangle (dynamic-shape models).

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProviderDispatch;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::ValueType;

use super::layout::{self, Declared, OutputLayout};
use super::metadata::{self, Task};
use super::EngineError;
use crate::geometry::{Canvas, Letterbox};

/// Everything about a model that the rest of the server needs, read once at load time.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Served name (file stem).
    pub name: String,
    /// Head type.
    pub task: Task,
    /// Class names by id.
    pub names: Vec<String>,
    /// Model image size (metadata `imgsz`): (height, width). The canvas of static-shape
    /// models; for dynamic-shape ones the size the photo is fitted into (see `canvas`).
    pub input_hw: (usize, usize),
    /// Model stride (from metadata).
    pub stride: usize,
    /// Number of mask coefficients per anchor (0 for detection models).
    pub num_masks: usize,
    /// Whether the batch dimension is dynamic (then requests can be batched).
    pub dynamic_batch: bool,
    /// What `output0` holds: raw anchors, or detections after NMS in the graph / end-to-end.
    pub layout: OutputLayout,
    /// How the canvas is sized per photo: the `input_hw` square, or (input height and width
    /// dynamic) the minimum rectangle, as Ultralytics letterboxes dynamic exports.
    pub canvas: Canvas,
    /// Most images per `Session::run`: 1 without a dynamic batch dimension; for NMS graphs
    /// the export's `batch`, because their per-image NMS loop is unrolled to that many images
    /// (later ones would come back empty).
    pub batch_limit: usize,
    /// Name of the image input.
    pub input_name: String,
    /// Name of the predictions output.
    pub preds_name: String,
    /// Name of the prototypes output, for segmentation models.
    pub protos_name: Option<String>,
}

impl ModelInfo {
    /// Where a `src_w` x `src_h` photo goes, and on which canvas (see `canvas`).
    pub fn letterbox(&self, src_w: u32, src_h: u32) -> Letterbox {
        self.canvas.letterbox(src_w, src_h)
    }
}

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads `libonnxruntime` from `path` once per process. Later calls return the first
/// outcome: ONNX Runtime cannot be unloaded or swapped within a process.
pub fn init_runtime(path: &Path, pool_threads: usize) -> Result<(), EngineError> {
    let outcome = RUNTIME.get_or_init(|| {
        if !path.is_file() {
            return Err(format!(
                "ONNX Runtime library not found at {}",
                path.display()
            ));
        }
        // Telemetry off before the library initialises: it would otherwise try to reach a
        // Microsoft host ~30 s after the first session, which these machines cannot reach.
        // SAFETY-ish: called once at startup, before worker threads exist.
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
        let builder = ort::init_from(path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        // One intra-op thread pool for the whole process, which every serving session shares
        // (Threads::Shared): a request alone runs on all its threads, concurrent ones split
        // them, and the cores are never oversubscribed. Measured against one pool per
        // session: the same single-request latency as one session with every thread, nearly
        // the throughput of one single-threaded session per core, and no extra session's
        // memory (docs/performance.md). Spinning off: idle threads cost no CPU.
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(pool_threads.max(1))
            .and_then(|o| o.with_inter_threads(1))
            .and_then(|o| o.with_spin_control(false))
            .map_err(|e| format!("cannot configure ONNX Runtime's thread pool: {e}"))?;
        builder
            .with_global_thread_pool(pool)
            .with_name("segserve")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    outcome
        .as_ref()
        .map(|_| ())
        .map_err(|e| EngineError::Runtime(e.clone()))
}

fn environment() -> Result<&'static Environment, EngineError> {
    match RUNTIME.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(EngineError::Runtime(e.clone())),
        None => Err(EngineError::Runtime(
            "ONNX Runtime was not initialised".into(),
        )),
    }
}

fn tensor_dims(t: &ValueType) -> Option<Vec<i64>> {
    match t {
        ValueType::Tensor { shape, .. } => Some(shape.to_vec()),
        _ => None,
    }
}

/// Where a session's intra-op threads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The process-wide pool set up by [`init_runtime`]: what serving sessions use.
    Shared,
    /// A pool of its own with this many threads (benchmarks' floors, model inspection).
    Own(usize),
}

/// Builds one CPU session with a thread pool of its own of `threads` threads.
pub fn build_session(path: &Path, threads: usize) -> Result<Session, EngineError> {
    build_session_with(path, Threads::Own(threads), &[])
}

/// Builds one session on the given execution providers (none: the CPU), see
/// `device::execution_providers`. A provider that cannot register fails the build: with
/// ONNX Runtime's default the model would quietly run on the CPU instead. Spinning is off
/// in every pool: spinning threads burn the cores other sessions and the HTTP runtime need.
pub fn build_session_with(
    path: &Path,
    threads: Threads,
    providers: &[ExecutionProviderDispatch],
) -> Result<Session, EngineError> {
    let load = |e: ort::Error| EngineError::ModelLoad(format!("{}: {e}", path.display()));
    let names = || {
        let v: Vec<&str> = providers.iter().map(|p| p.name()).collect();
        v.join(" + ")
    };
    let builder = Session::builder(environment()?)
        .map_err(load)?
        // Memory: weights outside the arena and no memory-pattern pre-planning; measured
        // together ~20 MB less peak RSS per process under load at the same speed.
        .with_memory_pattern(false)
        .map_err(|e| load(e.into()))?
        .with_device_allocated_initializers()
        .map_err(|e| load(e.into()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(e.into()))?;
    let builder = match threads {
        Threads::Shared => builder,
        Threads::Own(n) => builder
            .with_independent_thread_pool()
            .map_err(|e| load(e.into()))?
            .with_intra_threads(n.max(1))
            .map_err(|e| load(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.into()))?
            .with_intra_op_spinning(false)
            .map_err(|e| load(e.into()))?
            .with_inter_op_spinning(false)
            .map_err(|e| load(e.into()))?,
    };
    let mut builder = if providers.is_empty() {
        builder
    } else {
        builder.with_execution_providers(providers).map_err(|e| {
            EngineError::ModelLoad(format!(
                "{}: ONNX Runtime could not register {}: {e}",
                path.display(),
                names()
            ))
        })?
    };
    builder.commit_from_file(path).map_err(|e| {
        if providers.is_empty() {
            load(e)
        } else {
            EngineError::ModelLoad(format!("{} on {}: {e}", path.display(), names()))
        }
    })
}

/// Reads and validates the metadata and I/O signature of a loaded session.
pub fn inspect(session: &Session, name: &str) -> Result<ModelInfo, EngineError> {
    let bad = |why: String| EngineError::ModelLoad(format!("{name}: {why}"));
    let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
    let get = |key: &str| {
        meta.custom(key).ok_or_else(|| {
            bad(format!(
                "metadata has no `{key}` (not an Ultralytics export?)"
            ))
        })
    };
    let names = metadata::parse_names(&get("names")?).map_err(|e| bad(e.to_string()))?;
    let input_hw = metadata::parse_imgsz(&get("imgsz")?).map_err(|e| bad(e.to_string()))?;
    let stride = metadata::parse_stride(&get("stride")?).map_err(|e| bad(e.to_string()))?;
    let task = metadata::parse_task(&get("task")?).map_err(|e| bad(e.to_string()))?;
    // RT-DETR exports also have [N, 300, ...] rows, but with cx, cy, w, h boxes and their own
    // postprocessing; taking them for an end-to-end YOLO head would misplace every box.
    if meta.custom("head").as_deref() == Some("RTDETRDecoder") {
        return Err(bad(
            "RT-DETR exports are not served (YOLO detect and segment heads only)".into(),
        ));
    }
    // Absent in older exports: `layout::decide` then goes by the shape alone.
    let end2end = meta
        .custom("end2end")
        .map(|v| metadata::parse_bool("end2end", &v))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let args = meta
        .custom("args")
        .map(|v| metadata::parse_export_args(&v))
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or_default();
    let export_batch = meta
        .custom("batch")
        .map(|v| metadata::parse_batch(&v))
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or(1);

    let [input] = session.inputs() else {
        return Err(bad(format!(
            "expected one input, found {}",
            session.inputs().len()
        )));
    };
    let in_dims = tensor_dims(input.dtype()).ok_or_else(|| bad("input is not a tensor".into()))?;
    if in_dims.len() != 4 || (in_dims[1] != 3 && in_dims[1] != -1) {
        return Err(bad(format!("input shape {in_dims:?} is not [N, 3, H, W]")));
    }
    for (dim, want) in [(in_dims[2], input_hw.0), (in_dims[3], input_hw.1)] {
        if dim > 0 && dim as usize != want {
            return Err(bad(format!(
                "input shape {in_dims:?} disagrees with imgsz {input_hw:?}"
            )));
        }
    }

    let outputs = session.outputs();
    let preds = outputs.first().ok_or_else(|| bad("no outputs".into()))?;
    let p_dims =
        tensor_dims(preds.dtype()).ok_or_else(|| bad("output 0 is not a tensor".into()))?;
    let (num_masks, protos_name) = match task {
        Task::Detect => (0, None),
        Task::Segment => {
            let protos = outputs
                .get(1)
                .ok_or_else(|| bad("segment model without a prototype output".into()))?;
            let dims = tensor_dims(protos.dtype())
                .ok_or_else(|| bad("output 1 is not a tensor".into()))?;
            if dims.len() != 4 || dims[1] <= 0 {
                return Err(bad(format!("prototype shape {dims:?} is not [N, M, H, W]")));
            }
            (dims[1] as usize, Some(protos.name().to_string()))
        }
    };
    let declared = Declared {
        end2end,
        nms: args.nms,
    };
    let layout = layout::decide(declared, &p_dims, names.len(), num_masks).map_err(bad)?;
    // Ultralytics letterboxes to the minimum rectangle when the export is dynamic, which its
    // ONNX backend reads as "output0's batch dimension is symbolic" (`dynamic=True` makes
    // batch, height and width dynamic together). A rect canvas also needs the input's height
    // and width to be dynamic, or ONNX Runtime would refuse it.
    let dynamic_batch = in_dims[0] < 0;
    let rect = p_dims[0] < 0 && in_dims[2] < 0 && in_dims[3] < 0;
    let batch_limit = match (dynamic_batch, layout) {
        (false, _) => 1,
        (true, OutputLayout::Nms) => export_batch,
        (true, _) => usize::MAX,
    };
    Ok(ModelInfo {
        name: name.to_string(),
        task,
        names,
        input_hw,
        stride,
        num_masks,
        dynamic_batch,
        layout,
        canvas: Canvas {
            width: input_hw.1 as u32,
            height: input_hw.0 as u32,
            stride: stride as u32,
            rect,
        },
        batch_limit,
        input_name: input.name().to_string(),
        preds_name: preds.name().to_string(),
        protos_name,
    })
}
