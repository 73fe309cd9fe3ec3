//! The offline commands: `segserve predict` runs the engine over image files and folders
//! with no server (same pipeline and same JSON as `POST /v1/segment`), and `segserve
//! models` prints what model files contain. Terminal concerns (progress bar, summary,
//! exit status) live here; inference is `Pipeline::segment`, as for HTTP.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{PredictArgs, Progress};
use crate::budget::MemoryBudget;
use crate::options::{MaskFormat, SegmentOptions};
use crate::pipeline::{Pipeline, PipelineError, SegmentRequest, Wants};
use crate::schema::SegmentResponse;

/// File extensions `predict` picks up when walking a folder (files named on the command
/// line are tried whatever their extension).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// What a `predict` run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Images processed successfully.
    pub images: usize,
    /// Detections over all images.
    pub detections: usize,
    /// Images (or named paths) that failed.
    pub failed: usize,
    /// Wall time, model loading included.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} image{}, {} detections, {} failed, {:.2} s ({:.1} images/s)",
            self.images,
            if self.images == 1 { "" } else { "s" },
            self.detections,
            self.failed,
            secs,
            self.images as f64 / secs.max(1e-9)
        )
    }
}

/// One image to process and where its JSON goes (relative to `--output`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    path: PathBuf,
    out_rel: PathBuf,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands the command line into jobs (folders recursively, in sorted order) and the
/// paths that could not be read. Output names mirror the folder structure under each
/// named folder; a clash (two inputs named alike) gets a `-2`, `-3`... suffix.
fn collect_jobs(paths: &[PathBuf]) -> (Vec<Job>, Vec<(PathBuf, String)>) {
    let mut jobs = Vec::new();
    let mut bad = Vec::new();
    let mut used = HashSet::new();
    for root in paths {
        let files = if root.is_dir() {
            let mut v = Vec::new();
            if let Err(e) = walk(root, &mut v) {
                bad.push((root.clone(), e.to_string()));
            }
            v.into_iter()
                .map(|f| {
                    let rel = f.strip_prefix(root).unwrap_or(&f).to_path_buf();
                    (f, rel)
                })
                .collect()
        } else if root.is_file() {
            let name = root.file_name().map(PathBuf::from).unwrap_or_default();
            vec![(root.clone(), name)]
        } else {
            bad.push((root.clone(), "no such file or folder".into()));
            vec![]
        };
        for (path, rel) in files {
            let base = rel.with_extension("");
            let mut out_rel = base.with_extension("json");
            let mut n = 2;
            while !used.insert(out_rel.clone()) {
                out_rel = PathBuf::from(format!("{}-{n}.json", base.display()));
                n += 1;
            }
            jobs.push(Job { path, out_rel });
        }
    }
    (jobs, bad)
}

fn progress_bar(mode: Progress, len: usize) -> ProgressBar {
    let draw = match mode {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    };
    if !draw {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images, {per_sec}, eta {eta} {msg}",
        )
        .expect("the template is valid"),
    );
    pb
}

/// Flags to the query pairs `/v1/segment` takes, so both validate options the same way.
fn query_pairs(a: &PredictArgs) -> Vec<(String, String)> {
    let mut pairs = vec![("masks".to_string(), a.masks.clone())];
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            pairs.push((k.to_string(), v));
        }
    };
    add("conf", a.conf.map(|v| v.to_string()));
    add("iou", a.iou.map(|v| v.to_string()));
    add("max_det", a.max_det.map(|v| v.to_string()));
    add("classes", a.classes.clone());
    add("tolerance", a.tolerance.map(|v| v.to_string()));
    pairs
}

