//! The write side's limits on a connection: a stall timeout, a minimum send rate after a
//! grace period, and a whole-answer deadline (like nginx's `send_timeout`), so a client that
//! reads slowly cannot keep an answer, and its memory, on the server. `api::server` wraps
//! every accepted socket in [`SendLimits`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::ConnectionLimits;

/// How long without a write in progress makes the next write the start of a new answer
/// (for the rate and deadline).
const NEW_ANSWER_GAP: Duration = Duration::from_secs(1);
/// Time an answer gets before the minimum send rate applies.
const SEND_RATE_GRACE: Duration = Duration::from_secs(5);

/// A stream whose writes fail with `TimedOut` when the client reads too slowly: a write
/// that makes no progress for `stall`, an answer read slower than `min_rate` on average
/// after a grace period, or one still being written after `deadline`.
pub struct SendLimits<S> {
    inner: S,
    stall: Duration,
    min_rate: u64,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    stalled_since: Option<Instant>,
    /// The answer being written: when it started and how much of it went out.
    started: Option<Instant>,
    sent: u64,
    last_progress: Instant,
}

impl<S> SendLimits<S> {
    /// Wraps `inner` with the limits of `limits`.
    pub fn new(inner: S, limits: &ConnectionLimits) -> Self {
        Self::with(
            inner,
            limits.send_timeout,
            limits.min_send_rate,
            limits.response_timeout,
        )
    }

    /// Wraps `inner`: `stall` without progress, `min_rate` bytes/s (0: none), `deadline`.
    pub fn with(inner: S, stall: Duration, min_rate: u64, deadline: Duration) -> Self {
        SendLimits {
            inner,
            stall,
            min_rate,
            deadline,
            timer: None,
            stalled_since: None,
            started: None,
            sent: 0,
            last_progress: Instant::now(),
        }
    }

    /// The earliest moment the current stall becomes fatal, and why.
    fn limit(&self, stalled_since: Instant) -> (Instant, &'static str) {
        let mut at = (
            stalled_since + self.stall,
            "the client stopped reading the response",
        );
        if let Some(started) = self.started {
            let whole = started + self.deadline;
            if whole < at.0 {
                at = (
                    whole,
                    "the response was not read within the response timeout",
                );
            }
            if self.min_rate > 0 {
                let earned = Duration::from_secs_f64(self.sent as f64 / self.min_rate as f64);
                let rate = started + SEND_RATE_GRACE + earned;
                if rate < at.0 {
                    at = (
                        rate,
                        "the client read the response slower than the minimum send rate",
                    );
                }
            }
        }
        at
    }

    /// Around a write-side poll: counts progress, or checks the limits on a stall.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        wrote: usize,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let now = Instant::now();
        match poll {
            Poll::Ready(r) => {
                if self.stalled_since.is_none()
                    && now.duration_since(self.last_progress) >= NEW_ANSWER_GAP
                {
                    self.started = None;
                }
                self.started.get_or_insert(now);
                self.sent += wrote as u64;
                self.last_progress = now;
                self.stalled_since = None;
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.started.is_none()
                    || (self.stalled_since.is_none()
                        && now.duration_since(self.last_progress) >= NEW_ANSWER_GAP)
                {
                    self.started = Some(now);
                    self.sent = 0;
                }
                let since = *self.stalled_since.get_or_insert(now);
                let (at, why) = self.limit(since);
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendLimits<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendLimits<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        let n = match &poll {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.watch(cx, n, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let n = match &poll {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.watch(cx, n, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, 0, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, 0, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_cut_off() {
        // A duplex pipe with a 1 KiB buffer that nobody reads: writes stall, then fail.
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = SendLimits::with(a, Duration::from_millis(100), 0, Duration::from_secs(60));
        let started = std::time::Instant::now();
        let err = w.write_all(&vec![0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_reader_that_keeps_reading_is_not() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = SendLimits::with(a, Duration::from_millis(200), 0, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        // Slower overall than the limit, but never stalled for long.
        for _ in 0..10 {
            w.write_all(&[1u8; 512]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(w);
        assert_eq!(reader.await.unwrap(), 5120);
    }
}
