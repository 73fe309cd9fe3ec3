//! Overload and soak driver, run by `scripts/soak.sh` against a release server.
//!
//! Keeps `--concurrency` requests in flight for `--duration` seconds, cycling through a mix
//! of good uploads, bad requests and resource attacks, and checks every answer: good ones 200, bad ones their
//! 4xx, and the only 5xx allowed is a shed 503 that carries `Retry-After`. It samples the
//! server's RSS (`/proc/<pid>/status` VmRSS) once a second; once the run is over and its
//! work gone, the settled RSS (a median of several samples) must be within 10 % of the idle
//! server's, settled and sampled the same way just before the run, and (with
//! `--budget-mib`) the peak within the idle RSS plus the memory budget. Exits non-zero on any violation. A load tool like `oha` sends one request
//! shape; this sends a mix and checks each answer, which is the point.
//!
//! With `--goodput SECONDS` it first measures goodput under overload: photos only, at
//! concurrency 8 (the capacity) and then 64 with clients that retry at once, ignoring
//! `Retry-After`, each for SECONDS; the successful photos a second at 64 must stay at least
//! 85 % of those at 8, i.e. refusing must cost little next to serving.
//!
//! `cargo run --release --example soak -- --url http://127.0.0.1:5000 --pid <server pid>`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Client, Method};

/// One kind of request in the mix and the statuses it may get (besides a shed 503).
struct Shape {
    name: &'static str,
    method: Method,
    path: &'static str,
    ctype: Option<String>,
    body: Bytes,
    want: u16,
    /// Another acceptable answer (e.g. 413 where the memory budget may never fit it).
    or: Option<u16>,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    answered: u64,
    ok: u64,
    shed: u64,
    by_status: BTreeMap<u16, u64>,
    errors: Vec<String>,
}

struct Args {
    url: String,
    duration: Duration,
    concurrency: usize,
    pid: Option<u32>,
    photos: Vec<std::path::PathBuf>,
    /// The server's --memory-budget, in MiB: peak RSS must stay within idle + this.
    budget_mib: Option<u64>,
    /// Seconds per goodput phase (none: no goodput check).
    goodput: Option<Duration>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:5000".into(),
        duration: Duration::from_secs(120),
        concurrency: 64,
        pid: None,
        photos: Vec::new(),
        budget_mib: None,
        goodput: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--duration" => a.duration = Duration::from_secs(value().parse().expect("seconds")),
            "--concurrency" => a.concurrency = value().parse().expect("a count"),
            "--pid" => a.pid = Some(value().parse().expect("a pid")),
            "--photo" => a.photos.push(value().into()),
            "--budget-mib" => a.budget_mib = Some(value().parse().expect("MiB")),
            "--goodput" => a.goodput = Some(Duration::from_secs(value().parse().expect("seconds"))),
            other => panic!("unknown flag {other}; see the module docs"),
        }
    }
    assert!(!a.photos.is_empty(), "pass at least one --photo");
    a
}

const BOUNDARY: &str = "soakBoundary42";

fn form(field: &str, data: &[u8]) -> Bytes {
    let mut b = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"p.jpg\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b.into()
}

