//! Accepting connections and serving HTTP/1.1 and HTTP/2 (h2c, for gRPC: told apart by the
//! HTTP/2 preface; calls with a gRPC content type go to `api::grpc`, everything else to the
//! router), with the limits a server exposed to the internet needs and `axum::serve` does
//! not set:
//!
//! - a cap on open connections (further ones wait in the kernel's listen backlog, which
//!   costs us nothing), and near it idle keep-alive connections are closed first, so a
//!   flood of idle sockets cannot lock out new clients; a cap per client address;
//! - a header-read timeout (slow or stalled headers are closed, like nginx's
//!   `client_header_timeout`) and a shorter keep-alive idle timeout between requests;
//! - a cap on requests and on age per connection (then `Connection: close`);
//! - hyper's read buffer bounded near the header limit (its default of ~400 KiB per
//!   connection would be unreserved memory a thousand sockets wide);
//! - on the write side, a stall timeout, a minimum send rate and a whole-answer deadline
//!   (like nginx's `send_timeout`), so a slow reader cannot keep an answer in memory;
//! - on HTTP/2, the same header limit (as the header list size), few concurrent streams,
//!   small flow-control windows (what a connection may have buffered unread), hyper's caps
//!   on reset streams (the rapid-reset flood), pings that close a dead peer, and the same
//!   idle, request-count and age limits (a GOAWAY instead of `Connection: close`).
//!
//! On shutdown, idle connections close at once and busy ones after their response.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, Extensions, HeaderValue, Request, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use super::grpc::{self, Gateway};
pub use super::send_limits::SendLimits;
use crate::config::ConnectionLimits;

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Peer {
    /// The client address of the request with these extensions, if it came over a socket.
    pub fn ip(ext: &Extensions) -> Option<IpAddr> {
        ext.get::<Peer>().map(|p| p.0.ip())
    }
}

/// hyper's read buffer: the header limit plus room for body chunks. hyper's minimum is 8 KiB.
pub fn read_buffer(max_header_bytes: usize) -> usize {
    (max_header_bytes + (16 << 10)).max(8 << 10)
}

/// Streams one HTTP/2 connection may have open at once (hyper's default is 200): a gRPC
/// client multiplexes its calls, and each call holds a place in the model's queue anyway;
/// more streams would only let one connection buffer more at once.
pub const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2 flow-control windows: how much a client may send before we read it, per stream
/// and per connection (bytes a connection can make us buffer without a reservation).
const H2_STREAM_WINDOW: u32 = 256 << 10;
const H2_CONNECTION_WINDOW: u32 = 1 << 20;

/// The HTTP/1.1 and HTTP/2 settings of the main port.
fn builder(limits: &ConnectionLimits, max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(read_buffer(max_header_bytes))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_bytes as u32)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // A peer that stops answering pings within the header timeout is gone.
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    b
}

/// Connections open (and per client), shared by the accept loop and the connections.
struct Open {
    all: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Wakes idle connections to close when the cap is near.
    pressure: Notify,
}

/// Near this share of the cap, idle connections are closed to make room.
const PRESSURE_NUM: usize = 9;
const PRESSURE_DEN: usize = 10;

