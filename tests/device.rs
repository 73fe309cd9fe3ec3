//! `--device`: the flags and their environment variables, the defaults a GPU changes, the
//! startup errors of `cuda` and `tensorrt` where they cannot work (this CPU-only build),
//! and `auto` falling back to the CPU and saying so in `/v1/models`, the KServe metadata and
//! the `segserve_model_device` metric. The tests that need an NVIDIA GPU and the GPU build
//! of ONNX Runtime (`make setup DEVICE=cuda`) are ignored; run them there, with the CUDA 13
//! and cuDNN 9 libraries on the loader's path, as
//! `cargo test --release --test tests -- --ignored device::`.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use common::client::{self, get_json, json_of, Detection};
use common::serve_args;
use segserve::cli::Cli;
use segserve::config::ServeConfig;
use segserve::engine::{Device, DeviceChoice};

/// The CPU-only library `make setup` downloads. Tests name it explicitly: a GPU choice would
/// otherwise prefer `.ort/gpu/` where that exists, and one process loads one library.
fn cpu_ort() -> PathBuf {
    let p = common::repo().join(".ort/libonnxruntime.so.1.31.1");
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

/// The GPU build `make setup DEVICE=cuda` puts in `.ort/gpu/`.
fn gpu_ort() -> PathBuf {
    let p = common::repo().join(".ort/gpu/libonnxruntime.so.1.31.1");
    assert!(
        p.is_file(),
        "{} missing: run `make setup DEVICE=cuda`",
        p.display()
    );
    p
}

fn config(extra: &[&str]) -> ServeConfig {
    let model = common::model("yolov8n-seg-320");
    let ort = cpu_ort();
    let mut argv = vec![
        "--model",
        model.to_str().unwrap(),
        "--ort-dylib",
        ort.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    ServeConfig::try_from(serve_args(&argv)).expect("valid config")
}

#[test]
fn device_flags_default_to_the_cpu_and_mirror_environment_variables() {
    let a = serve_args(&[]);
    assert_eq!(a.runtime.device, DeviceChoice::Cpu);
    assert_eq!(a.runtime.device_id, 0);
    assert_eq!(a.runtime.trt_cache_dir, None);
    assert!(!a.runtime.trt_fp16);

    let a = serve_args(&[
        "--device",
        "tensorrt",
        "--device-id",
        "3",
        "--trt-cache-dir",
        "/var/cache/trt",
        "--trt-fp16",
    ]);
    assert_eq!(a.runtime.device, DeviceChoice::TensorRt);
    assert_eq!(a.runtime.device_id, 3);
    assert_eq!(
        a.runtime.trt_cache_dir,
        Some(PathBuf::from("/var/cache/trt"))
    );
    assert!(a.runtime.trt_fp16);
    for value in ["cpu", "cuda", "tensorrt", "auto"] {
        let want: DeviceChoice = value.parse().unwrap();
        assert_eq!(serve_args(&["--device", value]).runtime.device, want);
    }
    let err = common::try_serve_args(["--device", "gpu"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("possible values: cpu, cuda, tensorrt, auto"),
        "{err}"
    );

    // Each flag reads the variable of its name, on both commands that run a model.
    let cmd = Cli::command();
    for sub in ["serve", "predict"] {
        let sub = cmd.find_subcommand(sub).unwrap();
        for (flag, env) in [
            ("device", "SEGSERVE_DEVICE"),
            ("device-id", "SEGSERVE_DEVICE_ID"),
            ("trt-cache-dir", "SEGSERVE_TRT_CACHE_DIR"),
            ("trt-fp16", "SEGSERVE_TRT_FP16"),
        ] {
            let arg = sub
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("--{flag}"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env),
                "--{flag}"
            );
        }
    }
}

#[test]
fn a_gpu_gets_its_own_pool_defaults_and_flags_override_both() {
    let c = config(&[]);
    let (cpu, gpu) = (
        c.runtime.pool_for(Device::Cpu),
        c.runtime.pool_for(Device::Cuda),
    );
    assert_eq!(
        (cpu.sessions, cpu.max_batch, cpu.queue_depth),
        (segserve::host::available_cpus(), 1, 32),
        "the measured CPU defaults stay as they were"
    );
    assert_eq!(gpu.sessions, 2, "a couple of sessions per GPU");
    assert_eq!(
        gpu.threads, cpu.threads,
        "one intra-op pool for the whole process"
    );
    assert_eq!(gpu.max_batch, 8, "batching on for dynamic-batch models");
    assert_eq!(gpu.queue_depth, 128);
    assert_eq!(c.runtime.pool_for(Device::TensorRt).sessions, 2);

    let c = config(&["--sessions", "3", "--max-batch", "4", "--queue-depth", "7"]);
    for d in [Device::Cpu, Device::Cuda] {
        let p = c.runtime.pool_for(d);
        assert_eq!((p.sessions, p.max_batch, p.queue_depth), (3, 4, 7), "{d}");
    }
    let err = ServeConfig::try_from(serve_args(&["--max-batch", "0"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-batch must be at least 1"), "{err}");
}

#[tokio::test]
async fn trt_cache_dir_is_created_when_the_models_load_not_when_flags_are_checked() {
    let dir = std::env::temp_dir().join(format!("segserve-trt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = config(&[
        "--device",
        "tensorrt",
        "--trt-cache-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!dir.exists(), "checking the flags made {}", dir.display());
    assert_eq!(
        c.runtime.device.trt_cache_dir.as_deref(),
        Some(dir.as_path())
    );
    // This machine has no GPU, so loading fails after the folder is made.
    let _ = segserve::models::load(&c.runtime).await;
    assert!(dir.is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the real binary to its exit (at most 30 s) and returns (status, stderr, time taken).
async fn run_binary(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, Duration) {
    let _turn = common::heavy();
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_segserve"));
    cmd.args(args)
        .env("ORT_DISABLE_TELEMETRY", "1")
        .env("RUST_BACKTRACE", "0")
        .env_remove("SEGSERVE_DEVICE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("segserve exits within 30 s")
        .expect("segserve runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// What every GPU startup error on a CPU-only build must say.
fn assert_names_what_is_missing(device: &str, stderr: &str) {
    assert!(
        stderr.contains(&format!("Error: --device {device} cannot run here: (1) ")),
        "{stderr}"
    );
    for needle in [
        "is a CPU-only build of ONNX Runtime",
        "CPUExecutionProvider",
        "onnxruntime-gpu==1.31.1",
        "libonnxruntime_providers_cuda.so",
        "make setup DEVICE=cuda",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
    // On a machine without the NVIDIA driver the message names that too.
    if !std::path::Path::new("/proc/driver/nvidia").exists() {
        assert!(
            stderr.contains("no NVIDIA driver: libcuda.so.1"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn cuda_on_a_cpu_only_build_fails_at_startup_naming_what_is_missing() {
    let ort = cpu_ort();
    let model = common::model("yolov8n-seg-320");
    let (status, stderr, took) = run_binary(
        &[
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--device",
            "cuda",
            "--model",
            model.to_str().unwrap(),
        ],
        &[("ORT_DYLIB_PATH", ort.to_str().unwrap())],
    )
    .await;
    assert!(
        !status.success(),
        "must not serve on the CPU instead: {stderr}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_names_what_is_missing("cuda", &stderr);
    assert!(stderr.contains("the CUDA execution provider"), "{stderr}");
}

#[tokio::test]
async fn tensorrt_from_the_environment_fails_the_same_way_in_predict() {
    let ort = cpu_ort();
    let model = common::model("yolov8n-seg-320");
    let photo = common::shared().join("testdata/bus.jpg");
    let (status, stderr, took) = run_binary(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            photo.to_str().unwrap(),
        ],
        &[
            ("ORT_DYLIB_PATH", ort.to_str().unwrap()),
            ("SEGSERVE_DEVICE", "tensorrt"),
        ],
    )
    .await;
    assert!(!status.success(), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_names_what_is_missing("tensorrt", &stderr);
    assert!(
        stderr.contains("the TensorRT execution provider"),
        "{stderr}"
    );
}

#[tokio::test]
async fn run_returns_the_device_error_instead_of_serving() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = segserve::run(
        config(&["--device", "cuda"]),
        listener,
        std::future::pending(),
    )
    .await
    .expect_err("--device cuda cannot start on a CPU-only build");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = format!("{err:#}");
    assert!(
        text.starts_with("--device cuda cannot run here: (1) "),
        "{text}"
    );
    assert!(text.contains("CPU-only build"), "{text}");
}

#[tokio::test]
async fn auto_falls_back_to_the_cpu_and_reports_it() {
    let ort = cpu_ort();
    let server =
        common::spawn_server(&["--device", "auto", "--ort-dylib", ort.to_str().unwrap()]).await;
    let client = reqwest::Client::new();
    let models: serde_json::Value = client
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"][0]["device"], "cpu", "{models}");
    let meta: serde_json::Value = client
        .get(server.url("/v2/models/yolov8n-seg-320"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["parameters"]["device"], "cpu", "{meta}");
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"segserve_model_device{model="yolov8n-seg-320",device="cpu"} 1"#),
        "{metrics}"
    );
    // And it still answers.
    let r = client
        .post(server.url("/v1/segment"))
        .header("content-type", "image/jpeg")
        .body(common::bus())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---- on an NVIDIA GPU ----------------------------------------------------------------------

/// `segserve serve` with the GPU build, once it is ready (model load and warm-up on a GPU
/// take seconds: cuDNN's algorithm search, TensorRT's engine build). Its log is printed
/// (shown when the test fails).
async fn spawn_binary(extra: &[&str]) -> common::Binary {
    let mut cmd = common::Binary::command(None);
    cmd.args(["--port", "0", "--model"])
        .arg(common::model("yolov8n-seg-320"))
        .args(extra)
        .env("ORT_DYLIB_PATH", gpu_ort())
        .env("RUST_BACKTRACE", "0")
        // Not in auditor mode, as these checks always ran: a GPU run's estimates are unaudited.
        .env_remove("SEGSERVE_AUDIT_MEMORY");
    let server = common::Binary::spawn(cmd, |v| eprintln!("segserve: {v}"));
    common::wait_ready(&server.url(""), Duration::from_secs(300)).await;
    server
}

async fn detections(base: &str) -> Vec<Detection> {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/segment?masks=none"))
        .header("content-type", "image/jpeg")
        .body(common::bus())
        .send()
        .await
        .unwrap();
    let (status, v) = json_of(r).await;
    assert_eq!(status, 200, "{v}");
    client::detections(&v)
}

async fn check_gpu_device(device: &str) {
    let server = spawn_binary(&["--device", device]).await;
    let (_, models) = get_json(server.url("/v1/models")).await;
    assert_eq!(models["models"][0]["device"], device);
    let gpu = detections(&server.url("")).await;
    drop(server);
    // The same photo on the CPU, in this process.
    let cpu_server = common::spawn_server(&["--ort-dylib", cpu_ort().to_str().unwrap()]).await;
    let cpu = detections(&cpu_server.url("")).await;
    assert_eq!(gpu.len(), cpu.len(), "gpu {gpu:?} cpu {cpu:?}");
    for (g, c) in gpu.iter().zip(&cpu) {
        assert_eq!(g.0, c.0, "class");
        assert!((g.1 - c.1).abs() <= 0.02, "score {} vs {}", g.1, c.1);
        for k in 0..4 {
            assert!((g.2[k] - c.2[k]).abs() <= 2.0, "box {:?} vs {:?}", g.2, c.2);
        }
    }
}

#[tokio::test]
#[ignore = "needs GPU"]
async fn cuda_serves_what_the_cpu_serves() {
    check_gpu_device("cuda").await;
}

#[tokio::test]
#[ignore = "needs GPU"]
async fn tensorrt_serves_what_the_cpu_serves() {
    check_gpu_device("tensorrt").await;
}

#[tokio::test]
#[ignore = "needs GPU"]
async fn auto_picks_a_gpu_when_there_is_one() {
    let server = spawn_binary(&["--device", "auto"]).await;
    let (_, models) = get_json(server.url("/v1/models")).await;
    let device = models["models"][0]["device"].as_str().unwrap().to_string();
    assert!(
        device == "tensorrt" || device == "cuda",
        "auto picked {device}"
    );
}
