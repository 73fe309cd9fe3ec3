//! The OpenAPI document against the running server: every documented operation
//! is served, every route the server answers is documented, and every documented status
//! code is one the handler really returns: each (route, status) pair is provoked here.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use segserve::api::{self, AppState};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const MODEL: &str = "yolov8n-seg-320";

async fn spec(s: &common::TestServer) -> Value {
    let r = reqwest::get(s.url("/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// (METHOD, path template) of every operation in the spec.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn concrete(path: &str) -> String {
    path.replace("{name}", MODEL).replace("{version}", "1")
}

/// True when the router has a route for `method path` (not the 404 fallback, not 405).
async fn served(s: &common::TestServer, method: &str, path: &str) -> bool {
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), s.url(path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let fallback = status == 404 && body["error"] == "no such route; see GET /docs for the API";
    !(fallback || status == 405)
}

#[tokio::test]
async fn every_documented_route_is_served_and_every_served_route_documented() {
    let s = common::spawn_server(&["--sessions", "1"]).await;
    let spec = spec(&s).await;
    assert_eq!(spec["openapi"], "3.1.0");
    let ops = operations(&spec);
    assert!(ops.len() >= 14, "{ops:?}");
    for (method, path) in &ops {
        assert!(
            served(&s, method, &concrete(path)).await,
            "{method} {path} is documented but not served"
        );
    }
    // The other direction: routes named anywhere in the README or docs/ (the human-facing
    // lists of routes, which every new route lands in), plus a few likely ones, must be in the spec
    // whenever the server answers them.
    // The README and every page of docs/.
    let mut readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    for page in std::fs::read_dir(common::repo().join("docs")).unwrap() {
        readme.push_str(&std::fs::read_to_string(page.unwrap().path()).unwrap());
    }
    let mut candidates: BTreeSet<String> = [
        "/",
        "/index.html",
        "/docs",
        "/openapi.json",
        "/v2/repository/index",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for word in readme.split(|c: char| c.is_whitespace() || "`|()[]\"'".contains(c)) {
        let path = word.split('?').next().unwrap();
        // `http://localhost:5000/x`, `localhost:5000/x`, `$URL/x` all name route `/x`.
        let path = match path.find(":5000/").or_else(|| path.find("URL/")) {
            Some(i) => &path[path[i..].find('/').unwrap() + i..],
            None => path,
        };
        let path = path.trim_end_matches(['.', ',', ':']);
        if path.starts_with('/')
            && path.len() > 1
            && !path.contains("..")
            && !path.contains('@')
            && !path.starts_with("//")
        {
            candidates.insert(path.to_string());
        }
    }
    let templates: Vec<(String, String)> = ops.iter().cloned().collect();
    for path in &candidates {
        for method in ["GET", "POST", "PUT", "DELETE"] {
            if !served(&s, method, &concrete(path)).await {
                continue;
            }
            let documented = templates
                .iter()
                .any(|(m, t)| m == method && concrete(t) == concrete(path));
            assert!(
                documented,
                "{method} {path} is served but not in /openapi.json"
            );
        }
    }
}

#[tokio::test]
async fn docs_page_is_self_contained() {
    let s = common::spawn_server(&["--sessions", "1"]).await;
    let r = reqwest::get(s.url("/docs")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("openapi.json"));
    // Works offline: no script, style or font from another host.
    for needle in ["src=\"http", "href=\"http", "@import", "cdn"] {
        assert!(!html.contains(needle), "/docs references {needle}");
    }
}

/// Which server a probe goes to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// Normal server (default limits).
    Live,
    /// Server with a 4 KiB body limit and a short body timeout.
    Small,
    /// The router with no models and readiness off, without a socket.
    NotReady,
    /// `Small`, with a body that never finishes arriving (raw TCP).
    Stalled,
}

struct Probe {
    target: Target,
    method: &'static str,
    uri: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn probe(target: Target, method: &'static str, uri: &str) -> Probe {
    Probe {
        target,
        method,
        uri: uri.to_string(),
        content_type: None,
        body: Vec::new(),
    }
}

impl Probe {
    fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some(content_type.to_string());
        self.body = body.into();
        self
    }
}

use common::bus;

fn form(field: &str, data: &[u8]) -> (String, Vec<u8>) {
    common::multipart(field, "x.jpg", data)
}

fn infer_json(image: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&common::client::infer_body(image)).unwrap()
}

const CORRUPT_PNG: &[u8] = b"\x89PNG\r\n\x1a\n not really a png";

/// One request that makes each (METHOD, route template, status) happen.
fn provokers() -> BTreeMap<(&'static str, &'static str, u16), Probe> {
    use Target::*;
    let infer = "/v2/models/yolov8n-seg-320/infer";
    let (mp, bus_form) = form("image", &bus());
    // A text field, no file: nothing to segment.
    let no_image_form = {
        let (_, f) = form("photo", b"not the image field");
        String::from_utf8(f)
            .unwrap()
            .replace("; filename=\"x.jpg\"", "")
            .into_bytes()
    };
    let (_, corrupt_form) = form("image", CORRUPT_PNG);
    let big = vec![b' '; 8192];
    let mut m = BTreeMap::new();
    // The route template as the spec names it, the status, and a request that makes it happen.
    let mut add = |route: &'static str, status: u16, p: Probe| {
        m.insert((p.method, route, status), p);
    };
    // The PixelLib routes: a multipart form, for JSON and for HTML.
    for r in ["/segmentapi", "/segmentfrontend"] {
        add(r, 200, probe(Live, "POST", r).body(&mp, bus_form.clone()));
        add(
            r,
            400,
            probe(Live, "POST", r).body(&mp, no_image_form.clone()),
        );
        add(
            r,
            408,
            probe(Stalled, "POST", r).body(&mp, bus_form.clone()),
        );
        add(r, 413, probe(Small, "POST", r).body(&mp, bus_form.clone()));
        add(r, 415, probe(Live, "POST", r).body("text/plain", "hi"));
        add(
            r,
            422,
            probe(Live, "POST", r).body(&mp, corrupt_form.clone()),
        );
        add(
            r,
            503,
            probe(NotReady, "POST", r).body(&mp, bus_form.clone()),
        );
    }
    // The native routes take the same uploads and options (render adds `format`).
    // The edit routes too (background adds its own keys, cutouts `feather`).
    for (r, bad_query) in [
        ("/v1/segment", "/v1/segment?conf=2"),
        ("/v1/render", "/v1/render?format=gif"),
        ("/v1/background", "/v1/background?format=jpeg"),
        ("/v1/cutouts", "/v1/cutouts?feather=99"),
    ] {
        let unknown_model = format!("{r}?model=nope");
        let jpeg = |target, path: &str| probe(target, "POST", path).body("image/jpeg", bus());
        add(r, 200, jpeg(Live, r));
        add(r, 400, jpeg(Live, bad_query));
        add(r, 404, jpeg(Live, &unknown_model));
        add(r, 408, jpeg(Stalled, r));
        add(r, 413, jpeg(Small, r));
        add(r, 415, probe(Live, "POST", r).body("text/plain", "hi"));
        add(
            r,
            422,
            probe(Live, "POST", r).body("image/png", CORRUPT_PNG),
        );
        add(r, 503, jpeg(NotReady, r));
    }
    add("/v1/models", 200, probe(Live, "GET", "/v1/models"));
    add("/v1/models", 503, probe(NotReady, "GET", "/v1/models"));
    // Operations.
    add("/healthz", 200, probe(NotReady, "GET", "/healthz"));
    add("/readyz", 200, probe(Live, "GET", "/readyz"));
    add("/readyz", 503, probe(NotReady, "GET", "/readyz"));
    add("/metrics", 200, probe(Live, "GET", "/metrics"));
    add(
        "/openapi.json",
        200,
        probe(NotReady, "GET", "/openapi.json"),
    );
    add("/docs", 200, probe(NotReady, "GET", "/docs"));
    // Open Inference Protocol.
    add("/v2", 200, probe(NotReady, "GET", "/v2"));
    add(
        "/v2/health/live",
        200,
        probe(NotReady, "GET", "/v2/health/live"),
    );
    add(
        "/v2/health/ready",
        200,
        probe(Live, "GET", "/v2/health/ready"),
    );
    add(
        "/v2/health/ready",
        400,
        probe(NotReady, "GET", "/v2/health/ready"),
    );
    let r = "/v2/models/{name}";
    add(r, 200, probe(Live, "GET", "/v2/models/yolov8n-seg-320"));
    add(r, 404, probe(Live, "GET", "/v2/models/nope"));
    add(r, 503, probe(NotReady, "GET", "/v2/models/yolov8n-seg-320"));
    let r = "/v2/models/{name}/config";
    add(
        r,
        200,
        probe(Live, "GET", "/v2/models/yolov8n-seg-320-raw/config"),
    );
    add(r, 404, probe(Live, "GET", "/v2/models/nope-raw/config"));
    add(
        r,
        503,
        probe(NotReady, "GET", "/v2/models/yolov8n-seg-320/config"),
    );
    let r = "/v2/models/{name}/ready";
    add(
        r,
        200,
        probe(Live, "GET", "/v2/models/yolov8n-seg-320/ready"),
    );
    add(
        r,
        400,
        probe(NotReady, "GET", "/v2/models/yolov8n-seg-320/ready"),
    );
    add(r, 404, probe(Live, "GET", "/v2/models/nope/ready"));
    let r = "/v2/models/{name}/infer";
    add(
        r,
        200,
        probe(Live, "POST", infer).body("application/json", infer_json(&bus())),
    );
    add(
        r,
        400,
        probe(Live, "POST", infer).body("application/json", "{\"inputs\": 3}"),
    );
    add(
        r,
        404,
        probe(Live, "POST", "/v2/models/nope/infer").body("application/json", infer_json(&bus())),
    );
    add(
        r,
        408,
        probe(Stalled, "POST", infer).body("application/json", infer_json(&bus())),
    );
    add(
        r,
        413,
        probe(Small, "POST", infer).body("application/json", big),
    );
    add(r, 415, probe(Live, "POST", infer).body("text/plain", "hi"));
    add(
        r,
        422,
        probe(Live, "POST", infer).body("application/json", infer_json(CORRUPT_PNG)),
    );
    add(
        r,
        503,
        probe(NotReady, "POST", infer).body("application/json", infer_json(&bus())),
    );
    // The same, through the protocol's optional `/versions/{version}` paths.
    let v = "/v2/models/yolov8n-seg-320/versions/1";
    let r = "/v2/models/{name}/versions/{version}";
    add(r, 200, probe(Live, "GET", v));
    add(
        r,
        404,
        probe(Live, "GET", "/v2/models/yolov8n-seg-320/versions/2"),
    );
    add(r, 503, probe(NotReady, "GET", v));
    let r = "/v2/models/{name}/versions/{version}/ready";
    let ready = format!("{v}/ready");
    add(r, 200, probe(Live, "GET", &ready));
    add(r, 400, probe(NotReady, "GET", &ready));
    add(
        r,
        404,
        probe(Live, "GET", "/v2/models/nope/versions/1/ready"),
    );
    let r = "/v2/models/{name}/versions/{version}/infer";
    let vi = format!("{v}/infer");
    let json = "application/json";
    add(
        r,
        200,
        probe(Live, "POST", &vi).body(json, infer_json(&bus())),
    );
    add(
        r,
        400,
        probe(Live, "POST", &vi).body(json, "{\"inputs\": 3}"),
    );
    add(
        r,
        404,
        probe(Live, "POST", "/v2/models/yolov8n-seg-320/versions/7/infer")
            .body(json, infer_json(&bus())),
    );
    add(
        r,
        408,
        probe(Stalled, "POST", &vi).body(json, infer_json(&bus())),
    );
    add(
        r,
        413,
        probe(Small, "POST", &vi).body(json, vec![b' '; 8192]),
    );
    add(r, 415, probe(Live, "POST", &vi).body("text/plain", "hi"));
    add(
        r,
        422,
        probe(Live, "POST", &vi).body(json, infer_json(CORRUPT_PNG)),
    );
    add(
        r,
        503,
        probe(NotReady, "POST", &vi).body(json, infer_json(&bus())),
    );
    add(
        "/static/docs.js",
        200,
        probe(NotReady, "GET", "/static/docs.js"),
    );
    add(
        "/static/docs.css",
        200,
        probe(NotReady, "GET", "/static/docs.css"),
    );
    // The page and its assets.
    add("/", 200, probe(NotReady, "GET", "/"));
    add(
        "/static/app.js",
        200,
        probe(NotReady, "GET", "/static/app.js"),
    );
    add(
        "/static/style.css",
        200,
        probe(NotReady, "GET", "/static/style.css"),
    );
    m
}

