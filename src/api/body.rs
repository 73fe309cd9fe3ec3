//! Reading request bodies: every route that takes a body reads it here, under the body size
//! limit, the receive timeout and a minimum receive rate, and holds what it has received
//! against the request's memory reservation *as it arrives* (never by the declared length:
//! headers that promise 20 MiB and send nothing reserve nothing). Bodies still arriving
//! also hold a [`Receiving`] share, so slow senders cannot take the budget from work that
//! could finish.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::budget::{BudgetError, MemoryBudget, Receiving, Reservation};
use crate::error::AppError;

/// Time a body gets before the minimum rate applies (a connection's slow start, a phone
/// waking its radio).
pub const RATE_GRACE: Duration = Duration::from_secs(5);

/// Limits on one body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes.
    pub max_bytes: usize,
    /// Longest time to receive them all.
    pub timeout: Duration,
    /// Slowest arrival accepted after [`RATE_GRACE`], bytes per second (0: none).
    pub min_rate: u64,
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

/// When the next bytes of a body must have arrived: within the whole-body timeout, and
/// fast enough on average that `received` bytes keep up with the minimum rate.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    started: Instant,
    limits: BodyLimits,
    received: u64,
}

impl Pace {
    /// Starts the clock now.
    pub fn start(limits: BodyLimits) -> Self {
        Pace {
            started: Instant::now(),
            limits,
            received: 0,
        }
    }

    /// Counts `n` more bytes received.
    pub fn add(&mut self, n: usize) {
        self.received += n as u64;
    }

