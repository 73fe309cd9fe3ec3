//! Client-side helpers: JSON answers and what they hold (detections, KServe outputs), a
//! multipart upload whose body the test releases when it chooses (a request held in flight),
//! and a reader for Prometheus text.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The status and JSON body of an answer.
pub async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("JSON body");
    (status, v)
}

/// GET `url`: (status, JSON body).
pub async fn get_json(url: String) -> (u16, Value) {
    json_of(reqwest::get(url).await.unwrap()).await
}

/// POST `body` as JSON to `url`: (status, JSON body).
pub async fn post_json(url: String, body: &Value) -> (u16, Value) {
    json_of(
        reqwest::Client::new()
            .post(url)
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The Open Inference Protocol's JSON request for one photo (`tritonclient.http` without
/// the binary extension): a BYTES input `image`, base64.
pub fn infer_body(image: &[u8]) -> Value {
    json!({
        "inputs": [{
            "name": "image",
            "shape": [1],
            "datatype": "BYTES",
            "data": [base64::engine::general_purpose::STANDARD.encode(image)]
        }]
    })
}

/// The output `name` of an Open Inference Protocol JSON answer.
pub fn output<'a>(resp: &'a Value, name: &str) -> &'a Value {
    resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {resp}"))
}

/// The box of a detection of `/v1/segment`: x0, y0, x1, y1.
pub fn box_of(d: &Value) -> [f64; 4] {
    let b: Vec<f64> = d["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    b.try_into().expect("four box coordinates")
}

/// A detection as [`detections`] reads it: class id, score, box.
pub type Detection = (u64, f64, [f64; 4]);

/// Each detection of a `/v1/segment` answer.
pub fn detections(v: &Value) -> Vec<Detection> {
    v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["class_id"].as_u64().unwrap(),
                d["score"].as_f64().unwrap(),
                box_of(d),
            )
        })
        .collect()
}

/// An upload to `/segmentapi` whose body is sent in two halves: the first at once, the
/// second when [`HeldUpload::finish`] is called. Until then the request is in flight.
pub struct HeldUpload {
    rest: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
    /// The response, once the server has answered.
    pub reply: tokio::task::JoinHandle<reqwest::Result<(u16, String)>>,
}

impl HeldUpload {
    /// Starts the request on its own connection and sends the first half of the body.
    pub async fn start(url: String, photo: &[u8]) -> HeldUpload {
        let (ctype, mut body) = super::multipart("image", "a.jpg", photo);
        let rest = body.split_off(body.len() / 2);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
        tx.send(body).await.unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        // A client of its own: no pooled connection shared with other requests.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let reply = tokio::spawn(async move {
            let r = client
                .post(url)
                .header("content-type", ctype)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok((status, r.text().await?))
        });
        HeldUpload { rest, tx, reply }
    }

    /// Sends the rest of the body and returns the status and body of the reply.
    pub async fn finish(self) -> (u16, String) {
        self.tx
            .send(self.rest)
            .await
            .expect("request still in flight");
        drop(self.tx);
        self.reply.await.unwrap().expect("reply")
    }
}

/// One Prometheus text exposition, as `(name, labels) -> value`, and each family's type.
pub struct Scrape(
    Vec<(String, BTreeMap<String, String>, f64)>,
    BTreeMap<String, String>,
);

impl Scrape {
    /// Parses the text format (one sample per line; of the `#` lines, only `# TYPE` is read).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            samples.push((name, labels, value));
        }
        Scrape(samples, types)
    }

    /// The type a `# TYPE` line declares for the family `name` (`gauge`, `counter`, ...).
    pub fn kind(&self, name: &str) -> Option<&str> {
        self.1.get(name).map(String::as_str)
    }

    /// Sum over the series named `name` whose labels include `labels` (0 when none).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Every series named `name`, in the order of the text: (labels, value).
    pub fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }

    /// Whether any series named `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    /// The `le` bucket bounds of the histogram `name` with `labels`, in order.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
        let bucket = format!("{name}_bucket");
        self.0
            .iter()
            .filter(|(n, l, _)| {
                *n == bucket
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l["le"].clone(), *v))
            .collect()
    }
}

/// GET /metrics from `base` (`http://addr`) and parse it.
pub async fn scrape(base: &str) -> Scrape {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(&text)
}

/// Waits until `n` requests are inside the server (the in-flight gauge counts the scrape
/// itself too). Polls a condition; the server decides when it holds.
pub async fn wait_in_flight(base: &str, n: usize) {
    for _ in 0..400 {
        if scrape(base).await.get("segserve_requests_in_flight", &[]) >= (n + 1) as f64 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{n} requests never got in flight");
}

/// True when nothing accepts connections at `addr` any more.
pub async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(tokio::net::TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}
