//! The bare ONNX Runtime floor on any device, for comparing the server with: `--sessions`
//! sessions, each on its own thread, run the model on a fixed grey tensor for `--seconds`,
//! with no HTTP and no image work. Prints one JSON line (p50/p90/p99 ms, images/s).
//! `benches/limit.rs` does the same on the CPU for `make bench`; this one takes a device and
//! is built into the GPU bundle (scripts/gpu-bundle.sh), where there is no cargo.
//!
//! `ort_floor --model models/yolov8n-seg-320.onnx --device cuda --sessions 2 --seconds 5
//!  [--device-id 0] [--threads 1] [--ort-dylib path]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use segserve::config::locate_ort_for;
use segserve::engine::{device, run_session, session, Device, DeviceChoice, DeviceConfig};

/// Bare `Session::run` throughput and latency on one device.
#[derive(Debug, Parser)]
struct Args {
    /// ONNX model.
    #[arg(long, default_value = "models/yolov8n-seg-320.onnx")]
    model: PathBuf,
    /// cpu, cuda or tensorrt (auto is not a device to measure).
    #[arg(long, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    device_id: u32,
    /// Sessions, each run by its own thread.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Intra-op threads per session.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured time, after warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// libonnxruntime; default as the server finds it.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_dylib: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let args = Args::parse();
    let dev = match args.device {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda => Device::Cuda,
        DeviceChoice::TensorRt => Device::TensorRt,
        DeviceChoice::Auto => anyhow::bail!("measure one device: cpu, cuda or tensorrt"),
    };
    let lib = locate_ort_for(args.ort_dylib.as_deref(), args.device)?;
    session::init_runtime(&lib, segserve::host::available_cpus())?;
    // The same checks as the server, so a missing library is named here too.
    device::check(dev, &lib, args.device_id)?;
    let cfg = DeviceConfig {
        choice: args.device,
        device_id: args.device_id,
        ..DeviceConfig::default()
    };
    let name = args
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let probe = session::build_session(&args.model, 1)?;
    let info = session::inspect(&probe, &name)?;
    drop(probe);
    let providers = device::execution_providers(dev, &cfg, None);
    let (h, w) = info.input_hw;
    let input = vec![114.0f32 / 255.0; 3 * h * w];

    // Build and warm every session before the clock starts (cuDNN's algorithm search and
    // TensorRT's engine build belong to startup, as in the server).
    let t_build = Instant::now();
    let mut built = Vec::new();
    for _ in 0..args.sessions.max(1) {
        let mut s = session::build_session_with(
            &args.model,
            session::Threads::Own(args.threads.max(1)),
            &providers,
        )?;
        for _ in 0..3 {
            run_session(&mut s, &info, &input)?;
        }
        built.push(s);
    }
    let build_s = t_build.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let handles: Vec<_> = built
        .into_iter()
        .map(|mut s| {
            let (info, input) = (info.clone(), input.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    run_session(&mut s, &info, &input)?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a session thread panicked"))??,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    anyhow::ensure!(!lat.is_empty(), "no run finished in {} s", args.seconds);
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "model": name,
            "device": dev.as_str(),
            "sessions": args.sessions.max(1),
            "threads": args.threads.max(1),
            "runs": lat.len(),
            "seconds": elapsed,
            "build_and_warm_s": build_s,
            "p50_ms": pct(0.5),
            "p90_ms": pct(0.9),
            "p99_ms": pct(0.99),
            "ips": lat.len() as f64 / elapsed,
        })
    );
    Ok(())
}
