//! Closed-loop HTTP load for scripts/gpu-check.sh, where `hey` (what scripts/bench.sh uses)
//! is not installed and nothing can be downloaded: for each concurrency level, that many
//! clients each POST the photo as a raw `image/jpeg` body, wait for the answer and send the
//! next, for `--seconds`. Prints one JSON line per level: requests per second answered 200,
//! p50/p90/p99 latency of the 200s, the status counts, transport errors, and the level's
//! start and end (Unix ms, to line up with GPU memory samples).
//!
//! `loadgen --url 'http://127.0.0.1:5000/v1/segment?masks=rle' --photo bus.jpg
//!  --levels 1,2,4,8 --seconds 8`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

/// HTTP load at fixed concurrency levels.
#[derive(Debug, Parser)]
struct Args {
    /// Full URL to POST to.
    #[arg(long)]
    url: String,
    /// Photo to send.
    #[arg(long)]
    photo: PathBuf,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    levels: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
}

#[derive(Default)]
struct Tally {
    ok_ms: Vec<f64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn client(
    http: reqwest::Client,
    url: String,
    body: bytes::Bytes,
    deadline: Instant,
) -> Tally {
    let mut t = Tally::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        let sent = http
            .post(&url)
            .header("content-type", "image/jpeg")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the whole answer: the latency a client sees includes the body.
                let read = resp.bytes().await;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                match read {
                    Ok(_) => {
                        *t.statuses.entry(status).or_default() += 1;
                        if status == 200 {
                            t.ok_ms.push(ms);
                        } else if status == 503 {
                            // Shed: back off a little, as a client honouring Retry-After would.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert(e.to_string());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    t
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let body = bytes::Bytes::from(std::fs::read(&args.photo)?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build()?;
    for &c in &args.levels {
        let start_ms = unix_ms();
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.seconds);
        let tasks: Vec<_> = (0..c.max(1))
            .map(|_| {
                tokio::spawn(client(
                    http.clone(),
                    args.url.clone(),
                    body.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await?;
            all.ok_ms.extend(t.ok_ms);
            for (k, v) in t.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
            all.errors += t.errors;
            if all.first_error.is_none() {
                all.first_error = t.first_error;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.ok_ms.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            all.ok_ms
                .get(((all.ok_ms.len() as f64 * p) as usize).min(all.ok_ms.len().saturating_sub(1)))
                .copied()
        };
        println!(
            "{}",
            serde_json::json!({
                "concurrency": c,
                "seconds": elapsed,
                "ok": all.ok_ms.len(),
                "rps": all.ok_ms.len() as f64 / elapsed,
                "p50_ms": pct(0.5),
                "p90_ms": pct(0.9),
                "p99_ms": pct(0.99),
                "statuses": all.statuses,
                "errors": all.errors,
                "first_error": all.first_error,
                "start_ms": start_ms as u64,
                "end_ms": unix_ms() as u64,
            })
        );
    }
    Ok(())
}
