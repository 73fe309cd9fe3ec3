//! The cost curve: how each stage's time and the peak memory grow with the photo's size and
//! with the number of objects in it, so a user can see what their photos will cost.
//!
//! Sizes: bus.jpg (810 x 1080) scaled to 0.1, 0.5, 2, 8 and 31 MP and saved as JPEG (quality
//! 90). Objects: bus.jpg tiled n x n (n = 1..4) at 8 MP, so the model sees more and smaller
//! people and buses. Each row is the median of several runs of each stage, one thread,
//! through the same code the server runs (decode, letterbox, `Session::run` on one thread,
//! outputs + NMS + masks, COCO RLE + the `/v1/segment` JSON); peak memory is the process's
//! peak RSS growth over one whole run (VmHWM, reset before it). The whole decode and the
//! letterbox are what the picture routes do; the last two columns are what the other
//! routes do with a JPEG: decode straight into the tensor, never holding the photo.
//!
//! `cargo bench --bench sweep` (SEGSERVE_BENCH_RUNS sets the runs per row, default 7).

mod common;

use std::time::{Duration, Instant};

use image::{DynamicImage, RgbImage};
use segserve::budget::MemoryBudget;
use segserve::engine::{run_session, session, Engine, FilterOptions};
use segserve::imageio::{self, DecodeLimits};
use segserve::options::MaskFormat;
use segserve::pipeline::{Segmentation, Timing};
use segserve::schema::SegmentResponse;

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut v = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .unwrap();
    v
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

struct Row {
    /// Straight into the tensor (what `/v1/segment` does with a JPEG).
    streamed: f64,
    streamed_peak_mib: f64,
    decode: f64,
    letterbox: f64,
    inference: f64,
    masks: f64,
    encode: f64,
    detections: usize,
    peak_mib: f64,
}

fn measure(engine: &Engine, sess: &mut ort::session::Session, bytes: &[u8], runs: usize) -> Row {
    let info = engine.info().clone();
    let limits = DecodeLimits::default();
    let budget = MemoryBudget::unlimited();
    let (mut d, mut l, mut i, mut m, mut e) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut detections, mut peak) = (0, 0);
    let (mut streamed, mut streamed_peak) = (vec![], 0);
    for run in 0..runs + 1 {
        let probe = imageio::probe(bytes, &limits).unwrap();
        let lb = info.letterbox(probe.width(), probe.height());
        let mut input = vec![1f32; lb.tensor_len()];
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = status_kib("VmRSS:");
        let t = Instant::now();
        probe
            .stream_into(&lb, &mut input, &mut budget.reservation(), 1)
            .unwrap();
        if run > 0 {
            streamed.push(t.elapsed());
            streamed_peak = streamed_peak.max(status_kib("VmHWM:").saturating_sub(before));
        }
        drop(input);
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = status_kib("VmRSS:");
        let t = Instant::now();
        let img = imageio::decode(bytes, &limits).unwrap();
        let t_decode = t.elapsed();
        let t = Instant::now();
        let lb = info.letterbox(img.width(), img.height());
        let mut input = vec![0f32; lb.tensor_len()];
        imageio::letterbox_into(&img, &lb, &mut input);
        let t_letterbox = t.elapsed();
        let t = Instant::now();
        let raw = run_session(sess, &info, &input).unwrap();
        let t_infer = t.elapsed();
        let t = Instant::now();
        let dets = engine.detect(&raw, &lb, &FilterOptions::default(), true);
        let t_masks = t.elapsed();
        let seg = Segmentation {
            width: img.width(),
            height: img.height(),
            detections: dets,
            timing: Timing::default(),
            image: None,
        };
        let t = Instant::now();
        let body = SegmentResponse::with_masks(&info, &seg, MaskFormat::Rle, 1.0);
        let json = serde_json::to_vec(&body).unwrap();
        let t_encode = t.elapsed();
        drop((img, input, raw, body, json));
        let grew = status_kib("VmHWM:").saturating_sub(before);
        // The first run pays one-time costs (page faults of fresh buffers); not counted.
        if run > 0 {
            d.push(t_decode);
            l.push(t_letterbox);
            i.push(t_infer);
            m.push(t_masks);
            e.push(t_encode);
            peak = peak.max(grew);
        }
        detections = seg.detections.len();
    }
    Row {
        streamed: median(streamed),
        streamed_peak_mib: streamed_peak as f64 / 1024.0,
        decode: median(d),
        letterbox: median(l),
        inference: median(i),
        masks: median(m),
        encode: median(e),
        detections,
        peak_mib: peak as f64 / 1024.0,
    }
}

fn print(label: &str, r: &Row) {
    let stages = [
        ("decode", r.decode),
        ("letterbox", r.letterbox),
        ("inference", r.inference),
        ("masks", r.masks),
        ("RLE + JSON", r.encode),
    ];
    let total: f64 = stages.iter().map(|s| s.1).sum();
    let top = stages.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    println!(
        "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {total:.2} | {top} | {:.0} | {:.2} | {:.1} |",
        r.detections,
        r.decode,
        r.letterbox,
        r.inference,
        r.masks,
        r.encode,
        r.peak_mib,
        r.streamed,
        r.streamed_peak_mib
    );
}

fn main() {
    // As the server runs (see segserve::alloc), so RSS is comparable.
    segserve::alloc::tune();
    common::init_ort();
    let name = common::model_name();
    let runs: usize = std::env::var("SEGSERVE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let path = common::model(&name);
    let engine = common::engine(&name);
    let mut sess = session::build_session(&path, 1).unwrap();
    let bus = image::load_from_memory(&common::photo("bus.jpg"))
        .unwrap()
        .to_rgb8();
    let header = "| photo | objects | decode ms | letterbox ms | inference ms | masks ms | RLE + JSON ms | total ms | largest | peak RSS MiB | streamed decode + letterbox ms | its peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|";
    println!("model {name}, one thread, median of {runs} runs\n\nBy size (bus.jpg scaled, JPEG q90):\n\n{header}");
    for mp in [0.1f64, 0.5, 2.0, 8.0, 31.0] {
        // Keep the 3:4 shape: w x h = mp million, h = 4/3 w.
        let w = ((mp * 1e6 * 0.75).sqrt()).round() as u32;
        let h = (w as f64 * 4.0 / 3.0).round() as u32;
        let img = image::imageops::resize(&bus, w, h, image::imageops::FilterType::Triangle);
        let bytes = jpeg(&img);
        let r = measure(&engine, &mut sess, &bytes, runs);
        print(&format!("{mp} MP ({w}x{h})"), &r);
    }
    println!("\nBy objects (bus.jpg tiled n x n, 8 MP):\n\n{header}");
    let (w, h) = (2450u32, 3266u32);
    for n in 1..=4u32 {
        let tile =
            image::imageops::resize(&bus, w / n, h / n, image::imageops::FilterType::Triangle);
        let mut img = RgbImage::from_pixel(w, h, image::Rgb([114, 114, 114]));
        for ty in 0..n {
            for tx in 0..n {
                image::imageops::replace(
                    &mut img,
                    &tile,
                    (tx * (w / n)) as i64,
                    (ty * (h / n)) as i64,
                );
            }
        }
        let r = measure(&engine, &mut sess, &jpeg(&img), runs);
        print(&format!("{n} x {n} tiles"), &r);
    }
}