fn shapes(photos: &[Vec<u8>]) -> Vec<Shape> {
    let mp = Some(format!("multipart/form-data; boundary={BOUNDARY}"));
    let mut v = Vec::new();
    // Good: every photo through both upload routes (about half the mix).
    for p in photos {
        v.push(Shape {
            name: "v1 photo",
            method: Method::POST,
            path: "/v1/segment",
            ctype: mp.clone(),
            body: form("image", p),
            want: 200,
            or: None,
        });
        v.push(Shape {
            name: "pixellib photo",
            method: Method::POST,
            path: "/segmentapi",
            ctype: mp.clone(),
            body: form("image", p),
            want: 200,
            or: None,
        });
        v.push(Shape {
            name: "raw photo, no masks",
            method: Method::POST,
            path: "/v1/segment?masks=none&conf=0.4",
            ctype: Some("image/jpeg".into()),
            body: Bytes::from(p.clone()),
            want: 200,
            or: None,
        });
    }
    let truncated = Bytes::from(photos[0][..photos[0].len() / 2].to_vec());
    // A PNG header declaring 60000x60000 with no pixel data.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(60_000u32.to_be_bytes());
    ihdr.extend(60_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    let mut huge = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
    huge.extend(ihdr);
    huge.extend(crc.sum().to_be_bytes());
    v.extend([
        Shape {
            name: "truncated jpeg",
            method: Method::POST,
            path: "/v1/segment",
            ctype: mp.clone(),
            body: form("image", &truncated),
            want: 422,
            or: None,
        },
        Shape {
            name: "text as image",
            method: Method::POST,
            path: "/v1/segment",
            ctype: mp.clone(),
            body: form("image", b"not a photo"),
            want: 415,
            or: None,
        },
        Shape {
            name: "huge png header",
            method: Method::POST,
            path: "/v1/segment",
            ctype: mp.clone(),
            body: form("image", &huge),
            want: 413,
            or: None,
        },
        Shape {
            name: "no file in the form",
            method: Method::POST,
            path: "/segmentapi",
            ctype: mp.clone(),
            body: Bytes::from(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n"),
            ),
            want: 400,
            or: None,
        },
        Shape {
            name: "no boundary",
            method: Method::POST,
            path: "/v1/segment",
            ctype: Some("multipart/form-data".into()),
            body: Bytes::from_static(b"--x--"),
            want: 400,
            or: None,
        },
        Shape {
            name: "bad query",
            method: Method::POST,
            path: "/v1/segment?conf=2",
            ctype: mp.clone(),
            body: form("image", &photos[0]),
            want: 400,
            or: None,
        },
        Shape {
            name: "json body",
            method: Method::POST,
            path: "/v1/segment",
            ctype: Some("application/json".into()),
            body: Bytes::from_static(b"{}"),
            want: 415,
            or: None,
        },
        Shape {
            name: "models",
            method: Method::GET,
            path: "/v1/models",
            ctype: None,
            body: Bytes::new(),
            want: 200,
            or: None,
        },
        Shape {
            name: "readyz",
            method: Method::GET,
            path: "/readyz",
            ctype: None,
            body: Bytes::new(),
            want: 200,
            or: None,
        },
    ]);
    v.extend(attacks(&photos[0]));
    v
}

/// The attack share of the mix: valid-looking requests that ask for too much work or
/// memory. The memory budget answers them (413 when they can never fit, a shed 503 when
/// not now), and the rest of the mix must not notice.
fn attacks(photo: &[u8]) -> Vec<Shape> {
    let img = image::load_from_memory(photo)
        .expect("the first --photo decodes")
        .to_rgb8();
    // The photo tiled 2 x 2 at 24 MP: four times its objects, and dense PixelLib masks for
    // it would be gigabytes.
    let tile = image::imageops::resize(&img, 3000, 2000, image::imageops::FilterType::Nearest);
    let mut big = image::RgbImage::new(6000, 4000);
    for (x, y) in [(0, 0), (3000, 0), (0, 2000), (3000, 2000)] {
        image::imageops::replace(&mut big, &tile, x, y);
    }
    let mut big_jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(big)
        .write_to(
            &mut std::io::Cursor::new(&mut big_jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    // 16-bit RGBA, 12 MP: 8 bytes a pixel before conversion.
    let deep = image::ImageBuffer::from_fn(4000, 3000, |x, y| {
        image::Rgba([(x * 13) as u16, (y * 7) as u16, 30_000u16, 65_535u16])
    });
    let mut deep_png = Vec::new();
    image::DynamicImage::ImageRgba16(deep)
        .write_to(
            &mut std::io::Cursor::new(&mut deep_png),
            image::ImageFormat::Png,
        )
        .unwrap();
    // A KServe body whose parameters hold a quarter of a million numbers.
    let mut bomb = br#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["aGk="]}],"parameters":{"conf":["#.to_vec();
    for _ in 0..250_000 {
        bomb.extend_from_slice(b"1234567,");
    }
    bomb.extend_from_slice(b"1]}}");
    let mp = Some(format!("multipart/form-data; boundary={BOUNDARY}"));
    vec![
        Shape {
            name: "attack: dense masks of a 24 MP photo",
            method: Method::POST,
            path: "/segmentapi?mask_values=true",
            ctype: mp,
            body: form("image", &big_jpeg),
            want: 413,
            or: None,
        },
        Shape {
            name: "attack: 1000 masks, no suppression",
            method: Method::POST,
            path: "/v1/segment?conf=0.01&iou=1&max_det=1000",
            ctype: Some("image/jpeg".into()),
            body: Bytes::from(big_jpeg.clone()),
            want: 200,
            or: Some(413),
        },
        Shape {
            name: "attack: 16-bit RGBA 12 MP",
            method: Method::POST,
            path: "/v1/segment?masks=none",
            ctype: Some("image/png".into()),
            body: Bytes::from(deep_png),
            want: 200,
            or: None,
        },
        Shape {
            name: "attack: KServe parameter bomb",
            method: Method::POST,
            path: "/v2/models/yolov8n-seg-320/infer",
            ctype: Some("application/json".into()),
            body: Bytes::from(bomb),
            want: 400,
            or: None,
        },
    ]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

async fn wait_ready(client: &Client, url: &str) {
    for _ in 0..1200 {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server at {url} did not become ready within 120 s");
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let photos: Vec<Vec<u8>> = args
        .photos
        .iter()
        .map(|p| std::fs::read(p).expect("photo"))
        .collect();
    let shapes = Arc::new(shapes(&photos));
    // Generous per-request timeout: a request that gets no answer in a minute counts as
    // unanswered, which is a failure.
    // Idle pooled connections are dropped before the server's 5 s keep-alive timeout would
    // close them, as a client of any keep-alive server should (else a request can race the
    // server's close of the connection it picked).
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    wait_ready(&client, &args.url).await;
    let goodput_failed = match args.goodput {
        Some(phase) => !goodput(&client, &args.url, &photos, phase).await,
        None => false,
    };

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // The idle server, before the run: settled the same way as after it.
    let idle = match args.pid {
        Some(pid) => settle(&client, &args.url, pid).await,
        None => 0,
    };
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, shapes, tally, stop, url) = (
            client.clone(),
            shapes.clone(),
            tally.clone(),
            stop.clone(),
            args.url.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let s = &shapes[i % shapes.len()];
                i += args_stride(shapes.len());
                let mut req = client
                    .request(s.method.clone(), format!("{url}{}", s.path))
                    .body(s.body.clone());
                if let Some(ct) = &s.ctype {
                    req = req.header("content-type", ct);
                }
                tally.lock().unwrap().sent += 1;
                let result = req.send().await;
                let mut t = tally.lock().unwrap();
                match result {
                    Err(e) => t.errors.push(format!("{}: no answer: {e}", s.name)),
                    Ok(resp) => {
                        t.answered += 1;
                        let status = resp.status().as_u16();
                        *t.by_status.entry(status).or_default() += 1;
                        let retry_after = resp.headers().contains_key("retry-after");
                        if status == 503 && retry_after {
                            t.shed += 1;
                        } else if status == s.want || Some(status) == s.or {
                            t.ok += 1;
                        } else {
                            t.errors.push(format!(
                                "{}: expected {} (or a shed 503), got {status}{}",
                                s.name,
                                s.want,
                                if status == 503 {
                                    " without Retry-After"
                                } else {
                                    ""
                                }
                            ));
                        }
                    }
                }
            }
        }));
    }

    // RSS once a second while the load runs.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while started.elapsed() < args.duration {
        if let Some(pid) = args.pid {
            match rss_kib(pid) {
                Some(kib) => samples.push((started.elapsed().as_secs_f64(), kib)),
                None => tally
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("server process {pid} is gone")),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The workers are done: take the tally out of its lock (the checks below await).
    let t = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "soak: {:.0} s at concurrency {} against {}",
        elapsed, args.concurrency, args.url
    );
    println!(
        "  requests sent {}, answered {}, as expected {}, shed (503 + Retry-After) {}, errors {}",
        t.sent,
        t.answered,
        t.ok,
        t.shed,
        t.errors.len()
    );
    println!(
        "  throughput {:.1} req/s; statuses {:?}",
        t.answered as f64 / elapsed,
        t.by_status
    );
    let mut failed = goodput_failed || !t.errors.is_empty() || t.sent != t.answered;
    let mut distinct: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &t.errors {
        *distinct.entry(e.as_str()).or_default() += 1;
    }
    for (e, n) in distinct.iter().take(20) {
        println!("  ERROR x{n}: {e}");
    }
    if let Some(pid) = args.pid.filter(|_| samples.len() >= 4) {
        // The first 10% is warm-up (allocator arenas and thread stacks fill under the new
        // load); the next fifth of the run and its last fifth are shown.
        let d = args.duration.as_secs_f64();
        let window = |a: f64, b: f64| {
            median(
                samples
                    .iter()
                    .filter(|(t, _)| *t >= a * d && *t < b * d)
                    .map(|s| s.1)
                    .collect(),
            )
        };
        let (start, end) = (window(0.1, 0.3), window(0.8, 1.01));
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        println!(
            "  RSS under load: first sample {} MiB, 10-30% {} MiB, last 20% {} MiB, peak {} MiB",
            samples[0].1 / 1024,
            start / 1024,
            end / 1024,
            peak / 1024
        );
        // Growth is judged once the load is over and its work gone: under load RSS follows
        // whichever heavy requests happen to be in flight (the budget's job), so windows of
        // it compare mixes, not leaks. Settled, what stays above the warmed-up idle server is
        // what the run left behind.
        let settled = settle(&client, &args.url, pid).await;
        let growth = (settled as f64 - idle as f64) / idle.max(1) as f64 * 100.0;
        println!(
            "  RSS idle before the run {} MiB, settled after it {} MiB (medians of {RSS_SAMPLES} samples): growth {growth:+.1}%",
            idle / 1024,
            settled / 1024
        );
        if growth >= 10.0 {
            println!("  FAIL: RSS grew {growth:.1}% (limit 10%)");
            failed = true;
        }
        // The first sample is the idle (warmed-up) server; the budget is what requests may
        // add to it, and 5% more covers what it does not count: 64 connections' buffers and
        // the allocator's slack between a release and its trim.
        if let Some(budget) = args.budget_mib {
            let limit = idle / 1024 + budget * 105 / 100;
            if peak / 1024 > limit {
                println!(
                    "  FAIL: peak RSS {} MiB over idle + budget + 5% ({limit} MiB)",
                    peak / 1024
                );
                failed = true;
            }
        }
    }
    if failed {
        println!("soak: FAILED");
        std::process::exit(1);
    }
    println!("soak: passed");
}

