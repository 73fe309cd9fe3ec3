//! Ultralytics export metadata (`names`, `imgsz`, `stride`, `task`, `batch`, `end2end` and the
//! export `args`) read from the ONNX `metadata_props`. Parsing only: the session module
//! fetches the raw strings, and `layout` decides what they mean together with the shapes.

use std::collections::BTreeMap;

/// What the model's head produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Boxes + class scores + mask coefficients, with a prototype output.
    Segment,
    /// Boxes + class scores only.
    Detect,
}

impl Task {
    /// Ultralytics' name for the task.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Segment => "segment",
            Task::Detect => "detect",
        }
    }
}

/// Parsing failure, with the key that was wrong.
#[derive(Debug, thiserror::Error)]
#[error("model metadata `{key}` is invalid: {why}")]
pub struct MetadataError {
    /// The metadata key.
    pub key: &'static str,
    /// What was wrong with it.
    pub why: String,
}

fn err(key: &'static str, why: impl Into<String>) -> MetadataError {
    MetadataError {
        key,
        why: why.into(),
    }
}

/// Parses the `names` entry: a Python dict literal such as `{0: 'person', 1: "it's"}`.
///
/// Class ids must be 0..n without gaps, because the model's score rows are indexed that way.
pub fn parse_names(text: &str) -> Result<Vec<String>, MetadataError> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| err("names", "not a {id: 'name'} dict"))?;
    let mut map = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut id = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| c.is_ascii_digit()) {
            id.push(c);
            chars.next();
        }
        let id: usize = id
            .parse()
            .map_err(|_| err("names", "expected an integer class id"))?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some(':') {
            return Err(err("names", "expected ':' after a class id"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let quote = chars
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| err("names", "expected a quoted class name"))?;
        let mut name = String::new();
        loop {
            match chars.next() {
                None => return Err(err("names", "unterminated class name")),
                Some('\\') => name.push(
                    chars
                        .next()
                        .ok_or_else(|| err("names", "dangling escape"))?,
                ),
                Some(c) if c == quote => break,
                Some(c) => name.push(c),
            }
        }
        if map.insert(id, name).is_some() {
            return Err(err("names", format!("class id {id} appears twice")));
        }
    }
    if map.is_empty() {
        return Err(err("names", "no classes"));
    }
    if map.keys().enumerate().any(|(i, id)| i != *id) {
        return Err(err("names", "class ids are not 0..n"));
    }
    Ok(map.into_values().collect())
}

/// Parses `imgsz`, `[h, w]` (or a single `640`), into (height, width).
pub fn parse_imgsz(text: &str) -> Result<(usize, usize), MetadataError> {
    let nums: Vec<usize> = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| err("imgsz", format!("not a list of integers: {text:?}")))?;
    match nums.as_slice() {
        [s] if *s > 0 => Ok((*s, *s)),
        [h, w] if *h > 0 && *w > 0 => Ok((*h, *w)),
        _ => Err(err("imgsz", format!("expected [h, w]: {text:?}"))),
    }
}

/// Parses `stride` (an integer, sometimes written as a float such as `32.0`).
pub fn parse_stride(text: &str) -> Result<usize, MetadataError> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| err("stride", format!("not a number: {text:?}")))?;
    if v >= 1.0 && v.fract() == 0.0 {
        Ok(v as usize)
    } else {
        Err(err("stride", format!("not a positive integer: {text:?}")))
    }
}

/// Parses `task`; only detection and segmentation heads are served.
pub fn parse_task(text: &str) -> Result<Task, MetadataError> {
    match text.trim() {
        "segment" => Ok(Task::Segment),
        "detect" => Ok(Task::Detect),
        other => Err(err(
            "task",
            format!("{other:?} is not served (segment or detect)"),
        )),
    }
}

/// Parses a Python boolean such as `end2end`'s `True` / `False`.
pub fn parse_bool(key: &'static str, text: &str) -> Result<bool, MetadataError> {
    match text.trim() {
        "True" | "true" => Ok(true),
        "False" | "false" => Ok(false),
        other => Err(err(key, format!("not True or False: {other:?}"))),
    }
}

