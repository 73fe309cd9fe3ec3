//! clap's definitions of every command and flag (each flag has a `SEGSERVE_*` environment
//! variable), and the parsers of flag values. The leaf of the command line: it knows the
//! types flags parse into and nothing of how they are checked (`super::settings`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::PixelLibMasks;
use crate::engine::DeviceChoice;
use crate::imageio::DecodeMode;

/// segserve: instance segmentation over HTTP with YOLO ONNX models.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Run the model on image files or folders, without a server.
    Predict(PredictArgs),
    /// Print the metadata of model files (name, task, input size, stride, classes).
    Models(ModelsArgs),
}

/// `segserve predict` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// Image files and folders (searched recursively for .jpg/.jpeg/.png/.webp/.bmp/.gif/.tif/.tiff).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Model and runtime settings (the first --model is used).
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Write one JSON file per image here (folder structure mirrored); default: JSON Lines on stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Score threshold, 0..1.
    #[arg(long)]
    pub conf: Option<f32>,
    /// NMS IoU threshold, 0..1.
    #[arg(long)]
    pub iou: Option<f32>,
    /// Most detections per image.
    #[arg(long)]
    pub max_det: Option<usize>,
    /// Keep only these classes: names or ids, comma-separated.
    #[arg(long)]
    pub classes: Option<String>,
    /// Mask format: rle, polygon or none.
    #[arg(long, default_value = "rle")]
    pub masks: String,
    /// Douglas-Peucker tolerance in pixels for --masks polygon.
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Also write each photo with its detections drawn on it (JPEG) into this folder.
    #[arg(long)]
    pub render: Option<PathBuf>,
    /// Progress bar: auto (only on a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
}

/// When to draw the progress bar.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Progress {
    /// When stderr is a terminal.
    Auto,
    /// Always (drawn to stderr).
    Always,
    /// Never.
    Never,
}

/// `segserve models` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    /// ONNX model files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Path of libonnxruntime (see `serve --help`).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// Print JSON (the `GET /v1/models` schema) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Flags shared by every command that runs a model.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Model file(s); repeat or comma-separate for several. The first is the default model.
    #[arg(
        long = "model",
        env = "SEGSERVE_MODEL",
        value_delimiter = ',',
        default_value = "models/yolov8n-seg-320.onnx"
    )]
    pub models: Vec<PathBuf>,
    /// Path of libonnxruntime; default: ./.ort or the .ort folder beside the repository the binary was built in.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,
    /// Where the models run: cpu; cuda (NVIDIA GPU, cuDNN); tensorrt (NVIDIA GPU, TensorRT
    /// engines, CUDA for the rest); auto (tensorrt, else cuda, else cpu). GPU devices need
    /// the GPU build of ONNX Runtime and CUDA 13 (docs/gpu.md) and fail at startup, naming
    /// what is missing, rather than fall back to the CPU.
    #[arg(long, env = "SEGSERVE_DEVICE", default_value_t = DeviceChoice::Cpu, value_parser = one_of::<DeviceChoice, 4>(DeviceChoice::ALL.map(DeviceChoice::as_str)))]
    pub device: DeviceChoice,
    /// Which GPU, numbered as the NVIDIA driver (and nvidia-smi) numbers them.
    #[arg(long, env = "SEGSERVE_DEVICE_ID", default_value_t = 0)]
    pub device_id: u32,
    /// Folder for TensorRT's built engines and timing cache (created if missing); without
    /// it every start builds the engines again, which takes tens of seconds per model.
    #[arg(long, env = "SEGSERVE_TRT_CACHE_DIR")]
    pub trt_cache_dir: Option<PathBuf>,
    /// Let TensorRT use FP16 kernels: faster, but scores move further from the FP32 model.
    #[arg(long, env = "SEGSERVE_TRT_FP16")]
    pub trt_fp16: bool,
    /// Threads of ONNX Runtime's intra-op pool, which every session shares: a request alone
    /// uses them all, concurrent ones split them (default: the CPUs this process may use).
    #[arg(long, env = "SEGSERVE_THREADS")]
    pub threads: Option<usize>,
    /// Sessions per model, each on its own thread (default: the CPUs this process may use;
    /// on a GPU, 2).
    #[arg(long, env = "SEGSERVE_SESSIONS")]
    pub sessions: Option<usize>,
    /// Largest batch per inference run, for models with a dynamic batch dimension
    /// (default: 1 = off on the CPU, where batching measured no faster than parallel
    /// sessions, see docs/performance.md; 8 on a GPU).
    #[arg(long, env = "SEGSERVE_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// How long a session waits to fill a batch, in ms.
    #[arg(long, env = "SEGSERVE_BATCH_WINDOW_MS", default_value_t = 2)]
    pub batch_window_ms: u64,
    /// Largest image width or height accepted, in pixels.
    #[arg(long, env = "SEGSERVE_MAX_IMAGE_SIDE", default_value_t = 16_384)]
    pub max_image_side: u32,
    /// Largest image area accepted, in pixels.
    #[arg(long, env = "SEGSERVE_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,
    /// How JPEGs are decoded for the model when a request does not say (`decode=`): `exact`
    /// (OpenCV's pixels, Ultralytics' results) or `fast` (libjpeg's DCT scaling for photos at
    /// least twice the model's input: faster, approximate; never for drawn pictures).
    #[arg(long, env = "SEGSERVE_DECODE", default_value_t = DecodeMode::Exact)]
    pub decode: DecodeMode,
}

