//! Shared test helpers: where the shared models and photos are, `spawn_server()` (the real
//! server in-process on 127.0.0.1:0) and `Binary` (the release binary, as a pod runs it),
//! request bodies (`multipart`), and in submodules the client helpers (`client`: held
//! uploads, /metrics scrapes), the image makers (`craft`) and the manifest renderer (`k8s`:
//! `kubectl kustomize`, the series an autoscaling query reads) and the protocol's tensor bytes
//! (`tensors`).
#![allow(dead_code)]

pub mod client;
pub mod craft;
pub mod k8s;
pub mod tensors;

use std::io::BufRead;
use std::process::{Child, Command as Process, Stdio};

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

/// A photo of ../shared/testdata, read.
pub fn photo(name: &str) -> Vec<u8> {
    std::fs::read(shared().join("testdata").join(name)).expect("../shared/testdata photo")
}

/// bus.jpg: 810 x 1080, a bus and three people (four detections with the default model).
pub fn bus() -> Vec<u8> {
    photo("bus.jpg")
}

/// Boundary of the forms `multipart` writes.
pub const BOUNDARY: &str = "segserve-test-boundary";

/// A multipart form with one file part: (content type, body).
pub fn multipart(field: &str, filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// The same as a reqwest form.
pub fn form(field: &str, data: Vec<u8>, filename: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        field.to_string(),
        reqwest::multipart::Part::bytes(data).file_name(filename.to_string()),
    )
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
        // Auditor mode: a request whose measured memory passes its reservation fails (500).
        "--audit-memory".into(),
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

/// The release binary `segserve serve`, started on 127.0.0.1 and a free port with JSON logs,
/// as Kubernetes runs it; killed when dropped. Its log lines reach `on_log` (on a thread).
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Its address.
    pub addr: SocketAddr,
    /// Log lines that were not one JSON object each (there should be none).
    pub not_json: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts `bin` (this build's binary by default) with `serve` and `args`, and waits for
    /// it to print where it listens. Every log line goes to `on_log`.
    pub fn start(
        bin: Option<&str>,
        args: &[String],
        on_log: impl Fn(serde_json::Value) + Send + 'static,
    ) -> Binary {
        let mut cmd = Process::new(bin.unwrap_or(env!("CARGO_BIN_EXE_segserve")));
        cmd.args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-format",
            "json",
        ])
        .args(args)
        .env("ORT_DISABLE_TELEMETRY", "1")
        // Auditor mode (see `budget::set_audit`): every estimate miss fails the test.
        .env("SEGSERVE_AUDIT_MEMORY", "1")
        .env_remove("SEGSERVE_PORT")
        .env_remove("PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            cmd.env(
                "ORT_DYLIB_PATH",
                repo().join(".ort").join(segserve::config::ORT_LIB_NAME),
            );
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,ort=warn");
        }
        let mut child = cmd.spawn().expect("start target/release/segserve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let not_json = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let bad = not_json.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(v @ serde_json::Value::Object(_)) => v,
                    _ => {
                        bad.lock().unwrap().push(line);
                        continue;
                    }
                };
                if v["message"] == "listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap().parse().unwrap());
                }
                on_log(v);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server printed its address");
        Binary {
            child,
            addr,
            not_json,
        }
    }

    /// `http://addr` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls /readyz until it answers 200 (model load and warm-up take a moment).
    pub async fn wait_ready(&self) {
        let c = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = c.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the binary did not become ready within 30 s");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` with environment settings turned into the flags they mirror and parsed as the
/// binary parses them, so a value the binary would reject (a typo in a manifest) fails here.
pub fn serve_args_from_env(
    env: &std::collections::BTreeMap<String, String>,
) -> segserve::cli::ServeArgs {
    let cmd = <Cli as clap::CommandFactory>::command();
    let serve = cmd.find_subcommand("serve").unwrap();
    let mut argv = vec!["segserve".to_string(), "serve".to_string()];
    for (name, value) in env {
        if let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        {
            argv.push(format!(
                "--{}",
                arg.get_long().expect("env args have long flags")
            ));
            argv.push(value.clone());
        }
    }
    let cli = <Cli as clap::Parser>::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the manifest's values are rejected by the binary: {e}"));
    let Command::Serve(a) = cli.command else {
        panic!("expected the serve command")
    };
    a
}
