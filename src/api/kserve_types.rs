//! Wire types of the Open Inference Protocol (KServe v2 / Triton) REST API, and the
//! conversions between them and our detections. Field names and shapes follow the
//! protocol's JSON schemas; handlers live in `kserve`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::engine::{ModelInfo, Task};
use crate::error::AppError;
use crate::pipeline::Segmentation;

/// The protocol's `platform` for a model served by ONNX Runtime (Triton's spelling).
pub const PLATFORM: &str = "onnxruntime_onnx";
/// We serve one version of each model; the protocol requires version strings.
pub const MODEL_VERSION: &str = "1";
/// Name of the one input tensor.
pub const INPUT_NAME: &str = "image";
/// Output tensors, in the order they are returned.
pub const OUTPUTS: [&str; 5] = ["boxes", "scores", "class_ids", "class_names", "masks"];

/// `GET /v2`: server metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Protocol extensions supported (none).
    pub extensions: Vec<String>,
}

/// One tensor's description in model metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// Protocol datatype (`BYTES`, `FP32`, `INT64`).
    pub datatype: String,
    /// Shape; -1 is a variable dimension.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`: model metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Available versions.
    pub versions: Vec<String>,
    /// Framework (`onnxruntime_onnx`).
    pub platform: String,
    /// Inputs: one BYTES tensor `image` holding an encoded photo.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs, one row per detection (`masks` only for segmentation models).
    pub outputs: Vec<TensorMetadata>,
    /// `{"device": "cpu" | "cuda" | "tensorrt"}`: where the model runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
}

impl ModelMetadata {
    /// Describes a loaded model.
    pub fn new(info: &ModelInfo) -> Self {
        let t = |name: &str, datatype: &str, shape: &[i64]| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        };
        let mut outputs = vec![
            t("boxes", "FP32", &[-1, 4]),
            t("scores", "FP32", &[-1]),
            t("class_ids", "INT64", &[-1]),
            t("class_names", "BYTES", &[-1]),
        ];
        if info.task == Task::Segment {
            outputs.push(t("masks", "BYTES", &[-1]));
        }
        ModelMetadata {
            name: info.name.clone(),
            versions: vec![MODEL_VERSION.into()],
            platform: PLATFORM.into(),
            inputs: vec![t(INPUT_NAME, "BYTES", &[1])],
            outputs,
            parameters: None,
        }
    }

    /// Adds where the model runs, as the `device` parameter.
    pub fn with_device(mut self, device: &str) -> Self {
        self.parameters
            .get_or_insert_with(Parameters::new)
            .insert("device".into(), Value::String(device.into()));
        self
    }
}

/// `GET /v2/models/{name}/ready` and the health routes: the status code carries the
/// answer; the body repeats it for humans.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyBody {
    /// Model name (model readiness only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Always true in a 200 reply.
    pub ready: bool,
}

/// `$parameters`: name -> bool, number or string.
pub type Parameters = BTreeMap<String, Value>;

/// One input tensor of an inference request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestInput {
    /// Must be `image`.
    pub name: String,
    /// `[1]`: one image per request.
    pub shape: Vec<i64>,
    /// Must be `BYTES`.
    pub datatype: String,
    /// Per-input options (conf, iou, max_det, classes); override the request's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// `["<base64 of the encoded image>"]` (nested arrays are flattened, as the protocol allows).
    #[schema(value_type = Vec<Object>)]
    pub data: Value,
}

/// A requested output.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestOutput {
    /// One of boxes, scores, class_ids, class_names, masks.
    pub name: String,
    /// Ignored, except that binary output is refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
}

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Options: conf (0.25), iou (0.7), max_det (300), classes ("person,car" or an id).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// Exactly one input, `image`.
    pub inputs: Vec<RequestInput>,
    /// Outputs wanted; all when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One output tensor of an inference response.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ResponseOutput {
    /// Tensor name.
    pub name: String,
    /// Shape, e.g. `[N, 4]`.
    pub shape: Vec<usize>,
    /// FP32, INT64 or BYTES.
    pub datatype: String,
    /// For `masks`: `format` = coco_rle, `height` and `width` of the masks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// Row-major flattened values.
    #[schema(value_type = Vec<Object>)]
    pub data: Value,
}