/// `segserve serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SEGSERVE_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on. Default: `PORT` when it is set (the port Knative, KServe's
    /// serverless mode and Cloud Run assign), else 5000; `--port` and `SEGSERVE_PORT` win over
    /// `PORT`.
    #[arg(long, env = "SEGSERVE_PORT", default_value_t = default_port())]
    pub port: u16,
    /// Model and runtime settings.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Largest request body accepted, in bytes (phone photos exceed axum's 2 MB default).
    #[arg(long, env = "SEGSERVE_MAX_BODY_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Requests admitted beyond those being computed; more are refused with 503 (default:
    /// 32 on the CPU, about 0.7 s of work there; 128 on a GPU, which drains it faster).
    #[arg(long, env = "SEGSERVE_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Longest a request may wait for a session before it is refused with 503, in ms.
    #[arg(long, env = "SEGSERVE_QUEUE_TIMEOUT_MS", default_value_t = 10_000)]
    pub queue_timeout_ms: u64,
    /// Time allowed to receive a whole request body, in ms (slow clients get 408).
    #[arg(long, env = "SEGSERVE_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Longest a request may take end to end (body, queue wait, inference), in ms; past it
    /// the server answers 503 with Retry-After. Must exceed --body-timeout-ms, so that a slow
    /// client still gets its 408.
    #[arg(long, env = "SEGSERVE_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// Longest query string accepted, in bytes (longer: 414).
    #[arg(long, env = "SEGSERVE_MAX_QUERY_BYTES", default_value_t = 4096)]
    pub max_query_bytes: usize,
    /// Largest total size of the request headers, in bytes (larger: 431). hyper itself
    /// refuses more than 100 headers.
    #[arg(long, env = "SEGSERVE_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Most parts a multipart form may have (more: 400).
    #[arg(long, env = "SEGSERVE_MAX_FORM_PARTS", default_value_t = 16)]
    pub max_form_parts: usize,
    /// Largest non-image form field, in bytes (larger: 413); such fields are read and dropped.
    #[arg(long, env = "SEGSERVE_MAX_FORM_FIELD_BYTES", default_value_t = 64 * 1024)]
    pub max_form_field_bytes: u64,
    /// Bearer API key required on every route but the probes (unset: no authentication).
    #[arg(long, env = "SEGSERVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Require the API key on /healthz, /readyz, /metrics and /v2/health/{live,ready} too
    /// (kubelet probes then need it).
    #[arg(long, env = "SEGSERVE_AUTH_PROBES")]
    pub auth_probes: bool,
    /// Browser origins allowed to call the API (comma-separated, e.g.
    /// `https://app.example.com`, or `*`); none by default, so CORS stays off.
    #[arg(long, env = "SEGSERVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// After SIGTERM, how long /readyz reports 503 before the listener closes, in ms.
    #[arg(long, env = "SEGSERVE_SHUTDOWN_DRAIN_MS", default_value_t = 5_000)]
    pub shutdown_drain_ms: u64,
    /// After the listener closes, how long in-flight requests may take, in ms.
    #[arg(long, env = "SEGSERVE_SHUTDOWN_TIMEOUT_MS", default_value_t = 20_000)]
    pub shutdown_timeout_ms: u64,
    /// Log format.
    #[arg(long, env = "SEGSERVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export OpenTelemetry traces to this OTLP collector (base URL, e.g.
    /// `http://otel-collector:4318`, or `:4317` with `--otlp-protocol grpc`): a span per
    /// request, joined to the caller's `traceparent`, with its stages as children. Off by
    /// default; `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) also turns it on, and
    /// the other standard `OTEL_*` variables apply (service name, sampler, batching).
    #[arg(long, env = "SEGSERVE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc`.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: crate::telemetry::OtlpProtocol,
    /// Working memory all requests together may hold (bodies, decoded photos, tensors, masks,
    /// answers), e.g. `512MiB`, `2Gi`; each request reserves its estimated peak before it
    /// does the work. Default: half of --memory-limit.
    #[arg(long, env = "SEGSERVE_MEMORY_BUDGET", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// The memory this process may use (the pod's limit; the Kubernetes manifests pass
    /// `limits.memory`), e.g. `2Gi`. Default: the cgroup memory limit, else the physical
    /// memory.
    #[arg(long, env = "SEGSERVE_MEMORY_LIMIT", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// When `/segmentapi` sends the dense `mask_values` (H x W x N booleans): `always`, as
    /// PixelLib did, or `on-request` (`?mask_values=true`).
    #[arg(long, env = "SEGSERVE_PIXELLIB_MASKS", default_value_t = PixelLibMasks::Always, value_parser = one_of::<PixelLibMasks, 2>(PixelLibMasks::ALL.map(PixelLibMasks::as_str)))]
    pub pixellib_masks: PixelLibMasks,
    /// Most cells (H x W x N) a dense `mask_values` answer may have; larger ones get 413.
    /// The answer is ~6 bytes of JSON per cell.
    #[arg(
        long,
        env = "SEGSERVE_MAX_DENSE_MASK_CELLS",
        default_value_t = 150_000_000
    )]
    pub max_dense_mask_cells: u64,
    /// Time a client has to send its request headers, in ms; also how long an idle
    /// keep-alive connection stays open (hyper starts the same timer while it waits for the
    /// next request). Slow or stalled headers are closed.
    #[arg(long, env = "SEGSERVE_HEADER_TIMEOUT_MS", default_value_t = 15_000)]
    pub header_timeout_ms: u64,
    /// Longest a response write may make no progress, in ms (a client that stops reading
    /// is disconnected, so its answer does not hold memory).
    #[arg(long, env = "SEGSERVE_SEND_TIMEOUT_MS", default_value_t = 30_000)]
    pub send_timeout_ms: u64,
    /// Most connections open at once; further ones wait in the listen backlog. Near the
    /// cap, idle keep-alive connections are closed first.
    #[arg(long, env = "SEGSERVE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most connections one client address may hold open (0: no cap); more are closed at
    /// once. Behind a proxy that hides client addresses, raise it or set 0.
    #[arg(
        long,
        env = "SEGSERVE_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256
    )]
    pub max_connections_per_client: usize,
    /// How long a keep-alive connection may sit idle between requests, in ms.
    #[arg(long, env = "SEGSERVE_KEEP_ALIVE_TIMEOUT_MS", default_value_t = 5_000)]
    pub keep_alive_timeout_ms: u64,
    /// Requests served on one connection before it is closed (the client reconnects).
    #[arg(
        long,
        env = "SEGSERVE_MAX_REQUESTS_PER_CONNECTION",
        default_value_t = 1_000
    )]
    pub max_requests_per_connection: u64,
    /// Age after which a connection is closed once its current request is done, in ms.
    #[arg(
        long,
        env = "SEGSERVE_MAX_CONNECTION_AGE_MS",
        default_value_t = 600_000
    )]
    pub max_connection_age_ms: u64,
    /// Slowest upload accepted, in bytes per second, after a 5 s grace (slower: 408);
    /// 0 leaves only --body-timeout-ms.
    #[arg(long, env = "SEGSERVE_MIN_RECEIVE_RATE", default_value_t = 8 * 1024)]
    pub min_receive_rate: u64,
    /// Slowest reader of an answer, in bytes per second, after a 5 s grace (slower: the
    /// connection is closed, so the answer stops holding memory); 0: no minimum.
    #[arg(long, env = "SEGSERVE_MIN_SEND_RATE", default_value_t = 16 * 1024)]
    pub min_send_rate: u64,
    /// Longest an answer may take to be sent, in ms, however steadily it is read.
    #[arg(long, env = "SEGSERVE_RESPONSE_TIMEOUT_MS", default_value_t = 120_000)]
    pub response_timeout_ms: u64,
    /// Also serve /healthz, /readyz, /metrics and /v2/health/* on this port, outside the
    /// connection caps, so a flood on the main port cannot make probes fail (the
    /// Kubernetes manifests point the kubelet here).
    #[arg(long, env = "SEGSERVE_PROBE_PORT")]
    pub probe_port: Option<u16>,
    /// Also serve KServe v2 / Triton gRPC (and the rest of the API) on this port, with the
    /// main port's limits. gRPC is always served on the main port too (HTTP/2 without TLS).
    #[arg(long, env = "SEGSERVE_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Auditor mode: a request whose measured memory passes its reservation is a server
    /// fault (500, logged as an error) instead of a 503. The test suites run with it.
    #[arg(long, env = "SEGSERVE_AUDIT_MEMORY", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub audit_memory: bool,
    /// Compress JSON and text answers (gzip, zstd or deflate, as the client's
    /// `Accept-Encoding` allows): `on` or `off` (behind a proxy that compresses already).
    /// Compressed request bodies are accepted either way.
    #[arg(long, env = "SEGSERVE_COMPRESSION", default_value = "on", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub compression: bool,
}