/// `segserve predict`: every image through the first model; JSON per image into
/// `--output`, or JSON Lines (with a `path` field) on stdout. Failures are reported on
/// stderr and counted; the caller turns `failed > 0` into a non-zero exit status.
pub async fn predict(args: PredictArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    anyhow::ensure!(
        args.runtime.models.len() == 1,
        "predict runs one model; pass a single --model"
    );
    let pairs = query_pairs(&args);
    // Generous queue: at most 2 x sessions requests are ever in flight (below).
    let rt = args
        .runtime
        .clone()
        .into_config(Some(64), Duration::from_secs(3600))?;
    let registry = crate::models::load(&rt).await?;
    let engine = registry.get(None)?.clone();
    // The options' errors name the parameter; here it is a flag.
    let query = SegmentOptions::parse(&pairs, &engine.info().names)
        .map_err(|e| anyhow::anyhow!("--{} {}", e.param.replace('_', "-"), e.problem))?;
    let (jobs, bad) = collect_jobs(&args.paths);
    let mut summary = Summary {
        failed: bad.len(),
        ..Summary::default()
    };
    for (p, why) in &bad {
        eprintln!("error: {}: {why}", p.display());
    }
    if let Some(dir) = &args.output {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let pb = progress_bar(args.progress, jobs.len());
    let stdout = std::io::stdout();
    let pipeline = Pipeline::new(rt.limits, rt.decode);
    // Two images per session keep every session busy while the next one is decoded.
    let concurrency = (engine.pool().sessions * 2).clamp(1, engine.pool().sessions + 64);
    let budget = MemoryBudget::unlimited();
    let mut results = futures_util::stream::iter(jobs.into_iter().map(|job| {
        let engine = engine.clone();
        let query = query.clone();
        let (masks, tolerance) = (query.masks, query.tolerance);
        let render_dir = args.render.clone();
        let reservation = budget.reservation();
        async move {
            let path = job.path.clone();
            let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: {e}", job.path.display()))?;
            let wants = Wants::boxes_or_masks(masks != MaskFormat::None);
            let wants = if render_dir.is_some() {
                wants.on_photo()
            } else {
                wants
            };
            let req = SegmentRequest::new(Bytes::from(bytes), reservation, wants).options(&query);
            let e = engine.clone();
            let out_rel = job.out_rel.clone();
            let done = pipeline
                .segment(&engine, req, move |mut seg, _| {
                    // Drawing and writing happen here, on the blocking pool like the rest.
                    if let (Some(dir), Some(photo)) = (render_dir, seg.image.take()) {
                        let dest = dir.join(format!(
                            "{}.rendered.jpg",
                            out_rel.with_extension("").display()
                        ));
                        let drawn = crate::render::render(photo, &seg.detections, &e.info().names);
                        let bytes = crate::render::encode(&drawn, crate::render::Encoding::Jpeg)
                            .map_err(|err| PipelineError::Task(err.to_string()))?;
                        let write = || -> std::io::Result<()> {
                            if let Some(parent) = dest.parent() {
                                std::fs::create_dir_all(parent)?;
                            }
                            std::fs::write(&dest, bytes)
                        };
                        write().map_err(|err| {
                            PipelineError::Task(format!("cannot write {}: {err}", dest.display()))
                        })?;
                    }
                    Ok(SegmentResponse::with_masks(
                        e.info(),
                        &seg,
                        masks,
                        tolerance,
                    ))
                })
                .await
                .map_err(|e| format!("{}: {e}", job.path.display()))?;
            Ok::<_, String>((job.clone(), done.value))
        }
    }))
    .buffered(concurrency);
    while let Some(result) = results.next().await {
        match result {
            Ok((job, resp)) => {
                summary.images += 1;
                summary.detections += resp.detections.len();
                write_result(&args.output, &job, &resp, &stdout)?;
                pb.set_message(job.path.display().to_string());
            }
            Err(why) => {
                summary.failed += 1;
                pb.suspend(|| eprintln!("error: {why}"));
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn write_result(
    output: &Option<PathBuf>,
    job: &Job,
    resp: &SegmentResponse,
    stdout: &std::io::Stdout,
) -> anyhow::Result<()> {
    match output {
        Some(dir) => {
            let dest = dir.join(&job.out_rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let json = serde_json::to_vec_pretty(resp)?;
            std::fs::write(&dest, json).with_context(|| format!("cannot write {}", dest.display()))
        }
        None => {
            /// A JSON Lines record: the `/v1/segment` reply with the file's path first.
            #[derive(serde::Serialize)]
            struct Line<'a> {
                path: String,
                #[serde(flatten)]
                resp: &'a SegmentResponse,
            }
            let line = Line {
                path: job.path.display().to_string(),
                resp,
            };
            let mut out = stdout.lock();
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_recursively_and_outputs_do_not_clash() {
        let dir = std::env::temp_dir().join(format!("segserve-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["a.jpg", "a.PNG", "notes.txt", "sub/b.webp"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let (jobs, bad) = collect_jobs(&[dir.clone(), dir.join("missing.jpg")]);
        let outs: Vec<String> = jobs
            .iter()
            .map(|j| j.out_rel.display().to_string())
            .collect();
        assert_eq!(outs, ["a.json", "a-2.json", "sub/b.json"]);
        assert_eq!(bad.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
