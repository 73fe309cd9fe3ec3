//! Early refusals without lost answers. When we refuse a request before reading its body
//! (bad content type, no boundary, bad query, no key...), hyper drains only the body bytes
//! already buffered and otherwise closes the connection; the client's unsent bytes then hit
//! a closed socket, the kernel answers with a reset, and the client often sees "connection
//! reset" instead of our 4xx (the soak test caught this). So the guard wraps each request
//! body in [`Reclaim`], which hands an unfinished body back when the handler drops it, and
//! [`drain`] reads a bounded remainder before the refusal goes out.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use futures_util::StreamExt;

/// At most this much of a refused body is read and discarded (not stored: memory stays flat),
/// like nginx's lingering close: above the default 20 MiB body limit, so a client whose
/// upload the server would have taken reads its refusal (a 503 from the headers comes before
/// any of the body is read). A larger remainder means a grossly oversized upload, and then
/// the connection is closed as hyper would. Refusals are paced (`engine::ROOM_HOLD`), so
/// draining costs bandwidth at a bounded rate, never memory.
pub const MAX_DRAIN_BYTES: usize = 32 << 20;
/// And for at most this long, so a slow sender cannot hold the connection.
pub const MAX_DRAIN_TIME: Duration = Duration::from_secs(2);

/// Where a dropped, unfinished body is put back.
pub type Slot = Arc<Mutex<Option<Body>>>;

/// A request body that returns itself to `slot` if dropped before its end.
pub struct Reclaim {
    inner: Option<Body>,
    slot: Slot,
}

impl Reclaim {
    /// Wraps `body`; returns the wrapper as a `Body` and the slot to look in afterwards.
    pub fn wrap(body: Body) -> (Body, Slot) {
        let slot = Slot::default();
        let wrapped = Reclaim {
            inner: Some(body),
            slot: slot.clone(),
        };
        (Body::new(wrapped), slot)
    }
}

impl HttpBody for Reclaim {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take().filter(|b| !b.is_end_stream()) {
            // std Mutex: held only for this swap, never across an await.
            if let Ok(mut slot) = self.slot.lock() {
                *slot = Some(body);
            }
        }
    }
}

/// Whether an answer with `status` should wait for the unread body: client errors (413
/// included: discarding costs no memory, and the sender then reads its 413) and 503s (a
/// body refused by the memory budget before it was read), except a slow client (408:
/// waiting longer is the problem).
pub fn worth_draining(status: StatusCode) -> bool {
    (status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE)
        && status != StatusCode::REQUEST_TIMEOUT
}

/// Reads and discards up to [`MAX_DRAIN_BYTES`] of `body` within [`MAX_DRAIN_TIME`], unless
/// its declared size already exceeds that.
pub async fn drain(body: Body) {
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n > MAX_DRAIN_BYTES as u64)
    {
        return;
    }
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(MAX_DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > MAX_DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Takes the unfinished body out of `slot`, if the handler left one.
pub fn take(slot: &Slot) -> Option<Body> {
    slot.lock().ok().and_then(|mut s| s.take())
}
