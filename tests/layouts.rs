//! Output layouts over HTTP: a model exported with NMS inside the graph serves the same
//! detections as the same weights exported raw, the request's filters apply to it, its own
//! confidence threshold is a floor, and `GET /v1/models` names each model's layout.

use crate::common;

use common::client::{self, get_json, json_of, Detection};

const RAW: &str = "yolov8n-seg-320";
const NMS: &str = "yolov8n-seg-320-nms";
const DYN: &str = "yolov8n-seg-dyn";

/// (class id, score, box) of each detection of bus.jpg.
async fn detections(
    c: &reqwest::Client,
    srv: &common::TestServer,
    model: &str,
    query: &str,
) -> Vec<Detection> {
    let r = c
        .post(srv.url(&format!("/v1/segment?model={model}{query}")))
        .header("content-type", "image/jpeg")
        .body(common::bus())
        .send()
        .await
        .unwrap();
    let (status, v) = json_of(r).await;
    assert_eq!(status, 200, "{v}");
    client::detections(&v)
}

fn assert_same(a: &[Detection], b: &[Detection], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{what}: class");
        assert!((x.1 - y.1).abs() < 1e-4, "{what}: score {} vs {}", x.1, y.1);
        for (p, q) in x.2.iter().zip(&y.2) {
            assert!((p - q).abs() < 0.01, "{what}: box {:?} vs {:?}", x.2, y.2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nms_in_graph_model_matches_the_raw_export() {
    let (nms, dyn_) = (common::model(NMS), common::model(DYN));
    let srv = common::spawn_server(&[
        "--model",
        nms.to_str().unwrap(),
        "--model",
        dyn_.to_str().unwrap(),
        "--sessions",
        "1",
    ])
    .await;
    let c = reqwest::Client::new();

    let (status, models) = get_json(srv.url("/v1/models")).await;
    assert_eq!(status, 200);
    let layouts: Vec<(&str, &str)> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["layout"].as_str().unwrap()))
        .collect();
    assert_eq!(layouts, [(RAW, "raw"), (NMS, "nms"), (DYN, "raw")]);

    // Defaults, then each request filter: the same answer from both exports.
    for query in [
        "",
        "&conf=0.5",
        "&classes=person",
        "&classes=bus,5",
        "&max_det=2",
        "&conf=0.3&classes=person&max_det=2",
    ] {
        let raw = detections(&c, &srv, RAW, query).await;
        assert!(!raw.is_empty(), "{query}");
        assert_same(&raw, &detections(&c, &srv, NMS, query).await, query);
    }

    // The graph dropped everything at or below its own 0.25 before we see it: asking for
    // less gives the raw export more, the NMS export the same as at 0.25 (a floor).
    let floor = detections(&c, &srv, NMS, "").await;
    let low_raw = detections(&c, &srv, RAW, "&conf=0.1").await;
    let low_nms = detections(&c, &srv, NMS, "&conf=0.1").await;
    assert!(
        low_raw.len() > floor.len(),
        "bus.jpg has detections in (0.1, 0.25]"
    );
    assert_same(&floor, &low_nms, "conf below the graph's floor");

    // A lower iou than the graph's 0.7 suppresses more; it never brings back what the graph
    // suppressed.
    let strict = detections(&c, &srv, NMS, "&iou=0.01").await;
    assert!(strict.len() <= floor.len());
    assert!(strict.iter().all(|d| floor.contains(d)));
}
