//! Shared test helpers: where the shared models and photos are, ONNX Runtime setup, and
//! `spawn_server()` which runs the real server on 127.0.0.1:0.
#![allow(dead_code)]

pub mod craft;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use segserve::cli::{Cli, Command};
use segserve::config::ServeConfig;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the repository (models, photos, golden outputs).
pub fn shared() -> PathBuf {
    repo().join("..").join("shared")
}

/// A model file as the setup step placed it in `models/`.
pub fn model(name: &str) -> PathBuf {
    let p = repo().join("models").join(format!("{name}.onnx"));
    assert!(
        p.is_file(),
        "{} missing: run `make setup` first",
        p.display()
    );
    p
}

/// Photos in ../shared/testdata, sorted.
pub fn photos() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared().join("testdata"))
        .expect("../shared/testdata")
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A running server.
pub struct TestServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Resolve to trigger graceful shutdown.
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server task.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// `http://addr` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Parses `serve` flags the way the binary does (so env-var names are exercised too).
pub fn serve_config(extra: &[&str]) -> ServeConfig {
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let model = model("yolov8n-seg-320");
    let mut args = vec![
        "segserve".to_string(),
        "serve".into(),
        "--model".into(),
        model.display().to_string(),
        "--shutdown-drain-ms".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("valid test flags");
    let Command::Serve(a) = cli.command else {
        panic!("serve flags parse as Serve")
    };
    ServeConfig::try_from(a).expect("valid test config")
}

/// Starts the real server on 127.0.0.1:0 and waits until /readyz answers 200.
pub async fn spawn_server(extra: &[&str]) -> TestServer {
    let config = serve_config(extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(segserve::run(config, listener, async move {
        let _ = rx.await;
    }));
    let server = TestServer {
        addr,
        shutdown: Some(tx),
        handle,
    };
    wait_ready(&server).await;
    server
}

/// Polls readiness (model load takes a moment; it is the behaviour under test, not a sleep).
pub async fn wait_ready(server: &TestServer) {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(server.url("/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready within 30 s");
}
