//! Reading request bodies: every route that takes a body reads it here, under the body size
//! limit and the receive timeout, and holds what it has received against the request's
//! memory reservation while it arrives (the budget counts an upload before it is admitted
//! to any queue, so a thousand slow uploads cannot fill memory behind the queue's back).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::budget::{BudgetError, Reservation};
use crate::error::AppError;

/// Limits on one body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes.
    pub max_bytes: usize,
    /// Longest time to receive them all.
    pub timeout: Duration,
}

/// The 413 for a body over `limit` bytes.
pub fn too_large(limit: usize) -> AppError {
    AppError::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes"))
}

/// The declared `Content-Length`, refused with 413 at once when over the limit.
pub fn declared_length(headers: &HeaderMap, limit: usize) -> Result<Option<u64>, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    Ok(declared)
}

/// The 503 (or 413) for a body the memory budget cannot hold.
pub fn budget_refusal(error: BudgetError) -> AppError {
    error
        .refusing("receiving this body", "send a smaller request")
        .into()
}

/// Accumulates body bytes under a size limit, growing the reservation with the buffer's
/// capacity (what is really allocated) before each allocation.
pub struct Collector<'r> {
    buf: Vec<u8>,
    limit: usize,
    reservation: &'r mut Reservation,
    /// Bytes the reservation held before collecting started (other parts of the request).
    base: u64,
}

impl<'r> Collector<'r> {
    /// A collector expecting about `hint` bytes (the declared length, if any).
    pub fn new(
        limit: usize,
        hint: Option<u64>,
        reservation: &'r mut Reservation,
    ) -> Result<Self, AppError> {
        let base = reservation.held();
        let mut c = Collector {
            buf: Vec::new(),
            limit,
            reservation,
            base,
        };
        if let Some(n) = hint {
            c.reserve_total(n.min(limit as u64) as usize)?;
        }
        Ok(c)
    }

    fn reserve_total(&mut self, total: usize) -> Result<(), AppError> {
        if total <= self.buf.capacity() {
            return Ok(());
        }
        // Grow as Vec would (doubling), but never past the limit: the reservation then
        // matches the allocation.
        let cap = total
            .max(self.buf.capacity() * 2)
            .min(self.limit)
            .max(total);
        self.reservation
            .ensure(self.base + cap as u64)
            .map_err(budget_refusal)?;
        self.buf.reserve_exact(cap - self.buf.len());
        Ok(())
    }

    /// Appends a chunk, or refuses (413 past the limit, 503/413 past the budget).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), AppError> {
        let total = self.buf.len() + chunk.len();
        if total > self.limit {
            return Err(too_large(self.limit));
        }
        self.reserve_total(total)?;
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes; the reservation keeps holding the buffer's capacity, trimmed to its length.
    pub fn finish(mut self) -> Bytes {
        self.buf.shrink_to_fit();
        self.reservation
            .shrink_to(self.base + self.buf.capacity() as u64);
        Bytes::from(self.buf)
    }
}

/// Reads a whole body: at most `limits.max_bytes`, within `limits.timeout`, held against
/// `reservation`.
pub async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
    reservation: &mut Reservation,
) -> Result<Bytes, AppError> {
    let declared = declared_length(headers, limits.max_bytes)?;
    let read = async {
        let mut c = Collector::new(limits.max_bytes, declared, reservation)?;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| read_error(&e, limits.max_bytes))?;
            if let Some(data) = frame.data_ref() {
                c.push(data)?;
            }
        }
        Ok(c.finish())
    };
    within(limits.timeout, read).await
}

/// Runs `read` under the receive timeout (408 past it).
pub async fn within<T>(
    timeout: Duration,
    read: impl std::future::Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        AppError::RequestTimeout(format!(
            "the request body was not received within {} ms",
            timeout.as_millis()
        ))
    })?
}

/// A body read error: 413 when a length limit below us fired, else 400.
pub fn read_error(e: &(dyn std::error::Error + 'static), limit: usize) -> AppError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return too_large(limit);
        }
        cur = err.source();
    }
    AppError::BadRequest(format!("could not read the request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            timeout: Duration::from_secs(5),
        }
    }

    fn chunked(parts: Vec<&'static [u8]>) -> Body {
        let s = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
        Body::from_stream(s)
    }

    #[tokio::test]
    async fn a_body_is_held_against_the_budget_while_it_arrives() {
        let budget = MemoryBudget::new(1000);
        let mut r = budget.reservation();
        let b = read_limited(
            chunked(vec![b"abc", b"defg"]),
            &HeaderMap::new(),
            limits(100),
            &mut r,
        )
        .await
        .unwrap();
        assert_eq!(&b[..], b"abcdefg");
        assert_eq!(r.held(), 7);
        drop(r);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn over_the_limit_is_413_and_over_the_budget_is_503() {
        let budget = MemoryBudget::new(10_000);
        let mut r = budget.reservation();
        let err = read_limited(
            chunked(vec![&[0; 60], &[0; 60]]),
            &HeaderMap::new(),
            limits(100),
            &mut r,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status_and_type().0.as_u16(), 413);
        drop(r);
        let mut r = budget.reservation();

        let mut hog = budget.reservation();
        hog.grow(9_990).unwrap();
        let err = read_limited(
            chunked(vec![&[0; 60]]),
            &HeaderMap::new(),
            limits(100),
            &mut r,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.status_and_type(),
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "500".parse().unwrap());
        let err = read_limited(Body::empty(), &headers, limits(100), &mut r)
            .await
            .unwrap_err();
        assert_eq!(err.status_and_type().0.as_u16(), 413);
    }
}
