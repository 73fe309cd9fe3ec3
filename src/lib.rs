//! segserve: instance segmentation over HTTP with Ultralytics YOLO ONNX models.
//!
//! `run` wires it together: load the models in the background (readiness stays 503 until
//! they are warm), serve the router, and shut down gracefully on the given signal.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | `main.rs`, [`cli`] | the command line: clap's flags, `predict` and `models` |
//! | [`config`] | the checked settings `run` takes |
//! | [`api`] | everything HTTP: connections, guards, extractors, handlers, replies |
//! | [`error`] | `AppError`: the only place statuses are chosen |
//! | [`options`] | what a request may ask for, whatever the front end (query, KServe, flags) |
//! | [`pipeline`] | one photo from bytes to an answer, under a stage place and a reservation |
//! | [`budget`] | the memory budget every request reserves from |
//! | [`imageio`] | header probing, decoding, letterboxing (whole or streamed from the decoder) |
//! | [`geometry`], [`resize`] | the photo's place on the model's canvas; OpenCV's bilinear resize |
//! | [`engine`] | ONNX Runtime sessions, output layouts, NMS, masks from prototypes, devices |
//! | [`mask`] | box-cropped masks and their encodings (COCO RLE, polygons) |
//! | [`render`] | drawing detections onto the photo |
//! | [`schema`] | the JSON shapes of results, shared by the API and the CLI |
//! | [`meter`] | the counting allocator: live heap, per-request live and peak bytes |
//! | [`telemetry`] | logs, and OpenTelemetry traces over OTLP |
//! | [`alloc`], [`shutdown`] | the allocator's settings; the shutdown signal |
//!
//! Dependencies point one way: `api` and `cli` use `pipeline`, `options` and `schema`;
//! `pipeline` uses `engine`, `imageio` and `budget`; none of those knows HTTP.
//!
//! # A request's path
//!
//! `api::server` accepts the connection (header timeout, connection cap) -> `api::security`
//! checks sizes, the key and the deadline -> `api::params::Params` parses the query and picks
//! the model -> `api::upload::ImageUpload` reads the photo, reserving its bytes ->
//! `pipeline::segment` takes a place in the model's compute stage, probes the header and
//! reserves the decode, decodes and letterboxes on the blocking pool, runs the model on an
//! inference thread, decodes outputs and masks (reserving them once the boxes are known) and
//! builds the answer on the blocking pool -> `api::reply` sends it, holding its reservation
//! until it is gone -> the request middleware logs it and counts it.

pub mod alloc;
pub mod api;
pub mod budget;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod geometry;
pub mod imageio;
pub mod mask;
pub mod meter;
pub mod options;
pub mod pipeline;
pub mod render;
pub mod resize;
pub mod schema;
pub mod shutdown;
pub mod telemetry;

/// Every Rust allocation goes through the meter (see [`meter`]); tests and benchmarks that
/// link this crate are measured the same way.
#[cfg(feature = "alloc-meter")]
#[global_allocator]
static ALLOCATOR: meter::Counting = meter::Counting;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::api::AppState;
use crate::config::{ModelSpec, RuntimeConfig, ServeConfig};
use crate::engine::{device, session, Device, DeviceChoice, Engine, Registry};

/// Installs the process-wide Prometheus recorder once and returns its handle
/// (a process has one recorder; tests start several servers in one process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS: [f64; 14] = [
                0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            const COUNTS: [f64; 10] = [0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &SECONDS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "segserve_detections_per_image".into(),
                        ),
                        &COUNTS,
                    )
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application); then our
            // handle simply renders nothing, which is better than failing to start.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// `# HELP` lines for every series, so a scrape explains itself.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "segserve_requests_total",
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        "segserve_request_duration_seconds",
        Unit::Seconds,
        "HTTP request duration, by route template"
    );
    describe_gauge!(
        "segserve_requests_in_flight",
        "HTTP requests being handled now"
    );
    describe_counter!(
        "segserve_requests_shed_total",
        "requests refused with 503 to protect latency, by model and reason"
    );
    describe_histogram!(
        "segserve_queue_wait_seconds",
        Unit::Seconds,
        "time a request waited for a free session, by model"
    );
    describe_histogram!(
        "segserve_inference_seconds",
        Unit::Seconds,
        "ONNX Runtime Session::run time, by model"
    );
    describe_gauge!(
        "segserve_model_load_seconds",
        Unit::Seconds,
        "time to load a model's sessions at startup, by model"
    );
    describe_gauge!(
        "segserve_queue_pending_requests",
        "requests waiting for a place in the compute stage, by model"
    );
    describe_gauge!(
        "segserve_compute_busy",
        "places of the compute stage in use (decode to answer), by model"
    );
    describe_gauge!(
        "segserve_compute_places",
        "places of the compute stage (two per session, more when batching), by model"
    );
    describe_histogram!(
        "segserve_detections_per_image",
        "objects returned per segmented image"
    );
    describe_gauge!(
        "segserve_memory_reserved_bytes",
        Unit::Bytes,
        "working memory reserved by requests in flight (see --memory-budget)"
    );
    describe_gauge!(
        "segserve_memory_budget_bytes",
        Unit::Bytes,
        "the memory budget requests reserve from"
    );
    describe_gauge!(
        "segserve_model_device",
        "1 for the device (cpu, cuda, tensorrt) each model runs on"
    );
}

