//! The checked settings: `ServeConfig` (what `segserve::run` takes) and `RuntimeConfig`,
//! built from the command line's flags (`crate::cli`) with every check done once, here
//! (ripgrep's split of raw and checked arguments), and the defaults that depend on the
//! machine (CPUs, memory). Where the ONNX Runtime library is found: `ort`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::budget;
use crate::cli::{RuntimeArgs, ServeArgs};
use crate::engine::{Device, DeviceChoice, DeviceConfig, PoolConfig};
use crate::imageio::{DecodeLimits, DecodeMode};

mod ort;
pub use ort::{locate_ort, locate_ort_for, ORT_GPU_DIR, ORT_LIB_NAME};

/// When `/segmentapi` sends the dense `mask_values`.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum PixelLibMasks {
    /// On every answer, as the original PixelLib API does (`?mask_values=false` skips them).
    Always,
    /// Only with `?mask_values=true`.
    OnRequest,
}

/// Bounds on a multipart form besides its total size (`--max-form-parts`,
/// `--max-form-field-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    /// Most parts a form may have; PixelLib sends one, browsers a handful.
    pub max_parts: usize,
    /// Largest non-file field; such fields are read (to reach the next part) and dropped.
    pub max_field_bytes: u64,
}

/// The share of the memory limit the budget takes by default; the rest is the models,
/// ONNX Runtime, the runtime's buffers and the allocator's slack (see docs/security.md, "Memory budget").
pub const DEFAULT_BUDGET_FRACTION: f64 = 0.5;

/// A model to load: its served name and file.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Served name (file stem).
    pub name: String,
    /// File path.
    pub path: PathBuf,
}

/// Checked runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Models, default first.
    pub models: Vec<ModelSpec>,
    /// ONNX Runtime library.
    pub ort_dylib: PathBuf,
    /// Pool sizing when the models run on the CPU.
    pub pool: PoolConfig,
    /// Pool sizing when they run on a GPU (`auto` only knows which at load time).
    pub gpu_pool: PoolConfig,
    /// Where to run the models.
    pub device: DeviceConfig,
    /// Image limits.
    pub limits: DecodeLimits,
    /// How JPEGs are decoded when a request does not say.
    pub decode: DecodeMode,
}

impl RuntimeConfig {
    /// The pool sizing for models that run on `device`.
    pub fn pool_for(&self, device: Device) -> &PoolConfig {
        if device.is_gpu() {
            &self.gpu_pool
        } else {
            &self.pool
        }
    }
}

/// Checked server settings; what `segserve::run` takes.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Runtime settings.
    pub runtime: RuntimeConfig,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Body receive timeout.
    pub body_timeout: Duration,
    /// Whole-request deadline (503 past it).
    pub request_timeout: Duration,
    /// Query string limit (414 past it).
    pub max_query_bytes: usize,
    /// Total header size limit (431 past it).
    pub max_header_bytes: usize,
    /// Multipart form limits.
    pub form: FormLimits,
    /// Authentication and CORS.
    pub security: SecurityConfig,
    /// Readiness drain before closing the listener.
    pub shutdown_drain: Duration,
    /// Bound on finishing in-flight requests.
    pub shutdown_timeout: Duration,
    /// Bytes of working memory all requests may hold at once.
    pub memory_budget: u64,
    /// `/segmentapi` settings.
    pub pixellib: PixelLibConfig,
    /// Connection handling.
    pub connections: ConnectionLimits,
    /// Slowest upload accepted, bytes per second (0: only the body timeout).
    pub min_receive_rate: u64,
    /// Where the probes and metrics are also served, outside the connection caps.
    pub probe_addr: Option<SocketAddr>,
    /// Where gRPC (and everything else) is also served, with the main port's caps.
    pub grpc_addr: Option<SocketAddr>,
    /// Auditor mode (see `budget::set_audit`).
    pub audit_memory: bool,
    /// Compress JSON and text answers when the client accepts it.
    pub compression: bool,
}

/// `/segmentapi` settings.
#[derive(Debug, Clone, Copy)]
pub struct PixelLibConfig {
    /// When dense masks are sent.
    pub masks: PixelLibMasks,
    /// Most H x W x N cells of a dense answer.
    pub max_dense_cells: u64,
}

/// How connections are accepted and timed out.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Headers must arrive within this.
    pub header_timeout: Duration,
    /// Idle keep-alive connections close after this.
    pub keep_alive_timeout: Duration,
    /// A response write may stall this long.
    pub send_timeout: Duration,
    /// Slowest reading of an answer, bytes per second (0: none).
    pub min_send_rate: u64,
    /// Longest sending of one answer.
    pub response_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections one client address may hold (0: no cap).
    pub max_per_client: usize,
    /// Requests on one connection.
    pub max_requests: u64,
    /// Age of a connection after which it closes when idle.
    pub max_age: Duration,
}

/// The default memory budget: [`DEFAULT_BUDGET_FRACTION`] of what this process may use
/// (`limit`, else the cgroup limit or physical memory, else 2 GiB).
pub fn default_memory_budget(limit: Option<u64>) -> u64 {
    let limit = limit.or_else(budget::memory_limit).unwrap_or(2 << 30);
    (limit as f64 * DEFAULT_BUDGET_FRACTION) as u64
}

