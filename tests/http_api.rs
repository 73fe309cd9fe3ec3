//! End-to-end tests over real HTTP against the real server on 127.0.0.1:0: every endpoint,
//! and every error status the API documents.

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::client::json_of;
use common::{bus, form};
use serde_json::Value;
use tower::ServiceExt;

async fn expect_error(resp: reqwest::Response, status: u16, error_type: &str) {
    let (s, v) = json_of(resp).await;
    assert_eq!(s, status, "body: {v}");
    assert_eq!(v["error_type"], error_type, "body: {v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "body: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_and_pixellib_api() {
    let srv = common::spawn_server(&[]).await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(srv.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let (s, ready) = json_of(c.get(srv.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((s, ready["status"].as_str()), (200, Some("ready")));

    let (s, models) = json_of(c.get(srv.url("/v1/models")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    let m = &models["models"][0];
    assert_eq!(m["name"], "yolov8n-seg-320");
    assert_eq!(m["task"], "segment");
    assert_eq!(m["input_size"], serde_json::json!([320, 320]));
    assert_eq!(m["class_names"].as_array().unwrap().len(), 80);
    assert_eq!(m["class_names"][5], "bus");

    // The seed's curl: `curl -F image=@bus.jpg /segmentapi`, without the dense masks.
    let (s, v) = json_of(
        c.post(srv.url("/segmentapi?mask_values=false"))
            .multipart(form("image", bus(), "bus.jpg"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let out = &v["outputs"];
    let names: Vec<&str> = out["class_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"bus") && names.contains(&"person"),
        "{names:?}"
    );
    let n = names.len();
    assert_eq!(out["mask_shape"], serde_json::json!([1080, 810, n]));
    assert_eq!(out["boxes"].as_array().unwrap().len(), n);
    assert!(
        out["boxes"][0]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x.is_i64()),
        "integer boxes"
    );
    assert!(out["scores"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.as_i64().is_some_and(|p| (25..=100).contains(&p))));
    assert_eq!(out["object_counts"]["bus"], 1);
    assert_eq!(
        out["object_counts"]["person"].as_u64().unwrap() as usize,
        n - 1
    );
    assert!(v.get("mask_values").is_none());
    assert!(out.get("mask_values").is_none());

    // By default, as PixelLib: the dense H x W x N booleans beside `outputs`.
    let (s, v) = json_of(
        c.post(srv.url("/segmentapi"))
            .multipart(form("image", bus(), "bus.jpg"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["outputs"]["mask_shape"],
        serde_json::json!([1080, 810, n])
    );
    let mv = v["mask_values"].as_array().unwrap();
    assert_eq!(mv.len(), 1080);
    assert_eq!(mv[0].as_array().unwrap().len(), 810);
    assert_eq!(mv[540][400].as_array().unwrap().len(), n);
    // The bus covers the middle of the photo.
    let bus_idx = names.iter().position(|x| *x == "bus").unwrap();
    assert_eq!(mv[500][400][bus_idx], true);
    assert_eq!(mv[5][5][bus_idx], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_segment_multipart_raw_and_options() {
    let srv = common::spawn_server(&[]).await;
    let c = reqwest::Client::new();
    let (s, v) = json_of(
        c.post(srv.url("/v1/segment"))
            .multipart(form("image", bus(), "bus.jpg"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "yolov8n-seg-320");
    assert_eq!(
        v["image"],
        serde_json::json!({"width": 810, "height": 1080})
    );
    let dets = v["detections"].as_array().unwrap();
    assert!(dets.len() >= 4);
    let scores: Vec<f64> = dets.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score");
    for d in dets {
        assert_eq!(d["mask"]["size"], serde_json::json!([1080, 810]));
        let counts = d["mask"]["counts"].as_str().unwrap();
        let dense = segserve::mask::decode_coco_rle(counts, 1080, 810).unwrap();
        assert!(dense.contains(&1), "non-empty mask");
    }
    for key in ["decode", "preprocess", "inference", "postprocess", "total"] {
        assert!(v["timing_ms"][key].as_f64().unwrap() >= 0.0);
    }

    // Raw body with an image content type, masks off, class filter by name and id.
    let resp = c
        .post(srv.url("/v1/segment?masks=none&classes=bus,0&conf=0.5"))
        .header("content-type", "image/jpeg")
        .body(bus())
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(resp).await;
    assert_eq!(s, 200, "{v}");
    let dets = v["detections"].as_array().unwrap();
    assert!(!dets.is_empty());
    assert!(dets
        .iter()
        .all(|d| d.get("mask").is_none() && d["score"].as_f64().unwrap() > 0.5));
    assert!(dets
        .iter()
        .all(|d| d["class_name"] == "bus" || d["class_name"] == "person"));

    let (_, v) = json_of(
        c.post(srv.url("/v1/segment?classes=bus&max_det=1"))
            .body(bus())
            .header("content-type", "image/jpeg")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["detections"].as_array().unwrap().len(), 1);
    assert_eq!(v["object_counts"], serde_json::json!({"bus": 1}));

    // decode=fast: bus.jpg (810x1080 onto 320) is decoded at half size, which moves the
    // scores a little but keeps the same objects; a mode we do not have is a 400 naming it.
    let segment = |q: &'static str| {
        c.post(srv.url(&format!("/v1/segment?masks=none{q}")))
            .header("content-type", "image/jpeg")
            .body(bus())
            .send()
    };
    let (s, exact) = json_of(segment("").await.unwrap()).await;
    assert_eq!(s, 200, "{exact}");
    let (s, fast) = json_of(segment("&decode=fast").await.unwrap()).await;
    assert_eq!(s, 200, "{fast}");
    assert_eq!(fast["object_counts"]["bus"], exact["object_counts"]["bus"]);
    assert_ne!(
        fast["detections"], exact["detections"],
        "decode=fast decoded the very same pixels"
    );
    let (s, v) = json_of(segment("&decode=quick").await.unwrap()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`decode`"), "{v}");
}

/// One row of the error table: what it tries, method, path, the body with its content type,
/// the status and `error_type` expected.
type ErrorCase = (
    &'static str,
    &'static str,
    &'static str,
    Option<(String, Vec<u8>)>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status() {
    let srv = common::spawn_server(&["--max-body-bytes", "100000"]).await;
    let c = reqwest::Client::new();
    let small_png = {
        let mut v = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))
            .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    };
    let file = |data: &[u8]| Some(common::multipart("image", "a.png", data));
    let raw = |ctype: &str, data: &[u8]| Some((ctype.to_string(), data.to_vec()));
    let no_file = {
        let (ctype, body) = common::multipart("file", "a.png", b"a.png");
        let body = String::from_utf8(body)
            .unwrap()
            .replace("; filename=\"a.png\"", "");
        Some((ctype, body.into_bytes()))
    };
    let cases: Vec<ErrorCase> = vec![
        (
            "a form with no file",
            "POST",
            "/segmentapi",
            no_file,
            400,
            "bad_request",
        ),
        (
            "an empty image field",
            "POST",
            "/segmentapi",
            file(b""),
            400,
            "bad_request",
        ),
        (
            "a bad parameter",
            "POST",
            "/v1/segment?conf=2",
            file(&small_png),
            400,
            "bad_request",
        ),
        (
            "a bad mask_values",
            "POST",
            "/segmentapi?mask_values=maybe",
            file(&small_png),
            400,
            "bad_request",
        ),
        (
            "malformed multipart",
            "POST",
            "/segmentapi",
            raw("multipart/form-data", b"--x\r\n"),
            400,
            "bad_request",
        ),
        ("an unknown route", "GET", "/nope", None, 404, "not_found"),
        (
            "an unknown model",
            "POST",
            "/v1/segment?model=unicorn",
            file(&small_png),
            404,
            "not_found",
        ),
        (
            "a wrong method",
            "GET",
            "/segmentapi",
            None,
            405,
            "method_not_allowed",
        ),
        (
            "a body over the limit",
            "POST",
            "/segmentapi",
            file(&bus()),
            413,
            "payload_too_large",
        ),
        (
            "an unsupported content type",
            "POST",
            "/v1/segment",
            raw("text/plain", b"hello"),
            415,
            "unsupported_media_type",
        ),
        (
            "a raw body where only forms go",
            "POST",
            "/segmentapi",
            raw("image/jpeg", &small_png),
            415,
            "unsupported_media_type",
        ),
        (
            "a file that is not an image",
            "POST",
            "/segmentapi",
            file(b"just some text"),
            415,
            "unsupported_media_type",
        ),
        (
            "a corrupt image (a PNG cut in half)",
            "POST",
            "/segmentapi",
            file(&small_png[..small_png.len() / 2]),
            422,
            "invalid_image",
        ),
    ];
    for (name, method, path, body, status, error_type) in cases {
        let mut req = c.request(method.parse().unwrap(), srv.url(path));
        if let Some((ctype, body)) = body {
            req = req.header("content-type", ctype).body(body);
        }
        let (got, v) = json_of(req.send().await.unwrap()).await;
        assert_eq!(
            (got, v["error_type"].as_str()),
            (status, Some(error_type)),
            "{}: {v}",
            name
        );
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: {v}",
            name
        );
    }
    // A chunked body over the limit (no Content-Length to refuse it by).
    let chunks = futures_util::stream::iter(
        bus()
            .chunks(16 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = c
        .post(srv.url("/v1/segment"))
        .header("content-type", "image/jpeg")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(resp, 413, "payload_too_large").await;
    // Nothing above took the server down.
    assert_eq!(
        c.get(srv.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let ok = c
        .post(srv.url("/v1/segment"))
        .multipart(form("image", small_png, "a.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after() {
    // One session, no queue: a burst of simultaneous requests must see some shed.
    let srv = common::spawn_server(&["--sessions", "1", "--queue-depth", "0"]).await;
    let c = reqwest::Client::new();
    let reqs = (0..12).map(|_| {
        c.post(srv.url("/v1/segment?masks=none"))
            .header("content-type", "image/jpeg")
            .body(bus())
            .send()
    });
    let resps = futures_util::future::join_all(reqs).await;
    let (mut ok, mut shed) = (0, 0);
    for r in resps {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error_type"], "overloaded");
                shed += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
}

/// Router test without a socket: before the models are loaded, readiness and inference
/// routes answer 503 with Retry-After, while liveness answers 200.
#[tokio::test]
async fn not_ready_before_models_load() {
    let state =
        segserve::api::AppState::new(common::serve_config(&[]), segserve::metrics::handle());
    let app = segserve::api::router(state);
    let resp = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let req = Request::post("/v1/segment")
        .header("content-type", "image/jpeg")
        .body(Body::from(bus()))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error_type"], "not_ready");
}

/// Decodes a body in the coding its answer names.
fn decoded(coding: Option<&str>, body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("zstd") => out = zstd::decode_all(body).unwrap(),
        Some(other) => panic!("unexpected coding {other}"),
    }
    out
}

/// Sends `req` with `Accept-Encoding: accept` and returns (status, coding, vary, wire bytes,
/// decoded bytes).
async fn fetch_encoded(
    req: reqwest::RequestBuilder,
    accept: &str,
) -> (u16, Option<String>, String, usize, Vec<u8>) {
    let r = req.header("accept-encoding", accept).send().await.unwrap();
    let status = r.status().as_u16();
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (coding, vary) = (h("content-encoding"), h("vary").unwrap_or_default());
    let wire = r.bytes().await.unwrap();
    let plain = decoded(coding.as_deref(), &wire);
    (status, coding, vary, wire.len(), plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compressed_as_the_client_asks() {
    let srv = common::spawn_server(&[]).await;
    let c = reqwest::Client::new();
    let dense = || {
        c.post(srv.url("/segmentapi"))
            .multipart(form("image", bus(), "bus.jpg"))
    };
    let (s, coding, _, plain_len, plain) = fetch_encoded(dense(), "identity").await;
    assert_eq!((s, coding), (200, None));
    let reference: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(reference["mask_values"].as_array().unwrap().len(), 1080);
    // Python requests' header, a browser's, and tritonclient's deflate.
    for (accept, want) in [
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("deflate", "deflate"),
    ] {
        let (s, coding, vary, wire, body) = fetch_encoded(dense(), accept).await;
        assert_eq!((s, coding.as_deref()), (200, Some(want)), "{accept}");
        assert!(vary.to_ascii_lowercase().contains("accept-encoding"));
        assert!(wire * 50 < plain_len, "{want}: {wire} of {plain_len} bytes");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), reference);
        println!("/segmentapi dense, bus.jpg: {plain_len} bytes, {want} {wire}");
    }

    // The native route and KServe compress too; pictures never do.
    let (s, coding, _, _, body) = fetch_encoded(
        c.post(srv.url("/v1/segment?masks=rle"))
            .header("content-type", "image/jpeg")
            .body(bus()),
        "zstd",
    )
    .await;
    assert_eq!((s, coding.as_deref()), (200, Some("zstd")));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["detections"].as_array().unwrap().len(), 4);
    let (s, coding, vary, _, _) = fetch_encoded(
        c.post(srv.url("/v1/render"))
            .header("content-type", "image/jpeg")
            .body(bus()),
        "gzip, zstd",
    )
    .await;
    assert_eq!((s, coding, vary), (200, None, String::new()));
    // An unknown coding only, or refused with q=0: the answer goes as it is.
    let (_, coding, _, _, _) = fetch_encoded(dense(), "br").await;
    assert_eq!(coding, None);
    let (_, coding, _, _, _) = fetch_encoded(dense(), "gzip;q=0").await;
    assert_eq!(coding, None);

    // Switched off: never compressed.
    let off = common::spawn_server(&["--compression", "off"]).await;
    let r = c
        .post(off.url("/segmentapi"))
        .header("accept-encoding", "gzip")
        .multipart(form("image", bus(), "bus.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_request_bodies_are_inflated_within_the_limit() {
    // It reads the reserved-bytes gauge, which every server in the process sets: alone.
    let _turn = common::heavy();
    if common::in_own_process(
        module_path!(),
        "compressed_request_bodies_are_inflated_within_the_limit",
    ) {
        return;
    }
    use std::io::Write;
    let srv = common::spawn_server(&["--max-body-bytes", "4194304"]).await;
    let c = reqwest::Client::new();
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let (ctype, form_body) = common::multipart("image", "bus.jpg", &bus());
    let send = |coding: &'static str, ctype: String, body: Vec<u8>, path: &str| {
        c.post(srv.url(path))
            .header("content-type", ctype)
            .header("content-encoding", coding)
            .body(body)
            .send()
    };
    let r = send("gzip", ctype.clone(), gzip(&form_body), "/v1/segment")
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["detections"].as_array().unwrap().len(), 4);
    let r = send(
        "zstd",
        "image/jpeg".into(),
        zstd::encode_all(&bus()[..], 3).unwrap(),
        "/v1/segment",
    )
    .await
    .unwrap();
    assert_eq!(json_of(r).await.0, 200);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&form_body).unwrap();
    let r = send(
        "deflate",
        ctype.clone(),
        z.finish().unwrap(),
        "/segmentapi?mask_values=false",
    )
    .await
    .unwrap();
    assert_eq!(json_of(r).await.0, 200);

    // A bomb: 64 MiB of zeros in a few hundred KiB of gzip, against a 4 MiB body limit.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let r = send("gzip", "image/jpeg".into(), bomb, "/v1/segment")
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large").await;
    // Corrupt, and unknown codings.
    let mut bad = gzip(&bus());
    bad.truncate(bad.len() / 2);
    let r = send("gzip", "image/jpeg".into(), bad, "/v1/segment")
        .await
        .unwrap();
    assert_eq!(json_of(r).await.0, 400);
    let r = send("br", "image/jpeg".into(), bus(), "/v1/segment")
        .await
        .unwrap();
    expect_error(r, 415, "unsupported_media_type").await;
    // Nothing is left reserved, and the server still answers.
    let m = common::client::scrape(&srv.url("")).await;
    assert_eq!(m.get("segserve_memory_reserved_bytes", &[]), 0.0);
    let r = c
        .post(srv.url("/v1/segment"))
        .header("content-type", "image/jpeg")
        .body(bus())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
