//! End to end over real HTTP: the Open Inference Protocol (KServe v2) routes, two
//! models served side by side, and `masks=polygon`. Requests are built the way the
//! protocol's documentation shows them; those of the binary tensor data extension by hand,
//! byte by byte, good and broken.

use crate::common;

use common::bus;
use common::client::{box_of, get_json, infer_body, json_of, output, post_json};
use common::tensors::{elements, f32s, i64s, strings};

use base64::Engine as _;
use segserve::mask::decode_coco_rle;
use serde_json::{json, Value};

const SEG: &str = "yolov8n-seg-320";
const DET: &str = "yolov12n-det-640";

async fn two_models() -> common::TestServer {
    let det = common::model(DET).display().to_string();
    common::spawn_server(&["--model", &det, "--sessions", "1"]).await
}

async fn segment(s: &common::TestServer, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/v1/segment{query}")))
        .multipart(common::form("image", bus(), "bus.jpg"))
        .send()
        .await
        .unwrap();
    json_of(r).await
}

#[tokio::test]
async fn kserve_health_and_metadata() {
    let s = two_models().await;
    let (st, v) = get_json(s.url("/v2")).await;
    assert_eq!(st, 200);
    assert_eq!(v["name"], "segserve");
    assert!(v["version"].is_string());
    assert_eq!(v["extensions"], json!(["binary_tensor_data"]));
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(
            reqwest::get(s.url(path)).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    for m in [SEG, DET] {
        let (st, _) = get_json(s.url(&format!("/v2/models/{m}/ready"))).await;
        assert_eq!(st, 200, "{m}");
    }

    let (st, meta) = get_json(s.url(&format!("/v2/models/{SEG}"))).await;
    assert_eq!(st, 200);
    assert_eq!(meta["name"], SEG);
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "image", "datatype": "BYTES", "shape": [-1]}])
    );
    let outs: Vec<(&str, &str)> = meta["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["datatype"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outs,
        [
            ("boxes", "FP32"),
            ("scores", "FP32"),
            ("class_ids", "INT64"),
            ("class_names", "BYTES"),
            ("masks", "BYTES"),
            ("image_index", "INT64"),
            ("image_sizes", "INT64")
        ]
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["outputs"][6]["shape"], json!([-1, 2]));
    // The detector has no masks output.
    let (_, meta) = get_json(s.url(&format!("/v2/models/{DET}"))).await;
    assert_eq!(meta["outputs"].as_array().unwrap().len(), 6);

    // Unknown models: 404 with the protocol's `error` string.
    for path in ["/v2/models/nope", "/v2/models/nope/ready"] {
        let (st, v) = get_json(s.url(path)).await;
        assert_eq!(st, 404, "{path}");
        assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    }
}

