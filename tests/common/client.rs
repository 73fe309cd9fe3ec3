//! Client-side helpers: a multipart upload whose body the test releases when it chooses (a
//! request held in flight), and a reader for Prometheus text.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

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
