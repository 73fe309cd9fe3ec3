//! Logs and traces. Every command logs through the subscriber set up here; `serve` can also
//! export OpenTelemetry traces over OTLP (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), as Triton and
//! text-embeddings-inference do: a span per request, joined to the caller's W3C
//! `traceparent`, with a child span per stage (queue, decode, letterbox, inference, masks,
//! encode).
//!
//! Free when off: the stage spans are at debug level, which only the exporter's filter
//! enables, so without it their callsites are disabled once and cost a relaxed load each.
//! The request span is there either way, at info level: it carries the request id (and the
//! trace id, when the caller sent one) into every log line of the request.
//!
//! Log lines are written by a thread of their own (`tracing-appender`'s non-blocking
//! writer): a request's access line costs a copy into a channel, not a `write` to stderr on
//! an async worker, and a stalled log reader (a full pipe to a log shipper) cannot stall
//! requests. When its buffer is full, lines are dropped and counted
//! (`segserve_log_lines_dropped_total`) rather than waited for.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Whether spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The log writer's count of lines it dropped (set once by [`init`]).
static DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped so far because the log writer's buffer was full.
pub fn dropped_log_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`, port 4318 by convention).
    HttpProtobuf,
    /// OTLP/gRPC (`grpc`, port 4317).
    Grpc,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http/protobuf" | "http" => Ok(OtlpProtocol::HttpProtobuf),
            "grpc" => Ok(OtlpProtocol::Grpc),
            other => Err(format!("must be http/protobuf or grpc, got {other:?}")),
        }
    }
}

/// Where traces go, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's base URL (`http://collector:4318`), or None to take the standard
    /// `OTEL_EXPORTER_OTLP_*` variables as the exporter reads them.
    pub endpoint: Option<String>,
    /// How to send.
    pub protocol: OtlpProtocol,
}

impl OtlpSettings {
    /// The settings when tracing is on: an endpoint given, or one in the standard variables
    /// (and `OTEL_SDK_DISABLED` not `true`).
    pub fn from_flags(endpoint: Option<String>, protocol: OtlpProtocol) -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let from_env = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        (endpoint.is_some() || from_env).then_some(OtlpSettings { endpoint, protocol })
    }
}

/// Keeps the exporter running; flushes the spans still buffered when dropped.
#[must_use = "dropping it stops the trace exporter and the log writer"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Writes out the log lines still queued when dropped (after the provider: its
    /// shutdown may log).
    _logs: tracing_appender::non_blocking::WorkerGuard,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("segserve: flushing traces at exit failed: {e}");
            }
        }
    }
}

/// Sets up logging (`RUST_LOG`, else `default_filter`; JSON lines or text), and the trace
/// exporter when `otlp` says so. Call once, before anything logs.
pub fn init(
    json: bool,
    default_filter: &str,
    otlp: Option<&OtlpSettings>,
) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("segserve-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let logs = if !json {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    } else {
        // The request span's fields (request id, trace id) under "span" in every line of
        // the request.
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    }
    .with_filter(filter);
    let provider = otlp.map(provider).transpose()?;
    let traces = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("segserve"))
            .with_filter(
                Targets::new()
                    .with_target("segserve", tracing::Level::DEBUG)
                    .with_default(tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("cannot set up logging")?;
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry {
        provider,
        _logs: guard,
    })
}

fn provider(otlp: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(Duration::from_secs(10));
            match &otlp.endpoint {
                // A base URL, as for the other protocol and the standard variable.
                Some(url) => b.with_endpoint(traces_url(url)),
                None => b,
            }
            .build()
        }
        OtlpProtocol::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(Duration::from_secs(10));
            match &otlp.endpoint {
                Some(url) => b.with_endpoint(url.clone()),
                None => b,
            }
            .build()
        }
    }
    .context("cannot set up the OTLP trace exporter")?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win when set.
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("segserve");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The batch processor reads OTEL_BSP_*, the sampler OTEL_TRACES_SAMPLER(_ARG).
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// `base` + `/v1/traces`, unless it already names the traces path.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The request id: the caller's `X-Request-Id` when it is a sane one (1 to 128 visible ASCII
/// characters), else a fresh random one (32 hex digits).
pub fn request_id(headers: &HeaderMap) -> String {
    let given = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => id.to_string(),
        None => {
            // Each RandomState is seeded afresh (per thread, then incremented): 128 bits of
            // it make an id that does not repeat, without a random-number crate.
            let half = || {
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            };
            format!("{:016x}{:016x}", half(), half())
        }
    }
}

/// Makes `span` (a request's) the child of the caller's `traceparent` when traces are
/// exported, and records the trace id in its `trace_id` field either way (from the span's
/// context when exporting, from the header when not), so logs can be joined to traces.
pub fn join(span: &tracing::Span, headers: &HeaderMap) {
    let mut trace_id = None;
    if EXPORTING.load(Ordering::Relaxed) {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        trace_id = sc.is_valid().then(|| sc.trace_id().to_string());
    }
    if let Some(id) = trace_id.or_else(|| traceparent_trace_id(headers)) {
        span.record("trace_id", id.as_str());
    }
}

/// The trace id of a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn traceparent_trace_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then(|| trace.to_ascii_lowercase())
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        assert_eq!(
            request_id(&headers(&[("x-request-id", "abc-123")])),
            "abc-123"
        );
        let made = request_id(&HeaderMap::new());
        assert_eq!(made.len(), 32);
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(made, request_id(&HeaderMap::new()));
        let long = "x".repeat(129);
        assert_ne!(request_id(&headers(&[("x-request-id", &long)])), long);
        assert_ne!(request_id(&headers(&[("x-request-id", "a b")])), "a b");
    }

    #[test]
    fn traceparent_trace_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(&headers(&[("traceparent", tp)])).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(
                traceparent_trace_id(&headers(&[("traceparent", bad)])),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn otlp_urls_and_protocols() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces/"),
            "http://c:4318/v1/traces"
        );
        assert_eq!("grpc".parse(), Ok(OtlpProtocol::Grpc));
        assert_eq!("http/protobuf".parse(), Ok(OtlpProtocol::HttpProtobuf));
        assert!("thrift".parse::<OtlpProtocol>().is_err());
    }
}
