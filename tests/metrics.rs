//! GET /metrics: every `segserve_` series is exported with the right type, and
//! the counters and histograms read back exactly what the requests did.
//!
//! One test function on purpose, run in a process of its own: the recorder is process-wide,
//! so any other test's server would add to the same counters.

use crate::common;

use common::client::{json_of, scrape, Scrape};

const MODEL: &str = "yolov8n-seg-320";

async fn segmentapi(client: &reqwest::Client, url: &str, photo: &[u8]) -> (u16, serde_json::Value) {
    let form = common::form("image", photo.to_vec(), "bus.jpg");
    json_of(client.post(url).multipart(form).send().await.unwrap()).await
}

fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let _turn = common::heavy();
    if common::in_own_process(module_path!(), "metrics_count_what_happened") {
        return;
    }
    // One session and no queue, so a burst of concurrent requests is likely to be shed.
    let server = common::spawn_server(&["--sessions", "1", "--queue-depth", "0"]).await;
    let base = format!("http://{}", server.addr);
    let url = server.url("/segmentapi");
    let photo = common::bus();
    let client = reqwest::Client::new();

    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = r.text().await.unwrap();
    let before = Scrape::parse(&text);
    // Present from startup, before any request: shed counters at 0, the model load time.
    assert_eq!(
        before.get(
            "segserve_requests_shed_total",
            &[("model", MODEL), ("reason", "queue_full")]
        ),
        0.0
    );
    assert!(before.has("segserve_requests_shed_total"));
    assert!(before.get("segserve_model_load_seconds", &[("model", MODEL)]) > 0.0);
    for (name, kind) in [
        ("segserve_requests_shed_total", "counter"),
        ("segserve_model_load_seconds", "gauge"),
        ("segserve_inference_seconds", "histogram"),
        ("segserve_queue_wait_seconds", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "{name} is a {kind}"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
    }

    // Sequential requests: 3 answered, one unknown route, one without the image field.
    let mut detections = 0.0;
    for _ in 0..3 {
        let (status, body) = segmentapi(&client, &url, &photo).await;
        assert_eq!(status, 200);
        detections += body["outputs"]["boxes"].as_array().unwrap().len() as f64;
    }
    assert_eq!(
        client
            .get(format!("{base}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let empty = reqwest::multipart::Form::new().text("other", "x");
    assert_eq!(
        client
            .post(&url)
            .multipart(empty)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // A burst: whatever is shed must be counted as shed, whatever is answered as answered.
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, photo) = (client.clone(), url.clone(), photo.clone());
            tokio::spawn(async move { segmentapi(&client, &url, &photo).await })
        })
        .collect();
    let (mut ok, mut shed) = (3.0, 0.0);
    for h in burst {
        let (status, body) = h.await.unwrap();
        match status {
            200 => {
                ok += 1.0;
                detections += body["outputs"]["boxes"].as_array().unwrap().len() as f64;
            }
            503 => {
                assert_eq!(body["error_type"], "overloaded");
                shed += 1.0;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }

    eprintln!("burst of 8: {} answered, {shed} shed", ok - 3.0);
    let after = scrape(&base).await;
    let route = ("route", "/segmentapi");
    assert_eq!(
        delta(
            &before,
            &after,
            "segserve_requests_total",
            &[route, ("status", "200")]
        ),
        ok
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "segserve_requests_total",
            &[route, ("status", "503")]
        ),
        shed
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "segserve_requests_total",
            &[route, ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "segserve_requests_total",
            &[("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "segserve_requests_shed_total",
            &[("model", MODEL)]
        ),
        shed
    );

    // Histograms: the request duration counts every /segmentapi request, in cumulative
    // buckets ending at +Inf; inference, queue wait and detections count the answered ones.
    let total = ok + shed + 1.0;
    let dur = "segserve_request_duration_seconds";
    assert_eq!(
        delta(&before, &after, &format!("{dur}_count"), &[route]),
        total
    );
    let buckets = after.buckets(dur, &[route]);
    assert!(buckets.len() > 5, "{dur} has buckets: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets"
    );
    let (le, last) = buckets.last().unwrap();
    assert_eq!(
        (le.as_str(), *last),
        ("+Inf", after.get(&format!("{dur}_count"), &[route]))
    );
    for name in ["segserve_inference_seconds", "segserve_queue_wait_seconds"] {
        assert_eq!(
            delta(
                &before,
                &after,
                &format!("{name}_count"),
                &[("model", MODEL)]
            ),
            ok,
            "{name}"
        );
        assert!(
            !after.buckets(name, &[("model", MODEL)]).is_empty(),
            "{name} buckets"
        );
    }
    assert!(
        delta(
            &before,
            &after,
            "segserve_inference_seconds_sum",
            &[("model", MODEL)]
        ) > 0.0
    );
    assert_eq!(
        delta(&before, &after, "segserve_detections_per_image_count", &[]),
        ok
    );
    assert_eq!(
        delta(&before, &after, "segserve_detections_per_image_sum", &[]),
        detections
    );
    // Only the scrape itself is in flight now.
    assert_eq!(after.get("segserve_requests_in_flight", &[]), 1.0);
}
