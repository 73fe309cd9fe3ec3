//! The helpers every topic shares, written once: where the shared models and photos are,
//! parsing `serve` flags as the binary does (`serve_args`), `spawn_server()` (the real
//! server in-process on 127.0.0.1:0) and `Binary` (the release binary, as a pod runs it),
//! request bodies (`multipart`); and in submodules the client helpers (`client`: JSON
//! answers, held uploads, /metrics scrapes), the image makers (`craft`), the manifest
//! renderer (`k8s`: `kubectl kustomize`, the series an autoscaling query reads), the
//! protocol's tensor bytes (`tensors`) and who runs beside whom in this one process
//! (`turns`).

pub mod client;
pub mod craft;
pub mod k8s;
pub mod tensors;
pub mod turns;

use std::ffi::OsString;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use segserve::cli::{Cli, Command, ServeArgs};
use segserve::config::ServeConfig;

pub use turns::{exclusive, heavy, in_own_process};

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

/// Photos in ../shared/testdata, sorted.
pub fn photos() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared().join("testdata"))
        .expect("../shared/testdata")
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Ultralytics' answer for the photo `file` with `model` (../shared/golden).
pub fn golden(model: &str, file: &str) -> serde_json::Value {
    let path = shared()
        .join("golden")
        .join(model)
        .join(format!("{file}.json"));
    serde_json::from_slice(&std::fs::read(path).expect("golden file")).unwrap()
}

/// A port nobody listens on right now (bound, read, released: another process could take
/// it before the caller binds it, which the caller then reports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
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

/// `segserve serve <flags>` parsed as the binary parses it (clap reads the flags'
/// environment variables too).
pub fn try_serve_args<I, T>(flags: I) -> Result<ServeArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv = ["segserve", "serve"]
        .into_iter()
        .map(OsString::from)
        .chain(flags.into_iter().map(Into::into));
    let cli = <Cli as clap::Parser>::try_parse_from(argv)?;
    let Command::Serve(a) = cli.command else {
        panic!("serve flags parse as Serve")
    };
    Ok(a)
}

/// [`try_serve_args`] for flags that must be valid.
pub fn serve_args(flags: &[&str]) -> ServeArgs {
    try_serve_args(flags).unwrap_or_else(|e| panic!("invalid flags {flags:?}: {e}"))
}

/// The configuration of a test server: the default test model, no drain delay, auditor
/// mode, then `extra`.
pub fn serve_config(extra: &[&str]) -> ServeConfig {
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let model = model("yolov8n-seg-320");
    let mut flags = vec![
        "--model",
        model.to_str().unwrap(),
        "--shutdown-drain-ms",
        "0",
        // Auditor mode: a request whose measured memory passes its reservation fails (500).
        "--audit-memory",
    ];
    flags.extend_from_slice(extra);
    ServeConfig::try_from(serve_args(&flags)).expect("valid test config")
}

/// `serve` with environment settings turned into the flags they mirror and parsed as the
/// binary parses them, so a value the binary would reject (a typo in a manifest) fails here.
pub fn serve_args_from_env(env: &std::collections::BTreeMap<String, String>) -> ServeArgs {
    let cmd = <Cli as clap::CommandFactory>::command();
    let serve = cmd.find_subcommand("serve").unwrap();
    let mut flags = Vec::new();
    for (name, value) in env {
        if let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        {
            flags.push(format!(
                "--{}",
                arg.get_long().expect("env args have long flags")
            ));
            flags.push(value.clone());
        }
    }
    try_serve_args(flags)
        .unwrap_or_else(|e| panic!("the manifest's values are rejected by the binary: {e}"))
}

/// A running server.
pub struct TestServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Resolve to trigger graceful shutdown.
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server task.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Inference here loads the machine: no measuring test runs meanwhile.
    _turn: turns::Turn,
}

impl TestServer {
    /// `http://addr` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Starts the real server on 127.0.0.1:0 with [`serve_config`]`(extra)` and waits until
/// /readyz answers 200.
pub async fn spawn_server(extra: &[&str]) -> TestServer {
    start_server(serve_config(extra)).await
}

/// Starts the real server with `config` on 127.0.0.1:0 and waits until /readyz answers 200.
pub async fn start_server(config: ServeConfig) -> TestServer {
    let turn = heavy();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(segserve::run(config, listener, async move {
        let _ = rx.await;
    }));
    wait_ready(&format!("http://{addr}"), Duration::from_secs(30)).await;
    TestServer {
        addr,
        shutdown: Some(tx),
        handle,
        _turn: turn,
    }
}

/// Polls `base`/readyz until it answers 200 (model load and warm-up take a moment; it is
/// the behaviour under test, not a sleep).
pub async fn wait_ready(base: &str, within: Duration) {
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become ready within {within:?}");
}

/// The release binary `segserve serve`, started on 127.0.0.1 with JSON logs, as Kubernetes
/// runs it; killed when dropped. Its log lines reach `on_log` (on a thread).
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Its address.
    pub addr: SocketAddr,
    /// Log lines that were not one JSON object each (there should be none).
    pub not_json: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The process loads the machine: no measuring test runs meanwhile.
    _turn: turns::Turn,
}

impl Binary {
    /// `bin serve` (this build's binary by default) on 127.0.0.1 with JSON logs, in the
    /// tests' environment: no port variables, auditor mode, telemetry off. The caller adds
    /// the port and the rest.
    pub fn command(bin: Option<&str>) -> Process {
        let mut cmd = Process::new(bin.unwrap_or(env!("CARGO_BIN_EXE_segserve")));
        cmd.args(["serve", "--host", "127.0.0.1", "--log-format", "json"])
            .env("ORT_DISABLE_TELEMETRY", "1")
            // Auditor mode (see `budget::set_audit`): every estimate miss fails the test.
            .env("SEGSERVE_AUDIT_MEMORY", "1")
            .env_remove("SEGSERVE_PORT")
            .env_remove("PORT");
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            cmd.env(
                "ORT_DYLIB_PATH",
                repo().join(".ort").join(segserve::config::ORT_LIB_NAME),
            );
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,ort=warn");
        }
        cmd
    }

    /// Starts `bin` (this build's binary by default) with `serve` on a free port and
    /// `args`, and waits for it to print where it listens. Every log line goes to `on_log`.
    pub fn start(
        bin: Option<&str>,
        args: &[String],
        on_log: impl Fn(serde_json::Value) + Send + 'static,
    ) -> Binary {
        let mut cmd = Binary::command(bin);
        cmd.args(["--port", "0"]).args(args);
        Binary::spawn(cmd, on_log)
    }

    /// Runs `cmd` (from [`Binary::command`]) and waits for it to print where it listens.
    pub fn spawn(mut cmd: Process, on_log: impl Fn(serde_json::Value) + Send + 'static) -> Binary {
        let turn = heavy();
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
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
            .unwrap_or_else(|_| {
                let status = child.try_wait().ok().flatten();
                panic!("the server printed no address within 30 s (exit: {status:?})")
            });
        Binary {
            child,
            addr,
            not_json,
            _turn: turn,
        }
    }

    /// `http://addr` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls /readyz until it answers 200 (model load and warm-up take a moment).
    pub async fn wait_ready(&self) {
        wait_ready(&self.url(""), Duration::from_secs(30)).await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
