//! The router: every route with its OpenAPI entry, the layers around them (panics, CORS,
//! auth, limits), and the per-request span, log line and metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    assets, compress, cutouts, edit, handlers, inflate, kserve, openapi, page, pixellib, security,
    AppState,
};
use crate::error::{AppError, LoggedError};

/// Every route, each registered with its OpenAPI entry from the handler's
/// `#[utoipa::path]` (so a route cannot be served undocumented). Add routes here with
/// `.routes(routes!(..))`, not `Router::route`: tests/openapi.rs checks the two agree.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(pixellib::segmentapi))
        .routes(routes!(handlers::segment))
        .routes(routes!(edit::background))
        .routes(routes!(cutouts::cutouts))
        .routes(routes!(handlers::models))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(handlers::metrics))
        .merge(kserve::routes())
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(assets::docs))
        .routes(routes!(assets::docs_js))
        .routes(routes!(assets::docs_css))
        .merge(page::routes())
}

/// The probe port's router: liveness, readiness (also as KServe's health routes) and
/// metrics, with the logging and security headers but no API key.
pub fn probe_router(state: AppState) -> Router {
    let routes: Router<AppState> = Router::new()
        .route("/healthz", axum::routing::get(handlers::healthz))
        .route("/readyz", axum::routing::get(handlers::readyz))
        .route("/metrics", axum::routing::get(handlers::metrics))
        .route("/v2/health/live", axum::routing::get(kserve::live))
        .route("/v2/health/ready", axum::routing::get(kserve::ready))
        .fallback(handlers::not_found);
    let app = routes.layer(middleware::from_fn_with_state(state.clone(), track));
    security::headers(app, &state.config.security).with_state(state)
}

/// Builds the router with every route and layer.
pub fn router(state: AppState) -> Router {
    let (routes, _spec) = routes().split_for_parts();
    let routes = routes
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed);
    with_layers(routes, state)
}

/// Wraps `routes` in every layer, innermost first: inflating compressed bodies, the request
/// guards (limits, auth, deadline; before any inflating), panic catching (so a panic
/// becomes a logged, counted 500), compressing answers (inside the request's meter lease,
/// which its encoder is charged to), logging and metrics, then the response headers and
/// CORS around everything.
pub(super) fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let routes = routes.layer(middleware::from_fn_with_state(
        state.clone(),
        inflate::request,
    ));
    let app = security::guard(routes, &state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            compress::respond,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track));
    security::headers(app, &state.config.security).with_state(state)
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    AppError::internal("a handler panicked", what).into_response()
}

/// Counts a request in `segserve_requests_in_flight` from creation to drop, so a request
/// whose client goes away (its future dropped mid-way) is counted out too.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("segserve_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("segserve_requests_in_flight").decrement(1.0);
    }
}

/// One log line and the request metrics per request, labelled by route template (not raw
/// path, which would explode label cardinality). An error answer carries its error in a
/// [`LoggedError`] extension; it is logged here, once, with its sources.
async fn track(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let _in_flight = InFlight::start();
    // Every log line of the request carries its id (and trace id), through this span; with
    // traces exported it is the request's span, a child of the caller's `traceparent`.
    let request_id = crate::telemetry::request_id(req.headers());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::join(&span, req.headers());
    // Everything the request allocates from here on (its body, decode, answer) is charged
    // to it, on whichever thread the work runs (see `crate::meter`).
    let lease = crate::meter::Lease::new();
    let mut resp = crate::meter::Metered::new(next.run(req).instrument(span.clone()), lease).await;
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    metrics::counter!("segserve_requests_total", "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("segserve_request_duration_seconds", "route" => route.clone()).record(secs);
    let latency_ms = (secs * 1e4).round() / 10.0;
    let _entered = span.enter();
    match resp.extensions_mut().remove::<LoggedError>() {
        Some(LoggedError(err)) if err.is_server_fault() => {
            let chain = error_chain(&*err);
            tracing::error!(%method, route, status, latency_ms, error = %chain, "request failed");
        }
        Some(LoggedError(err)) => {
            tracing::info!(%method, route, status, latency_ms, error = %err, "request");
        }
        None => tracing::info!(%method, route, status, latency_ms, "request"),
    }
    drop(_entered);
    if s.lifecycle.is_draining() {
        // During the shutdown drain, let clients reconnect elsewhere rather than reuse this
        // connection (hyper closes it after this response).
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// `outer: inner: innermost`, for the log.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
