//! gRPC messages to and from the REST route's wire types, so both front ends share one set of
//! checks and one encoding (`api::kserve`): a `ModelInferRequest` becomes an `InferRequest`
//! whose input carries no JSON data, and its photos come from `raw_input_contents` (Triton's
//! BYTES framing: each element a 4-byte little-endian length and its bytes, what `tritonclient`
//! sends) or from the input's `bytes_contents`. Every output goes back in
//! `raw_output_contents`, as Triton's server sends them.

use std::sync::Arc;

use bytes::Bytes;

use super::pb;
use super::pb::infer_parameter::ParameterChoice;
use crate::api::kserve::binary;
use crate::api::kserve::inputs::{images, Image};
use crate::api::kserve::outputs::{self, ImageResult, Wanted};
use crate::api::kserve::run::{self, held, Parsed};
use crate::api::kserve::wire::{
    InferRequest, ParamValue, Parameters, RequestInput, RequestOutput, INPUT_NAME, MAX_LIST,
    MODEL_VERSION,
};
use crate::budget::{MemoryBudget, Reservation};
use crate::engine::ModelInfo;
use crate::error::AppError;
use crate::pipeline::PipelineError;

type GrpcParameters = std::collections::HashMap<String, pb::InferParameter>;

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// gRPC parameters as the REST route's `$parameters` (at most [`MAX_LIST`], as there).
fn parameters(p: &GrpcParameters) -> Result<Option<Parameters>, AppError> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.len() > MAX_LIST {
        return Err(bad(format!("more than {MAX_LIST} parameters")));
    }
    let mut out = Parameters::new();
    for (k, v) in p {
        let value = match &v.parameter_choice {
            Some(ParameterChoice::BoolParam(b)) => ParamValue::Bool(*b),
            Some(ParameterChoice::Int64Param(i)) => ParamValue::Number((*i).into()),
            Some(ParameterChoice::Uint64Param(u)) => ParamValue::Number((*u).into()),
            Some(ParameterChoice::DoubleParam(d)) => serde_json::Number::from_f64(*d)
                .map(ParamValue::Number)
                .ok_or_else(|| bad(format!("parameter `{k}` is not a finite number")))?,
            Some(ParameterChoice::StringParam(s)) => ParamValue::String(s.clone()),
            None => return Err(bad(format!("parameter `{k}` has no value"))),
        };
        out.insert(k.clone(), value);
    }
    Ok(Some(out))
}

/// A REST `$parameters` value as a gRPC parameter.
fn parameter(v: &ParamValue) -> pb::InferParameter {
    let choice = match v {
        ParamValue::Bool(b) => ParameterChoice::BoolParam(*b),
        ParamValue::String(s) => ParameterChoice::StringParam(s.clone()),
        ParamValue::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ParameterChoice::Int64Param(i),
            (None, Some(u)) => ParameterChoice::Uint64Param(u),
            _ => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN)),
        },
    };
    pb::InferParameter {
        parameter_choice: Some(choice),
    }
}