#[tokio::test]
async fn kserve_infer_returns_the_same_detections_as_v1() {
    let s = two_models().await;
    let (st, resp) = post_json(
        s.url(&format!("/v2/models/{SEG}/infer")),
        &infer_body(&bus()),
    )
    .await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["model_name"], SEG);
    assert_eq!(resp["model_version"], "1");
    assert_eq!(
        resp["parameters"],
        json!({"image_width": 810, "image_height": 1080})
    );
    let (_, v1) = segment(&s, "").await;
    let dets = v1["detections"].as_array().unwrap();
    let n = dets.len();
    assert!(n >= 4, "{v1}");

    let boxes = output(&resp, "boxes");
    assert_eq!(
        (boxes["datatype"].as_str(), boxes["shape"].clone()),
        (Some("FP32"), json!([n, 4]))
    );
    let scores = output(&resp, "scores");
    let ids = output(&resp, "class_ids");
    assert_eq!(
        (ids["datatype"].as_str(), ids["shape"].clone()),
        (Some("INT64"), json!([n]))
    );
    let names = output(&resp, "class_names");
    assert_eq!(names["datatype"], "BYTES");
    let masks = output(&resp, "masks");
    assert_eq!(masks["datatype"], "BYTES");
    assert_eq!(
        masks["parameters"],
        json!({"format": "coco_rle", "height": 1080, "width": 810})
    );
    for (i, d) in dets.iter().enumerate() {
        for k in 0..4 {
            let a = boxes["data"][i * 4 + k].as_f64().unwrap();
            let b = d["box"][k].as_f64().unwrap();
            assert!((a - b).abs() < 1e-3, "box {i}.{k}: {a} vs {b}");
        }
        assert!((scores["data"][i].as_f64().unwrap() - d["score"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(ids["data"][i], d["class_id"]);
        assert_eq!(names["data"][i], d["class_name"]);
        assert_eq!(masks["data"][i], d["mask"]["counts"]);
    }

    // Options as protocol parameters (request level and input level), an id, and a
    // subset of outputs.
    let mut body = infer_body(&bus());
    body["id"] = json!("req-7");
    body["parameters"] = json!({"conf": 0.8});
    body["inputs"][0]["parameters"] = json!({"classes": "person"});
    body["outputs"] = json!([{"name": "class_names"}, {"name": "scores"}]);
    let (st, resp) = post_json(s.url(&format!("/v2/models/{SEG}/infer")), &body).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(resp["id"], "req-7");
    let got: Vec<&str> = resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["class_names", "scores"]);
    let names = output(&resp, "class_names")["data"].as_array().unwrap();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "person"),
        "{resp}"
    );
    assert!(output(&resp, "scores")["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s.as_f64().unwrap() >= 0.8));

    // The detector: boxes but no masks tensor.
    let (st, resp) = post_json(
        s.url(&format!("/v2/models/{DET}/infer")),
        &infer_body(&bus()),
    )
    .await;
    assert_eq!(st, 200, "{resp}");
    assert!(output(&resp, "boxes")["shape"][0].as_u64().unwrap() >= 4);
    assert!(resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["name"] != "masks"));
}

