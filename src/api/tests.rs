//! Router tests (axum `oneshot`, no socket) of the layers around every route: a panicking
//! handler, the API key, CORS, the size limits and the request deadline.

use super::router::with_layers;
use super::*;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

/// A state without models: enough for the layers. Any existing file passes the
/// model/runtime path checks, and nothing is loaded.
fn state(extra: &[&str]) -> AppState {
    let state = AppState::new(crate::cli::for_tests(extra), crate::metrics::handle());
    state.lifecycle.loaded();
    state
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
    for public in ["/", "/static/app.js", "/docs", "/openapi.json"] {
        assert_eq!(
            call(app.clone(), get_req(public)).await.0,
            StatusCode::OK,
            "{public}"
        );
    }
    let render = axum::http::Request::post("/v1/render")
        .header("content-type", "image/jpeg")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(call(app.clone(), render).await.0, StatusCode::UNAUTHORIZED);
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

#[tokio::test]
async fn kserve_health_routes_are_probes_but_the_protocol_is_not() {
    // KServe points its kubelet probes at the protocol's health routes, which carry no key.
    let app = router(state(&["--api-key", "k3y"]));
    for open in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(
            call(app.clone(), get_req(open)).await.0,
            StatusCode::OK,
            "{open}"
        );
    }
    for closed in [
        "/v2",
        "/v2/models/yolov8n-seg-320",
        "/v2/models/yolov8n-seg-320/ready",
    ] {
        assert_eq!(
            call(app.clone(), get_req(closed)).await.0,
            StatusCode::UNAUTHORIZED,
            "{closed}"
        );
    }
    let probes_closed = router(state(&["--api-key", "k3y", "--auth-probes"]));
    assert_eq!(
        call(probes_closed, get_req("/v2/health/ready")).await.0,
        StatusCode::UNAUTHORIZED
    );
}
