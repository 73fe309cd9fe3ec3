//! The state every handler shares: the loaded models, the server's phase, settings, the
//! memory budget and the metrics handle.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::PrometheusHandle;

use super::body::BodyLimits;
use crate::budget::MemoryBudget;
use crate::config::ServeConfig;
use crate::engine::{Engine, Registry};
use crate::error::AppError;
use crate::lifecycle::Lifecycle;
use crate::pipeline::Pipeline;

/// Why `/readyz` (and the KServe readiness routes) say no.
pub const NOT_READY: &str = "not ready: loading models or shutting down";

/// Shared state; cheap to clone (handles only).
#[derive(Clone)]
pub struct AppState {
    /// Set once the models are loaded and warmed up.
    pub models: Arc<OnceLock<Registry>>,
    /// Loading, ready or draining: what the probes report, and whether answers close
    /// their connection.
    pub lifecycle: Arc<Lifecycle>,
    /// Server settings.
    pub config: Arc<ServeConfig>,
    /// The memory every request reserves from (see `crate::budget`).
    pub budget: Arc<MemoryBudget>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// The image limits and default decode every request runs under.
    pub pipeline: Pipeline,
}

impl AppState {
    /// State for `config`, with no models loaded yet.
    pub fn new(config: ServeConfig, metrics: PrometheusHandle) -> Self {
        AppState {
            models: Arc::new(OnceLock::new()),
            lifecycle: Arc::default(),
            budget: MemoryBudget::measured(config.memory_budget),
            pipeline: Pipeline::new(config.runtime.limits, config.runtime.decode),
            config: Arc::new(config),
            metrics,
        }
    }

    /// The loaded models, or 503 while they load.
    pub fn registry(&self) -> Result<&Registry, AppError> {
        self.models
            .get()
            .ok_or_else(|| AppError::NotReady("the models are not loaded yet; retry".into()))
    }

    /// The requested (or default) model, or 503 while loading / 404 for an unknown name.
    ///
    /// Deliberately not gated on readiness: while draining after SIGTERM, load balancers still
    /// send requests until they notice /readyz failing, and those should be served, not
    /// turned into errors (the drain delay exists for exactly this window).
    pub fn engine(&self, name: Option<&str>) -> Result<Engine, AppError> {
        Ok(self.registry()?.get(name)?.clone())
    }

    /// The body size limit and receive timeout.
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_bytes: self.config.max_body_bytes,
            timeout: self.config.body_timeout,
            min_rate: self.config.min_receive_rate,
        }
    }
}
