//! The guards every request passes before a handler sees it: header and query size limits,
//! the optional bearer API key, the whole-request deadline, and (outermost) the response
//! headers every answer carries and CORS. Body limits are enforced while reading, in `upload`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::{drain, AppState};
use crate::config::SecurityConfig;
use crate::error::AppError;

/// Routes that stay open without the API key (unless `--auth-probes`): kubelet probes
/// usually carry no credentials. KServe points its probes at the protocol's own health
/// routes, so those are probes too. `/metrics` is not among them: on the main port it would
/// tell anyone how much of the budget is left; scrape it on `--probe-port`, or with the key.
/// The gRPC twins of the protocol's health routes are probes too (KServe's gRPC probes).
pub const PROBES: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/v2/health/live",
    "/v2/health/ready",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
];

/// Routes that never need the key: the page, its assets and the API docs hold no data and
/// run no model; every API call they make still carries (or lacks) the key itself.
pub const PUBLIC: [&str; 3] = ["/", "/docs", "/openapi.json"];

fn is_public(path: &str) -> bool {
    PUBLIC.contains(&path) || path.starts_with("/static/")
}

/// Adds the request guards (limits, auth, deadline) around `routes`. They sit inside the
/// logging middleware, so refused requests are still logged and counted.
pub fn guard(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(middleware::from_fn_with_state(state.clone(), check))
}

/// Adds the outermost layers: security headers on every response (errors and panics
/// included), and CORS when origins are configured (outside auth, so preflights, which
/// carry no credentials, are answered).
pub fn headers(app: Router<AppState>, security: &SecurityConfig) -> Router<AppState> {
    let app = app
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        // JSON answers need no scripts, styles or frames; a page that does sets its own
        // CSP, which `if_not_present` leaves alone.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ));
    match cors_layer(&security.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// CORS for the configured origins; `None` (no CORS headers at all, so browsers refuse
/// cross-origin calls) when the list is empty.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| HeaderValue::from_str(o).expect("origins are checked in config")),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The per-request guard: cheap size checks first (they need no trust), then the key, then
/// the handler under the whole-request deadline. Refusals wait for a bounded remainder of
/// the body (see `drain`), so the client reads the answer instead of a connection reset.
async fn check(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(refusal) = admit(&s, &req) {
        let resp = refusal.into_response();
        if drain::worth_draining(resp.status()) {
            drain::drain(req.into_body()).await;
        }
        return resp;
    }
    let (parts, body) = req.into_parts();
    let (body, unread) = drain::Reclaim::wrap(body);
    let deadline = s.config.request_timeout;
    let resp =
        match tokio::time::timeout(deadline, next.run(Request::from_parts(parts, body))).await {
            Ok(resp) => resp,
            Err(_) => {
                return AppError::ServerTimeout(format!(
                    "the request did not complete within {} ms; retry later",
                    deadline.as_millis()
                ))
                .into_response()
            }
        };
    if drain::worth_draining(resp.status()) {
        if let Some(rest) = drain::take(&unread) {
            drain::drain(rest).await;
        }
    }
    resp
}

/// Header size, query length and API key (gRPC calls pass here too, from `api::grpc`).
pub(super) fn admit<B>(s: &AppState, req: &axum::http::Request<B>) -> Result<(), AppError> {
    let cfg = &s.config;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > cfg.max_header_bytes {
        return Err(AppError::HeadersTooLarge(format!(
            "the request headers total {header_bytes} bytes; the limit is {}",
            cfg.max_header_bytes
        )));
    }
    let query_len = req.uri().query().map_or(0, str::len);
    if query_len > cfg.max_query_bytes {
        return Err(AppError::UriTooLong(format!(
            "the query string is {query_len} bytes; the limit is {}",
            cfg.max_query_bytes
        )));
    }
    if let Some(key) = &cfg.security.api_key {
        let path = req.uri().path();
        let open = is_public(path) || (!cfg.security.auth_probes && PROBES.contains(&path));
        if !open && !authorized(req.headers().get(header::AUTHORIZATION), key) {
            return Err(AppError::Unauthorized);
        }
    }
    Ok(())
}

/// `Authorization: Bearer <key>`, compared in constant time (the length of the key is the
/// only thing a timing attacker can learn).
fn authorized(value: Option<&HeaderValue>, key: &str) -> bool {
    let Some(value) = value.map(HeaderValue::as_bytes) else {
        return false;
    };
    let Some(scheme_end) = value.iter().position(|b| *b == b' ') else {
        return false;
    };
    let (scheme, token) = (&value[..scheme_end], value[scheme_end..].trim_ascii_start());
    scheme.eq_ignore_ascii_case(b"bearer") && bool::from(token.ct_eq(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let ok = |v: &str| authorized(Some(&HeaderValue::from_str(v).unwrap()), "s3cret");
        assert!(ok("Bearer s3cret"));
        assert!(ok("bearer   s3cret"));
        assert!(!ok("Bearer s3cre"));
        assert!(!ok("Bearer s3cret2"));
        assert!(!ok("Basic s3cret"));
        assert!(!ok("s3cret"));
        assert!(!authorized(None, "s3cret"));
    }
}
