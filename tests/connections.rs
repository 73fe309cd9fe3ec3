//! Connection handling: the cap on open connections queues the excess (in the listen
//! backlog) instead of refusing or serving it, idle keep-alive connections make room near
//! the cap, and connections that send nothing, or stop between requests, are closed after
//! the header timeout.

use crate::common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; returns how long that took.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

async fn healthz(s: &mut TcpStream) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_connections_wait_until_one_closes() {
    // Timeouts and waits measured in milliseconds: nothing else may load the machine.
    let _turn = common::exclusive();
    let srv =
        common::spawn_server(&["--max-connections", "3", "--header-timeout-ms", "30000"]).await;
    // Three connections in the middle of a request (headers not finished) take every
    // place; they are busy, so nothing closes them to make room.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        busy.push(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fourth is accepted by the kernel but not served while they stay open...
    let mut fourth = TcpStream::connect(srv.addr).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf))
            .await
            .is_err(),
        "a connection over the cap was served"
    );
    // ...and is served as soon as one closes.
    drop(busy.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("served once a place freed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_make_room_near_the_cap() {
    // Timeouts and waits measured in milliseconds: nothing else may load the machine.
    let _turn = common::exclusive();
    let srv = common::spawn_server(&[
        "--max-connections",
        "4",
        "--header-timeout-ms",
        "30000",
        "--keep-alive-timeout-ms",
        "30000",
    ])
    .await;
    // Idle keep-alive connections (one request each, then nothing) up to the cap.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        assert!(healthz(&mut s).await.starts_with("HTTP/1.1 200"));
        idle.push(s);
    }
    // A new client is served at once: idle connections were closed to make room, not it.
    let mut new = TcpStream::connect(srv.addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), healthz(&mut new))
        .await
        .expect("a new client is served while idle connections fill the cap");
    assert!(answer.starts_with("HTTP/1.1 200"));
    let mut closed = 0;
    for s in &mut idle {
        if until_closed(s, Duration::from_millis(200)).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed near the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_close_after_the_header_timeout() {
    // Timeouts and waits measured in milliseconds: nothing else may load the machine.
    let _turn = common::exclusive();
    let srv = common::spawn_server(&["--header-timeout-ms", "700"]).await;
    // Nothing sent at all.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    // A request, then nothing (an idle keep-alive connection).
    let mut kept = TcpStream::connect(srv.addr).await.unwrap();
    assert!(healthz(&mut kept).await.starts_with("HTTP/1.1 200"));
    // Half a request line.
    let mut half = TcpStream::connect(srv.addr).await.unwrap();
    half.write_all(b"GET /heal").await.unwrap();
    // HTTP/2 (h2c, as gRPC clients open it): the preface and empty settings, then no stream.
    let mut h2 = TcpStream::connect(srv.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    for (name, s) in [
        ("silent", &mut silent),
        ("idle keep-alive", &mut kept),
        ("half a request line", &mut half),
        ("HTTP/2 without a stream", &mut h2),
    ] {
        let closed = until_closed(s, Duration::from_secs(10)).await;
        let closed = closed.unwrap_or_else(|| panic!("the {name} connection stayed open"));
        assert!(
            closed < Duration::from_secs(5),
            "{name}: closed after {closed:?}"
        );
    }
}