async fn send(p: &Probe, live: &common::TestServer, small: &common::TestServer) -> u16 {
    match p.target {
        Target::Live | Target::Small => {
            let s = if matches!(p.target, Target::Live) {
                live
            } else {
                small
            };
            let mut req = reqwest::Client::new().request(p.method.parse().unwrap(), s.url(&p.uri));
            if let Some(ct) = &p.content_type {
                req = req.header("content-type", ct).body(p.body.clone());
            }
            req.send().await.unwrap().status().as_u16()
        }
        Target::NotReady => {
            let state = AppState::new(common::serve_config(&[]), segserve::metrics::handle());
            let mut req = axum::http::Request::builder().method(p.method).uri(&p.uri);
            if let Some(ct) = &p.content_type {
                req = req
                    .header("content-type", ct)
                    .header("content-length", p.body.len());
            }
            let resp = api::router(state)
                .oneshot(req.body(Body::from(p.body.clone())).unwrap())
                .await
                .unwrap();
            resp.status().as_u16()
        }
        Target::Stalled => {
            // Announce the whole body, send half, then wait for the server's verdict.
            let mut tcp = tokio::net::TcpStream::connect(small.addr).await.unwrap();
            let head = format!(
                "{} {} HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
                p.method,
                p.uri,
                p.content_type.as_deref().unwrap(),
                2000
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            tcp.write_all(&p.body[..1000]).await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed without a response");
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = String::from_utf8_lossy(&buf);
            line.split(' ').nth(1).unwrap().parse().unwrap()
        }
    }
}

#[tokio::test]
async fn every_documented_status_is_returned_by_its_handler() {
    let live = common::spawn_server(&["--sessions", "1"]).await;
    // Body limit above /v1/segment's 1000-byte stalled body but below bus.jpg.
    let small = common::spawn_server(&[
        "--sessions",
        "1",
        "--max-body-bytes",
        "4096",
        "--body-timeout-ms",
        "300",
    ])
    .await;
    let spec = spec(&live).await;
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in op["responses"].as_object().unwrap().keys() {
                documented.insert((
                    method.to_uppercase(),
                    path.clone(),
                    status.parse::<u16>().unwrap(),
                ));
            }
        }
    }
    let provokers = provokers();
    let known: BTreeSet<(String, String, u16)> = provokers
        .keys()
        .map(|(m, p, s)| (m.to_string(), p.to_string(), *s))
        .collect();
    let missing: Vec<_> = documented.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "documented but never provoked here (add a probe or drop the status): {missing:?}"
    );
    let stale: Vec<_> = known.difference(&documented).collect();
    assert!(stale.is_empty(), "returned but not documented: {stale:?}");
    for ((method, route, want), p) in &provokers {
        let got = send(p, &live, &small).await;
        assert_eq!(got, *want, "{method} {route} via {:?} {}", p.target, p.uri);
    }
}