/// Authentication and browser access settings.
#[derive(Clone)]
pub struct SecurityConfig {
    /// Bearer key required on API routes, if set.
    pub api_key: Option<String>,
    /// Whether the probes and /metrics need the key too.
    pub auth_probes: bool,
    /// Allowed CORS origins; empty means CORS is off, `["*"]` means any origin.
    pub cors_origins: Vec<String>,
}

// By hand, so that logging the config never prints the key.
impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("auth_probes", &self.auth_probes)
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

/// CPUs this process may use: honours cgroup CPU quotas (a pod's CPU limit), unlike the
/// host's core count.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl RuntimeArgs {
    /// Checks the runtime flags: model files exist, names unique, limits positive. A
    /// `queue_depth` of `None` takes the device's default.
    pub fn into_config(
        self,
        queue_depth: Option<usize>,
        queue_timeout: Duration,
    ) -> anyhow::Result<RuntimeConfig> {
        anyhow::ensure!(!self.models.is_empty(), "at least one --model is required");
        let mut models: Vec<ModelSpec> = Vec::new();
        for path in self.models {
            anyhow::ensure!(
                path.is_file(),
                "model file {} not found (run `make setup`, or export one with Ultralytics: \
                 `yolo export model=yolov8n-seg.pt format=onnx imgsz=320`)",
                path.display()
            );
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_string();
            anyhow::ensure!(
                !models.iter().any(|m| m.name == name),
                "two models are named {name}"
            );
            models.push(ModelSpec { name, path });
        }
        let cpus = available_cpus();
        // One session per CPU, all sharing one pool of a thread per CPU (measured on 2 CPUs
        // in docs/performance.md; see session::init_runtime).
        let threads = self.threads.unwrap_or(cpus.max(1));
        let sessions = self.sessions.unwrap_or(cpus.max(1));
        anyhow::ensure!(
            threads >= 1 && sessions >= 1,
            "--threads and --sessions must be at least 1"
        );
        anyhow::ensure!(
            self.max_batch.is_none_or(|b| b >= 1),
            "--max-batch must be at least 1"
        );
        anyhow::ensure!(
            self.max_image_side >= 1 && self.max_image_pixels >= 1,
            "image limits must be positive"
        );
        let pool = PoolConfig {
            sessions,
            threads,
            queue_depth: queue_depth.unwrap_or(CPU_QUEUE_DEPTH),
            queue_timeout,
            max_batch: self.max_batch.unwrap_or(1),
            batch_window: Duration::from_millis(self.batch_window_ms),
        };
        // On a GPU one session is one CUDA stream; a second lets one image's copies and
        // host-side work overlap the other's kernels, more only multiply GPU memory.
        // Batching pays there (one launch for several images), so it is on for models
        // with a dynamic batch dimension; the queue is deeper because it drains faster.
        let gpu_pool = PoolConfig {
            sessions: self.sessions.unwrap_or(GPU_SESSIONS),
            queue_depth: queue_depth.unwrap_or(GPU_QUEUE_DEPTH),
            max_batch: self.max_batch.unwrap_or(GPU_MAX_BATCH),
            ..pool.clone()
        };
        if let Some(dir) = &self.trt_cache_dir {
            if matches!(self.device, DeviceChoice::TensorRt | DeviceChoice::Auto) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create --trt-cache-dir {}", dir.display()))?;
            }
        }
        Ok(RuntimeConfig {
            models,
            ort_dylib: locate_ort_for(self.ort_dylib.as_deref(), self.device)?,
            pool,
            gpu_pool,
            device: DeviceConfig {
                choice: self.device,
                device_id: self.device_id,
                trt_cache_dir: self.trt_cache_dir,
                trt_fp16: self.trt_fp16,
            },
            limits: DecodeLimits {
                max_side: self.max_image_side,
                max_pixels: self.max_image_pixels,
            },
            decode: self.decode,
        })
    }
}

