//! A request's side of the protocol: its `parameters` into segmentation options, and the
//! `image` input into encoded photos (base64 strings in the JSON, or BYTES elements of the
//! binary tensor data extension). The answer's side is `outputs`.

use std::sync::Arc;

use bytes::Bytes;

use super::binary;
use super::wire::{ParamValue, Parameters, RequestInput, INPUT_NAME, MAX_IMAGES};
use crate::budget::{MemoryBudget, Reservation};
use crate::error::AppError;
use crate::options::OptionError;
use crate::pipeline::PipelineError;

/// A bad option, worded as a protocol parameter.
pub fn option_error(e: OptionError) -> AppError {
    AppError::BadRequest(format!("parameter {e}"))
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// Transport parameters some clients send; they do not change our answer.
const IGNORED_PARAMETERS: [&str; 2] = ["content_type", "headers"];
/// Parameters of the binary tensor data extension, read where they apply.
const BINARY_PARAMETERS: [&str; 3] = ["binary_data", "binary_data_output", "binary_data_size"];
/// Parameters that tune detection; everything else is refused so typos do not go unnoticed.
const OPTIONS: [&str; 5] = ["conf", "iou", "max_det", "classes", "decode"];

/// Turns `$parameters` into `key=value` pairs for `SegmentOptions::parse`, refusing unknown
/// keys and features we do not have (shared memory).
pub fn parameter_pairs(p: Option<&Parameters>) -> Result<Vec<(String, String)>, AppError> {
    let mut pairs = Vec::new();
    for (k, v) in p.into_iter().flatten() {
        if BINARY_PARAMETERS.contains(&k.as_str()) || IGNORED_PARAMETERS.contains(&k.as_str()) {
            continue;
        }
        if k.starts_with("shared_memory_") {
            return Err(bad(format!(
                "parameter `{k}`: the shared-memory extension is not supported; send the data in the body"
            )));
        }
        if !OPTIONS.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown parameter `{k}`; supported: conf, iou, max_det, classes, decode, binary_data_output"
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

/// A boolean parameter (`binary_data`, `binary_data_output`), if given.
pub fn flag(p: Option<&Parameters>, key: &str) -> Result<Option<bool>, AppError> {
    match p.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(ParamValue::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(format!(
            "parameter `{key}` must be true or false, got {other:?}"
        ))),
    }
}

/// An input's `binary_data_size`, if given.
pub fn binary_data_size(input: &RequestInput) -> Result<Option<u64>, AppError> {
    match input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
    {
        None => Ok(None),
        Some(ParamValue::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            bad(format!(
                "input `{}`: binary_data_size must be a byte count, got {n}",
                input.name
            ))
        }),
        Some(other) => Err(bad(format!(
            "input `{}`: binary_data_size must be a byte count, got {other:?}",
            input.name
        ))),
    }
}

/// Checks that `input` is the `image` input and returns how many images its shape holds.
pub fn image_count(input: &RequestInput) -> Result<usize, AppError> {
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
    let shape = &input.shape;
    let mut n: usize = 1;
    for &d in shape {
        n = usize::try_from(d)
            .ok()
            .and_then(|d| n.checked_mul(d))
            .filter(|&n| n <= MAX_IMAGES)
            .ok_or_else(|| {
                bad(format!(
                    "input `{INPUT_NAME}` has shape {shape:?}; it holds 1 to {MAX_IMAGES} images, e.g. [1] or [3]"
                ))
            })?;
    }
    if shape.is_empty() || n == 0 {
        return Err(bad(format!(
            "input `{INPUT_NAME}` has shape {shape:?}; it holds 1 to {MAX_IMAGES} images, e.g. [1] or [3]"
        )));
    }
    Ok(n)
}

/// One photo of a request: its encoded bytes and the reservation for what it holds beyond
/// them (a slice of a binary body carries the body's own reservation with it).
#[derive(Debug)]
pub struct Image {
    /// The encoded file.
    pub bytes: Bytes,
    /// The memory reservation the pipeline grows from here.
    pub reservation: Reservation,
}

/// The photos of the `image` input, from its binary data (`Some`: its `binary_data_size`
/// bytes of the body) or from the base64 strings of its JSON `data`.
pub fn images(
    input: &RequestInput,
    binary: Option<Bytes>,
    budget: &Arc<MemoryBudget>,
) -> Result<Vec<Image>, AppError> {
    let n = image_count(input)?;
    if let Some(data) = binary {
        if input.data.is_some() {
            return Err(bad(format!(
                "input `{INPUT_NAME}` has both `data` and binary_data_size; send one"
            )));
        }
        let elements = binary::bytes_elements(&data, n).map_err(|e| {
            bad(format!(
                "input `{INPUT_NAME}`: its binary data (BYTES, each element a 4-byte little-endian length, then the bytes) {e}"
            ))
        })?;
        return Ok(elements
            .into_iter()
            .map(|bytes| Image {
                bytes,
                reservation: budget.reservation(),
            })
            .collect());
    }
    let Some(data) = &input.data else {
        return Err(bad(format!(
            "input `{INPUT_NAME}` has no `data`; send base64 strings there, or the images as binary data \
             (binary_data_size and the Inference-Header-Content-Length header)"
        )));
    };
    if data.0.len() != n {
        return Err(bad(format!(
            "input `{INPUT_NAME}` has shape {:?} but {} element(s) in `data`",
            input.shape,
            data.0.len()
        )));
    }
    data.0
        .iter()
        .map(|text| {
            let mut reservation = budget.reservation();
            reservation
                .grow(text.len() as u64 / 4 * 3 + 3)
                .map_err(|error| {
                    AppError::from(PipelineError::Budget(error.refusing(
                        "decoding the base64 images",
                        "send fewer or smaller images per request",
                    )))
                })?;
            Ok(Image {
                bytes: Bytes::from(base64_image(text)?),
                reservation,
            })
        })
        .collect()
}

/// Standard alphabet first (what clients send), then the URL-safe one; padding and
/// whitespace optional.
fn base64_image(text: &str) -> Result<Vec<u8>, AppError> {
    use base64::Engine as _;
    let cleaned: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let trimmed = cleaned.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| bad(format!("the image is not valid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kserve::wire::InferRequest;
    use serde_json::{json, Value};

    fn input(v: Value) -> RequestInput {
        serde_json::from_value(v).unwrap()
    }

    fn decoded(v: Value) -> Result<Vec<Vec<u8>>, AppError> {
        let budget = MemoryBudget::new(1 << 20);
        images(&input(v), None, &budget).map(|v| v.into_iter().map(|i| i.bytes.to_vec()).collect())
    }

    #[test]
    fn base64_image_inputs_are_decoded() {
        let got = decoded(
            json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}),
        );
        assert_eq!(got.unwrap(), vec![b"hello".to_vec()]);
        // Nested data, no padding, URL-safe alphabet; two images.
        let got = decoded(
            json!({"name": "image", "shape": [2, 1], "datatype": "BYTES", "data": [["_-8"], ["aGk"]]}),
        );
        assert_eq!(got.unwrap(), vec![vec![0xff, 0xef], b"hi".to_vec()]);
    }

    #[test]
    fn wrong_inputs_are_400() {
        for v in [
            json!({"name": "input0", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}),
            json!({"name": "image", "shape": [1], "datatype": "FP32", "data": ["aGk="]}),
            json!({"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}),
            json!({"name": "image", "shape": [17], "datatype": "BYTES", "data": ["aGk="]}),
            json!({"name": "image", "shape": [0], "datatype": "BYTES", "data": []}),
            json!({"name": "image", "shape": [-1], "datatype": "BYTES", "data": ["aGk="]}),
            json!({"name": "image", "shape": [], "datatype": "BYTES", "data": ["aGk="]}),
            json!({"name": "image", "shape": [1], "datatype": "BYTES"}),
            json!({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}),
        ] {
            let e = decoded(v.clone()).unwrap_err();
            assert_eq!(e.status_and_type().0.as_u16(), 400, "{v}");
        }
    }

    #[test]
    fn binary_inputs_are_bytes_elements_of_the_body() {
        let budget = MemoryBudget::new(1 << 20);
        let i = input(json!({"name": "image", "shape": [2], "datatype": "BYTES",
                             "parameters": {"binary_data_size": 11}}));
        assert_eq!(binary_data_size(&i).unwrap(), Some(11));
        let data = Bytes::from_static(b"\x02\0\0\0ab\x01\0\0\0c");
        let got = images(&i, Some(data), &budget).unwrap();
        assert_eq!(
            (&got[0].bytes[..], &got[1].bytes[..]),
            (&b"ab"[..], &b"c"[..])
        );
        let short = Bytes::from_static(b"\x02\0\0\0ab");
        let e = images(&i, Some(short), &budget).unwrap_err();
        assert!(e.to_string().contains("shape says 2"), "{e}");
        let both = input(json!({"name": "image", "shape": [1], "datatype": "BYTES",
                                "data": ["aGk="], "parameters": {"binary_data_size": 6}}));
        assert!(images(&both, Some(Bytes::from_static(b"\x02\0\0\0ab")), &budget).is_err());
        let neg = input(json!({"name": "image", "shape": [1], "datatype": "BYTES",
                               "parameters": {"binary_data_size": -6}}));
        assert!(binary_data_size(&neg).is_err());
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
            json!({"inputs": [{"name": "image", "shape": vec![1; 100], "datatype": "BYTES"}]}),
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
        assert_eq!(
            ok.inputs[0].data.as_ref().unwrap().0,
            vec!["aGk=".to_string()]
        );
    }

    #[test]
    fn parameters_become_query_pairs() {
        let p: Parameters = serde_json::from_value(json!({
            "conf": 0.5, "max_det": 3, "classes": "person,car", "binary_data_output": true
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
        assert_eq!(flag(Some(&p), "binary_data_output").unwrap(), Some(true));
        for bad in [
            json!({"confidence": 0.5}),
            json!({"conf": true}),
            json!({"shared_memory_region": "r"}),
        ] {
            let p: Parameters = serde_json::from_value(bad).unwrap();
            assert!(parameter_pairs(Some(&p)).is_err());
        }
        let p: Parameters = serde_json::from_value(json!({"binary_data_output": "yes"})).unwrap();
        assert!(flag(Some(&p), "binary_data_output").is_err());
    }
}