/// `POST /v2/models/{name}/infer` reply.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// `image_width`, `image_height` of the upright photo.
    #[schema(value_type = Object)]
    pub parameters: Parameters,
    /// The requested outputs.
    pub outputs: Vec<ResponseOutput>,
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// Transport parameters some clients always send; they do not change our answer.
const IGNORED_PARAMETERS: [&str; 3] = ["binary_data_size", "content_type", "headers"];
/// Parameters that tune detection; everything else is refused so typos do not go unnoticed.
const OPTIONS: [&str; 4] = ["conf", "iou", "max_det", "classes"];

/// Turns `$parameters` into `key=value` pairs for `SegmentQuery::parse`, refusing unknown
/// keys and the binary tensor extension (which we do not implement).
pub fn parameter_pairs(p: Option<&Parameters>) -> Result<Vec<(String, String)>, AppError> {
    let mut pairs = Vec::new();
    for (k, v) in p.into_iter().flatten() {
        if k == "binary_data" || k == "binary_data_output" {
            if v.as_bool() == Some(true) {
                return Err(bad(
                    "the binary tensor data extension is not supported; send JSON tensors",
                ));
            }
            continue;
        }
        if IGNORED_PARAMETERS.contains(&k.as_str()) {
            continue;
        }
        if !OPTIONS.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown parameter `{k}`; supported: conf, iou, max_det, classes"
            )));
        }
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(bad(format!(
                    "parameter `{k}` must be a number or a string, got {other}"
                )))
            }
        };
        pairs.push((k.clone(), s));
    }
    Ok(pairs)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Checks the one `image` input and decodes its base64 payload.
pub fn image_bytes(input: &RequestInput) -> Result<Vec<u8>, AppError> {
    use base64::Engine as _;
    if input.name != INPUT_NAME {
        return Err(bad(format!(
            "unknown input `{}`; the model has one input, `{INPUT_NAME}`",
            input.name
        )));
    }
    if input.datatype != "BYTES" {
        return Err(bad(format!(
            "input `{INPUT_NAME}` must have datatype BYTES, got {}",
            input.datatype
        )));
    }
    let mut elems = Vec::new();
    flatten(&input.data, &mut elems);
    let declared: i64 = input.shape.iter().product();
    if input.shape.is_empty() || declared != 1 || elems.len() != 1 {
        return Err(bad(format!(
            "input `{INPUT_NAME}` must hold exactly one image (shape [1]); got shape {:?} with {} elements",
            input.shape,
            elems.len()
        )));
    }
    let text = elems[0]
        .as_str()
        .ok_or_else(|| bad("the image must be a base64 string"))?;
    // Standard alphabet first (what clients send), then the URL-safe one; padding optional.
    let cleaned: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed = cleaned.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| bad(format!("the image is not valid base64: {e}")))
}

/// The output names a request asks for, checked against what the model produces.
pub fn wanted_outputs(req: &InferRequest, info: &ModelInfo) -> Result<Vec<&'static str>, AppError> {
    let available: Vec<&'static str> = OUTPUTS
        .into_iter()
        .filter(|n| *n != "masks" || info.task == Task::Segment)
        .collect();
    let Some(asked) = &req.outputs else {
        return Ok(available);
    };
    let mut out = Vec::new();
    for o in asked {
        parameter_pairs_for_output(o.parameters.as_ref())?;
        let name = available.iter().find(|n| **n == o.name).ok_or_else(|| {
            bad(format!(
                "unknown output `{}`; this model has {}",
                o.name,
                available.join(", ")
            ))
        })?;
        if !out.contains(name) {
            out.push(*name);
        }
    }
    Ok(out)
}