/// Queue depth on the CPU: about 0.7 s of work at the measured 45 images/s.
const CPU_QUEUE_DEPTH: usize = 32;
/// Queue depth on a GPU, which drains a queue several times faster.
const GPU_QUEUE_DEPTH: usize = 128;
/// Sessions per model on a GPU.
const GPU_SESSIONS: usize = 2;
/// Largest batch on a GPU, for models with a dynamic batch dimension.
const GPU_MAX_BATCH: usize = 8;

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = anyhow::Error;

    fn try_from(a: ServeArgs) -> anyhow::Result<Self> {
        // A malformed PORT fell back to the default port above; say so rather than listen
        // somewhere the platform does not expect.
        crate::cli::platform_port().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            a.max_body_bytes >= 1024,
            "--max-body-bytes must be at least 1024"
        );
        anyhow::ensure!(
            a.queue_timeout_ms >= 1,
            "--queue-timeout-ms must be positive"
        );
        anyhow::ensure!(
            a.request_timeout_ms > a.body_timeout_ms,
            "--request-timeout-ms ({}) must exceed --body-timeout-ms ({}), or slow uploads get 503 instead of 408",
            a.request_timeout_ms,
            a.body_timeout_ms
        );
        anyhow::ensure!(
            a.max_query_bytes >= 1 && a.max_header_bytes >= 1024 && a.max_form_parts >= 1,
            "--max-query-bytes, --max-header-bytes (>= 1024) and --max-form-parts must be positive"
        );
        anyhow::ensure!(
            a.header_timeout_ms >= 1 && a.send_timeout_ms >= 1 && a.max_connections >= 1,
            "--header-timeout-ms, --send-timeout-ms and --max-connections must be positive"
        );
        if let Some(b) = a.memory_budget {
            anyhow::ensure!(
                b >= 16 << 20,
                "--memory-budget must be at least 16MiB (one photo needs more than that)"
            );
        }
        if let Some(key) = &a.api_key {
            anyhow::ensure!(
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()),
                "--api-key must be non-empty printable ASCII without spaces"
            );
        }
        let cors_origins: Vec<String> = a
            .cors_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for o in &cors_origins {
            anyhow::ensure!(
                o == "*" || o.starts_with("http://") || o.starts_with("https://"),
                "--cors-origins entries must be `*` or start with http:// or https://, got {o:?}"
            );
            anyhow::ensure!(
                axum::http::HeaderValue::from_str(o).is_ok(),
                "--cors-origins entry {o:?} is not a valid header value"
            );
        }
        Ok(ServeConfig {
            addr: SocketAddr::new(a.host, a.port),
            runtime: a
                .runtime
                .into_config(a.queue_depth, Duration::from_millis(a.queue_timeout_ms))?,
            max_body_bytes: a.max_body_bytes,
            body_timeout: Duration::from_millis(a.body_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            max_query_bytes: a.max_query_bytes,
            max_header_bytes: a.max_header_bytes,
            form: FormLimits {
                max_parts: a.max_form_parts,
                max_field_bytes: a.max_form_field_bytes,
            },
            security: SecurityConfig {
                api_key: a.api_key,
                auth_probes: a.auth_probes,
                cors_origins,
            },
            shutdown_drain: Duration::from_millis(a.shutdown_drain_ms),
            shutdown_timeout: Duration::from_millis(a.shutdown_timeout_ms),
            memory_budget: a
                .memory_budget
                .unwrap_or_else(|| default_memory_budget(a.memory_limit)),
            pixellib: PixelLibConfig {
                masks: a.pixellib_masks,
                max_dense_cells: a.max_dense_mask_cells,
            },
            connections: ConnectionLimits {
                header_timeout: Duration::from_millis(a.header_timeout_ms),
                keep_alive_timeout: Duration::from_millis(a.keep_alive_timeout_ms.max(1)),
                send_timeout: Duration::from_millis(a.send_timeout_ms),
                min_send_rate: a.min_send_rate,
                response_timeout: Duration::from_millis(a.response_timeout_ms.max(1)),
                max_connections: a.max_connections,
                max_per_client: a.max_connections_per_client,
                max_requests: a.max_requests_per_connection.max(1),
                max_age: Duration::from_millis(a.max_connection_age_ms.max(1)),
            },
            min_receive_rate: a.min_receive_rate,
            probe_addr: a.probe_port.map(|p| SocketAddr::new(a.host, p)),
            grpc_addr: a.grpc_port.map(|p| SocketAddr::new(a.host, p)),
            audit_memory: a.audit_memory,
            compression: a.compression,
        })
    }
}

/// `serve` settings from flags for unit tests, with nothing to load: any existing file
/// passes the model and library path checks.
#[cfg(test)]
pub(crate) fn for_tests(extra: &[&str]) -> ServeConfig {
    use clap::Parser;
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut args = vec![
        "segserve",
        "serve",
        "--model",
        manifest,
        "--ort-dylib",
        manifest,
    ];
    args.extend_from_slice(extra);
    let crate::cli::Command::Serve(a) = crate::cli::Cli::try_parse_from(args).unwrap().command
    else {
        panic!("serve parses as Serve")
    };
    ServeConfig::try_from(a).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["segserve", "serve"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("serve parses as Serve")
        };
        assert_eq!(a.port, 5000);
        assert_eq!(a.max_body_bytes, 20 * 1024 * 1024);
        assert_eq!(
            a.runtime.models,
            vec![PathBuf::from("models/yolov8n-seg-320.onnx")]
        );
    }

    #[test]
    fn the_budget_is_half_the_limit_unless_set() {
        let parse = |extra: &[&str]| for_tests(extra).memory_budget;
        assert_eq!(parse(&["--memory-limit", "2Gi"]), 1 << 30);
        assert_eq!(parse(&["--memory-limit", "2147483648"]), 1 << 30);
        assert_eq!(
            parse(&["--memory-limit", "2Gi", "--memory-budget", "300MiB"]),
            300 << 20
        );
    }

    #[test]
    fn missing_model_is_a_clear_error() {
        let cli =
            Cli::try_parse_from(["segserve", "serve", "--model", "/nonexistent/x.onnx"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("serve parses as Serve")
        };
        let err = ServeConfig::try_from(a).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
