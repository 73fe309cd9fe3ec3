//! Graceful shutdown (issue 4): on the signal, /readyz turns 503 at once while requests are
//! still served through the drain delay; then the listener closes (new connections are
//! refused), requests already in flight finish with 200, and the process exits 0.

mod common;
mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::HeldUpload;

const IN_FLIGHT: usize = 3;
// Long enough that the checks made during the drain (a few local requests) fit in it on a
// loaded machine; the test never waits for it to pass except by polling the listener.
const DRAIN_MS: &str = "2000";

fn bus() -> Vec<u8> {
    std::fs::read(common::shared().join("testdata/bus.jpg")).unwrap()
}

/// Polls until /readyz says 503 (the signal is handled on another task).
async fn wait_not_ready(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let r = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("listener still open while draining");
        if r.status() == 503 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("/readyz never turned 503 after the shutdown signal");
}

/// Polls until new connections are refused: the drain is over and the listener closed.
async fn wait_listener_closed(addr: std::net::SocketAddr) {
    for _ in 0..600 {
        if support::refused(addr).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the listener never closed");
}

/// What happens between the signal and exit, the same for both tests below.
async fn check_drain(addr: std::net::SocketAddr, held: Vec<HeldUpload>, trigger: impl FnOnce()) {
    let base = format!("http://{addr}");
    trigger();
    wait_not_ready(&base).await;
    // During the drain, load balancers may still route here: those requests are served.
    let photo = bus();
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(photo).file_name("bus.jpg"),
    );
    let r = reqwest::Client::new()
        .post(format!("{base}/segmentapi"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a request during the drain is served");
    // ... and told not to reuse the connection, so the client's next request goes elsewhere.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "answers during the drain carry Connection: close"
    );
    wait_listener_closed(addr).await;
    // The requests that were in flight all along still complete.
    for h in held {
        let (status, body) = h.finish().await;
        assert_eq!(
            status, 200,
            "in-flight request after the listener closed: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["outputs"]["class_names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "bus"));
    }
}

#[tokio::test]
async fn in_process_shutdown_finishes_in_flight_requests() {
    // spawn_server fixes the drain at 0 (clap refuses the flag twice): set it on the config.
    let mut config = common::serve_config(&[]);
    config.shutdown_drain = Duration::from_millis(DRAIN_MS.parse().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = common::TestServer {
        addr: listener.local_addr().unwrap(),
        shutdown: Some(tx),
        handle: tokio::spawn(segserve::run(config, listener, async move {
            let _ = rx.await;
        })),
    };
    common::wait_ready(&server).await;
    let photo = bus();
    let mut held = Vec::new();
    for _ in 0..IN_FLIGHT {
        held.push(HeldUpload::start(server.url("/segmentapi"), &photo).await);
    }
    support::wait_in_flight(&format!("http://{}", server.addr), IN_FLIGHT).await;
    let tx = server.shutdown.take().unwrap();
    check_drain(server.addr, held, move || tx.send(()).unwrap()).await;
    server
        .handle
        .await
        .unwrap()
        .expect("run returns Ok after a graceful shutdown");
}

/// The real binary, as Kubernetes runs it: SIGTERM, JSON logs, exit status 0.
#[tokio::test]
async fn sigterm_to_the_binary_drains_and_exits_zero() {
    let repo = common::repo();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segserve"));
    cmd.args([
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-format",
        "json",
    ])
    .args(["--shutdown-drain-ms", DRAIN_MS, "--sessions", "2"])
    .arg("--model")
    .arg(common::model("yolov8n-seg-320"))
    .env("ORT_DISABLE_TELEMETRY", "1")
    .env("RUST_LOG", "info,ort=warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cmd.env(
            "ORT_DYLIB_PATH",
            repo.join(".ort").join(segserve::config::ORT_LIB_NAME),
        );
    }
    let mut child = cmd.spawn().expect("start target/release/segserve");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);

    // Log lines on a thread: every one must be a JSON object; the first tells the port.
    let stderr = child.stderr.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not one JSON object ({e}): {line}"));
            assert!(v.is_object(), "{line}");
            n += 1;
            let _ = line_tx.send(v);
        }
        n
    });
    let addr: std::net::SocketAddr = loop {
        let v = line_rx
            .recv()
            .await
            .expect("the server exited before listening");
        if v["message"] == "listening" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    let base = format!("http://{addr}");
    // Model load + warm-up: poll readiness (the behaviour under test, not a sleep).
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the binary never became ready");
    drop(client);

    let photo = bus();
    let mut held = Vec::new();
    for _ in 0..IN_FLIGHT {
        held.push(HeldUpload::start(format!("{base}/segmentapi"), &photo).await);
    }
    support::wait_in_flight(&base, IN_FLIGHT).await;
    check_drain(addr, held, || {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap()
    })
    .await;

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let lines = reader.join().expect("every log line was JSON");
    let mut messages = Vec::new();
    while let Ok(v) = line_rx.try_recv() {
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(lines > 3);
    for m in [
        "SIGTERM received",
        "shutting down: readiness off, draining",
        "shutdown complete",
    ] {
        assert!(
            messages.iter().any(|x| x == m),
            "no {m:?} in the log: {messages:?}"
        );
    }
}
