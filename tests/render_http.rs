//! The browser-facing routes over real HTTP: the page and its headers, `POST /v1/render`
//! (encodings, size, errors) and PixelLib's `POST /segmentfrontend`.

use crate::common;

use common::bus;

fn form(bytes: Vec<u8>, name: &str) -> reqwest::multipart::Form {
    common::form("image", bytes, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_render_and_frontend() {
    let server = common::spawn_server(&[]).await;
    let http = reqwest::Client::new();

    // The page and its assets, with the security headers.
    for (path, ctype) in [
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ctype),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("img-src 'self' data: blob:"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }

    // Render: the photo's size, JPEG by default, PNG by query or Accept.
    let r = http
        .post(server.url("/v1/render"))
        .multipart(form(bus(), "bus.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["x-detections"], "4");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (810, 1080));

    let r = http
        .post(server.url("/v1/render?format=png&conf=0.5&classes=bus"))
        .multipart(form(bus(), "bus.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-detections"], "1");
    let drawn = image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    let photo = image::load_from_memory(&bus()).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), photo.dimensions());
    // The bus (pink, class 5) covers the middle of the photo; the far corner is untouched
    // apart from JPEG decoder differences between `image` and libjpeg-turbo (a few levels).
    let (mid, corner) = ((405, 500), (5, 1075));
    let diff = |(x, y): (u32, u32)| {
        let (a, b) = (drawn.get_pixel(x, y).0, photo.get_pixel(x, y).0);
        a.iter()
            .zip(b)
            .map(|(a, b)| (*a as i32 - b as i32).abs())
            .max()
            .unwrap()
    };
    assert!(
        diff(mid) > 20,
        "the bus mask did not change the pixel under it"
    );
    assert!(diff(corner) <= 8, "a pixel outside every detection changed");

    let r = http
        .post(server.url("/v1/render"))
        .header("accept", "image/png")
        .header("content-type", "image/jpeg")
        .body(bus())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");

    // Errors stay JSON with error_type.
    for (query, bytes, status, kind) in [
        ("", b"not an image".to_vec(), 415, "unsupported_media_type"),
        ("?format=gif", bus(), 400, "bad_request"),
        ("?classes=unicorn", bus(), 400, "bad_request"),
    ] {
        let r = http
            .post(server.url(&format!("/v1/render{query}")))
            .multipart(form(bytes, "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{query}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error_type"], kind, "{query}");
    }

    // PixelLib's frontend route: an HTML page with the drawn photo inline.
    let r = http
        .post(server.url("/segmentfrontend"))
        .multipart(form(bus(), "bus.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers().contains_key("content-security-policy"));
    let html = r.text().await.unwrap();
    assert!(
        html.contains("src=\"data:image/jpeg;base64,"),
        "no inline image"
    );
    assert!(
        html.contains(">bus</th>") || html.contains("\">bus</th>") || html.contains("bus</th>")
    );
    assert!(html.contains("person"));
    assert!(!html.contains("<script"), "the result page needs no script");

    let r = http
        .post(server.url("/segmentfrontend"))
        .multipart(form(b"hello".to_vec(), "a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Could not segment this photo"));
}

/// POSTs `photo` (and a background picture, if given) to `path`; (status, content type, body).
async fn edit(
    http: &reqwest::Client,
    url: String,
    photo: Vec<u8>,
    picture: Option<Vec<u8>>,
) -> (u16, String, Vec<u8>) {
    let mut f = form(photo, "bus.jpg");
    if let Some(p) = picture {
        f = f.part(
            "background",
            reqwest::multipart::Part::bytes(p).file_name("bg.png"),
        );
    }
    let r = http.post(url).multipart(f).send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    (status, ctype, r.bytes().await.unwrap().to_vec())
}

fn b64(text: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().unwrap())
        .unwrap()
}

/// The union of the `masks=png` masks, as a full-size 0/255 matte.
fn union_of(masks: &[serde_json::Value], w: u32, h: u32) -> Vec<u8> {
    let mut matte = vec![0u8; (w * h) as usize];
    for m in masks {
        let r: Vec<u32> = serde_json::from_value(m["rect"].clone()).unwrap();
        let png = image::load_from_memory(&b64(&m["png"])).unwrap();
        assert_eq!(png.color(), image::ColorType::L8);
        let g = png.to_luma8();
        assert_eq!(g.dimensions(), (r[2], r[3]));
        for (x, y, px) in g.enumerate_pixels() {
            assert!(px[0] == 0 || px[0] == 255);
            let i = ((r[1] + y) * w + r[0] + x) as usize;
            matte[i] = matte[i].max(px[0]);
        }
    }
    matte
}

/// Background edits, cutouts and PNG masks agree with each other and with the RLE masks:
/// the transparent edit's alpha is the union of the PNG masks, each PNG mask has the RLE
/// mask's pixels, each cutout's alpha is its PNG mask, and every fill replaces exactly the
/// pixels outside the matte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_edits_cutouts_and_png_masks() {
    let server = common::spawn_server(&[]).await;
    let http = reqwest::Client::new();
    let seg = |masks: &str| {
        http.post(server.url(&format!("/v1/segment?masks={masks}")))
            .header("content-type", "image/jpeg")
            .body(bus())
            .send()
    };
    let png_masks: serde_json::Value = seg("png").await.unwrap().json().await.unwrap();
    let rle: serde_json::Value = seg("rle").await.unwrap().json().await.unwrap();
    let (w, h) = (810u32, 1080u32);
    let dets = png_masks["detections"].as_array().unwrap();
    assert_eq!(dets.len(), 4);
    let masks: Vec<serde_json::Value> = dets.iter().map(|d| d["mask_png"].clone()).collect();
    for (m, r) in masks.iter().zip(rle["detections"].as_array().unwrap()) {
        let dense =
            segserve::mask::rle::decode_coco_rle(r["mask"]["counts"].as_str().unwrap(), h, w)
                .unwrap();
        let full = union_of(std::slice::from_ref(m), w, h);
        assert!(dense.iter().zip(&full).all(|(a, b)| (*a != 0) == (*b != 0)));
    }
    let matte = union_of(&masks, w, h);

    let (s, ctype, body) = edit(&http, server.url("/v1/background"), bus(), None).await;
    assert_eq!((s, ctype.as_str()), (200, "image/png"));
    let rgba = image::load_from_memory(&body).unwrap().to_rgba8();
    assert_eq!(rgba.dimensions(), (w, h));
    let alpha: Vec<u8> = rgba.pixels().map(|p| p[3]).collect();
    assert_eq!(
        alpha, matte,
        "the transparent edit's alpha is the masks' union"
    );
    let photo_px = |i: usize| {
        let p = rgba.as_raw();
        [p[4 * i], p[4 * i + 1], p[4 * i + 2]]
    };

    let picture = {
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            3,
            2,
            image::Rgb([200, 10, 30]),
        ))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
        out
    };
    let gray = |p: [u8; 3]| {
        let v =
            (u32::from(p[0]) * 4899 + u32::from(p[1]) * 9617 + u32::from(p[2]) * 1868 + 8192) >> 14;
        [v as u8; 3]
    };
    for (query, picture, outside) in [
        ("background=color&color=0,255,0", None, Some([0u8, 255, 0])),
        ("background=gray", None, None),
        ("background=blur&blur=low", None, None),
        ("", Some(picture.clone()), Some([200, 10, 30])),
    ] {
        let url = server.url(&format!("/v1/background?format=png&{query}"));
        let (s, ctype, body) = edit(&http, url, bus(), picture).await;
        assert_eq!((s, ctype.as_str()), (200, "image/png"), "{query}");
        let rgb = image::load_from_memory(&body).unwrap().to_rgb8();
        let mut changed = 0;
        for (i, p) in rgb.pixels().enumerate() {
            if matte[i] == 255 {
                assert_eq!(p.0, photo_px(i), "{query}: object pixel {i}");
            } else if let Some(c) = outside {
                assert_eq!(p.0, c, "{query}: background pixel {i}");
            } else if query.contains("gray") {
                assert_eq!(p.0, gray(photo_px(i)), "{query}: background pixel {i}");
            }
            changed += usize::from(p.0 != photo_px(i));
        }
        assert!(
            changed > (w * h) as usize / 3,
            "{query}: {changed} pixels changed"
        );
    }
    // PixelLib's `detect="person"`: only people stay.
    let url = server.url("/v1/background?classes=person&format=png");
    let (s, _, body) = edit(&http, url, bus(), None).await;
    assert_eq!(s, 200);
    let people = image::load_from_memory(&body).unwrap().to_rgba8();
    let kept: usize = people.pixels().filter(|p| p[3] == 255).count();
    let all: usize = matte.iter().filter(|a| **a == 255).count();
    assert!(kept > 0 && kept < all / 2, "{kept} of {all}");
    // Feathering softens the edges.
    let (_, _, body) = edit(&http, server.url("/v1/background?feather=3"), bus(), None).await;
    let soft = image::load_from_memory(&body).unwrap().to_rgba8();
    assert!(soft.pixels().filter(|p| p[3] > 0 && p[3] < 255).count() > 1000);

    // Cutouts: one per detection, each its PNG mask as alpha.
    let (s, _, body) = edit(&http, server.url("/v1/cutouts"), bus(), None).await;
    assert_eq!(s, 200);
    let cut: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let objects = cut["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 4);
    for (o, m) in objects.iter().zip(&masks) {
        assert_eq!(o["rect"], m["rect"]);
        let png = image::load_from_memory(&b64(&o["png"])).unwrap();
        assert_eq!(png.color(), image::ColorType::Rgba8);
        let mask = image::load_from_memory(&b64(&m["png"])).unwrap().to_luma8();
        let a: Vec<u8> = png.to_rgba8().pixels().map(|p| p[3]).collect();
        assert_eq!(a, mask.into_raw());
    }

    // Bad requests.
    for (query, picture, status) in [
        ("background=transparent&format=jpeg", None, 400),
        ("background=image", None, 400),
        ("background=gray", Some(picture.clone()), 400),
        ("background=blur&blur=max", None, 400),
        ("background=color&color=red", None, 400),
        ("feather=40", None, 400),
        ("background=image", Some(b"not a picture".to_vec()), 415),
    ] {
        let url = server.url(&format!("/v1/background?{query}"));
        let (s, ctype, body) = edit(&http, url, bus(), picture).await;
        assert_eq!(
            (s, ctype.as_str()),
            (status, "application/json"),
            "{query}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}
