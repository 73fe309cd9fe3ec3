//! Loading the configured models: the runtime library, a device for each model, its
//! sessions, and a warm-up run, before readiness turns on. `segserve serve` and
//! `segserve predict` both load through here.

use std::time::Instant;

use anyhow::Context;

use crate::config::{ModelSpec, RuntimeConfig};
use crate::engine::{device, session, Device, DeviceChoice, DeviceConfig, Engine, Registry};
use crate::pipeline;

/// Loads every configured model (runtime library first) and warms each one up.
pub async fn load(rt: &RuntimeConfig) -> anyhow::Result<Registry> {
    let started = Instant::now();
    let rt2 = rt.clone();
    let engines = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Engine>> {
        make_trt_cache_dir(&rt2.device)?;
        session::init_runtime(&rt2.ort_dylib, rt2.pool.threads)?;
        let devices = device::usable(&rt2.device, &rt2.ort_dylib)?;
        rt2.models
            .iter()
            .map(|m| {
                let t = Instant::now();
                let e = load_engine(m, &rt2, &devices)?;
                metrics::gauge!("segserve_model_load_seconds", "model" => m.name.clone())
                    .set(t.elapsed().as_secs_f64());
                metrics::gauge!("segserve_model_device", "model" => m.name.clone(), "device" => e.device().as_str())
                    .set(1.0);
                Ok(e)
            })
            .collect()
    })
    .await
    .context("model loading task failed")??;
    for e in &engines {
        pipeline::warm_up(e)
            .await
            .with_context(|| format!("warm-up inference of {} failed", e.info().name))?;
        let info = e.info();
        tracing::info!(
            model = %info.name, task = info.task.as_str(), input = ?info.input_hw, classes = info.names.len(),
            device = %e.device(), sessions = e.pool().sessions, threads = e.pool().threads, "model ready"
        );
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "all models loaded and warmed up"
    );
    Ok(Registry::new(engines))
}

/// TensorRT writes its engines into `--trt-cache-dir`; made here, at load time, so that
/// checking the flags has no side effects.
fn make_trt_cache_dir(cfg: &DeviceConfig) -> anyhow::Result<()> {
    if let Some(dir) = &cfg.trt_cache_dir {
        if matches!(cfg.choice, DeviceChoice::TensorRt | DeviceChoice::Auto) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --trt-cache-dir {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Loads one model on the first of `devices` that works. Only `auto` passes more than one:
/// a GPU that passed its checks can still fail to build a session (out of memory, say),
/// and then the next device is tried, with a warning that says why.
fn load_engine(m: &ModelSpec, rt: &RuntimeConfig, devices: &[Device]) -> anyhow::Result<Engine> {
    let mut failed = None;
    for &d in devices {
        match Engine::load_on(&m.path, &m.name, rt.pool_for(d).clone(), d, &rt.device) {
            Ok(e) => {
                if rt.device.choice == DeviceChoice::Auto {
                    tracing::info!(model = %m.name, device = %d, "device auto: using {d}");
                }
                return Ok(e);
            }
            Err(e) if d != Device::Cpu && devices.len() > 1 => {
                tracing::warn!(model = %m.name, device = %d, error = %e,
                    "device auto: cannot load on {d}, trying the next device");
                failed = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(failed.expect("the device list is never empty").into())
}