fn parameter_pairs_for_output(p: Option<&Parameters>) -> Result<(), AppError> {
    let binary = p
        .and_then(|p| p.get("binary_data"))
        .and_then(Value::as_bool);
    if binary == Some(true) {
        return Err(bad(
            "the binary tensor data extension is not supported; send JSON tensors",
        ));
    }
    Ok(())
}

/// FP32 values as JSON numbers with f32's shortest digits (`0.88074893`), not the f64
/// widening's (`0.8807489275932312`): the same values, a third shorter.
fn fp32(values: impl Iterator<Item = f32>) -> Value {
    Value::Array(
        values
            .map(|v| {
                let short: f64 = v.to_string().parse().expect("a float's Display parses");
                serde_json::Number::from_f64(short).map_or(Value::Null, Value::Number)
            })
            .collect(),
    )
}

/// Shapes detections as the protocol's output tensors.
pub fn outputs(info: &ModelInfo, seg: &Segmentation, wanted: &[&str]) -> Vec<ResponseOutput> {
    let dets = &seg.detections;
    let n = dets.len();
    wanted
        .iter()
        .map(|&name| {
            let (shape, datatype, data, parameters) = match name {
                "boxes" => (
                    vec![n, 4],
                    "FP32",
                    fp32(dets.iter().flat_map(|d| d.bbox)),
                    None,
                ),
                "scores" => (vec![n], "FP32", fp32(dets.iter().map(|d| d.score)), None),
                "class_ids" => (
                    vec![n],
                    "INT64",
                    Value::from(dets.iter().map(|d| d.class_id as i64).collect::<Vec<_>>()),
                    None,
                ),
                "class_names" => (
                    vec![n],
                    "BYTES",
                    Value::from(
                        dets.iter()
                            .map(|d| info.names[d.class_id].clone())
                            .collect::<Vec<_>>(),
                    ),
                    None,
                ),
                "masks" => (
                    vec![n],
                    "BYTES",
                    Value::from(
                        dets.iter()
                            .map(|d| d.mask.as_ref().map(|m| m.to_coco_rle()).unwrap_or_default())
                            .collect::<Vec<_>>(),
                    ),
                    Some(Parameters::from([
                        ("format".to_string(), Value::from("coco_rle")),
                        ("height".to_string(), Value::from(seg.height)),
                        ("width".to_string(), Value::from(seg.width)),
                    ])),
                ),
                other => unreachable!("output {other} was checked by wanted_outputs"),
            };
            ResponseOutput {
                name: name.to_string(),
                shape,
                datatype: datatype.to_string(),
                parameters,
                data,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> RequestInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn base64_image_input_is_decoded() {
        let i = input(
            json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}),
        );
        assert_eq!(image_bytes(&i).unwrap(), b"hello");
        // Nested data, no padding, URL-safe alphabet.
        let i = input(
            json!({"name": "image", "shape": [1, 1], "datatype": "BYTES", "data": [["_-8"]]}),
        );
        assert_eq!(image_bytes(&i).unwrap(), vec![0xff, 0xef]);
    }

    #[test]
    fn wrong_inputs_are_400() {
        for v in [
            json!({"name": "input0", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}),
            json!({"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}),
            json!({"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk=", "aGk="]}),
            json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}),
            json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": [7]}),
        ] {
            let e = image_bytes(&input(v.clone())).unwrap_err();
            assert_eq!(e.status_and_type().0.as_u16(), 400, "{v}");
        }
    }

    #[test]
    fn parameters_become_query_pairs() {
        let p: Parameters = serde_json::from_value(json!({
            "conf": 0.5, "max_det": 3, "classes": "person,car", "binary_data_output": false
        }))
        .unwrap();
        let mut pairs = parameter_pairs(Some(&p)).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("classes".into(), "person,car".into()),
                ("conf".into(), "0.5".into()),
                ("max_det".into(), "3".into())
            ]
        );
        for bad in [
            json!({"confidence": 0.5}),
            json!({"conf": true}),
            json!({"binary_data_output": true}),
        ] {
            let p: Parameters = serde_json::from_value(bad).unwrap();
            assert!(parameter_pairs(Some(&p)).is_err());
        }
    }
}