/// The port `serve` listens on when no `--port` or `SEGSERVE_PORT` is given and `PORT` is unset.
pub const DEFAULT_PORT: u16 = 5000;

/// `PORT`, the serverless platforms' contract (Knative sets it to the container's port and
/// requires the server to listen there); `Err` when it is set but not a port number.
pub fn platform_port() -> Result<Option<u16>, String> {
    match std::env::var("PORT") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("PORT is set to {v:?}, which is not a port number (0-65535)")),
        _ => Ok(None),
    }
}

/// `serve`'s port when neither `--port` nor `SEGSERVE_PORT` is given: `PORT`, else
/// [`DEFAULT_PORT`]. An explicit setting of ours is the more specific one, so it wins over
/// the platform's variable (on Knative, leave both unset and `PORT` is used).
pub fn default_port() -> u16 {
    platform_port().ok().flatten().unwrap_or(DEFAULT_PORT)
}

/// A flag whose values are `choices` (listed by `--help`), parsed by the type's `FromStr`:
/// the settings' enums stay free of clap.
fn one_of<T, const N: usize>(choices: [&'static str; N]) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(choices).try_map(|s| s.parse::<T>())
}

/// Parses a byte size: a plain number of bytes, or a number with a binary (`KiB`, `MiB`,
/// `GiB`, `TiB`, or `K`, `M`, `G`, `T`, as Kubernetes' `Ki`, `Mi`, `Gi`) or decimal (`kB`,
/// `MB`, `GB`, `TB`) suffix. `512MiB`, `2Gi`, `1.5G` and `1000000` all parse.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 512MiB, 2GiB, 1000000)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "ki" | "kib" => 1024.0,
        "m" | "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000000"), Ok(1_000_000));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
