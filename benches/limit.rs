//! The floor: bare ONNX Runtime `Session::run` on the same model with the same session
//! options, no HTTP, no image work. For each pool shape (sessions x intra-op threads: 1x1,
//! 1xN, Nx1 and NxN for N CPUs) it runs the sessions in parallel on threads for a fixed
//! time and prints p50 latency and images/s as a table and, last, one JSON line for
//! scripts/bench.sh, which compares the server with the best of them.
//! `cargo bench --bench limit`; SEGSERVE_BENCH_SECONDS sets the time per shape (default 8).

mod common;

use std::time::{Duration, Instant};

use segserve::engine::{run_session, session};

fn main() {
    common::init_ort();
    let name = common::model_name();
    let path = common::model(&name);
    let secs: u64 = std::env::var("SEGSERVE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let cpus = segserve::config::available_cpus();
    let mut shapes = vec![(1usize, 1usize), (1, cpus), (cpus, 1), (cpus, cpus)];
    shapes.dedup();
    println!("model {name}, {cpus} CPUs, {secs} s per shape");
    println!("| sessions x threads | p50 ms | p90 ms | images/s |");
    println!("|---|---|---|---|");
    let mut json = Vec::new();
    for (sessions, threads) in shapes {
        let probe = session::build_session(&path, threads).unwrap();
        let info = session::inspect(&probe, &name).unwrap();
        drop(probe);
        let (h, w) = info.input_hw;
        let input = vec![114.0f32 / 255.0; 3 * h * w];
        let deadline = Instant::now() + Duration::from_secs(secs);
        let handles: Vec<_> = (0..sessions)
            .map(|_| {
                let (path, info, input) = (path.clone(), info.clone(), input.clone());
                std::thread::spawn(move || {
                    let mut s = session::build_session(&path, threads).unwrap();
                    for _ in 0..3 {
                        run_session(&mut s, &info, &input).unwrap();
                    }
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        run_session(&mut s, &info, &input).unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let started = Instant::now();
        let mut lat: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        lat.sort();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        let ips = lat.len() as f64 / elapsed;
        println!(
            "| {sessions} x {threads} | {:.1} | {:.1} | {ips:.1} |",
            pct(0.5),
            pct(0.9)
        );
        json.push(format!(
            "{{\"sessions\":{sessions},\"threads\":{threads},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"ips\":{ips:.3}}}",
            pct(0.5),
            pct(0.9)
        ));
    }
    println!("LIMIT_JSON [{}]", json.join(","));
    warm_against_cold(&path, &name, cpus, secs);
}

/// Why a lone request's inference takes longer in the server than here: between two runs
/// the server decodes and letterboxes a photo on the same cores, which evicts the model's
/// weights and activations from the caches. Times `Session::run` alone, 1 x N, back to back
/// and with bus.jpg's decode + letterbox between runs; the difference is the cold-cache cost.
fn warm_against_cold(path: &std::path::Path, name: &str, cpus: usize, secs: u64) {
    use segserve::geometry::Letterbox;
    use segserve::imageio::{self, DecodeLimits};
    let mut s = session::build_session(path, cpus).unwrap();
    let info = session::inspect(&s, name).unwrap();
    let (h, w) = info.input_hw;
    let photo = common::photo("bus.jpg");
    let mut input = vec![114.0f32 / 255.0; 3 * h * w];
    let mut run = |between: bool, input: &mut Vec<f32>| {
        let deadline = Instant::now() + Duration::from_secs(secs / 2 + 1);
        let mut lat = Vec::new();
        while Instant::now() < deadline {
            if between {
                let img = imageio::decode(&photo, &DecodeLimits::default()).unwrap();
                let lb = Letterbox::new(img.width(), img.height(), w as u32, h as u32);
                imageio::letterbox_into(&img, &lb, input);
            }
            let t = Instant::now();
            run_session(&mut s, &info, input).unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        let mean = lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len() as f64;
        (lat[lat.len() / 2].as_secs_f64() * 1e3, mean * 1e3)
    };
    run(false, &mut input);
    let warm = run(false, &mut input);
    let cold = run(true, &mut input);
    println!(
        "Session::run alone, 1 x {cpus}: p50 {:.1} ms (mean {:.1}) back to back, p50 {:.1} ms (mean {:.1}) with bus.jpg's decode + letterbox between runs",
        warm.0, warm.1, cold.0, cold.1
    );
}
