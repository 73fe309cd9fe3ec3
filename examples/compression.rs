//! What compressed answers cost and save, against a running server: for bus.jpg and
//! zidane.jpg through `/segmentapi` (dense `mask_values`), `/v1/segment` (RLE, polygons)
//! and KServe's JSON infer, each asked plain, gzip and zstd, one request at a time: the
//! bytes on the wire and the client's median time to the last byte (the server's encoding
//! included; loopback, so no network time is saved). Then the dense answer compressed here
//! at several levels, to show why level 1 was chosen.
//!
//! `cargo run --release --example compression -- --url http://127.0.0.1:5000`

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;

/// Compressed-answer measurements.
#[derive(Debug, Parser)]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// Folder holding bus.jpg and zidane.jpg.
    #[arg(long, default_value = "../shared/testdata")]
    photos: PathBuf,
    /// Requests per case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let c = reqwest::Client::new();
    println!(
        "| photo | route | plain bytes | plain ms | gzip bytes | gzip ms | zstd bytes | zstd ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut dense_bus = Vec::new();
    for name in ["bus.jpg", "zidane.jpg"] {
        let photo = std::fs::read(a.photos.join(name)).expect("photo");
        let kserve = serde_json::json!({"inputs": [{"name": "image", "shape": [1],
            "datatype": "BYTES", "data": [base64::engine::general_purpose::STANDARD.encode(&photo)]}]})
        .to_string();
        let cases: [(&str, String, &str, Vec<u8>); 4] = [
            (
                "/segmentapi (dense)",
                "/segmentapi".into(),
                "form",
                photo.clone(),
            ),
            (
                "/v1/segment?masks=rle",
                "/v1/segment?masks=rle".into(),
                "image/jpeg",
                photo.clone(),
            ),
            (
                "/v1/segment?masks=polygon",
                "/v1/segment?masks=polygon".into(),
                "image/jpeg",
                photo.clone(),
            ),
            (
                "KServe JSON infer",
                "/v2/models/yolov8n-seg-320/infer".into(),
                "application/json",
                kserve.into_bytes(),
            ),
        ];
        for (label, path, ctype, body) in cases {
            let mut row = format!("| {name} | {label} |");
            for accept in ["identity", "gzip", "zstd"] {
                let mut times = Vec::new();
                let mut bytes = 0;
                for i in 0..=a.runs {
                    let req = c
                        .post(format!("{}{path}", a.url))
                        .header("accept-encoding", accept);
                    let req = if ctype == "form" {
                        req.multipart(reqwest::multipart::Form::new().part(
                            "image",
                            reqwest::multipart::Part::bytes(body.clone()).file_name(name),
                        ))
                    } else {
                        req.header("content-type", ctype).body(body.clone())
                    };
                    let t = Instant::now();
                    let r = req.send().await.expect("an answer");
                    assert!(r.status().is_success(), "{path}: {}", r.status());
                    let wire = r.bytes().await.expect("the body");
                    if i > 0 {
                        times.push(t.elapsed());
                    }
                    bytes = wire.len();
                    if accept == "identity" && name == "bus.jpg" && label.contains("dense") {
                        dense_bus = wire.to_vec();
                    }
                }
                row += &format!(" {bytes} | {:.1} |", median(times));
            }
            println!("{row}");
        }
    }
    println!();
    println!(
        "bus.jpg's dense answer ({} bytes) compressed here, one thread:",
        dense_bus.len()
    );
    println!("| coding | level | bytes | ms |");
    println!("|---|---:|---:|---:|");
    for level in [1, 6, 9] {
        let t = Instant::now();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(&dense_bus).unwrap();
        let out = e.finish().unwrap();
        println!(
            "| gzip | {level} | {} | {:.1} |",
            out.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    for level in [1, 3, 9] {
        let t = Instant::now();
        let out = zstd::encode_all(&dense_bus[..], level).unwrap();
        println!(
            "| zstd | {level} | {} | {:.1} |",
            out.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