/// Serves `app` on `listener` until `stop` resolves, then stops accepting and waits for the
/// open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    grpc: Gateway,
    limits: ConnectionLimits,
    max_header_bytes: usize,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(Open {
        all: AtomicUsize::new(0),
        per_client: Mutex::new(HashMap::new()),
        pressure: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = builder(&limits, max_header_bytes);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
            _ = &mut stop => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Some(place) = Place::take(&open, addr.ip(), limits.max_per_client) else {
            tracing::debug!(client = %addr.ip(), "connection over the per-client cap closed");
            continue;
        };
        let count = open.all.load(Ordering::Relaxed);
        if count * PRESSURE_DEN >= limits.max_connections * PRESSURE_NUM {
            open.pressure.notify_waiters();
        }
        // Small answers go out at once rather than waiting for Nagle's timer.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(SendLimits::new(stream, &limits));
        let conn_state = Arc::new(ConnState::new());
        let svc = {
            let (app, grpc, st) = (app.clone(), grpc.clone(), conn_state.clone());
            hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (app, grpc, st) = (app.clone(), grpc.clone(), st.clone());
                async move {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(Peer(addr));
                    st.begin();
                    st.served.fetch_add(1, Ordering::Relaxed);
                    let resp = if grpc::is_grpc(&req) {
                        grpc.call(req).await
                    } else {
                        app.oneshot(req).await.unwrap_or_else(|e| match e {})
                    };
                    let (mut parts, body) = resp.into_parts();
                    if st.spent(&limits) {
                        parts
                            .headers
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    let body = Body::new(Ending {
                        inner: body,
                        state: Some(st),
                    });
                    Ok::<_, std::convert::Infallible>(Response::from_parts(parts, body))
                }
            })
        };
        let conn = http.serve_connection(io, svc).into_owned();
        // Connection buffers are the server's own measured bytes (a request's work sets its
        // own lease inside).
        let (open2, limits2, mut stop_rx) = (open.clone(), limits, stop_rx.clone());
        tokio::spawn(crate::meter::Metered::new(
            async move {
                tokio::pin!(conn);
                let mut closing = false;
                loop {
                    let idle_deadline = conn_state.idle_deadline(&limits2);
                    let pressure = open2.pressure.notified();
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "connection closed with an error");
                            }
                            break;
                        }
                        _ = sleep_until_opt(idle_deadline), if !closing => {
                            if conn_state.is_idle() {
                                conn.as_mut().graceful_shutdown();
                                closing = true;
                            }
                        }
                        _ = pressure, if !closing => {
                            if conn_state.is_idle() {
                                conn.as_mut().graceful_shutdown();
                                closing = true;
                            }
                        }
                        _ = conn_state.ended.notified() => {
                            // HTTP/1.1 closes through `Connection: close`; HTTP/2 (which has
                            // no such header) through a GOAWAY once its streams are done.
                            if !closing && conn_state.spent(&limits2) {
                                conn.as_mut().graceful_shutdown();
                                closing = true;
                            }
                        }
                        _ = stop_rx.changed(), if !closing => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
                drop(place);
                drop(permit);
            },
            None,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it closes: taking them all waits for the last.
    let _ = permits.acquire_many(limits.max_connections as u32).await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection's place in the counts, given back when it closes.
struct Place {
    open: Arc<Open>,
    ip: IpAddr,
}

impl Place {
    fn take(open: &Arc<Open>, ip: IpAddr, per_client: usize) -> Option<Place> {
        let mut map = open.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let mine = map.entry(ip).or_insert(0);
        if per_client > 0 && *mine >= per_client {
            return None;
        }
        *mine += 1;
        open.all.fetch_add(1, Ordering::Relaxed);
        Some(Place {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.all.fetch_sub(1, Ordering::Relaxed);
        let mut map = self
            .open
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// What a connection's watcher needs to know about its requests.
struct ConnState {
    born: Instant,
    served: AtomicU64,
    /// Requests whose answer is not fully handed to hyper yet.
    active: AtomicUsize,
    /// When the last answer ended (ms since `born`).
    idle_since_ms: AtomicU64,
    ended: Notify,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            born: Instant::now(),
            served: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            ended: Notify::new(),
        }
    }

    fn begin(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        self.idle_since_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.ended.notify_one();
    }

    /// Past the request cap or the age limit: the connection should close.
    fn spent(&self, limits: &ConnectionLimits) -> bool {
        self.served.load(Ordering::Relaxed) >= limits.max_requests
            || self.born.elapsed() >= limits.max_age
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// When an idle connection should close (`None` while a request is in progress): the
    /// keep-alive timeout after its last answer, or the header timeout after it opened when
    /// no request has come yet. (hyper's HTTP/1.1 header timeout starts only once the
    /// protocol is known, which takes the client's first bytes: a silent connection, or
    /// HTTP/2's, is timed here.)
    fn idle_deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        self.is_idle().then(|| {
            if self.served.load(Ordering::Relaxed) == 0 {
                return self.born + limits.header_timeout;
            }
            self.born
                + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
                + limits.keep_alive_timeout
        })
    }
}

/// A response body that tells its connection when the answer is over (dropped).
struct Ending {
    inner: Body,
    state: Option<Arc<ConnState>>,
}

impl HttpBody for Ending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            s.end();
        }
    }
}

/// Accept errors are per-connection (the client reset before we took it) or a resource
/// shortage (out of file descriptors): neither ends the server; a shortage gets a pause so
/// the loop does not spin.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves `app` on `listener` with no caps until `stop` resolves: the probe port, whose
/// few clients (the kubelet, Prometheus) must get through whatever the main port suffers.
pub async fn serve_probes(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .max_buf_size(read_buffer(16 << 10));
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
