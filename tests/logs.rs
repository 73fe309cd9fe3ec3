//! Log lines go out through a writer thread of their own: a log reader that stops reading
//! (a full pipe to a stalled log shipper) stalls no request.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn a_stalled_log_reader_stalls_no_request() {
    let _turn = common::heavy();
    let port = common::free_port();
    let mut cmd = common::Binary::command(None);
    cmd.args(["--sessions", "1", "--model"])
        .arg(common::model("yolov8n-seg-320"))
        .args(["--port", &port.to_string()]);
    // A pipe nobody reads: held open, so writes to it block once its 64 KiB are full (a
    // few hundred JSON lines), where a closed one would fail them instead.
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start target/release/segserve");
    let _unread = child.stderr.take();
    let url = format!("http://127.0.0.1:{port}");
    common::wait_ready(&url, Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    // An access line each, ~250 bytes: about ten pipes' worth.
    for i in 0..2500 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(format!("{url}/v1/models")).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} hung: writing its log line blocked it"))
        .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
