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
    let cpus = segserve::host::available_cpus();
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
    physical_limit(&name, cpus, &json);
}

/// The physical limit of a server on this machine: the bare floor plus the image work a
/// request cannot avoid, measured here in the same run. That work is, for bus.jpg, an
/// exact decode straight into a warm tensor (libjpeg's rows through the letterbox), and
/// the outputs, NMS, masks, COCO RLE and the `/v1/segment` JSON, on one thread. On N cores
/// a lone request's work cannot overlap its own inference, so its latency is at best the
/// fastest bare p50 plus the work; under load the cores do both, so the throughput is at
/// best N / (N / best bare images/s + work). Prints a table and `PHYSICAL_JSON` for
/// scripts/bench.sh.
fn physical_limit(name: &str, cpus: usize, shapes: &[String]) {
    use segserve::budget::MemoryBudget;
    use segserve::engine::FilterOptions;
    use segserve::imageio::{self, DecodeLimits};
    use segserve::options::MaskFormat;
    use segserve::pipeline::{Segmentation, Timing};
    use segserve::schema::SegmentResponse;

    let shapes: Vec<serde_json::Value> = shapes
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    let fastest = shapes
        .iter()
        .map(|s| s["p50_ms"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    let best_ips = shapes
        .iter()
        .map(|s| s["ips"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let engine = common::engine(name);
    let info = engine.info().clone();
    let mut sess = session::build_session(&common::model(name), 1).unwrap();
    let photo = common::photo("bus.jpg");
    let limits = DecodeLimits::default();
    let budget = MemoryBudget::unlimited();
    let probe = imageio::probe(&photo, &limits).unwrap();
    let lb = info.letterbox(probe.width(), probe.height());
    let mut input = vec![0f32; lb.tensor_len()];
    let decode_once = |input: &mut [f32]| {
        imageio::probe(&photo, &limits)
            .unwrap()
            .stream_into(&lb, input, &mut budget.reservation(), 1)
            .unwrap()
    };
    decode_once(&mut input);
    // bus.jpg's own outputs, so the masks are its masks.
    let raw = run_session(&mut sess, &info, &input).unwrap();
    let (mut decode, mut rest) = (Vec::new(), Vec::new());
    for run in 0..60 {
        let t = Instant::now();
        decode_once(&mut input);
        let t_decode = t.elapsed();
        let t = Instant::now();
        let dets = engine.detect(&raw, &lb, &FilterOptions::default(), true);
        let seg = Segmentation {
            width: lb.src_w,
            height: lb.src_h,
            detections: dets,
            timing: Timing::default(),
            image: None,
        };
        let body = SegmentResponse::with_masks(&info, &seg, MaskFormat::Rle, 1.0);
        std::hint::black_box(serde_json::to_vec(&body).unwrap());
        // The first runs warm the caches and the heap.
        if run >= 10 {
            decode.push(t_decode.as_secs_f64() * 1e3);
            rest.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (decode, rest) = (med(decode), med(rest));
    let work = decode + rest;
    let c1 = fastest + work;
    let ips = cpus as f64 / (cpus as f64 / best_ips + work / 1e3);
    println!(
        "\nPhysical limit (bus.jpg, exact): image work {work:.2} ms a request (decode into the tensor {decode:.2}, outputs + masks + RLE + JSON {rest:.2})"
    );
    println!("| | floor | limit | limit / floor |\n|---|---|---|---|");
    println!(
        "| lone request p50, ms | {fastest:.1} | {c1:.1} | {:.3} |",
        c1 / fastest
    );
    println!(
        "| throughput, images/s | {best_ips:.1} | {ips:.1} | {:.3} |",
        ips / best_ips
    );
    println!(
        "PHYSICAL_JSON {{\"work_ms\":{work:.3},\"decode_ms\":{decode:.3},\"post_ms\":{rest:.3},\"c1_p50_ms\":{c1:.3},\"ips\":{ips:.3},\"c1_ratio\":{:.4},\"ips_ratio\":{:.4}}}",
        c1 / fastest,
        ips / best_ips
    );
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
