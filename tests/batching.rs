//! Dynamic batching: with a dynamic-batch model and --max-batch > 1, concurrent requests are
//! grouped into one `Session::run`, and each still gets its own answer, equal to what it gets
//! alone. The model also has dynamic height and width, so each photo gets its own canvas
//! (the minimum rectangle, as Ultralytics does): only photos whose canvases are the same size
//! can share a run.

use crate::common;

use serde_json::Value;

const MODEL: &str = "yolov8n-seg-dyn";

/// A server with one session that batches up to 4 images within 200 ms.
async fn batching_server() -> common::TestServer {
    let model = common::model(MODEL);
    common::spawn_server(&[
        "--model",
        model.to_str().unwrap(),
        "--sessions",
        "1",
        "--max-batch",
        "4",
        "--batch-window-ms",
        "200",
    ])
    .await
}

async fn segment(c: &reqwest::Client, srv: &common::TestServer, bytes: Vec<u8>) -> Value {
    let r = c
        .post(srv.url(&format!("/v1/segment?masks=none&model={MODEL}")))
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// (runs, images) so far, from the `segserve_batch_size` histogram.
async fn batch_counts(srv: &common::TestServer) -> (f64, f64) {
    let m = common::client::scrape(&srv.url("")).await;
    let model = [("model", MODEL)];
    (
        m.get("segserve_batch_size_count", &model),
        m.get("segserve_batch_size_sum", &model),
    )
}

/// Sends `names` one at a time, then all at once; checks each concurrent answer against its
/// lone one and returns (runs, images) of the concurrent part.
async fn alone_then_together(srv: &common::TestServer, names: &[&str]) -> (f64, f64) {
    let c = reqwest::Client::new();
    let photos: Vec<Vec<u8>> = names.iter().map(|n| common::photo(n)).collect();
    let mut alone = Vec::new();
    for p in &photos {
        alone.push(segment(&c, srv, p.clone()).await);
    }
    let before = batch_counts(srv).await;
    let together =
        futures_util::future::join_all(photos.iter().map(|p| segment(&c, srv, p.clone()))).await;
    let after = batch_counts(srv).await;
    eprintln!(
        "{names:?} together: {} images in {} runs",
        after.1 - before.1,
        after.0 - before.0
    );
    for (i, v) in together.iter().enumerate() {
        let (a, b) = (
            alone[i]["detections"].as_array().unwrap(),
            v["detections"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{}: detections", names[i]);
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x["class_id"], y["class_id"], "{}", names[i]);
            assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-3);
            for k in 0..4 {
                let (p, q) = (x["box"][k].as_f64().unwrap(), y["box"][k].as_f64().unwrap());
                assert!((p - q).abs() < 0.5, "{}: box {k}: {p} vs {q}", names[i]);
            }
        }
    }
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_batched_run() {
    // Which requests share a run depends on when they arrive: nothing else may load the
    // machine meanwhile.
    let _turn = common::exclusive();
    // The batch counters are the process-wide recorder's: another test's server with this
    // model (warm-up runs count too) would add to them.
    if common::in_own_process(module_path!(), "concurrent_requests_share_a_batched_run") {
        return;
    }
    let srv = batching_server().await;
    // coffee.png (600x400) and chelsea.png (451x300) both run on a 640x448 canvas.
    let (runs, images) = alone_then_together(
        &srv,
        &["bus.jpg", "zidane.jpg", "coffee.png", "chelsea.png"],
    )
    .await;
    assert_eq!(images, 4.0);
    assert!(
        images > runs,
        "no run carried more than one image: {images} images in {runs} runs"
    );
}

/// Photos of different sizes in one batch window: each canvas size runs on its own (a
/// mixed batch cannot be stacked into one tensor), equal sizes share a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_of_different_shapes_are_batched_by_shape() {
    // Which requests share a run depends on when they arrive: nothing else may load the
    // machine meanwhile.
    let _turn = common::exclusive();
    // The batch counters are the process-wide recorder's: another test's server with this
    // model (warm-up runs count too) would add to them.
    if common::in_own_process(
        module_path!(),
        "photos_of_different_shapes_are_batched_by_shape",
    ) {
        return;
    }
    let srv = batching_server().await;
    // Canvases (w x h): bus 480x640; zidane and its EXIF-rotated copy 640x384 (upright);
    // coffee and chelsea 640x448. Three shapes, five photos.
    let names = [
        "bus.jpg",
        "zidane.jpg",
        "coffee.png",
        "zidane_exif6.jpg",
        "chelsea.png",
    ];
    let (runs, images) = alone_then_together(&srv, &names).await;
    assert_eq!(images, 5.0);
    assert!(
        runs >= 3.0,
        "three canvas sizes need three runs, got {runs}"
    );
    assert!(
        runs < images,
        "equal canvases did not share a run: {runs} runs"
    );
}
