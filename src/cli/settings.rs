//! The one bridge from the flags (`super::args`) to the checked settings (`crate::config`):
//! every check and every default that depends on the machine happens here, once.

use std::net::SocketAddr;
use std::time::Duration;

use super::args::{platform_port, RuntimeArgs, ServeArgs};
use crate::config::{
    default_memory_budget, locate_ort_for, ConnectionLimits, FormLimits, ModelSpec, PixelLibConfig,
    RuntimeConfig, SecurityConfig, ServeConfig,
};
use crate::engine::{DeviceConfig, PoolConfig};
use crate::host;
use crate::imageio::DecodeLimits;

impl RuntimeArgs {
    /// Checks the runtime flags: model files exist, names unique, limits positive. A
    /// `queue_depth` of `None` takes the device's default. Touches nothing: the TensorRT
    /// cache folder is made when the models load.
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
        let cpus = host::available_cpus();
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
        platform_port().map_err(anyhow::Error::msg)?;
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
            memory_budget: a.memory_budget.unwrap_or_else(|| {
                // Without a limit from the flags or the host, assume a small pod's 2 GiB.
                let limit = a
                    .memory_limit
                    .or_else(host::memory_limit)
                    .unwrap_or(2 << 30);
                default_memory_budget(limit)
            }),
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
    use super::args::{Cli, Command};
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
    let Command::Serve(a) = Cli::try_parse_from(args).unwrap().command else {
        panic!("serve parses as Serve")
    };
    ServeConfig::try_from(a).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::path::PathBuf;

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
