//! The checked settings: `ServeConfig` (what `segserve::run` takes) and `RuntimeConfig`.
//! Plain data: `crate::cli` builds them from the flags with every check done once (ripgrep's
//! split of raw and checked arguments), so nothing here knows clap, HTTP or the host.
//! Where the ONNX Runtime library is found: `ort`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{Device, DeviceConfig, PoolConfig};
use crate::imageio::{DecodeLimits, DecodeMode};

mod ort;
pub use ort::{locate_ort, locate_ort_for, ORT_GPU_DIR, ORT_LIB_NAME};

/// When `/segmentapi` sends the dense `mask_values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLibMasks {
    /// On every answer, as the original PixelLib API does (`?mask_values=false` skips them).
    Always,
    /// Only with `?mask_values=true`.
    OnRequest,
}

impl PixelLibMasks {
    /// Every choice, as `--pixellib-masks` lists them.
    pub const ALL: [PixelLibMasks; 2] = [PixelLibMasks::Always, PixelLibMasks::OnRequest];

    /// The flag's value for this choice.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelLibMasks::Always => "always",
            PixelLibMasks::OnRequest => "on-request",
        }
    }
}

impl std::str::FromStr for PixelLibMasks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PixelLibMasks::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("must be always or on-request, got {s:?}"))
    }
}

impl std::fmt::Display for PixelLibMasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// The default memory budget for a process that may use `limit` bytes.
pub fn default_memory_budget(limit: u64) -> u64 {
    (limit as f64 * DEFAULT_BUDGET_FRACTION) as u64
}

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