/// Waits until nothing is reserved (the run's last requests finished and their answers
/// were sent), then a moment for the allocator's trim, and returns the server's RSS in KiB.
async fn settle(client: &Client, url: &str, pid: u32) -> u64 {
    for _ in 0..150 {
        let reserved = match client.get(format!("{url}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
        .lines()
        .find_map(|l| l.strip_prefix("segserve_memory_reserved_bytes "))
        .and_then(|v| v.parse::<f64>().ok());
        if reserved == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    median_rss(pid).await
}

/// Samples of RSS the idle and settled figures are medians of: one sample can land on an
/// allocator's or the kernel's passing state (a trim under way, a page cache reclaim),
/// and a growth check on it would judge that moment instead of what the run left.
const RSS_SAMPLES: usize = 7;

/// The median of [`RSS_SAMPLES`] RSS samples, 300 ms apart, in KiB.
async fn median_rss(pid: u32) -> u64 {
    let mut v = Vec::with_capacity(RSS_SAMPLES);
    for i in 0..RSS_SAMPLES {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        v.push(rss_kib(pid).unwrap_or(0));
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// What one goodput phase saw.
#[derive(Default)]
struct Goodput {
    served: u64,
    refused: u64,
    /// Requests the server closed on (a refusal that does not drain the body may do that).
    closed: u64,
    /// Answers a retrying client must never get (a 5xx other than 503, a 4xx for a photo).
    wrong: BTreeMap<u16, u64>,
}

/// Photos at `concurrency` for `phase`, each refused one sent again at once.
async fn goodput_phase(
    client: &Client,
    url: &str,
    photos: &[Vec<u8>],
    concurrency: usize,
    phase: Duration,
) -> (Goodput, f64) {
    let bodies: Arc<Vec<Bytes>> = Arc::new(photos.iter().map(|p| form("image", p)).collect());
    let seen = Arc::new(Mutex::new(Goodput::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, bodies, seen, stop) =
                (client.clone(), bodies.clone(), seen.clone(), stop.clone());
            let url = format!("{url}/v1/segment");
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let resp = client
                        .post(&url)
                        .header(
                            "content-type",
                            format!("multipart/form-data; boundary={BOUNDARY}"),
                        )
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await;
                    let status = match resp {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            // Read the answer, as a client does, so the connection is reused.
                            let _answer = r.bytes().await;
                            Some(status)
                        }
                        Err(_) => None,
                    };
                    let mut g = seen.lock().unwrap();
                    match status {
                        Some(200) => {
                            g.served += 1;
                            i += 1;
                        }
                        Some(503) => g.refused += 1,
                        None => g.closed += 1,
                        Some(other) => *g.wrong.entry(other).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = started.elapsed().as_secs_f64();
    for w in workers {
        w.await.expect("goodput worker");
    }
    let g = std::mem::take(&mut *seen.lock().unwrap());
    let rate = g.served as f64 / stopped;
    (g, rate)
}

/// Goodput under overload (see the module docs); prints both phases, true when it holds.
async fn goodput(client: &Client, url: &str, photos: &[Vec<u8>], phase: Duration) -> bool {
    const CAPACITY_CONCURRENCY: usize = 8;
    const OVERLOAD_CONCURRENCY: usize = 64;
    const FLOOR: f64 = 0.85;
    let (cap, capacity) = goodput_phase(client, url, photos, CAPACITY_CONCURRENCY, phase).await;
    let (over, overloaded) = goodput_phase(client, url, photos, OVERLOAD_CONCURRENCY, phase).await;
    let ratio = overloaded / capacity.max(f64::EPSILON);
    for (c, g, rate) in [
        (CAPACITY_CONCURRENCY, &cap, capacity),
        (OVERLOAD_CONCURRENCY, &over, overloaded),
    ] {
        println!(
            "goodput: concurrency {c}: {rate:.1} photos/s served ({} served, {} refused with 503, {} closed, wrong answers {:?})",
            g.served, g.refused, g.closed, g.wrong
        );
    }
    println!("goodput: overloaded/capacity {ratio:.2} (floor {FLOOR})");
    let mut ok = true;
    if ratio < FLOOR {
        println!("  FAIL: goodput under overload is {ratio:.2} of capacity (floor {FLOOR})");
        ok = false;
    }
    if !cap.wrong.is_empty() || !over.wrong.is_empty() {
        println!("  FAIL: answers other than 200 and 503 to good photos");
        ok = false;
    }
    ok
}

/// Each worker walks the mix with a stride coprime to its length, so the 64 workers do not
/// all send the same shape at once.
fn args_stride(len: usize) -> usize {
    (1..len)
        .rev()
        .find(|s| gcd(*s, len) == 1 && *s > len / 3)
        .unwrap_or(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