#[tokio::test]
async fn kserve_infer_errors_follow_the_protocol() {
    let s = two_models().await;
    let url = s.url(&format!("/v2/models/{SEG}/infer"));
    let mut cases: Vec<(Value, u16)> = Vec::new();
    let mut v = infer_body(b"x");
    v["inputs"][0]["datatype"] = json!("FP32");
    cases.push((v, 400));
    let mut v = infer_body(b"x");
    v["inputs"][0]["name"] = json!("input0");
    cases.push((v, 400));
    let mut v = infer_body(b"x");
    v["inputs"][0]["data"] = json!(["%%% not base64 %%%"]);
    cases.push((v, 400));
    cases.push((json!({"inputs": []}), 400));
    cases.push((json!({"input": "wrong field"}), 400));
    let mut v = infer_body(&bus());
    v["parameters"] = json!({"confidence": 0.5});
    cases.push((v, 400));
    let mut v = infer_body(&bus());
    v["parameters"] = json!({"conf": 3});
    cases.push((v, 400));
    let mut v = infer_body(&bus());
    v["outputs"] = json!([{"name": "heatmap"}]);
    cases.push((v, 400));
    // A PNG signature followed by junk: an image, but corrupt.
    cases.push((infer_body(b"\x89PNG\r\n\x1a\n not really a png"), 422));
    // Not an image format at all.
    cases.push((infer_body(b"hello, world"), 415));
    for (body, want) in cases {
        let (st, v) = post_json(url.clone(), &body).await;
        assert_eq!(st, want, "{body:.200} -> {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (st, _) = post_json(s.url("/v2/models/nope/infer"), &infer_body(&bus())).await;
    assert_eq!(st, 404);
    // The detector has no masks output to ask for.
    let mut v = infer_body(&bus());
    v["outputs"] = json!([{"name": "masks"}]);
    let (st, _) = post_json(s.url(&format!("/v2/models/{DET}/infer")), &v).await;
    assert_eq!(st, 400);
    // Not JSON.
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn detector_and_segmenter_side_by_side() {
    let s = two_models().await;
    let (st, v) = get_json(s.url("/v1/models")).await;
    assert_eq!(st, 200);
    let models = v["models"].as_array().unwrap();
    let listed: Vec<(&str, &str, bool)> = models
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["task"].as_str().unwrap(),
                m["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(SEG, "segment", true), (DET, "detect", false)]);
    assert_eq!(models[1]["input_size"], json!([640, 640]));

    // Default: the segmenter, with masks.
    let (st, v) = segment(&s, "").await;
    assert_eq!(st, 200);
    assert_eq!(v["model"], SEG);
    assert!(v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["mask"].is_object()));
    // ?model= picks the detector: detections, no masks.
    let (st, v) = segment(&s, &format!("?model={DET}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model"], DET);
    let dets = v["detections"].as_array().unwrap();
    assert!(dets.len() >= 4, "{v}");
    assert!(dets.iter().all(|d| d.get("mask").is_none()), "{v}");
    assert!(dets.iter().any(|d| d["class_name"] == "bus"));
    // Unknown model: 404.
    let (st, v) = segment(&s, "?model=yolov99").await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error_type"], "not_found");
}

fn shoelace(p: &[Value]) -> f64 {
    let pt = |i: usize| (p[i][0].as_f64().unwrap(), p[i][1].as_f64().unwrap());
    let mut s = 0.0;
    for i in 0..p.len() {
        let ((x0, y0), (x1, y1)) = (pt(i), pt((i + 1) % p.len()));
        s += x0 * y1 - x1 * y0;
    }
    s.abs() / 2.0
}

#[tokio::test]
async fn polygon_masks_outline_the_rle_masks() {
    let s = common::spawn_server(&["--sessions", "1"]).await;
    let (st, rle) = segment(&s, "").await;
    assert_eq!(st, 200);
    let (st, poly) = segment(&s, "?masks=polygon").await;
    assert_eq!(st, 200, "{poly}");
    let (st, fine) = segment(&s, "?masks=polygon&tolerance=0").await;
    assert_eq!(st, 200);
    let (st, coarse) = segment(&s, "?masks=polygon&tolerance=5").await;
    assert_eq!(st, 200);
    let (h, w) = (1080u32, 810u32);
    let (rd, pd) = (
        rle["detections"].as_array().unwrap(),
        poly["detections"].as_array().unwrap(),
    );
    assert_eq!(rd.len(), pd.len());
    for (i, (r, p)) in rd.iter().zip(pd).enumerate() {
        assert!(p.get("mask").is_none(), "masks=polygon sends no RLE");
        let polys = p["polygons"].as_array().unwrap();
        assert!(!polys.is_empty(), "detection {i} has no polygon");
        // Every vertex is inside the image and the detection box (to a pixel).
        let b = box_of(r);
        for ring in polys {
            let ring = ring.as_array().unwrap();
            assert!(ring.len() >= 3);
            for pt in ring {
                let (x, y) = (pt[0].as_f64().unwrap(), pt[1].as_f64().unwrap());
                assert!(x < w as f64 && y < h as f64);
                assert!(x >= b[0] - 1.0 && x <= b[2] + 1.0 && y >= b[1] - 1.0 && y <= b[3] + 1.0);
            }
        }
        // The outlines enclose about as much as the mask holds (a traced outline runs
        // through border pixel centres, so it is a little smaller).
        let mask = decode_coco_rle(r["mask"]["counts"].as_str().unwrap(), h, w).unwrap();
        let area: f64 = mask.iter().map(|v| *v as f64).sum();
        let enclosed: f64 = polys
            .iter()
            .map(|ring| shoelace(ring.as_array().unwrap()))
            .sum();
        let ratio = enclosed / area;
        assert!(
            (0.85..1.05).contains(&ratio),
            "detection {i}: {enclosed} vs {area}"
        );
        // A larger tolerance gives fewer vertices.
        let count = |v: &Value| -> usize {
            v["detections"][i]["polygons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().len())
                .sum()
        };
        assert!(
            count(&coarse) < count(&poly) && count(&poly) < count(&fine),
            "detection {i}"
        );
    }
    let (st, v) = segment(&s, "?masks=polygon&tolerance=-2").await;
    assert_eq!(st, 400, "{v}");
}

// The binary tensor data extension, with bodies built by hand the way `tritonclient` builds
// them: the JSON header, then each image as a 4-byte little-endian length and its bytes.

/// A header for `count` images whose binary data takes `size` bytes.
fn binary_header(count: usize, size: usize) -> Value {
    json!({"inputs": [{"name": "image", "shape": [count], "datatype": "BYTES",
                       "parameters": {"binary_data_size": size}}]})
}

/// A binary request: `header` as JSON, then `data`; the header's length is declared as
/// `declared` (its real length when None).
async fn post_binary(
    url: &str,
    header: &Value,
    data: &[u8],
    declared: Option<usize>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let json = serde_json::to_vec(header).unwrap();
    let mut body = json.clone();
    body.extend_from_slice(data);
    let mut req = reqwest::Client::new()
        .post(url)
        .header(
            "inference-header-content-length",
            declared.unwrap_or(json.len()).to_string(),
        )
        .body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// A binary answer: its JSON part, and each binary output's bytes by name.
struct BinaryAnswer {
    json: Value,
    data: std::collections::BTreeMap<String, Vec<u8>>,
}

async fn binary_answer(r: reqwest::Response) -> BinaryAnswer {
    if r.status() != 200 {
        panic!("status {}: {}", r.status(), r.text().await.unwrap());
    }
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let header: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    let json: Value = serde_json::from_slice(&body[..header]).unwrap();
    let mut at = header;
    let mut data = std::collections::BTreeMap::new();
    for o in json["outputs"].as_array().unwrap() {
        if let Some(size) = o["parameters"]["binary_data_size"].as_u64() {
            assert!(o.get("data").is_none(), "binary output with JSON data: {o}");
            data.insert(
                o["name"].as_str().unwrap().to_string(),
                body[at..at + size as usize].to_vec(),
            );
            at += size as usize;
        }
    }
    assert_eq!(at, body.len(), "binary sizes do not add up to the body");
    BinaryAnswer { json, data }
}

fn json_f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn kserve_binary_tensor_data_requests_and_answers() {
    let s = common::spawn_server(&["--sessions", "2"]).await;
    let url = s.url(&format!("/v2/models/{SEG}/infer"));
    let (_, reference) = post_json(url.clone(), &infer_body(&bus())).await;
    let want_boxes = json_f32s(&output(&reference, "boxes")["data"]);
    let want_names: Vec<String> =
        serde_json::from_value(output(&reference, "class_names")["data"].clone()).unwrap();
    let n = want_names.len();

    // Binary in, some outputs binary: no content type (what tritonclient sends), then the
    // protocol document's application/octet-stream.
    let data = elements(&[&bus()]);
    let mut header = binary_header(1, data.len());
    header["outputs"] = json!([
        {"name": "boxes", "parameters": {"binary_data": true}},
        {"name": "class_names", "parameters": {"binary_data": true}},
        {"name": "scores", "parameters": {"binary_data": false}},
        {"name": "masks"}
    ]);
    for ctype in [None, Some("application/octet-stream")] {
        let extra: Vec<(&str, &str)> = ctype.map(|c| ("content-type", c)).into_iter().collect();
        let a = binary_answer(post_binary(&url, &header, &data, None, &extra).await).await;
        assert_eq!(f32s(&a.data["boxes"]), want_boxes);
        assert_eq!(strings(&a.data["class_names"]), want_names);
        assert_eq!(a.data.len(), 2);
        assert_eq!(output(&a.json, "boxes")["shape"], json!([n, 4]));
        assert_eq!(
            output(&a.json, "boxes")["parameters"]["binary_data_size"],
            json!(n * 16)
        );
        assert_eq!(
            output(&a.json, "scores")["data"].as_array().unwrap().len(),
            n
        );
        assert_eq!(
            output(&a.json, "masks")["data"],
            output(&reference, "masks")["data"]
        );
        assert_eq!(
            a.json["parameters"],
            json!({"image_width": 810, "image_height": 1080})
        );
    }

    // binary_data_output: every output binary unless the output says otherwise.
    let mut header = binary_header(1, data.len());
    header["parameters"] = json!({"binary_data_output": true, "classes": "person"});
    let a = binary_answer(post_binary(&url, &header, &data, None, &[]).await).await;
    let names = strings(&a.data["class_names"]);
    assert!(!names.is_empty() && names.iter().all(|n| n == "person"));
    assert_eq!(i64s(&a.data["image_sizes"]), vec![1080, 810]);
    assert_eq!(i64s(&a.data["image_index"]), vec![0; names.len()]);
    assert_eq!(strings(&a.data["masks"]).len(), names.len());

    // A JSON request may ask for binary outputs too.
    let mut body = infer_body(&bus());
    body["outputs"] = json!([{"name": "scores", "parameters": {"binary_data": true}}]);
    let r = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let a = binary_answer(r).await;
    assert_eq!(
        f32s(&a.data["scores"]),
        json_f32s(&output(&reference, "scores")["data"])
    );

    // The extension's raw binary request: no JSON at all, every output binary.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", "0")
        .body(bus())
        .send()
        .await
        .unwrap();
    let a = binary_answer(r).await;
    assert_eq!(f32s(&a.data["boxes"]), want_boxes);
}

#[tokio::test]
async fn kserve_several_images_are_answered_per_image() {
    let s = common::spawn_server(&["--sessions", "2"]).await;
    let url = s.url(&format!("/v2/models/{SEG}/infer"));
    let one = |img: Vec<u8>| {
        let url = url.clone();
        async move { post_json(url, &infer_body(&img)).await.1 }
    };
    let (bus_alone, zidane_alone) = (one(bus()).await, one(common::photo("zidane.jpg")).await);
    let photos = [bus(), common::photo("zidane.jpg"), bus()];
    let refs = [&bus_alone, &zidane_alone, &bus_alone];
    let data = elements(&photos.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let mut header = binary_header(3, data.len());
    header["parameters"] = json!({"binary_data_output": true});
    let a = binary_answer(post_binary(&url, &header, &data, None, &[]).await).await;
    let index = i64s(&a.data["image_index"]);
    let boxes = f32s(&a.data["boxes"]);
    let names = strings(&a.data["class_names"]);
    assert_eq!(
        i64s(&a.data["image_sizes"]),
        vec![1080, 810, 720, 1280, 1080, 810]
    );
    assert_eq!(a.json["parameters"], json!({}));
    assert_eq!(
        output(&a.json, "masks")["parameters"],
        json!({"format": "coco_rle", "binary_data_size": a.data["masks"].len()})
    );
    // Rows come image by image, each image's as it would be alone.
    let mut at = 0;
    for (i, r) in refs.iter().enumerate() {
        let want_names: Vec<String> =
            serde_json::from_value(output(r, "class_names")["data"].clone()).unwrap();
        let k = want_names.len();
        assert!(
            index[at..at + k].iter().all(|&x| x == i as i64),
            "{index:?}"
        );
        assert_eq!(names[at..at + k], want_names[..], "image {i}");
        assert_eq!(
            boxes[at * 4..(at + k) * 4],
            json_f32s(&output(r, "boxes")["data"])[..],
            "image {i}"
        );
        at += k;
    }
    assert_eq!(at, index.len());

    // The same three as base64 in JSON.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let body = json!({"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES",
                                  "data": photos.iter().map(|p| b64(p)).collect::<Vec<_>>()}]});
    let (st, resp) = post_json(url.clone(), &body).await;
    assert_eq!(st, 200, "{resp}");
    assert_eq!(output(&resp, "class_names")["data"], json!(names));
    assert_eq!(
        output(&resp, "image_sizes"),
        &json!({"name": "image_sizes", "datatype": "INT64", "shape": [3, 2],
                "data": [1080, 810, 720, 1280, 1080, 810]})
    );

    // One bad image fails the request and is named.
    let data = elements(&[&bus(), b"\x89PNG\r\n\x1a\n not really a png"]);
    let r = post_binary(&url, &binary_header(2, data.len()), &data, None, &[]).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("image 1 (image_index 1 of 2)"),
        "{v}"
    );
}

/// A badly framed binary request: what is wrong, and what the 400 must say.
struct Framing {
    what: &'static str,
    header: Value,
    data: Vec<u8>,
    /// The declared JSON length, when not the real one.
    declared: Option<usize>,
    says: &'static str,
}

#[tokio::test]
async fn kserve_binary_framing_errors_are_clear_400s() {
    let s = common::spawn_server(&["--sessions", "1", "--max-body-bytes", "1000000"]).await;
    let url = s.url(&format!("/v2/models/{SEG}/infer"));
    let jpeg = bus();
    let good = elements(&[&jpeg]);
    let mut cases: Vec<Framing> = vec![
        Framing {
            what: "truncated: fewer bytes than binary_data_size",
            header: binary_header(1, good.len()),
            data: good[..good.len() - 100].to_vec(),
            declared: None,
            says: "follow the JSON header",
        },
        Framing {
            what: "element length past the end",
            header: binary_header(1, good.len() - 100),
            data: good[..good.len() - 100].to_vec(),
            declared: None,
            says: "only",
        },
        Framing {
            what: "binary_data_size smaller than the data",
            header: binary_header(1, 10),
            data: good.clone(),
            declared: None,
            says: "binary_data_size 10",
        },
        Framing {
            what: "two elements for shape [1]",
            header: binary_header(1, good.len() + 8),
            data: [good.clone(), elements(&[b"abcd"])].concat(),
            declared: None,
            says: "shape",
        },
        Framing {
            what: "one element for shape [2]",
            header: binary_header(2, good.len()),
            data: good.clone(),
            declared: None,
            says: "shape says 2",
        },
        Framing {
            what: "a 4-byte length prefix cut short",
            header: binary_header(1, 3),
            data: vec![1, 0, 0],
            declared: None,
            says: "cut short",
        },
        Framing {
            what: "binary data but no binary_data_size",
            header: json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}),
            data: good.clone(),
            declared: None,
            says: "no input has binary_data_size",
        },
        Framing {
            what: "header length cuts the JSON",
            header: binary_header(1, good.len()),
            data: good.clone(),
            declared: Some(20),
            says: "malformed inference request",
        },
        Framing {
            what: "header length beyond the body",
            header: binary_header(1, good.len()),
            data: good.clone(),
            declared: Some(900_000),
            says: "exceeds the body's Content-Length",
        },
        Framing {
            what: "more than 16 images",
            header: binary_header(17, 17 * 4),
            data: elements(&[&[] as &[u8]; 17]),
            declared: None,
            says: "1 to 16 images",
        },
        Framing {
            what: "an empty element is no image",
            header: binary_header(1, 4),
            data: elements(&[b""]),
            declared: None,
            says: "empty",
        },
    ];
    // Sizes that do not even fit the body are refused from the headers.
    cases.push(Framing {
        what: "header length beyond the body limit",
        header: binary_header(1, good.len()),
        data: good.clone(),
        declared: Some(usize::MAX),
        says: "Inference-Header-Content-Length",
    });
    for Framing {
        what,
        header,
        data,
        declared,
        says,
    } in cases
    {
        let r = post_binary(&url, &header, &data, declared, &[]).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{what}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{what}: {v} does not say {says:?}"
        );
    }

    // binary_data_size in a request without the header length.
    let mut body = infer_body(&jpeg);
    body["inputs"][0]["parameters"] = json!({"binary_data_size": 10});
    let (st, v) = post_json(url.clone(), &body).await;
    assert_eq!(st, 400);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("Inference-Header-Content-Length"));
    // octet-stream without the header length; a compressed body; a header length that
    // is not a number; binary_data that is not a boolean.
    for (headers, want) in [
        (vec![("content-type", "application/octet-stream")], 400),
        // A coding segserve does not read; and one it reads, on a body that is not in it.
        (
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "br"),
            ],
            415,
        ),
        (
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            400,
        ),
        (vec![("inference-header-content-length", "lots")], 400),
    ] {
        let mut req = reqwest::Client::new().post(&url).body(good.clone());
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{headers:?}");
    }
    let mut header = binary_header(1, good.len());
    header["outputs"] = json!([{"name": "boxes", "parameters": {"binary_data": "yes"}}]);
    let r = post_binary(&url, &header, &good, None, &[]).await;
    assert_eq!(r.status(), 400);
    // The server is still well.
    let r = post_binary(&url, &binary_header(1, good.len()), &good, None, &[]).await;
    assert_eq!(r.status(), 200);
}
