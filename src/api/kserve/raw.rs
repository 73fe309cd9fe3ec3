//! The raw model: every loaded model is also served as its own tensors under `<name>-raw`, for
//! clients that pre- and post-process on their side and send the letterboxed tensor, as
//! Ultralytics' Triton client does (`YOLO("http://host:5000/<name>-raw", task="segment")`).
//! `<name>` keeps its photo-in, detections-out meaning. This module is the transport-neutral
//! part: the model configuration (Triton's model-configuration extension, with the
//! Ultralytics metadata it reads), the input's checks and conversion, and the run; REST
//! (`raw_http`) and gRPC (`api::grpc`) read and write the tensors.

use crate::api::AppState;
use crate::engine::{Admission, Engine, ModelInfo, OutputLayout};
use crate::error::AppError;
use crate::pipeline::Ticket;

/// What marks a raw model's name.
pub const RAW_SUFFIX: &str = "-raw";

/// The served model behind a raw name (`yolov8n-seg-320-raw` -> `yolov8n-seg-320`).
pub fn base_name(name: &str) -> Option<&str> {
    name.strip_suffix(RAW_SUFFIX).filter(|b| !b.is_empty())
}

/// The engine behind a raw name, when `name` is one (and not itself a model's name).
pub fn raw_engine(s: &AppState, name: &str) -> Result<Option<Engine>, AppError> {
    match base_name(name) {
        Some(base) if s.engine(Some(name)).is_err() => s.engine(Some(base)).map(Some),
        _ => Ok(None),
    }
}

/// The configuration of `name`, photo model or raw.
pub fn config_of(s: &AppState, name: &str) -> Result<ModelConfig, AppError> {
    match raw_engine(s, name)? {
        Some(engine) => raw_config(engine.info()),
        None => Ok(photo_config(s.engine(Some(name))?.info())),
    }
}

/// One tensor of a model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorConfig {
    /// Tensor name.
    pub name: String,
    /// Triton's data type (`TYPE_FP32`, `TYPE_INT64`, `TYPE_STRING`).
    pub data_type: &'static str,
    /// Dimensions (-1 variable).
    pub dims: Vec<i64>,
}

/// A model's configuration, as Triton's model-configuration extension describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Served name.
    pub name: String,
    /// Inputs.
    pub inputs: Vec<TensorConfig>,
    /// Outputs.
    pub outputs: Vec<TensorConfig>,
    /// `parameters.metadata.string_value`: the Ultralytics metadata dict, as Python's `repr`
    /// writes it (Ultralytics `eval`s it), for raw models.
    pub metadata: Option<String>,
}

/// Triton's name of a protocol datatype.
pub fn triton_type(datatype: &str) -> &'static str {
    match datatype {
        "FP32" => "TYPE_FP32",
        "FP16" => "TYPE_FP16",
        "INT64" => "TYPE_INT64",
        _ => "TYPE_STRING",
    }
}

/// The configuration of the photo model `info` describes (its metadata's tensors).
pub fn photo_config(info: &ModelInfo) -> ModelConfig {
    let m = super::wire::ModelMetadata::new(info);
    let t = |t: super::wire::TensorMetadata| TensorConfig {
        data_type: triton_type(&t.datatype),
        name: t.name,
        dims: t.shape,
    };
    ModelConfig {
        name: m.name,
        inputs: m.inputs.into_iter().map(t).collect(),
        outputs: m.outputs.into_iter().map(t).collect(),
        metadata: None,
    }
}

/// The raw model's configuration: the ONNX graph's image input `[1, 3, H, W]` and its raw
/// outputs (`[1, 4 + classes + masks, anchors]`, and `[1, masks, H/4, W/4]` for a
/// segmentation model). Only raw-head exports have one (an NMS graph's outputs are not what
/// a client's post-processing expects).
pub fn raw_config(info: &ModelInfo) -> Result<ModelConfig, AppError> {
    if info.layout != OutputLayout::Raw {
        return Err(AppError::NotFound(format!(
            "model {:?} has NMS in its graph; its raw outputs are not served (only raw-head exports are)",
            info.name
        )));
    }
    let (h, w) = (info.input_hw.0 as i64, info.input_hw.1 as i64);
    let anchors: i64 = [8, 16, 32].iter().map(|s| (h / s) * (w / s)).sum();
    let channels = 4 + info.names.len() as i64 + info.num_masks as i64;
    let fp32 = |name: &str, dims: Vec<i64>| TensorConfig {
        name: name.into(),
        data_type: "TYPE_FP32",
        dims,
    };
    let mut outputs = vec![fp32(&info.preds_name, vec![1, channels, anchors])];
    if let Some(p) = &info.protos_name {
        outputs.push(fp32(p, vec![1, info.num_masks as i64, h / 4, w / 4]));
    }
    Ok(ModelConfig {
        name: format!("{}{RAW_SUFFIX}", info.name),
        inputs: vec![fp32(&info.input_name, vec![1, 3, h, w])],
        outputs,
        metadata: Some(ultralytics_metadata(info)),
    })
}

