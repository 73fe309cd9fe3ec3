//! Graceful shutdown: on the signal, /readyz turns 503 at once while requests are
//! still served through the drain delay; then the listener closes (new connections are
//! refused), requests already in flight finish with 200, and the process exits 0.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bus;
use common::client::{refused, wait_in_flight, HeldUpload};

const IN_FLIGHT: usize = 3;
// Long enough that the checks made during the drain (a few local requests) fit in it on a
// loaded machine; the test never waits for it to pass except by polling the listener.
const DRAIN_MS: &str = "2000";

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
        if refused(addr).await {
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
    let r = reqwest::Client::new()
        .post(format!("{base}/segmentapi"))
        .multipart(common::form("image", bus(), "bus.jpg"))
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
    // The drain's checks must fit in DRAIN_MS: nothing else may load the machine meanwhile.
    let _turn = common::exclusive();
    // It counts requests in flight on the gauge every server in the process shares: alone.
    if common::in_own_process(
        module_path!(),
        "in_process_shutdown_finishes_in_flight_requests",
    ) {
        return;
    }
    // spawn_server fixes the drain at 0 (clap refuses the flag twice): set it on the config.
    let mut config = common::serve_config(&[]);
    config.shutdown_drain = Duration::from_millis(DRAIN_MS.parse().unwrap());
    let mut server = common::start_server(config).await;
    let photo = bus();
    let mut held = Vec::new();
    for _ in 0..IN_FLIGHT {
        held.push(HeldUpload::start(server.url("/segmentapi"), &photo).await);
    }
    wait_in_flight(&format!("http://{}", server.addr), IN_FLIGHT).await;
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
    // The drain's checks must fit in DRAIN_MS: nothing else may load the machine meanwhile.
    let _turn = common::exclusive();
    // Every log line is one JSON object (Binary checks that); keep the messages.
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = messages.clone();
    let args: Vec<String> = [
        "--shutdown-drain-ms",
        DRAIN_MS,
        "--sessions",
        "2",
        "--model",
    ]
    .into_iter()
    .map(String::from)
    .chain([common::model("yolov8n-seg-320").display().to_string()])
    .collect();
    let mut server = common::Binary::start(None, &args, move |v| {
        let m = v["message"].as_str().unwrap_or_default().to_string();
        seen.lock().unwrap().push(m);
    });
    server.wait_ready().await;
    let base = server.url("");
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    let server_not_json = server.not_json.clone();

    let photo = bus();
    let mut held = Vec::new();
    for _ in 0..IN_FLIGHT {
        held.push(HeldUpload::start(format!("{base}/segmentapi"), &photo).await);
    }
    wait_in_flight(&base, IN_FLIGHT).await;
    check_drain(server.addr, held, || {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap()
    })
    .await;

    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    // The log thread ends with the process; give it a moment to drain the pipe.
    let want = [
        "SIGTERM received",
        "shutting down: readiness off, draining",
        "shutdown complete",
    ];
    for _ in 0..100 {
        let got = messages.lock().unwrap().clone();
        if want.iter().all(|m| got.iter().any(|x| x == m)) {
            let not_json = server_not_json.lock().unwrap().clone();
            assert!(
                not_json.is_empty(),
                "log lines that are not JSON: {not_json:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = messages.lock().unwrap().clone();
    panic!("missing shutdown messages in the log: {got:?}");
}
