//! The browser-facing routes over real HTTP: the page and its headers, `POST /v1/render`
//! (encodings, size, errors) and PixelLib's `POST /segmentfrontend`.

mod common;

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