/// A Python string literal of `s`.
fn py_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The metadata dict Ultralytics' exporter writes beside a model (and its Triton guide puts in
/// the model configuration), as a Python literal: what `AutoBackend` reads (`task`,
/// `stride`, `batch`, `imgsz`, `names`, `channels`).
pub fn ultralytics_metadata(info: &ModelInfo) -> String {
    let names: Vec<String> = info
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i}: {}", py_str(n)))
        .collect();
    format!(
        "{{'description': {}, 'task': {}, 'stride': {}, 'batch': 1, 'imgsz': [{}, {}], 'channels': 3, 'names': {{{}}}}}",
        py_str(&format!("{} served raw by segserve", info.name)),
        py_str(info.task.as_str()),
        info.stride,
        info.input_hw.0,
        info.input_hw.1,
        names.join(", ")
    )
}

/// Checks the raw input's description against the model and converts its little-endian
/// data (FP32, or FP16 widened) to the `[3, H, W]` values the session takes.
pub fn input_tensor(
    info: &ModelInfo,
    name: &str,
    datatype: &str,
    shape: &[i64],
    data: &[u8],
) -> Result<Vec<f32>, AppError> {
    let (h, w) = info.input_hw;
    let bad = |m: String| AppError::BadRequest(m);
    if name != info.input_name {
        return Err(bad(format!(
            "unknown input `{name}`; the raw model has one input, `{}`",
            info.input_name
        )));
    }
    if shape != [1, 3, h as i64, w as i64] {
        return Err(bad(format!(
            "input `{name}` has shape {shape:?}; the raw model takes [1, 3, {h}, {w}] (letterboxed RGB in 0..1)"
        )));
    }
    let n = 3 * h * w;
    let width = match datatype {
        "FP32" => 4,
        "FP16" => 2,
        other => {
            return Err(bad(format!(
                "input `{name}` has datatype {other}; the raw model takes FP32 or FP16"
            )))
        }
    };
    if data.len() != n * width {
        return Err(bad(format!(
            "input `{name}` has {} bytes of data; [1, 3, {h}, {w}] {datatype} is {}",
            data.len(),
            n * width
        )));
    }
    Ok(if width == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    })
}

/// IEEE 754 half to single precision (exact: every half is a single).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise it.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// One raw output: name, shape (with the batch dimension) and values.
pub type RawTensor = (String, Vec<usize>, Vec<f32>);

/// Runs the session on `input` under a place in the model's queue (`admission`: the one
/// already taken, if any), and returns its raw outputs in the configuration's order.
pub async fn run(
    engine: &Engine,
    input: Vec<f32>,
    admission: Option<Admission>,
) -> Result<Vec<RawTensor>, AppError> {
    let info = engine.info();
    let ticket = Ticket::take(engine, admission).await?;
    let (raw, _ticket) = engine.infer(input, info.input_hw, ticket).await?;
    let channels = raw.preds.len() / raw.anchors.max(1);
    let mut out = vec![(
        info.preds_name.clone(),
        vec![1, channels, raw.anchors],
        raw.preds.into_vec(),
    )];
    if let (Some(name), Some((values, [m, mh, mw]))) = (&info.protos_name, raw.protos) {
        out.push((name.clone(), vec![1, m, mh, mw], values.into_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_widen_exactly() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), f, "{h:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn python_literals_escape_what_eval_would_misread() {
        assert_eq!(py_str("it's a\\b"), r"'it\'s a\\b'");
        assert_eq!(base_name("m-raw"), Some("m"));
        assert_eq!(base_name("-raw"), None);
        assert_eq!(base_name("m"), None);
    }
}