    fn deadline(&self) -> (Instant, bool) {
        let whole = self.started + self.limits.timeout;
        if self.limits.min_rate == 0 {
            return (whole, false);
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        let rate = self.started + RATE_GRACE + earned;
        if rate < whole {
            (rate, true)
        } else {
            (whole, false)
        }
    }

    /// The next frame of `body`, or 408 when it comes too late.
    pub async fn next<B>(&mut self, body: &mut B) -> Result<Option<B::Data>, AppError>
    where
        B: http_body::Body + Unpin,
        B::Data: bytes::Buf,
        B::Error: std::error::Error + 'static,
    {
        loop {
            let (at, by_rate) = self.deadline();
            let frame = match tokio::time::timeout_at(at, body.frame()).await {
                Ok(f) => f,
                Err(_) => return Err(self.too_slow(by_rate)),
            };
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(read_error(&e, self.limits.max_bytes)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.add(bytes::Buf::remaining(&data));
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    fn too_slow(&self, by_rate: bool) -> AppError {
        AppError::RequestTimeout(if by_rate {
            format!(
                "the request body arrived slower than {} bytes per second",
                self.limits.min_rate
            )
        } else {
            format!(
                "the request body was not received within {} ms",
                self.limits.timeout.as_millis()
            )
        })
    }
}

/// Accumulates body bytes under a size limit, growing the reservation (and the arriving
/// share) with the buffer's capacity before each allocation. The capacity follows what has
/// arrived (doubling), never past the declared length.
pub struct Collector<'r> {
    buf: Vec<u8>,
    limit: usize,
    /// Most capacity worth having: the declared length, else the limit.
    cap_hint: usize,
    reservation: &'r mut Reservation,
    receiving: Receiving,
    /// Bytes the reservation held before collecting started (other parts of the request).
    base: u64,
}

impl<'r> Collector<'r> {
    /// A collector for a body declared as `hint` bytes (if it was), from `client`.
    pub fn new(
        limit: usize,
        hint: Option<u64>,
        reservation: &'r mut Reservation,
        budget: &Arc<MemoryBudget>,
        client: Option<IpAddr>,
    ) -> Self {
        let base = reservation.held();
        Collector {
            buf: Vec::new(),
            limit,
            cap_hint: hint.map_or(limit, |n| (n as usize).min(limit)),
            reservation,
            receiving: budget.receiving(client),
            base,
        }
    }

    fn reserve_total(&mut self, total: usize) -> Result<(), AppError> {
        if total <= self.buf.capacity() {
            return Ok(());
        }
        let cap = total
            .max(self.buf.capacity() * 2)
            .max(16 << 10)
            .min(self.cap_hint)
            .min(self.limit)
            .max(total);
        self.receiving.ensure(cap as u64).map_err(budget_refusal)?;
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

    /// The bytes; the reservation keeps holding the buffer, trimmed to its length.
    pub fn finish(mut self) -> Bytes {
        self.buf.shrink_to_fit();
        self.reservation
            .shrink_to(self.base + self.buf.capacity() as u64);
        Bytes::from(self.buf)
    }
}

/// Reads a whole body: at most `limits.max_bytes`, at the minimum rate and within
/// `limits.timeout`, held against `reservation` as it arrives.
pub async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
    reservation: &mut Reservation,
    budget: &Arc<MemoryBudget>,
    client: Option<IpAddr>,
) -> Result<Bytes, AppError> {
    let declared = declared_length(headers, limits.max_bytes)?;
    let mut c = Collector::new(limits.max_bytes, declared, reservation, budget, client);
    let mut body = body;
    let mut pace = Pace::start(limits);
    while let Some(data) = pace.next(&mut body).await? {
        c.push(&data)?;
    }
    Ok(c.finish())
}

/// Bytes handed to a parser that buffers on its own (multer reads ahead of the fields we
/// take, and holds a preamble or part headers whole until their end): what it may hold is
/// what was fed minus what was taken out, and that is reserved as it is fed.
pub struct Feed {
    body: Body,
    pace: Pace,
    reservation: Reservation,
    receiving: Receiving,
    fed: u64,
    /// Bytes taken out of the parser as field data (shared with the reader of the fields).
    taken: Arc<AtomicU64>,
    /// Until the first boundary is seen: the bytes before it, which may not exceed
    /// [`MAX_PREAMBLE`] (a parser would buffer them whole).
    preamble: Option<(Vec<u8>, Vec<u8>)>,
}

/// Most bytes a multipart body may have before its first boundary (RFC 2046 allows a
/// preamble; browsers and clients send none).
pub const MAX_PREAMBLE: usize = 4 << 10;

impl Feed {
    /// A feed of `body`; `reservation` is the request's share for the parser's buffer.
    pub fn new(
        body: Body,
        limits: BodyLimits,
        reservation: Reservation,
        receiving: Receiving,
        boundary: &str,
    ) -> (Self, Arc<AtomicU64>) {
        let taken = Arc::new(AtomicU64::new(0));
        let feed = Feed {
            body,
            pace: Pace::start(limits),
            reservation,
            receiving,
            fed: 0,
            taken: taken.clone(),
            preamble: Some((format!("--{boundary}").into_bytes(), Vec::new())),
        };
        (feed, taken)
    }

    /// The feed as the stream a parser reads; its errors carry the `AppError` to answer with.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, Refused>> {
        futures_util::stream::unfold(self, |mut f| async move {
            let item = f.next().await.transpose()?;
            Some((item, f))
        })
    }

    async fn next(&mut self) -> Result<Option<Bytes>, Refused> {
        let Some(data) = self.pace.next(&mut self.body).await.map_err(refused)? else {
            return Ok(None);
        };
        self.fed += data.len() as u64;
        if let Some((boundary, seen)) = &mut self.preamble {
            let room =
                MAX_PREAMBLE + boundary.len() - seen.len().min(MAX_PREAMBLE + boundary.len());
            seen.extend_from_slice(&data[..data.len().min(room)]);
            if seen.windows(boundary.len()).any(|w| w == &boundary[..]) {
                self.preamble = None;
            } else if seen.len() >= MAX_PREAMBLE + boundary.len() {
                return Err(refused(AppError::BadRequest(format!(
                    "the multipart body has more than {MAX_PREAMBLE} bytes before its first boundary"
                ))));
            }
        }
        // What the parser may hold: everything fed that was not taken out as field data.
        let pending = self.fed.saturating_sub(self.taken.load(Ordering::Acquire));
        self.reservation.shrink_to(pending);
        self.receiving
            .ensure(pending)
            .and_then(|()| self.reservation.ensure(pending))
            .map_err(|e| refused(budget_refusal(e)))?;
        Ok(Some(data))
    }
}

/// An `AppError` travelling through a parser's stream error (taken out once, by
/// [`read_error`]).
#[derive(Debug)]
pub struct Refused {
    text: String,
    error: std::sync::Mutex<Option<AppError>>,
}

fn refused(e: AppError) -> Refused {
    Refused {
        text: e.to_string(),
        error: std::sync::Mutex::new(Some(e)),
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Refused {}

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

/// A body read error: the error a feed refused with, 413 when a length limit below us
/// fired, else 400.
pub fn read_error(e: &(dyn std::error::Error + 'static), limit: usize) -> AppError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(app) = err
            .downcast_ref::<Refused>()
            .and_then(|r| r.error.lock().ok()?.take())
        {
            return app;
        }
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
            min_rate: 0,
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
            &budget,
            None,
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
            &budget,
            None,
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
            &budget,
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.status_and_type(),
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "500".parse().unwrap());
        let err = read_limited(Body::empty(), &headers, limits(100), &mut r, &budget, None)
            .await
            .unwrap_err();
        assert_eq!(err.status_and_type().0.as_u16(), 413);
    }
}
