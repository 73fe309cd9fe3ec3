//! `segserve models`: what model files contain (name, task, input size, stride, classes,
//! output layout), read the way the server reads them, without loading a server.

use std::io::Write;

use super::ModelsArgs;
use crate::config::locate_ort;
use crate::engine::session;
use crate::schema::{ModelCard, ModelsResponse};

/// `segserve models`: name, task, input size, stride and classes of each file. Returns
/// whether every file could be read.
pub fn models(args: ModelsArgs) -> anyhow::Result<bool> {
    session::init_runtime(&locate_ort(args.ort_dylib.as_deref())?, 1)?;
    let mut cards = Vec::new();
    let mut ok = true;
    for (i, path) in args.paths.iter().enumerate() {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        match session::build_session(path, 1).and_then(|s| session::inspect(&s, &name)) {
            Ok(info) => cards.push(ModelCard::new(&info, i == 0)),
            Err(e) => {
                ok = false;
                eprintln!("error: {}: {e}", path.display());
            }
        }
    }
    let mut text = String::new();
    if args.json {
        text = serde_json::to_string_pretty(&ModelsResponse { models: cards })? + "\n";
    } else {
        use std::fmt::Write as _;
        let _ = writeln!(
            text,
            "{:<28} {:<8} {:>9} {:>6} {:>7}  first classes",
            "NAME", "TASK", "INPUT", "STRIDE", "CLASSES"
        );
        for c in &cards {
            let first: Vec<&str> = c.class_names.iter().take(4).map(String::as_str).collect();
            let _ = writeln!(
                text,
                "{:<28} {:<8} {:>9} {:>6} {:>7}  {}{}",
                c.name,
                c.task,
                format!("{}x{}", c.input_size[0], c.input_size[1]),
                c.stride,
                c.class_names.len(),
                first.join(", "),
                if c.class_names.len() > 4 { ", ..." } else { "" }
            );
        }
    }
    // A closed pipe (`| head`) is the reader's choice, not our failure.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ok),
    }
}
