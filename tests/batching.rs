//! Dynamic batching (issue 5): with a dynamic-batch model and --max-batch > 1, concurrent
//! requests are grouped into one `Session::run`, and each still gets its own answer, equal
//! to what it gets alone.

mod common;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_batched_run() {
    let model = common::model("yolov8n-seg-dyn");
    let srv = common::spawn_server(&[
        "--model",
        model.to_str().unwrap(),
        "--sessions",
        "1",
        "--max-batch",
        "4",
        "--batch-window-ms",
        "200",
    ])
    .await;
    let c = reqwest::Client::new();
    let photos: Vec<Vec<u8>> = ["bus.jpg", "zidane.jpg", "coffee.png", "chelsea.png"]
        .iter()
        .map(|p| std::fs::read(common::shared().join("testdata").join(p)).unwrap())
        .collect();
    let post = |bytes: Vec<u8>| {
        c.post(srv.url("/v1/segment?masks=none&model=yolov8n-seg-dyn"))
            .header("content-type", "image/png")
            .body(bytes)
            .send()
    };
    // Alone first (the first request also warms nothing up: readiness did that).
    let mut alone = Vec::new();
    for p in &photos {
        let v: Value = post(p.clone()).await.unwrap().json().await.unwrap();
        alone.push(v);
    }
    let together = futures_util::future::join_all(photos.iter().map(|p| post(p.clone()))).await;
    for (i, r) in together.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let (a, b) = (&alone[i]["detections"], &v["detections"]);
        assert_eq!(
            a.as_array().unwrap().len(),
            b.as_array().unwrap().len(),
            "photo {i}"
        );
        for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
            assert_eq!(x["class_id"], y["class_id"]);
            assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-3);
        }
    }
    let metrics = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing from /metrics"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let runs = line("segserve_batch_size_count{model=\"yolov8n-seg-dyn\"}");
    let images = line("segserve_batch_size_sum{model=\"yolov8n-seg-dyn\"}");
    // 4 single runs + the concurrent 4 in fewer runs than images (+1 warm-up run).
    assert!(
        images > runs,
        "no run carried more than one image: {images} images in {runs} runs"
    );
}
