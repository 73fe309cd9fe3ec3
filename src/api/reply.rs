//! Answers that keep their memory reservation until they are gone: a serialised reply lives
//! on after the handler returns, until hyper has written it (or the client has left), so
//! its bytes stay reserved for as long as the body exists.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::budget::Reservation;
use crate::pipeline::PipelineError;

/// A response body that releases a reservation when dropped.
pub struct Reserved<B> {
    inner: B,
    _reservation: Reservation,
}

impl<B> Reserved<B> {
    /// `inner`, holding `reservation` until the body is dropped.
    pub fn new(inner: B, reservation: Reservation) -> Self {
        Reserved {
            inner,
            _reservation: reservation,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Reserved<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serialises `value` as JSON into a buffer sized by `estimate`, which `reservation` holds
/// first; the reservation is then trimmed to what the JSON really took. Runs on the
/// blocking pool (inside `pipeline::segment`'s `finish`).
pub fn to_json<T: Serialize>(
    value: &T,
    estimate: u64,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, PipelineError> {
    let base = reservation.held();
    reservation
        .grow(estimate)
        .map_err(|error| PipelineError::Budget {
            what: "the JSON answer".into(),
            advice: "ask for fewer or smaller masks (masks=none, a higher conf, a lower max_det)",
            error,
        })?;
    let mut buf = Vec::with_capacity(estimate as usize);
    serde_json::to_writer(&mut buf, value).map_err(|e| PipelineError::Task(e.to_string()))?;
    // Past the estimate the Vec grew on its own; account for what it holds now.
    let _ = reservation.set(base + buf.capacity() as u64);
    Ok(buf)
}

/// A 200 with `bytes` as the body and `content_type`, holding `reservation` until sent.
pub fn bytes(bytes: Vec<u8>, content_type: &'static str, reservation: Reservation) -> Response {
    let body = Body::new(Reserved::new(
        http_body_util::Full::new(Bytes::from(bytes)),
        reservation,
    ));
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// [`bytes()`] for JSON.
pub fn json(bytes: Vec<u8>, reservation: Reservation) -> Response {
    self::bytes(bytes, "application/json", reservation)
}
