//! OpenTelemetry traces, end to end: the release binary exports to a real OTLP receiver
//! started here (HTTP/protobuf, then gRPC), which decodes what arrives with the official
//! OpenTelemetry protobuf definitions (`opentelemetry-proto`). A request that carries a W3C
//! `traceparent` and an `X-Request-Id` must come back with the id, appear as a server span
//! whose parent is the caller's span, with its stages as children, and its log lines must
//! carry the request id and the trace id.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// OTLP/HTTP: `POST /v1/traces` with a protobuf body.
async fn http_receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("a valid OTLP export");
                received.lock().unwrap().push(req);
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
async fn grpc_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Grpc(received)))
            .serve_with_incoming(incoming)
            .await
            .unwrap()
    });
    format!("http://{addr}")
}

/// A received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    attributes: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flatten(received: &Received) -> (Vec<Span>, Vec<String>) {
    let mut spans = Vec::new();
    let mut services = Vec::new();
    for req in received.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                if kv.key == "service.name" {
                    if let Some(AnyValue::StringValue(s)) =
                        kv.value.as_ref().and_then(|v| v.value.clone())
                    {
                        services.push(s);
                    }
                }
            }
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                            Some(AnyValue::StringValue(s)) => s,
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            Some(AnyValue::DoubleValue(d)) => d.to_string(),
                            Some(AnyValue::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                spans.push(Span {
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes,
                });
            }
        }
    }
    (spans, services)
}

async fn check(protocol: &str, endpoint: String, received: Received) {
    // Spans leave in batches; a short delay so the test does not wait 5 s for one.
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let logs: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
    let sink = logs.clone();
    let bin = common::Binary::start(
        None,
        &[
            "--otlp-endpoint".into(),
            endpoint,
            "--otlp-protocol".into(),
            protocol.into(),
        ],
        move |v| sink.lock().unwrap().push(v),
    );
    bin.wait_ready().await;
    let c = reqwest::Client::new();
    let resp = c
        .post(bin.url("/v1/segment"))
        .header("content-type", "image/jpeg")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-request-id", "trace-test-1")
        .body(common::bus())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-test-1");
    // Without an id, one is made and echoed.
    let resp = c.get(bin.url("/v1/models")).send().await.unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32, "{made}");

    let mut found = None;
    for _ in 0..100 {
        let (spans, _) = flatten(&received);
        if let Some(root) = spans
            .iter()
            .find(|s| s.trace_id == TRACE_ID && s.name == "POST /v1/segment")
        {
            let children: Vec<Span> = spans
                .iter()
                .filter(|s| s.parent == root.span_id)
                .cloned()
                .collect();
            if children.len() >= 5 {
                found = Some((root.clone(), children));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (spans, services) = flatten(&received);
    let Some((root, children)) = found else {
        panic!("{protocol}: no request span with its stages arrived; got {spans:#?}")
    };
    assert_eq!(
        root.parent, PARENT_ID,
        "{protocol}: joined to the caller's span"
    );
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.attributes["http.route"], "/v1/segment");
    assert_eq!(root.attributes["http.request.method"], "POST");
    assert_eq!(root.attributes["http.response.status_code"], "200");
    assert_eq!(root.attributes["request_id"], "trace-test-1");
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for stage in ["queue", "decode", "inference", "masks", "encode"] {
        assert!(
            names.contains(&stage),
            "{protocol}: no {stage} span in {names:?}"
        );
    }
    for child in &children {
        assert_eq!(child.trace_id, TRACE_ID);
    }
    let by_name = |n: &str| children.iter().find(|s| s.name == n).unwrap();
    assert_eq!(by_name("decode").attributes["streamed"], "true");
    assert!(
        by_name("inference").attributes["run_ms"]
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(
        by_name("masks").attributes["detections"]
            .parse::<u64>()
            .unwrap()
            >= 4
    );
    assert!(services.iter().all(|s| s == "segserve"), "{services:?}");
    // The access log line of the request carries both ids.
    let logs = logs.lock().unwrap();
    let line = logs
        .iter()
        .find(|v| v["message"] == "request" && v["span"]["request_id"] == "trace-test-1")
        .unwrap_or_else(|| panic!("no log line with the request id in {logs:#?}"));
    assert_eq!(line["span"]["trace_id"], TRACE_ID);
    println!(
        "{protocol}: received {} spans; the request's: {root:?}\nits stages: {children:#?}",
        spans.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_receiver_over_http_and_grpc() {
    let received = Received::default();
    let url = http_receiver(received.clone()).await;
    check("http/protobuf", url, received).await;
    let received = Received::default();
    let url = grpc_receiver(received.clone()).await;
    check("grpc", url, received).await;
}

/// Off (no endpoint), the request id and the caller's trace id still reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_logs_still_carry_the_ids() {
    let logs: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
    let sink = logs.clone();
    let bin = common::Binary::start(None, &[], move |v| sink.lock().unwrap().push(v));
    bin.wait_ready().await;
    let resp = reqwest::Client::new()
        .get(bin.url("/v1/models"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-request-id", "no-exporter")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "no-exporter");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = logs.lock().unwrap();
    let line = logs
        .iter()
        .find(|v| v["message"] == "request" && v["span"]["request_id"] == "no-exporter")
        .unwrap_or_else(|| panic!("no log line with the request id in {logs:#?}"));
    assert_eq!(line["span"]["trace_id"], TRACE_ID);
}
