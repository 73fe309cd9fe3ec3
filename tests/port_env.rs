//! Which port `segserve serve` listens on: `--port`, else `SEGSERVE_PORT`, else `PORT` (what
//! Knative, and so KServe's serverless mode, sets for the container), else 5000. Runs the
//! real binary with each environment, as a platform would start it (the environment is the
//! child's own, so these tests cannot disturb others running in this process).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port nobody listens on right now (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The server process; killed when dropped, so a failing test leaves nothing behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(flags: &[String], env: &[(&str, String)]) -> Server {
    let model = common::model("yolov8n-seg-320");
    let child = Command::new(env!("CARGO_BIN_EXE_segserve"))
        .args(["serve", "--host", "127.0.0.1", "--sessions", "1"])
        .arg("--model")
        .arg(model)
        .args(flags)
        .env_remove("PORT")
        .env_remove("SEGSERVE_PORT")
        .env("ORT_DISABLE_TELEMETRY", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/release/segserve");
    Server(child)
}

/// Waits until `/healthz` answers on `port` (the listener is bound before the models load).
async fn answers_on(server: &mut Server, port: u16) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            return;
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("the server exited ({status}) instead of listening on {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing answered on port {port} within 30 s");
}

async fn refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
}

#[tokio::test]
async fn port_comes_from_the_flag_then_segserve_port_then_port() {
    let (platform, ours, flag) = (free_port(), free_port(), free_port());

    // Only PORT, as on Knative: it is used.
    let mut s = start(&[], &[("PORT", platform.to_string())]);
    answers_on(&mut s, platform).await;
    drop(s);

    // SEGSERVE_PORT is more specific than the platform's PORT.
    let mut s = start(
        &[],
        &[
            ("PORT", platform.to_string()),
            ("SEGSERVE_PORT", ours.to_string()),
        ],
    );
    answers_on(&mut s, ours).await;
    assert!(refused(platform).await, "also listening on PORT");
    drop(s);

    // The flag wins over both variables.
    let mut s = start(
        &["--port".into(), flag.to_string()],
        &[
            ("PORT", platform.to_string()),
            ("SEGSERVE_PORT", ours.to_string()),
        ],
    );
    answers_on(&mut s, flag).await;
    assert!(refused(platform).await && refused(ours).await);
}

#[test]
fn a_malformed_port_variable_stops_the_server_with_a_clear_message() {
    let model = common::model("yolov8n-seg-320");
    let out = Command::new(env!("CARGO_BIN_EXE_segserve"))
        .args(["serve", "--host", "127.0.0.1"])
        .arg("--model")
        .arg(model)
        .env_remove("SEGSERVE_PORT")
        .env("PORT", "http")
        .env("ORT_DISABLE_TELEMETRY", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PORT is set to \"http\""),
        "stderr: {stderr}"
    );
}
