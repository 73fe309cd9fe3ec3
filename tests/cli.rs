//! The offline commands, run as the built binary: `segserve predict` over
//! ../shared/testdata (JSON Lines, per-image files, failures and exit status) and
//! `segserve models`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn segserve(args: &[&str]) -> Output {
    // `predict` runs inference and `models` loads sessions: heavy work for the machine.
    let _turn = common::heavy();
    Command::new(env!("CARGO_BIN_EXE_segserve"))
        .args(args)
        .current_dir(common::repo())
        .env("ORT_DISABLE_TELEMETRY", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("the segserve binary runs")
}

fn testdata() -> String {
    common::shared().join("testdata").display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("segserve-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn golden(photo: &Path) -> Value {
    common::golden(
        "yolov8n-seg-320",
        photo.file_name().unwrap().to_str().unwrap(),
    )
}

fn class_names(v: &Value) -> Vec<String> {
    v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["class_name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn predict_folder_to_json_lines() {
    let o = segserve(&["predict", &testdata(), "--sessions", "1"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let photos = common::photos();
    let lines: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), photos.len());
    let mut total = 0;
    for (line, photo) in lines.iter().zip(&photos) {
        // Input order, the /v1/segment schema plus `path`.
        assert_eq!(Path::new(line["path"].as_str().unwrap()), photo);
        for key in [
            "model",
            "image",
            "detections",
            "object_counts",
            "mask_shape",
            "timing_ms",
        ] {
            assert!(line.get(key).is_some(), "{key} missing");
        }
        assert_eq!(
            class_names(line),
            class_names(&golden(photo)),
            "{}",
            photo.display()
        );
        total += line["detections"].as_array().unwrap().len();
    }
    // The summary, and no progress bar when stderr is not a terminal.
    let summary = format!("{} images, {total} detections, 0 failed", photos.len());
    assert!(err.contains(&summary), "{err}");
    assert!(!err.contains('\r') && !err.contains("\x1b["), "{err:?}");
}

#[test]
fn predict_writes_one_file_per_image_and_fails_loudly() {
    let input = temp_dir("in");
    let out = temp_dir("out");
    std::fs::create_dir_all(input.join("nested/deeper")).unwrap();
    let bus = common::shared().join("testdata/bus.jpg");
    std::fs::copy(&bus, input.join("nested/deeper/bus.jpg")).unwrap();
    std::fs::copy(
        common::shared().join("testdata/coffee.png"),
        input.join("coffee.png"),
    )
    .unwrap();
    std::fs::write(input.join("broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    std::fs::write(input.join("notes.txt"), b"skipped: not an image name").unwrap();
    let o = segserve(&[
        "predict",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--masks",
        "polygon",
        "--sessions",
        "1",
        "--render",
        out.join("drawn").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "one image is broken: {err}");
    // --render writes the drawn photo, at the photo's size, beside the mirrored path.
    let drawn =
        image::open(out.join("drawn/nested/deeper/bus.rendered.jpg")).expect("rendered bus");
    assert_eq!((drawn.width(), drawn.height()), (810, 1080));
    assert!(out.join("drawn/coffee.rendered.jpg").is_file());
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(
        err.contains("2 images") && err.contains("1 failed"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let written: Value =
        serde_json::from_slice(&std::fs::read(out.join("nested/deeper/bus.json")).unwrap())
            .unwrap();
    assert_eq!(class_names(&written), class_names(&golden(&bus)));
    let d0 = &written["detections"][0];
    assert!(d0.get("mask").is_none() && d0["polygons"][0].as_array().unwrap().len() >= 3);
    assert!(out.join("coffee.json").is_file());
    assert!(!out.join("broken.json").exists() && !out.join("notes.json").exists());
    let _ = std::fs::remove_dir_all(&input);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn predict_validates_options_like_the_api() {
    let o = segserve(&["predict", &testdata(), "--conf", "2", "--sessions", "1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--conf must be between 0 and 1"),
        "{}",
        stderr(&o)
    );
    let o = segserve(&[
        "predict",
        &testdata(),
        "--classes",
        "bus",
        "--masks",
        "none",
        "--sessions",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let buses: usize = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(class_names(&v).iter().all(|c| c == "bus"));
            assert!(v["detections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d.get("mask").is_none()));
            v["detections"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(buses, 1, "{out}");
}

#[test]
fn models_prints_metadata() {
    let seg = common::model("yolov8n-seg-320").display().to_string();
    let det = common::model("yolov12n-det-640").display().to_string();
    let o = segserve(&["models", &seg, &det]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(5).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["yolov8n-seg-320", "segment", "320x320", "32", "80"],
            ["yolov12n-det-640", "detect", "640x640", "32", "80"]
        ]
    );
    let o = segserve(&["models", "--json", &det]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["models"][0]["class_names"][5], "bus");
    let o = segserve(&["models", "/nonexistent.onnx"]);
    assert!(!o.status.success());
}
