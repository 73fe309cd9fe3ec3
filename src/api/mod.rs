//! HTTP layer: the router, shared state, and the per-request logging/metrics middleware.
//! Handlers live in `handlers`, body extraction in `upload`, wire types in `types`.

pub mod drain;
pub mod handlers;
pub mod security;
pub mod types;
pub mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

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
    pub fn engine(&self, name: Option<&str>) -> Result<Engine, AppError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(AppError::NotReady(
                "the model is not loaded yet, or the server is shutting down".into(),
            ));
        }
        let reg = self
            .models
            .get()
            .ok_or_else(|| AppError::NotReady("the model is not loaded yet".into()))?;
        Ok(reg.get(name)?.clone())
    }
}

/// Builds the router with every route and layer.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/segmentapi", post(handlers::segmentapi))
        .route("/v1/segment", post(handlers::segment))
        .route("/v1/models", get(handlers::models))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    /// A state without models: enough for the layers. Any existing file passes the
    /// model/runtime path checks, and nothing is loaded.
    fn state(extra: &[&str]) -> AppState {
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
        let cli = <crate::config::Cli as clap::Parser>::try_parse_from(args).unwrap();
        let crate::config::Command::Serve(a) = cli.command;
        AppState {
            models: Arc::new(OnceLock::new()),
            ready: Arc::new(AtomicBool::new(true)),
            config: Arc::new(ServeConfig::try_from(a).unwrap()),
            metrics: crate::metrics_handle(),
        }
    }

    async fn boom() -> &'static str {
        panic!("boom at /secret/src/handler.rs")
    }

    async fn call(
        app: Router,
        req: axum::http::Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = app.oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn get_req(path: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_json_and_the_router_lives_on() {
        let routes = Router::new()
            .route("/boom", get(boom))
            .route("/healthz", get(handlers::healthz));
        let app = with_layers(routes, state(&[]));
        let (status, headers, body) = call(app.clone(), get_req("/boom")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let err: crate::error::ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(err.error_type, "internal");
        assert!(!body.contains("secret") && !body.contains("boom"), "{body}");
        let (status, _, _) = call(app, get_req("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn api_key_guards_the_api_but_not_the_probes() {
        let app = router(state(&["--api-key", "k3y"]));
        let (status, headers, body) = call(app.clone(), get_req("/v1/models")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert!(body.contains("unauthorized"), "{body}");
        let authed = axum::http::Request::get("/v1/models")
            .header("authorization", "Bearer k3y")
            .body(Body::empty())
            .unwrap();
        // Authorised, then 503: this state has no models loaded.
        assert_eq!(
            call(app.clone(), authed).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        for probe in security::PROBES {
            assert_ne!(
                call(app.clone(), get_req(probe)).await.0,
                StatusCode::UNAUTHORIZED,
                "{probe}"
            );
        }
        let closed = router(state(&["--api-key", "k3y", "--auth-probes"]));
        assert_eq!(
            call(closed, get_req("/healthz")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn cors_is_off_by_default_and_on_for_listed_origins() {
        let preflight = || {
            axum::http::Request::options("/v1/segment")
                .header("origin", "https://app.example")
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .unwrap()
        };
        let (_, headers, _) = call(router(state(&[])), preflight()).await;
        assert!(!headers.contains_key("access-control-allow-origin"));
        let app = router(state(&[
            "--cors-origins",
            "https://app.example,https://b.example",
        ]));
        let (status, headers, _) = call(app.clone(), preflight()).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        let other = axum::http::Request::get("/healthz")
            .header("origin", "https://evil.example")
            .body(Body::empty())
            .unwrap();
        let (_, headers, _) = call(app, other).await;
        assert!(!headers.contains_key("access-control-allow-origin"));
    }

    #[tokio::test]
    async fn long_queries_and_headers_are_refused() {
        let app = router(state(&[
            "--max-query-bytes",
            "10",
            "--max-header-bytes",
            "2048",
        ]));
        let (status, _, body) = call(app.clone(), get_req("/v1/models?conf=0.5&iou=0.5")).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG, "{body}");
        let big = axum::http::Request::get("/healthz")
            .header("x-padding", "a".repeat(4000))
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = call(app, big).await;
        assert_eq!(
            status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{body}"
        );
        assert!(body.contains("headers_too_large"), "{body}");
    }

    #[tokio::test]
    async fn the_request_deadline_answers_503_with_retry_after() {
        async fn stuck() -> &'static str {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            "too late"
        }
        let routes = Router::new().route("/stuck", get(stuck));
        let app = with_layers(
            routes,
            state(&["--body-timeout-ms", "50", "--request-timeout-ms", "100"]),
        );
        let (status, headers, body) = call(app, get_req("/stuck")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "1");
        assert!(body.contains("\"timeout\""), "{body}");
    }
}
