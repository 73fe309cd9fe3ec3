//! Which port `segserve serve` listens on: `--port`, else `SEGSERVE_PORT`, else `PORT` (what
//! Knative, and so KServe's serverless mode, sets for the container), else 5000. Runs the
//! real binary with each environment, as a platform would start it (the environment is the
//! child's own, so these tests cannot disturb others running in this process).

use crate::common;

use std::net::SocketAddr;

use common::client::refused;
use common::{free_port, Binary};

/// The binary with the flags and environment a platform would give it, where it listens.
fn start(flags: &[String], env: &[(&str, String)]) -> Binary {
    let model = common::model("yolov8n-seg-320");
    let mut cmd = Binary::command(None);
    cmd.args(["--sessions", "1", "--model"])
        .arg(model)
        .args(flags)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Binary::spawn(cmd, |_| {})
}

/// Checks that `server` listens on `port` and answers `/healthz` there (the listener is
/// bound before the models load).
async fn answers_on(server: &Binary, port: u16) {
    assert_eq!(server.addr.port(), port, "listening on the wrong port");
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn port_comes_from_the_flag_then_segserve_port_then_port() {
    let (platform, ours, flag) = (free_port(), free_port(), free_port());

    // Only PORT, as on Knative: it is used.
    let s = start(&[], &[("PORT", platform.to_string())]);
    answers_on(&s, platform).await;
    drop(s);

    // SEGSERVE_PORT is more specific than the platform's PORT.
    let s = start(
        &[],
        &[
            ("PORT", platform.to_string()),
            ("SEGSERVE_PORT", ours.to_string()),
        ],
    );
    answers_on(&s, ours).await;
    assert!(refused(local(platform)).await, "also listening on PORT");
    drop(s);

    // The flag wins over both variables.
    let s = start(
        &["--port".into(), flag.to_string()],
        &[
            ("PORT", platform.to_string()),
            ("SEGSERVE_PORT", ours.to_string()),
        ],
    );
    answers_on(&s, flag).await;
    assert!(refused(local(platform)).await && refused(local(ours)).await);
}

#[test]
fn a_malformed_port_variable_stops_the_server_with_a_clear_message() {
    let model = common::model("yolov8n-seg-320");
    let out = Binary::command(None)
        .arg("--model")
        .arg(model)
        .env("PORT", "http")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PORT is set to \"http\""),
        "stderr: {stderr}"
    );
}
