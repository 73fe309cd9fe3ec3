//! Answers that keep their memory reservation until their bytes are gone: a serialised
//! reply lives on after the handler returns, and hyper keeps each frame in its write buffer
//! until the client has read it, after the body itself is dropped. So every frame a
//! [`Reserved`] body yields owns a share of the reservation, which is released only when
//! the body *and* every frame hyper still holds are dropped: bytes stay reserved until they
//! leave.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::budget::Reservation;
use crate::pipeline::PipelineError;

/// A response body whose reservation is released when the body and every frame it yielded
/// are dropped. Polling it charges its allocations to the request (a stream that builds its
/// chunks is still the request's work).
pub struct Reserved<B> {
    inner: B,
    hold: Arc<Reservation>,
}

impl<B> Reserved<B> {
    /// `inner`, holding `reservation` until the body and its frames are gone.
    pub fn new(inner: B, reservation: Reservation) -> Self {
        Reserved {
            inner,
            hold: Arc::new(reservation),
        }
    }
}

/// A frame's bytes, holding the answer's reservation while hyper holds them.
struct Owned {
    bytes: Bytes,
    _hold: Arc<Reservation>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl<B> HttpBody for Reserved<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let _entered = self.hold.lease().map(crate::meter::Lease::enter);
        let hold = self.hold.clone();
        Pin::new(&mut self.inner).poll_frame(cx).map(|f| {
            f.map(|r| {
                r.map(|frame| {
                    frame.map_data(|bytes| {
                        Bytes::from_owner(Owned {
                            bytes,
                            _hold: hold.clone(),
                        })
                    })
                })
            })
        })
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
/// blocking pool (inside `Pipeline::segment`'s `finish`).
pub fn to_json<T: Serialize>(
    value: &T,
    estimate: u64,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, PipelineError> {
    const ADVICE: &str =
        "ask for fewer or smaller masks (masks=none, a higher conf, a lower max_det)";
    let base = reservation.held();
    reservation
        .grow(estimate)
        .map_err(|e| e.refusing("the JSON answer", ADVICE))?;
    let mut out = ReservedWriter::new(Vec::with_capacity(estimate as usize), reservation);
    serde_json::to_writer(&mut out, value).map_err(|e| match out.refused.take() {
        Some(r) => PipelineError::Budget(r.refusing("the JSON answer", ADVICE)),
        None => PipelineError::Task(e.to_string()),
    })?;
    let buf = out.buf;
    reservation.shrink_to(base + buf.capacity() as u64);
    Ok(buf)
}

/// A `Vec` writer that grows `reservation` before the vector grows past what is held, so an
/// encoder writing an answer of unforeseen size is refused instead of allocating unreserved.
pub struct ReservedWriter<'r> {
    /// What was written.
    pub buf: Vec<u8>,
    reservation: &'r mut Reservation,
    /// Bytes of the reservation that were not the buffer's when writing started.
    base: u64,
    /// The refusal that stopped the writer, if one did.
    pub refused: Option<crate::budget::BudgetError>,
}

impl<'r> ReservedWriter<'r> {
    /// A writer into `buf`, whose capacity `reservation` must already hold.
    pub fn new(buf: Vec<u8>, reservation: &'r mut Reservation) -> Self {
        let base = reservation.held().saturating_sub(buf.capacity() as u64);
        ReservedWriter {
            buf,
            reservation,
            base,
            refused: None,
        }
    }
}

impl std::io::Write for ReservedWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let need = self.buf.len() + data.len();
        if need > self.buf.capacity() {
            // Grow as Vec would (doubling), reserving first.
            let cap = need.max(self.buf.capacity() * 2).max(64 << 10);
            if let Err(e) = self.reservation.ensure(self.base + cap as u64) {
                self.refused = Some(e);
                return Err(std::io::Error::other(
                    "the memory budget refused the answer",
                ));
            }
            self.buf.reserve_exact(cap - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
