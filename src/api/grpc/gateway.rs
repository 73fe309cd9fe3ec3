//! Where a gRPC call enters from the connection loop (`api::server`): the same guards as an
//! HTTP request (header size, API key), the message read under the body limit, the receive
//! timeout and minimum rate, and reserved from the memory budget *as it arrives* (tonic would
//! otherwise buffer a message of any size before we saw it), then the generated service
//! under the whole-request deadline, with one log line and the request metrics per call.

use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request, Response};
use http_body_util::Full;
use tower::ServiceExt;

use super::pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::service::{Inference, MessageHold};
use super::status;
use crate::api::server::Peer;
use crate::api::{body, security, AppState};
use crate::error::AppError;

/// gRPC's 5-byte message prefix (compression flag, length), on top of the message limit.
const FRAME_PREFIX: usize = 5;

/// Whether `req` is a gRPC call (`application/grpc`, `application/grpc+proto`, ...): those
/// go to the gateway, everything else to the HTTP router.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC front end: cheap to clone (handles only).
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
    server: GrpcInferenceServiceServer<Inference>,
}

impl Gateway {
    /// The service over `state`; a message may be as large as `--max-body-bytes`.
    pub fn new(state: AppState) -> Self {
        let server = GrpcInferenceServiceServer::new(Inference {
            state: state.clone(),
        })
        .max_decoding_message_size(state.config.max_body_bytes);
        Gateway { state, server }
    }

    /// Answers one call (errors as gRPC statuses; never an HTTP error page), charging what it
    /// allocates to the call (see `crate::meter`).
    pub async fn call(&self, req: Request<Body>) -> Response<Body> {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let started = Instant::now();
        let lease = crate::meter::Lease::new();
        let resp = crate::meter::Metered::new(self.serve(req, &method), lease).await;
        // A refusal or failure is trailers-only: its status is in the headers. A success
        // carries it in the trailers, which are not sent yet.
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_string();
        let secs = started.elapsed().as_secs_f64();
        let route = format!("gRPC {method}");
        metrics::counter!("segserve_requests_total", "route" => route.clone(), "status" => code.clone())
            .increment(1);
        metrics::histogram!("segserve_request_duration_seconds", "route" => route).record(secs);
        let latency_ms = (secs * 1e4).round() / 10.0;
        tracing::info!(method, grpc_status = code, latency_ms, "gRPC call");
        resp
    }

    async fn serve(&self, req: Request<Body>, method: &str) -> Response<Body> {
        let s = &self.state;
        let fail = |e: AppError| status::status(e, method).into_http::<Body>();
        if let Err(e) = security::admit(s, &req) {
            return fail(e);
        }
        let (mut parts, body) = req.into_parts();
        let client = Peer::ip(&parts.extensions);
        let mut limits = s.body_limits();
        limits.max_bytes += FRAME_PREFIX;
        let mut reservation = s.budget.reservation();
        let raw = match body::read_limited(
            body,
            &parts.headers,
            limits,
            &mut reservation,
            &s.budget,
            client,
        )
        .await
        {
            Ok(raw) => raw,
            Err(e) => return fail(e),
        };
        // tonic decodes the message out of its own copy of these bytes.
        if let Err(e) = reservation.grow(raw.len() as u64) {
            return fail(body::budget_refusal(e));
        }
        parts.extensions.insert(MessageHold::new(reservation));
        let req = Request::from_parts(parts, Full::new(raw));
        let deadline = s.config.request_timeout;
        match tokio::time::timeout(deadline, self.server.clone().oneshot(req)).await {
            Ok(Ok(resp)) => resp.map(Body::new),
            Ok(Err(never)) => match never {},
            Err(_) => fail(AppError::ServerTimeout(format!(
                "the call did not complete within {} ms; retry later",
                deadline.as_millis()
            ))),
        }
    }
}
