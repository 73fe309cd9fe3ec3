//! The photo-size sweep over HTTP, for one or several server binaries side by side (today's
//! build against an earlier one, in the same run, on the same machine): bus.jpg scaled to
//! 0.1 .. 31 MP (JPEG quality 90) and POSTed one at a time to `/v1/segment?masks=rle`. For
//! each size and binary: the client's p50 latency, the server's own median stage times
//! (`timing_ms`), and the peak RSS growth of the server process while one such request is
//! in flight (VmHWM, reset through `/proc/<pid>/clear_refs` before each request). All the
//! servers run at once and the requests take turns between them (one in flight at a
//! time), so the comparison is side by side even on a machine whose speed drifts. With
//! `--fast`, each binary that accepts `decode=fast` is also measured with it. Prints a
//! table, then for 8 and 31 MP how the last binary compares with the first.
//!
//! `size_sweep --bin before=/tmp/segserve-old --bin after=target/release/segserve --fast`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

/// Photo-size sweep over HTTP.
#[derive(Debug, Parser)]
struct Args {
    /// `label=path` of a server binary; the first is the reference the others are compared to.
    #[arg(long = "bin", required = true)]
    bins: Vec<String>,
    /// Photo to scale.
    #[arg(long, default_value = "../shared/testdata/bus.jpg")]
    photo: PathBuf,
    /// Sizes in megapixels.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,2,8,31")]
    sizes: Vec<f64>,
    /// Requests per size and server (after one warm-up round).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Also measure `decode=fast` where the binary accepts it.
    #[arg(long)]
    fast: bool,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(path: &str, http: &reqwest::Client) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(path)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--shutdown-drain-ms", "0"])
        .env("ORT_DISABLE_TELEMETRY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{}/readyz", server.url)).send().await {
            if r.status().is_success() {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{path} did not become ready")
}

#[derive(Default, Clone)]
struct Row {
    p50_ms: f64,
    decode: f64,
    preprocess: f64,
    inference: f64,
    postprocess: f64,
    peak_mib: f64,
}

/// What one request saw: the client's latency, the server's stage times (decode,
/// letterbox, inference, post) and the server's peak RSS growth while it ran, in MiB.
struct Sample {
    ms: f64,
    stages: [f64; 4],
    peak_mib: f64,
}

/// One request of one photo to one server: None if the server refuses the query (an older
/// binary that does not know `decode=`).
async fn request(
    http: &reqwest::Client,
    server: &Server,
    query: &str,
    body: &bytes::Bytes,
) -> anyhow::Result<Option<Sample>> {
    let pid = server.child.id();
    let url = format!("{}/v1/segment?masks=rle{query}", server.url);
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = status_kib(pid, "VmRSS:");
    let t = Instant::now();
    let resp = http
        .post(&url)
        .header("content-type", "image/jpeg")
        .body(body.clone())
        .send()
        .await?;
    let status = resp.status();
    let json: serde_json::Value = resp.json().await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if status == 400 {
        return Ok(None);
    }
    anyhow::ensure!(status.is_success(), "{url}: {status} {json}");
    let grew = status_kib(pid, "VmHWM:").saturating_sub(before);
    let stage = |k: &str| json["timing_ms"][k].as_f64().unwrap_or(f64::NAN);
    Ok(Some(Sample {
        ms,
        stages: [
            stage("decode"),
            stage("preprocess"),
            stage("inference"),
            stage("postprocess"),
        ],
        peak_mib: grew as f64 / 1024.0,
    }))
}

fn summarise(samples: &[Sample]) -> Row {
    let col = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Row {
        p50_ms: col(&|s| s.ms),
        decode: col(&|s| s.stages[0]),
        preprocess: col(&|s| s.stages[1]),
        inference: col(&|s| s.stages[2]),
        postprocess: col(&|s| s.stages[3]),
        peak_mib: col(&|s| s.peak_mib),
    }
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .expect("encodes");
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let src = image::load_from_memory(&std::fs::read(&args.photo)?)?.to_rgb8();
    let aspect = src.height() as f64 / src.width() as f64;
    let photos: Vec<(String, bytes::Bytes)> = args
        .sizes
        .iter()
        .map(|&mp| {
            let w = (mp * 1e6 / aspect).sqrt().round() as u32;
            let h = (w as f64 * aspect).round() as u32;
            let img = image::imageops::resize(&src, w, h, image::imageops::FilterType::Triangle);
            (format!("{mp} MP ({w}x{h})"), bytes::Bytes::from(jpeg(&img)))
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    // Every server is started first and the requests take turns between them, so drift in
    // the machine's speed (these machines vary by the minute) falls on all of them alike.
    let mut servers = Vec::new();
    for spec in &args.bins {
        let (label, path) = spec.split_once('=').unwrap_or((spec, spec));
        servers.push((label.to_string(), start(path, &http).await?));
    }
    let modes: &[&str] = if args.fast {
        &["", "&decode=fast"]
    } else {
        &[""]
    };
    // A column is (server, mode); rows[size][column] its samples, None once refused.
    let mut columns: Vec<(String, usize, &str)> = Vec::new();
    for (i, (label, _)) in servers.iter().enumerate() {
        for mode in modes {
            let name = format!("{label}{}", if mode.is_empty() { "" } else { " fast" });
            columns.push((name, i, mode));
        }
    }
    let mut samples: Vec<Vec<Option<Vec<Sample>>>> = photos
        .iter()
        .map(|_| columns.iter().map(|_| Some(Vec::new())).collect())
        .collect();
    for (p, (_, body)) in photos.iter().enumerate() {
        // The first round warms each server up for this size and is not counted.
        for run in 0..=args.runs {
            for (c, (_, server, mode)) in columns.iter().enumerate() {
                let Some(kept) = samples[p][c].as_mut() else {
                    continue;
                };
                match request(&http, &servers[*server].1, mode, body).await? {
                    Some(s) if run > 0 => kept.push(s),
                    Some(_) => {}
                    None => samples[p][c] = None,
                }
            }
        }
    }
    let columns: Vec<String> = columns.into_iter().map(|c| c.0).collect();
    let rows: Vec<Vec<Option<Row>>> = samples
        .iter()
        .map(|cols| cols.iter().map(|s| s.as_deref().map(summarise)).collect())
        .collect();
    println!("median of {} requests, one at a time; stages from the server's timing_ms (decode includes the letterbox when the photo is streamed into it)\n", args.runs);
    println!("| photo | build | p50 ms | decode ms | letterbox ms | inference ms | post ms | peak RSS growth MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, _), cols) in photos.iter().zip(&rows) {
        for (label, row) in columns.iter().zip(cols) {
            if let Some(r) = row {
                println!(
                    "| {name} | {label} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    r.p50_ms, r.decode, r.preprocess, r.inference, r.postprocess, r.peak_mib
                );
            }
        }
    }
    // The last exact column against the first.
    let exact: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.ends_with(" fast"))
        .map(|(i, _)| i)
        .collect();
    if let (Some(&first), Some(&last)) = (exact.first(), exact.last()) {
        if first != last {
            println!(
                "\n| {} against {} | measured | goal | met |\n|---|---|---|---|",
                columns[last], columns[first]
            );
            for (i, (name, _)) in photos.iter().enumerate() {
                let (Some(a), Some(b)) = (&rows[i][first], &rows[i][last]) else {
                    continue;
                };
                let mp = args.sizes[i];
                let (p50_goal, peak_goal) = match mp {
                    m if m >= 31.0 => (Some(45.0), Some(60.0)),
                    m if m >= 8.0 => (Some(35.0), None),
                    _ => (None, None),
                };
                let p50_cut = (1.0 - b.p50_ms / a.p50_ms) * 100.0;
                let peak_cut = (1.0 - b.peak_mib / a.peak_mib) * 100.0;
                let verdict = |v: f64, g: Option<f64>| match g {
                    Some(g) => (
                        format!(">= {g:.0} % lower"),
                        if v >= g { "yes" } else { "NO" },
                    ),
                    None => ("-".to_string(), "-"),
                };
                let (goal, met) = verdict(p50_cut, p50_goal);
                println!("| {name}: p50 lower by | {p50_cut:.0} % | {goal} | {met} |");
                // Below a MiB the growth is page-rounding noise, not a ratio worth printing.
                if a.peak_mib >= 1.0 {
                    let (goal, met) = verdict(peak_cut, peak_goal);
                    println!("| {name}: peak RSS growth per in-flight request lower by | {peak_cut:.0} % | {goal} | {met} |");
                }
            }
        }
    }
    Ok(())
}
