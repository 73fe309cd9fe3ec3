//! The Prometheus recorder: installed once per process, every series described, and the
//! upkeep that folds histogram samples into buckets between scrapes.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder once and returns its handle
/// (a process has one recorder; tests start several servers in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS: [f64; 14] = [
                0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            const COUNTS: [f64; 10] = [0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("segserve_detections_per_image".into()),
                        &COUNTS,
                    )
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application); then our
            // handle simply renders nothing, which is better than failing to start.
            if ::metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// `# HELP` lines for every series, so a scrape explains itself.
fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
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
        "segserve_log_lines_dropped_total",
        "log lines dropped because the log writer's buffer was full (a stalled log reader)"
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

/// How often histogram upkeep runs: the exporter folds recorded samples into buckets only
/// when it renders or upkeeps, so without it samples pile up between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Runs the histogram upkeep every 5 s until the task is aborted.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        let dropped = metrics::counter!("segserve_log_lines_dropped_total");
        loop {
            tick.tick().await;
            handle.run_upkeep();
            dropped.absolute(crate::telemetry::dropped_log_lines());
        }
    })
}
