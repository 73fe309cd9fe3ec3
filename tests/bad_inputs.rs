//! Hostile and odd requests against the real server: every case is built here
//! (images generated with the `image` crate or MozJPEG, bytes crafted by hand), and each
//! must get its documented status and `error_type`, leak no paths, carry `nosniff`, and
//! leave the server answering /readyz. Odd-but-valid images must succeed.

use crate::common;

use std::time::Duration;

use futures_util::StreamExt;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Body limit of the server under test: small, so the over-limit cases stay quick.
const LIMIT: usize = 4 << 20;
const BOUNDARY: &str = "XyZzy0123456789";

use common::craft::*;

// ---------------------------------------------------------------- request makers

/// One multipart part: field name (raw bytes, so invalid UTF-8 can be sent), optional
/// filename, bytes.
struct Part {
    name: Vec<u8>,
    filename: Option<&'static str>,
    data: Vec<u8>,
}

fn file(name: &str, data: Vec<u8>) -> Part {
    Part {
        name: name.as_bytes().to_vec(),
        filename: Some("upload.bin"),
        data,
    }
}

fn text(name: &[u8], data: &[u8]) -> Part {
    Part {
        name: name.to_vec(),
        filename: None,
        data: data.to_vec(),
    }
}

fn form(parts: Vec<Part>) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend(b"Content-Disposition: form-data; name=\"");
        body.extend(&p.name);
        body.extend(b"\"");
        if let Some(f) = p.filename {
            body.extend(
                format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes(),
            );
        }
        body.extend(b"\r\n\r\n");
        body.extend(&p.data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// What a case sends.
enum Send {
    /// POST with this content type and body (Content-Length set).
    Post {
        path: String,
        ctype: String,
        body: Vec<u8>,
    },
    /// POST with a chunked body (no Content-Length) of `total` bytes.
    Chunked {
        path: String,
        ctype: String,
        head: Vec<u8>,
        total: usize,
    },
    /// Any method, no body, extra headers.
    Plain {
        method: reqwest::Method,
        path: String,
        headers: Vec<(String, String)>,
    },
}

/// What a case expects.
enum Expect {
    /// 200 with an upright image of this size (when given).
    Ok(Option<(u32, u32)>),
    /// This status and `error_type`.
    Err(u16, &'static str),
}

struct Case {
    name: String,
    send: Send,
    expect: Expect,
}

fn image_form(path: &str, bytes: Vec<u8>) -> Send {
    Send::Post {
        path: path.into(),
        ctype: format!("multipart/form-data; boundary={BOUNDARY}"),
        body: form(vec![file("image", bytes)]),
    }
}

fn case(name: impl Into<String>, send: Send, expect: Expect) -> Case {
    Case {
        name: name.into(),
        send,
        expect,
    }
}

fn ok(name: &str, bytes: Vec<u8>, size: Option<(u32, u32)>) -> Case {
    case(name, image_form("/v1/segment", bytes), Expect::Ok(size))
}

fn refused(name: &str, bytes: Vec<u8>, status: u16, kind: &'static str) -> Case {
    case(
        name,
        image_form("/v1/segment", bytes),
        Expect::Err(status, kind),
    )
}

fn query(name: &str, q: &str, status: u16, kind: &'static str) -> Case {
    case(
        name,
        image_form(&format!("/v1/segment?{q}"), jpeg(64, 48)),
        Expect::Err(status, kind),
    )
}

fn cases() -> Vec<Case> {
    let small_jpeg = jpeg(96, 64);
    let small_png = png(DynamicImage::ImageRgb8(noise(96, 64)));
    let bus = common::bus();
    let progressive = mozjpeg(120, 80, mozjpeg::ColorSpace::JCS_RGB, true);
    let mut v = vec![
        // Not images at all.
        refused("zero bytes", Vec::new(), 400, "bad_request"),
        refused(
            "plain text",
            b"hello, I am not a photo\n".to_vec(),
            415,
            "unsupported_media_type",
        ),
        refused(
            "html",
            b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>".to_vec(),
            415,
            "unsupported_media_type",
        ),
        refused(
            "pdf",
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
                .to_vec(),
            415,
            "unsupported_media_type",
        ),
        refused(
            "jpeg magic only",
            vec![0xFF, 0xD8, 0xFF],
            422,
            "invalid_image",
        ),
        refused(
            "png signature only",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            422,
            "invalid_image",
        ),
        // Truncated: libjpeg would pad with grey; we refuse (422).
        refused(
            "truncated photo jpeg",
            bus[..bus.len() / 2].to_vec(),
            422,
            "invalid_image",
        ),
        refused(
            "truncated small jpeg",
            small_jpeg[..small_jpeg.len() * 2 / 3].to_vec(),
            422,
            "invalid_image",
        ),
        refused(
            "jpeg without its EOI marker",
            small_jpeg[..small_jpeg.len() - 2].to_vec(),
            422,
            "invalid_image",
        ),
        refused(
            "truncated progressive jpeg",
            progressive[..progressive.len() * 3 / 4].to_vec(),
            422,
            "invalid_image",
        ),
        refused(
            "truncated png",
            small_png[..small_png.len() * 2 / 3].to_vec(),
            422,
            "invalid_image",
        ),
        refused(
            "png without IDAT data",
            png_crafted(64, 64, 8, 2, 0, 0),
            422,
            "invalid_image",
        ),
        // A single-frame GIF cut inside its pixel data (an animation cut after its first
        // frame is still a valid first frame, which is all we use).
        refused(
            "truncated gif",
            {
                let g = encode(&DynamicImage::ImageRgb8(noise(64, 64)), ImageFormat::Gif);
                g[..g.len() / 2].to_vec()
            },
            422,
            "invalid_image",
        ),
        // Sizes declared in headers: refused before any pixel buffer exists.
        refused(
            "jpeg header 50000x50000",
            jpeg_with_declared_size(small_jpeg.clone(), 50_000, 50_000),
            413,
            "payload_too_large",
        ),
        refused(
            "jpeg header 16000x16000 (pixel count)",
            jpeg_with_declared_size(small_jpeg.clone(), 16_000, 16_000),
            413,
            "payload_too_large",
        ),
        refused(
            "progressive jpeg header 65535x65535",
            jpeg_with_declared_size(progressive.clone(), 65_535, 65_535),
            413,
            "payload_too_large",
        ),
        refused(
            "png header 50000x50000",
            png_crafted(50_000, 50_000, 8, 2, 1, 150_000),
            413,
            "payload_too_large",
        ),
        refused(
            "png decompression bomb 20000x20000",
            png_crafted(20_000, 20_000, 1, 0, 20_000, 2_500),
            413,
            "payload_too_large",
        ),
        refused(
            "png 0x0",
            png_crafted(0, 0, 8, 2, 0, 0),
            422,
            "invalid_image",
        ),
        // Odd but valid.
        ok(
            "1x1 png",
            png(DynamicImage::ImageRgb8(noise(1, 1))),
            Some((1, 1)),
        ),
        ok("1x1 jpeg", jpeg(1, 1), Some((1, 1))),
        ok(
            "10000x3 png",
            png(DynamicImage::ImageRgb8(noise(10_000, 3))),
            Some((10_000, 3)),
        ),
        ok("3x10000 jpeg", jpeg(3, 10_000), Some((3, 10_000))),
        ok("animated gif (first frame)", animated_gif(), Some((40, 30))),
        ok(
            "cmyk jpeg",
            mozjpeg(80, 60, mozjpeg::ColorSpace::JCS_CMYK, false),
            Some((80, 60)),
        ),
        ok("progressive jpeg", progressive.clone(), Some((120, 80))),
        ok(
            "grayscale jpeg",
            encode(
                &DynamicImage::ImageLuma8(ImageBuffer::from_fn(50, 40, |x, _| {
                    image::Luma([x as u8 * 5])
                })),
                ImageFormat::Jpeg,
            ),
            Some((50, 40)),
        ),
        ok(
            "16-bit png",
            png(DynamicImage::ImageRgb16(ImageBuffer::from_fn(
                64,
                48,
                |x, y| Rgb([x as u16 * 1000, y as u16 * 1300, 40_000]),
            ))),
            Some((64, 48)),
        ),
        ok(
            "grayscale+alpha png",
            png(DynamicImage::ImageLumaA8(ImageBuffer::from_fn(
                64,
                48,
                |x, y| image::LumaA([x as u8 * 4, y as u8 * 5]),
            ))),
            Some((64, 48)),
        ),
        ok(
            "16-bit grayscale+alpha png",
            png(DynamicImage::ImageLumaA16(ImageBuffer::from_fn(
                30,
                20,
                |x, _| image::LumaA([x as u16 * 2000, 65535]),
            ))),
            Some((30, 20)),
        ),
        ok(
            "rgba png",
            png(DynamicImage::ImageRgba8(ImageBuffer::from_fn(
                64,
                48,
                |x, y| image::Rgba([x as u8, y as u8, 9, 128]),
            ))),
            Some((64, 48)),
        ),
        ok(
            "bmp",
            encode(&DynamicImage::ImageRgb8(noise(33, 17)), ImageFormat::Bmp),
            Some((33, 17)),
        ),
        ok(
            "multi-page float tiff",
            float_tiff(3, 48, 32),
            Some((48, 32)),
        ),
        ok(
            "jpeg with trailing garbage after EOI",
            [small_jpeg.clone(), b"trailing junk".to_vec()].concat(),
            Some((96, 64)),
        ),
        ok("real photo", bus.clone(), Some((810, 1080))),
    ];
    // EXIF orientations: 64x32 stored; 5 to 8 turn it a quarter, so it comes back 32x64.
    let stored = jpeg(64, 32);
    for o in 2..=8u16 {
        let upright = if o >= 5 { (32, 64) } else { (64, 32) };
        v.push(ok(
            &format!("exif orientation {o}"),
            with_exif_orientation(&stored, o),
            Some(upright),
        ));
    }
    let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
    let post = |path: &str, ctype: &str, body: Vec<u8>| Send::Post {
        path: path.into(),
        ctype: ctype.into(),
        body,
    };
    v.extend([
        // Malformed requests.
        // The form's only file is the photo, whatever its field is called (FastAPI-style
        // clients send `file`); with no file, or several but no `image`, it is a 400 naming them.
        case("the only file, under another field name", post("/v1/segment", &multipart, form(vec![file("file", small_jpeg.clone())])), Expect::Ok(Some((96, 64)))),
        case("pixellib: the only file, under another name", post("/segmentapi?mask_values=false", &multipart, form(vec![file("photo", small_jpeg.clone())])), Expect::Ok(None)),
        case("two files, neither named image", post("/v1/segment", &multipart, form(vec![file("a", small_jpeg.clone()), file("b", small_jpeg.clone())])), Expect::Err(400, "bad_request")),
        case("a text field and no file", post("/v1/segment", &multipart, form(vec![text(b"photo", b"not a file")])), Expect::Err(400, "bad_request")),
        case("two image files", post("/v1/segment", &multipart, form(vec![file("image", small_jpeg.clone()), file("image", small_jpeg.clone())])), Expect::Err(400, "bad_request")),
        case("no boundary", post("/v1/segment", "multipart/form-data", form(vec![file("image", small_jpeg.clone())])), Expect::Err(400, "bad_request")),
        case("boundary but garbage body", post("/v1/segment", &multipart, b"this is not multipart at all".to_vec()), Expect::Err(400, "bad_request")),
        case("multipart cut mid-part", post("/v1/segment", &multipart, { let f = form(vec![file("image", small_jpeg.clone())]); f[..f.len() / 2].to_vec() }), Expect::Err(400, "bad_request")),
        case("wrong content type (json)", post("/v1/segment", "application/json", br#"{"image":"aGVsbG8="}"#.to_vec()), Expect::Err(415, "unsupported_media_type")),
        case("no content type", post("/v1/segment", "", small_jpeg.clone()), Expect::Err(415, "unsupported_media_type")),
        case("raw jpeg to the multipart-only pixellib route", post("/segmentapi", "image/jpeg", small_jpeg.clone()), Expect::Err(415, "unsupported_media_type")),
        case("raw jpeg body is fine on /v1/segment", post("/v1/segment", "image/jpeg", small_jpeg.clone()), Expect::Ok(Some((96, 64)))),
        case("raw empty body", post("/v1/segment", "image/jpeg", Vec::new()), Expect::Err(400, "bad_request")),
        case("raw body labelled png but is text", post("/v1/segment", "image/png", b"GIF89a? no".to_vec()), Expect::Err(422, "invalid_image")),
        case("invalid UTF-8 in a text field (ignored)", post("/v1/segment", &multipart, form(vec![text(b"note", b"\xff\xfe\xc3("), file("image", small_jpeg.clone())])), Expect::Ok(Some((96, 64)))),
        case("invalid UTF-8 in the only file's field name", post("/v1/segment", &multipart, form(vec![Part { name: b"im\xffage".to_vec(), filename: Some("x.jpg"), data: small_jpeg.clone() }])), Expect::Ok(Some((96, 64)))),
        case("invalid UTF-8 in the only field's name, not a file", post("/v1/segment", &multipart, form(vec![Part { name: b"im\xffage".to_vec(), filename: None, data: small_jpeg.clone() }])), Expect::Err(400, "bad_request")),
        case("17 parts", post("/v1/segment", &multipart, form((0..16).map(|i| text(format!("f{i}").as_bytes(), b"x")).chain([file("image", small_jpeg.clone())]).collect())), Expect::Err(400, "bad_request")),
        case("text field over 64 KiB", post("/v1/segment", &multipart, form(vec![text(b"note", &vec![b'a'; 70_000]), file("image", small_jpeg.clone())])), Expect::Err(413, "payload_too_large")),
        case("declared body over the limit", post("/v1/segment", "image/jpeg", vec![0xFF; LIMIT + 1]), Expect::Err(413, "payload_too_large")),
        case("chunked raw body over the limit", Send::Chunked { path: "/v1/segment".into(), ctype: "image/jpeg".into(), head: small_jpeg.clone(), total: LIMIT + (1 << 20) }, Expect::Err(413, "payload_too_large")),
        case("chunked multipart body over the limit", Send::Chunked { path: "/segmentapi".into(), ctype: multipart.clone(), head: format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n").into_bytes(), total: LIMIT + (1 << 20) }, Expect::Err(413, "payload_too_large")),
        // Query values.
        query("conf=2", "conf=2", 400, "bad_request"),
        query("iou=-1", "iou=-1", 400, "bad_request"),
        query("max_det=0", "max_det=0", 400, "bad_request"),
        query("max_det=huge", "max_det=99999999999999999999999", 400, "bad_request"),
        query("classes=unicorn", "classes=unicorn", 400, "bad_request"),
        query("classes=999", "classes=999", 400, "bad_request"),
        query("masks=maybe", "masks=maybe", 400, "bad_request"),
        query("conf=NaN", "conf=NaN", 400, "bad_request"),
        query("unknown parameter", "colour=blue", 400, "bad_request"),
        query("malformed percent-encoding", "conf=%FF%FE", 400, "bad_request"),
        query("unknown model", "model=yolov99", 404, "not_found"),
        query("query over the limit", &format!("classes={}", "person,".repeat(1000)), 414, "uri_too_long"),
        case("pixellib mask_values=maybe", image_form("/segmentapi?mask_values=maybe", small_jpeg.clone()), Expect::Err(400, "bad_request")),
        // Routing and headers.
        case("GET on the upload route", Send::Plain { method: reqwest::Method::GET, path: "/v1/segment".into(), headers: vec![] }, Expect::Err(405, "method_not_allowed")),
        case("unknown route", Send::Plain { method: reqwest::Method::GET, path: "/../../etc/passwd".into(), headers: vec![] }, Expect::Err(404, "not_found")),
        case("headers over the limit", Send::Plain { method: reqwest::Method::GET, path: "/v1/models".into(), headers: vec![("x-padding".into(), "p".repeat(20_000))] }, Expect::Err(431, "headers_too_large")),
    ]);
    v
}

// ---------------------------------------------------------------- the runner

async fn send(client: &reqwest::Client, base: &str, send: Send) -> reqwest::Response {
    let r = match send {
        Send::Post { path, ctype, body } => {
            let mut b = client.post(format!("{base}{path}")).body(body);
            if !ctype.is_empty() {
                b = b.header("content-type", ctype);
            }
            b
        }
        Send::Chunked {
            path,
            ctype,
            head,
            total,
        } => {
            let chunk = bytes::Bytes::from(vec![0x5Au8; 64 * 1024]);
            let rest = (total - head.len()).div_ceil(chunk.len());
            let stream = futures_util::stream::iter(
                std::iter::once(bytes::Bytes::from(head)).chain(std::iter::repeat_n(chunk, rest)),
            )
            .map(Ok::<_, std::io::Error>);
            client
                .post(format!("{base}{path}"))
                .header("content-type", ctype)
                .body(reqwest::Body::wrap_stream(stream))
        }
        Send::Plain {
            method,
            path,
            headers,
        } => {
            let mut b = client.request(method, format!("{base}{path}"));
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b
        }
    };
    r.send()
        .await
        .expect("the server answers (no connection error)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_odd_requests_get_their_documented_answers() {
    let limit = LIMIT.to_string();
    let server = common::spawn_server(&["--max-body-bytes", &limit]).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let repo = common::repo().display().to_string();
    let cases = cases();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    eprintln!("bad_inputs: {} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let resp = send(&client, &base, c.send).await;
        let status = resp.status().as_u16();
        let nosniff = resp
            .headers()
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.text().await.unwrap();
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let problem = match c.expect {
            Expect::Ok(size) => {
                let got = (
                    json["image"]["width"].as_u64(),
                    json["image"]["height"].as_u64(),
                );
                if status != 200 {
                    Some(format!("expected 200, got {status}: {body}"))
                } else if let Some((w, h)) =
                    size.filter(|s| got != (Some(s.0 as u64), Some(s.1 as u64)))
                {
                    Some(format!("expected an upright {w}x{h} image, got {got:?}"))
                } else {
                    None
                }
            }
            Expect::Err(want, kind) => {
                if status != want || json["error_type"] != kind {
                    Some(format!("expected {want} {kind}, got {status}: {body}"))
                } else if json["error"].as_str().is_none_or(str::is_empty) {
                    Some(format!("no error message: {body}"))
                } else {
                    None
                }
            }
        };
        let leak = [
            repo.as_str(),
            "/root",
            "/home/",
            ".rs:",
            "panicked",
            "target/",
        ]
        .into_iter()
        .find(|p| body.contains(p));
        let mut problems: Vec<String> = problem.into_iter().collect();
        if let Some(p) = leak {
            problems.push(format!("the answer leaks {p:?}: {body}"));
        }
        if nosniff.as_deref() != Some("nosniff") {
            problems.push("no X-Content-Type-Options: nosniff".into());
        }
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if !matches!(ready, Ok(200)) {
            problems.push(format!("/readyz afterwards: {ready:?}"));
        }
        for p in problems {
            failures.push(format!("{}: {p}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Slow clients: bodies trickled a byte at a time get 408 once the body timeout
/// passes, and meanwhile ordinary requests are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_time_out_with_408_while_others_are_served() {
    let server =
        common::spawn_server(&["--body-timeout-ms", "1500", "--request-timeout-ms", "10000"]).await;
    let addr = server.addr;
    let trickle = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        // Keep sending a byte every 100 ms until the server answers (or closes).
        let writer = tokio::spawn(async move {
            for _ in 0..600 {
                if wr.write_all(b"\xFF").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("request_timeout") {
            let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
                .await
                .expect("an answer within 30 s")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        writer.abort();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let slow: Vec<_> = (0..16)
        .map(|_| tokio::spawn(trickle("/v1/segment")))
        .collect();
    // While 16 clients trickle, a normal upload and the probes are answered.
    let client = reqwest::Client::new();
    let part = reqwest::multipart::Part::bytes(jpeg(64, 48)).file_name("a.jpg");
    let resp = client
        .post(server.url("/v1/segment"))
        .multipart(reqwest::multipart::Form::new().part("image", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for s in slow {
        let answer = s.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Regenerates the small image seed corpus of the `decode_letterbox` fuzz target from the
/// generators above: `cargo test --release --test tests -- --ignored bad_inputs::write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz/corpus/decode_letterbox/seed-*; run by hand"]
fn write_fuzz_seeds() {
    let dir = common::repo().join("fuzz/corpus/decode_letterbox");
    std::fs::create_dir_all(&dir).unwrap();
    let small = jpeg(12, 8);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-baseline.jpg", small.clone()),
        (
            "seed-progressive.jpg",
            mozjpeg(12, 8, mozjpeg::ColorSpace::JCS_RGB, true),
        ),
        (
            "seed-cmyk.jpg",
            mozjpeg(8, 8, mozjpeg::ColorSpace::JCS_CMYK, false),
        ),
        ("seed-exif6.jpg", with_exif_orientation(&small, 6)),
        ("seed-rgb.png", png(DynamicImage::ImageRgb8(noise(9, 7)))),
        (
            "seed-gray-alpha16.png",
            png(DynamicImage::ImageLumaA16(ImageBuffer::from_fn(
                5,
                4,
                |x, _| image::LumaA([x as u16 * 9000, 40_000]),
            ))),
        ),
        ("seed-animated.gif", {
            let g = animated_gif();
            // Keep it small: re-encode at 8x6.
            let _ = g;
            let mut v = Vec::new();
            let mut enc = image::codecs::gif::GifEncoder::new(&mut v);
            enc.encode_frames((0..2).map(|i| {
                image::Frame::new(ImageBuffer::from_pixel(
                    8,
                    6,
                    image::Rgba([i * 100, 50, 9, 255]),
                ))
            }))
            .unwrap();
            drop(enc);
            v
        }),
        (
            "seed.bmp",
            encode(&DynamicImage::ImageRgb8(noise(5, 3)), ImageFormat::Bmp),
        ),
        ("seed-float.tiff", float_tiff(2, 4, 3)),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
