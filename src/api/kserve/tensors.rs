//! Conversions between the protocol's tensors and ours: the request's `parameters` into
//! segmentation options, the `image` input into encoded bytes, detections into output
//! tensors.

use serde_json::Value;

use super::wire::{
    InferRequest, ParamValue, Parameters, RequestInput, ResponseOutput, INPUT_NAME, OUTPUTS,
};
use crate::engine::{ModelInfo, Task};
use crate::error::AppError;
use crate::options::OptionError;
use crate::pipeline::Segmentation;

/// A bad option, worded as a protocol parameter.
pub fn option_error(e: OptionError) -> AppError {
    AppError::BadRequest(format!("parameter {e}"))
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// Transport parameters some clients always send; they do not change our answer.
const IGNORED_PARAMETERS: [&str; 3] = ["binary_data_size", "content_type", "headers"];
/// Parameters that tune detection; everything else is refused so typos do not go unnoticed.
const OPTIONS: [&str; 4] = ["conf", "iou", "max_det", "classes"];

/// Turns `$parameters` into `key=value` pairs for `SegmentOptions::parse`, refusing unknown
/// keys and the binary tensor extension (which we do not implement).
pub fn parameter_pairs(p: Option<&Parameters>) -> Result<Vec<(String, String)>, AppError> {
    let mut pairs = Vec::new();
    for (k, v) in p.into_iter().flatten() {
        if k == "binary_data" || k == "binary_data_output" {
            if *v == ParamValue::Bool(true) {
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
            ParamValue::String(s) => s.clone(),
            ParamValue::Number(n) => n.to_string(),
            ParamValue::Bool(b) => {
                return Err(bad(format!(
                    "parameter `{k}` must be a number or a string, got {b}"
                )))
            }
        };
        pairs.push((k.clone(), s));
    }
    Ok(pairs)
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
    let elems = &input.data.0;
    let declared: i64 = input.shape.iter().product();
    if input.shape.is_empty() || declared != 1 || elems.len() != 1 {
        return Err(bad(format!(
            "input `{INPUT_NAME}` must hold exactly one image (shape [1]); got shape {:?} with {} elements",
            input.shape,
            elems.len()
        )));
    }
    let text = &elems[0];
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
    let binary = p.and_then(|p| p.get("binary_data"));
    if binary == Some(&ParamValue::Bool(true)) {
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
                        ("format".to_string(), ParamValue::from("coco_rle")),
                        ("height".to_string(), ParamValue::from(seg.height)),
                        ("width".to_string(), ParamValue::from(seg.width)),
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
            json!({"name": "image", "shape": [1], "datatype": "FP32", "data": ["aGk="]}),
            json!({"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk=", "aGk="]}),
            json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}),
        ] {
            let e = image_bytes(&input(v.clone())).unwrap_err();
            assert_eq!(e.status_and_type().0.as_u16(), 400, "{v}");
        }
    }

    #[test]
    fn requests_are_parsed_without_building_what_nobody_asked_for() {
        // Non-strings in `data`, arrays in `parameters` and over-long lists are refused
        // where they start; unknown fields are skipped.
        for v in [
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [7]}]}),
            json!({"inputs": [], "parameters": {"conf": [1, 2, 3]}}),
            json!({"inputs": [], "outputs": [{"name": "boxes", "parameters": {"x": {"y": 1}}}]}),
            json!({"inputs": (0..100).map(|_| json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": []})).collect::<Vec<_>>()}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [[[[["a"]]]]]}]}),
        ] {
            assert!(
                serde_json::from_value::<InferRequest>(v.clone()).is_err(),
                "{v}"
            );
        }
        let ok: InferRequest = serde_json::from_value(json!({
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}],
            "unknown": {"lots": [1, 2, 3, {"of": "stuff"}]}
        }))
        .unwrap();
        assert_eq!(ok.inputs[0].data.0, vec!["aGk=".to_string()]);
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
