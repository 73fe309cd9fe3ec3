//! Shared setup for the benchmarks: ONNX Runtime, models and photos from the repository.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn photo(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("../shared/testdata").join(name)).expect("../shared/testdata photo")
}

pub fn model(name: &str) -> PathBuf {
    let p = repo().join("models").join(format!("{name}.onnx"));
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

pub fn init_ort() {
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let lib = segserve::config::locate_ort(None).expect("libonnxruntime (make setup)");
    segserve::engine::session::init_runtime(&lib, segserve::host::available_cpus())
        .expect("ONNX Runtime loads");
}

/// The model benchmarks use, overridable for the 640 or int8 variants.
pub fn model_name() -> String {
    std::env::var("SEGSERVE_BENCH_MODEL").unwrap_or_else(|_| "yolov8n-seg-320".into())
}

/// The benchmarks' engine: one session, nothing queued behind it.
pub fn engine(name: &str) -> segserve::engine::Engine {
    segserve::engine::Engine::load(
        &model(name),
        name,
        segserve::engine::PoolConfig {
            sessions: 1,
            threads: 1,
            queue_depth: 1,
            queue_timeout: std::time::Duration::from_secs(60),
            max_batch: 1,
            batch_window: std::time::Duration::ZERO,
        },
    )
    .unwrap()
}
