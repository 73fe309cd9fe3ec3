//! The queue gauges an autoscaler reads: `segserve_queue_pending_requests` (requests waiting
//! for a place in the compute stage) and `segserve_compute_busy` (places in use) follow a
//! burst of slow requests, and both return to 0 when the clients leave mid-way: the waits
//! are dropped at once, the work in progress when its stage ends.

use crate::common;

use std::time::{Duration, Instant};

use common::client::scrape;
use common::craft;

const MODEL: &str = "yolov8n-seg-320";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_follow_the_burst_and_the_clients_that_leave() {
    // It waits for a burst to fill every place within a time limit: nothing else may load
    // the machine meanwhile.
    let _turn = common::exclusive();
    // The gauges are the process-wide recorder's: another test's server of this model would
    // add to them.
    if common::in_own_process(
        module_path!(),
        "queue_gauges_follow_the_burst_and_the_clients_that_leave",
    ) {
        return;
    }
    let server = common::spawn_server(&["--sessions", "1", "--queue-depth", "16"]).await;
    let base = format!("http://{}", server.addr);
    let m = [("model", MODEL)];
    let idle = scrape(&base).await;
    assert_eq!(idle.get("segserve_queue_pending_requests", &m), 0.0);
    assert_eq!(idle.get("segserve_compute_busy", &m), 0.0);
    let places = idle.get("segserve_compute_places", &m);
    assert_eq!(places, 2.0, "one session: two places");

    // Eight slow requests (a 20 MP photo each) for two places.
    let photo = craft::jpeg(5000, 4000);
    let url = server.url("/v1/segment?masks=none");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, photo) = (url.clone(), photo.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .header("content-type", "image/jpeg")
                    .body(photo)
                    .send()
                    .await
            })
        })
        .collect();
    let t = Instant::now();
    let (mut most_pending, mut most_busy) = (0.0f64, 0.0f64);
    while t.elapsed() < Duration::from_secs(30) {
        let s = scrape(&base).await;
        most_pending = most_pending.max(s.get("segserve_queue_pending_requests", &m));
        most_busy = most_busy.max(s.get("segserve_compute_busy", &m));
        if most_busy == places && most_pending >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("under the burst: up to {most_pending} waiting, {most_busy} of {places} places busy");
    assert_eq!(most_busy, places, "every place was busy under the burst");
    assert!(most_pending >= 1.0, "requests waited for a place");
    assert!(
        most_pending + most_busy <= 8.0,
        "more counted ({most_pending} waiting, {most_busy} busy) than were sent"
    );

    // The clients leave.
    for c in clients {
        c.abort();
    }
    let t = Instant::now();
    let (mut pending, mut busy) = (f64::NAN, f64::NAN);
    while t.elapsed() < Duration::from_secs(30) {
        let s = scrape(&base).await;
        pending = s.get("segserve_queue_pending_requests", &m);
        busy = s.get("segserve_compute_busy", &m);
        if pending == 0.0 && busy == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "after the clients left: {pending} waiting, {busy} busy, {:?} later",
        t.elapsed()
    );
    assert_eq!(pending, 0.0, "waits of clients that left are counted out");
    assert_eq!(busy, 0.0, "places are counted out when the work ends");
    // And the server still serves.
    let r = reqwest::Client::new()
        .post(server.url("/v1/segment?masks=none"))
        .header("content-type", "image/jpeg")
        .body(common::bus())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