/// Checks a request against the model and takes its photos out. `message` is the
/// reservation that holds the received message; it ends with the photos' bytes.
pub fn parse(
    req: pb::ModelInferRequest,
    info: &ModelInfo,
    mut message: Reservation,
    budget: &Arc<MemoryBudget>,
) -> Result<Parsed, AppError> {
    if !(req.model_version.is_empty() || req.model_version == MODEL_VERSION) {
        return Err(AppError::NotFound(format!(
            "model version {:?} is not served; the only version is {MODEL_VERSION:?}",
            req.model_version
        )));
    }
    if req.inputs.len() > MAX_LIST || req.outputs.len() > MAX_LIST {
        return Err(bad(format!("more than {MAX_LIST} inputs or outputs")));
    }
    let rest = InferRequest {
        id: (!req.id.is_empty()).then(|| req.id.clone()),
        parameters: parameters(&req.parameters)?,
        inputs: req
            .inputs
            .iter()
            .map(|i| {
                Ok(RequestInput {
                    name: i.name.clone(),
                    shape: i.shape.clone(),
                    datatype: i.datatype.clone(),
                    parameters: parameters(&i.parameters)?,
                    data: None,
                })
            })
            .collect::<Result<_, AppError>>()?,
        outputs: (!req.outputs.is_empty())
            .then(|| {
                req.outputs
                    .iter()
                    .map(|o| {
                        Ok(RequestOutput {
                            name: o.name.clone(),
                            parameters: parameters(&o.parameters)?,
                        })
                    })
                    .collect::<Result<_, AppError>>()
            })
            .transpose()?,
    };
    // Every output travels in raw_output_contents: gRPC has no JSON answer to put it in.
    let (input, n, options, wanted) = run::checked(&rest, info, true)?;
    let wanted = wanted
        .into_iter()
        .map(|w| Wanted { binary: true, ..w })
        .collect();
    if let Some(p) = &input.parameters {
        if p.contains_key("binary_data_size") {
            return Err(bad(
                "parameter `binary_data_size` is for HTTP; over gRPC send the images in raw_input_contents",
            ));
        }
    }
    let contents = req.inputs[0]
        .contents
        .as_ref()
        .map_or(&[][..], |c| &c.bytes_contents[..]);
    let mut raw = req.raw_input_contents;
    let images = match (raw.len(), contents.len()) {
        (0, 0) => {
            return Err(bad(format!(
                "input `{INPUT_NAME}` has no data; send the encoded images in raw_input_contents \
                 (what tritonclient does) or in the input's bytes_contents"
            )))
        }
        (1, 0) => {
            let data = raw.pop().expect("one raw input");
            images(input, Some(held(data, message)), budget)?
        }
        (0, k) if k == n => contents
            .iter()
            .map(|bytes| Image {
                bytes: held(bytes.clone(), message.split_off(bytes.len() as u64)),
                reservation: budget.reservation(),
            })
            .collect(),
        (0, k) => {
            return Err(bad(format!(
                "input `{INPUT_NAME}` has shape {:?} but {k} element(s) in bytes_contents",
                input.shape
            )))
        }
        (r, c) => {
            return Err(bad(format!(
                "expected the one input's data once: {r} raw_input_contents and {c} bytes_contents"
            )))
        }
    };
    Ok(Parsed {
        id: rest.id,
        options,
        wanted,
        images,
    })
}

/// The answer: each wanted output's description, and its values (the REST route's binary
/// encoding) in `raw_output_contents`, which hold the answer's reservation until the
/// message is encoded and dropped. `estimate` covers the output tensors built on the way.
pub fn encode(
    info: &ModelInfo,
    id: Option<String>,
    images: &[ImageResult],
    wanted: &[Wanted],
    estimate: u64,
    mut reservation: Reservation,
) -> Result<pb::ModelInferResponse, PipelineError> {
    let refusal = |error: crate::budget::BudgetError| {
        PipelineError::Budget(error.refusing(
            "the answer",
            "ask for fewer masks (a higher conf, a lower max_det, or no `masks` output)",
        ))
    };
    reservation.grow(estimate).map_err(refusal)?;
    let (described, data) = outputs::outputs(info, images, wanted);
    let total: usize = data.iter().map(binary::encoded_size).sum();
    reservation.grow(total as u64).map_err(refusal)?;
    let mut buf = Vec::with_capacity(total);
    let mut ends = Vec::with_capacity(data.len());
    for d in &data {
        binary::encode(d, &mut buf);
        ends.push(buf.len());
    }
    drop(data);
    let all = held(Bytes::from(buf), reservation);
    let mut start = 0;
    let raw_output_contents = ends
        .into_iter()
        .map(|end| {
            let part = all.slice(start..end);
            start = end;
            part
        })
        .collect();
    let outputs = described
        .into_iter()
        .map(|o| pb::model_infer_response::InferOutputTensor {
            name: o.name,
            datatype: o.datatype,
            shape: o.shape.into_iter().map(|d| d as i64).collect(),
            parameters: o
                .parameters
                .into_iter()
                .flatten()
                // Its length is the raw content's own.
                .filter(|(k, _)| k != "binary_data_size")
                .map(|(k, v)| (k, parameter(&v)))
                .collect(),
            contents: None,
        })
        .collect();
    Ok(pb::ModelInferResponse {
        model_name: info.name.clone(),
        model_version: MODEL_VERSION.into(),
        id: id.unwrap_or_default(),
        parameters: outputs::answer_parameters(images)
            .iter()
            .map(|(k, v)| (k.clone(), parameter(v)))
            .collect(),
        outputs,
        raw_output_contents,
    })
}