/// Parses `batch`, the batch size the model was exported with.
pub fn parse_batch(text: &str) -> Result<usize, MetadataError> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| err("batch", format!("not a positive integer: {text:?}")))
}

/// The export arguments that change what the graph computes, from the `args` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportArgs {
    /// `nms`: `Some(true)` when NMS was embedded in the graph; `None` when absent or `None`.
    pub nms: Option<bool>,
    /// `dynamic`: exported with dynamic batch, height and width.
    pub dynamic: Option<bool>,
}

/// Parses `args`, a Python dict literal such as `{'batch': 1, 'nms': True, 'data': None}`.
/// Only `nms` and `dynamic` are kept; other values are skipped whatever their type.
pub fn parse_export_args(text: &str) -> Result<ExportArgs, MetadataError> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| err("args", "not a {'key': value} dict"))?;
    let mut out = ExportArgs::default();
    for entry in split_top_level(body) {
        let Some((key, value)) = entry.split_once(':') else {
            if entry.trim().is_empty() {
                continue;
            }
            return Err(err("args", format!("entry without ':': {entry:?}")));
        };
        let key = key.trim().trim_matches(|c| c == '\'' || c == '"');
        let flag = match value.trim() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        };
        match key {
            "nms" => out.nms = flag,
            "dynamic" => out.dynamic = flag,
            _ => {}
        }
    }
    Ok(out)
}

/// Splits a dict body at the commas that are outside quotes and brackets.
fn split_top_level(body: &str) -> Vec<&str> {
    let (mut parts, mut start, mut depth, mut quote) = (Vec::new(), 0, 0i32, None);
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(' | '{') => depth += 1,
            (None, ']' | ')' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    parts.push(&body[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dict_literal() {
        let names = parse_names("{0: 'person', 1: \"it's\", 2: 'traffic light'}").unwrap();
        assert_eq!(names, ["person", "it's", "traffic light"]);
    }

    #[test]
    fn names_with_gap_is_refused() {
        assert!(parse_names("{0: 'a', 2: 'b'}").is_err());
        assert!(parse_names("{}").is_err());
        assert!(parse_names("[0, 1]").is_err());
        assert!(parse_names("{0: 'a', 0: 'b'}").is_err());
    }

    #[test]
    fn imgsz_stride_task() {
        assert_eq!(parse_imgsz("[320, 320]").unwrap(), (320, 320));
        assert_eq!(parse_imgsz("[480, 640]").unwrap(), (480, 640));
        assert_eq!(parse_imgsz("640").unwrap(), (640, 640));
        assert!(parse_imgsz("[0, 3]").is_err());
        assert_eq!(parse_stride("32").unwrap(), 32);
        assert_eq!(parse_stride("32.0").unwrap(), 32);
        assert!(parse_stride("-1").is_err());
        assert_eq!(parse_task("segment").unwrap(), Task::Segment);
        assert!(parse_task("pose").is_err());
    }

    #[test]
    fn end2end_batch_and_export_args() {
        assert!(parse_bool("end2end", "True").unwrap());
        assert!(!parse_bool("end2end", " False ").unwrap());
        assert!(parse_bool("end2end", "1").is_err());
        assert_eq!(parse_batch("4").unwrap(), 4);
        assert!(parse_batch("0").is_err());
        // As written by Ultralytics 8.4 for `yolo export ... nms=True`.
        let nms = "{'data': None, 'batch': 1, 'fraction': 1.0, 'quantize': None, 'nms': True, \
                   'dynamic': False, 'simplify': False, 'opset': None}";
        assert_eq!(
            parse_export_args(nms).unwrap(),
            ExportArgs {
                nms: Some(true),
                dynamic: Some(false)
            }
        );
        // Older exports have no `nms`; strings may hold commas, quotes and brackets.
        let old =
            r#"{'batch': 1, 'data': 'C:\\d, [x]\'s.yaml', 'dynamic': True, 'imgsz': [640, 480]}"#;
        assert_eq!(
            parse_export_args(old).unwrap(),
            ExportArgs {
                nms: None,
                dynamic: Some(true)
            }
        );
        assert_eq!(parse_export_args("{}").unwrap(), ExportArgs::default());
        assert!(parse_export_args("nms=True").is_err());
        assert!(parse_export_args("{'nms' True}").is_err());
    }
}
