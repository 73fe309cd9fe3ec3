//! HTTP layer: the router, shared state, and the per-request logging/metrics middleware.
//! Handlers live in `handlers`, body extraction in `upload`, wire types in `types`; the
//! browser page, `/v1/render` and `/segmentfrontend` in `page` and `frontend`; the Open
//! Inference Protocol in `kserve`, the OpenAPI document and /docs in `openapi`.

pub mod drain;
pub mod frontend;
pub mod handlers;
pub mod kserve;
pub mod kserve_types;
pub mod openapi;
pub mod page;
pub mod security;
pub mod types;
pub mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ServeConfig;
use crate::engine::{Engine, Registry};
use crate::error::AppError;

/// Shared state; cheap to clone (handles only).
#[derive(Clone)]
pub struct AppState {
    /// Set once the models are loaded and warmed up.
    pub models: Arc<OnceLock<Registry>>,
    /// True once warm-up inference has run, false again when draining.
    pub ready: Arc<AtomicBool>,
    /// Server settings.
    pub config: Arc<ServeConfig>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// The requested (or default) model, or 503 while loading / 404 for an unknown name.
    ///
    /// Deliberately not gated on `ready`: while draining after SIGTERM, load balancers still
    /// send requests until they notice /readyz failing, and those should be served, not
    /// turned into errors (the drain delay exists for exactly this window).
    pub fn engine(&self, name: Option<&str>) -> Result<Engine, AppError> {
        let reg = self
            .models
            .get()
            .ok_or_else(|| AppError::NotReady("the model is not loaded yet".into()))?;
        Ok(reg.get(name)?.clone())
    }
}

/// Every route, each registered with its OpenAPI entry from the handler's
/// `#[utoipa::path]` (so a route cannot be served undocumented). Add routes here with
/// `.routes(routes!(..))`, not `Router::route`: tests/openapi.rs checks the two agree.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(handlers::segmentapi))
        .routes(routes!(handlers::segment))
        .routes(routes!(handlers::models))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(handlers::metrics))
        .routes(routes!(kserve::server_metadata))
        .routes(routes!(kserve::live))
        .routes(routes!(kserve::ready))
        .routes(routes!(kserve::model_metadata))
        .routes(routes!(kserve::model_ready))
        .routes(routes!(kserve::infer))
        .routes(routes!(kserve::model_version_metadata))
        .routes(routes!(kserve::model_version_ready))
        .routes(routes!(kserve::model_version_infer))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(openapi::docs_js))
        .routes(routes!(openapi::docs_css))
        .merge(page::routes())
}

/// Builds the router with every route and layer.
pub fn router(state: AppState) -> Router {
    let (routes, _spec) = routes().split_for_parts();
    let routes = routes
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed);
    with_layers(routes, state)
}

/// Wraps `routes` in every layer, innermost first: the request guards (limits, auth,
/// deadline), panic catching (so a panic becomes a logged, counted 500), logging and
/// metrics, then the response headers and CORS around everything.
fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let app = security::guard(routes, &state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(middleware::from_fn(track));
    security::headers(app, &state.config.security).with_state(state)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::Internal("a handler panicked".into()).into_response()
}

/// One log line and the request metrics per request, labelled by route template (not raw
/// path, which would explode label cardinality).
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    metrics::gauge!("segserve_requests_in_flight").increment(1.0);
    let resp = next.run(req).await;
    metrics::gauge!("segserve_requests_in_flight").decrement(1.0);
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    metrics::counter!("segserve_requests_total", "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("segserve_request_duration_seconds", "route" => route.clone()).record(secs);
    tracing::info!(%method, route, status, latency_ms = (secs * 1e4).round() / 10.0, "request");
    resp
}

/// Convenience for tests and `run`: flips readiness.
pub fn set_ready(state: &AppState, ready: bool) {
    state.ready.store(ready, Ordering::Release);
}

// Router tests of the layers (panic, auth, CORS, limits, deadline).
#[cfg(test)]
mod tests;