/// Loads every configured model (runtime library first) and warms each one up.
pub async fn load_models(rt: &RuntimeConfig) -> anyhow::Result<Registry> {
    let started = Instant::now();
    let rt2 = rt.clone();
    let engines = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Engine>> {
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

/// How often histogram upkeep runs: the exporter folds recorded samples into buckets only
/// when it renders or upkeeps, so without it samples pile up between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

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

/// Serves on `listener` until `shutdown` resolves, then drains: readiness goes 503 at once,
/// the listener stays open for `shutdown_drain` (so load balancers stop routing here; answers
/// then carry `Connection: close`), then closes, and in-flight requests get
/// `shutdown_timeout` to finish.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    budget::set_audit(config.audit_memory);
    let state = AppState::new(config.clone(), metrics_handle());
    tracing::info!(
        memory_budget_mib = state.budget.limit() >> 20,
        "memory budget for requests"
    );
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    let loader_state = state.clone();
    tokio::spawn(async move {
        match load_models(&loader_state.config.runtime).await {
            Ok(reg) => {
                let _ = loader_state.models.set(reg);
                api::set_ready(&loader_state, true);
            }
            Err(e) => {
                let _ = fatal_tx.send(e).await;
            }
        }
    });
    let upkeep = state.metrics.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });

    let app = api::router(state.clone());
    let (begin_tx, begin_rx) = tokio::sync::oneshot::channel::<()>();
    let fatal: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
    let fatal2 = fatal.clone();
    let drain_state = state.clone();
    let (drain, grace) = (config.shutdown_drain, config.shutdown_timeout);
    let graceful = async move {
        tokio::select! {
            _ = shutdown => {
                api::set_ready(&drain_state, false);
                drain_state.draining.store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down: readiness off, draining");
                tokio::time::sleep(drain).await;
            }
            Some(e) = fatal_rx.recv() => {
                tracing::error!(error = %format!("{e:#}"), "startup failed");
                *fatal2.lock().expect("fatal slot lock poisoned") = Some(e);
            }
        }
        let _ = begin_tx.send(());
        tracing::info!("listener closed; waiting for in-flight requests");
    };
    let probes = match config.probe_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on the probe port {addr}"))?;
            tracing::info!(%addr, "probes and metrics also served on their own port");
            let app = api::probe_router(state.clone());
            Some(tokio::spawn(api::server::serve_probes(
                l,
                app,
                std::future::pending(),
            )))
        }
        None => None,
    };
    let grpc = api::grpc::Gateway::new(state.clone());
    // The gRPC port is the main port twice over (its own connection caps): it stops
    // accepting when the main port does, and its calls finish under the same deadline.
    let (second_stop_tx, second_stop_rx) = tokio::sync::watch::channel(false);
    let second = match config.grpc_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on the gRPC port {addr}"))?;
            tracing::info!(%addr, "gRPC (and the HTTP API) also served on its own port");
            let mut stop = second_stop_rx;
            Some(tokio::spawn(api::server::serve(
                l,
                app.clone(),
                grpc.clone(),
                config.connections,
                config.max_header_bytes,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    let graceful = async move {
        graceful.await;
        let _ = second_stop_tx.send(true);
    };
    let server = api::server::serve(
        listener,
        app,
        grpc,
        config.connections,
        config.max_header_bytes,
        graceful,
    );
    let deadline = async move {
        if begin_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = server => {}
        _ = deadline => tracing::warn!(timeout_ms = grace.as_millis() as u64, "in-flight requests did not finish in time; exiting anyway"),
    }
    upkeep.abort();
    if let Some(g) = second {
        g.abort();
    }
    if let Some(p) = probes {
        p.abort();
    }
    if let Some(e) = fatal.lock().expect("fatal slot lock poisoned").take() {
        return Err(e);
    }
    tracing::info!("shutdown complete");
    Ok(())
}
