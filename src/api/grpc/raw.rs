//! The raw model (`api::kserve::raw`) over gRPC: the `ModelConfig` message (Triton's
//! model-configuration extension, which Ultralytics' client reads with `as_json=True`), and
//! ModelInfer on a raw name: the tensor from `raw_input_contents` (little-endian FP32 or FP16,
//! what `tritonclient.grpc` sends) or `fp32_contents`, the outputs in `raw_output_contents`.

use std::sync::Arc;

use bytes::Bytes;

use super::pb;
use crate::api::kserve::raw::{self, ModelConfig, TensorConfig};
use crate::api::kserve::run::held;
use crate::api::kserve::wire::MODEL_VERSION;
use crate::budget::{MemoryBudget, Reservation};
use crate::engine::Engine;
use crate::error::AppError;

/// A configuration as Triton's message.
pub fn model_config(c: &ModelConfig) -> pb::ModelConfig {
    let data_type = |t: &TensorConfig| {
        pb::DataType::from_str_name(t.data_type).unwrap_or(pb::DataType::TypeString) as i32
    };
    pb::ModelConfig {
        name: c.name.clone(),
        platform: crate::api::kserve::wire::PLATFORM.into(),
        backend: "onnxruntime".into(),
        max_batch_size: 0,
        input: c
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: data_type(t),
                dims: t.dims.clone(),
                ..Default::default()
            })
            .collect(),
        output: c
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: data_type(t),
                dims: t.dims.clone(),
                ..Default::default()
            })
            .collect(),
        parameters: c
            .metadata
            .iter()
            .map(|m| {
                (
                    "metadata".to_string(),
                    pb::ModelParameter {
                        string_value: m.clone(),
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// Inference on the raw model `engine` serves under the request's name; `message` holds the
/// received message until the tensor is converted.
pub async fn infer(
    engine: Engine,
    req: pb::ModelInferRequest,
    mut message: Reservation,
    budget: &Arc<MemoryBudget>,
) -> Result<pb::ModelInferResponse, AppError> {
    let info = engine.info();
    let config = raw::raw_config(info)?;
    if !(req.model_version.is_empty() || req.model_version == MODEL_VERSION) {
        return Err(AppError::NotFound(format!(
            "model version {:?} is not served; the only version is {MODEL_VERSION:?}",
            req.model_version
        )));
    }
    let [input] = req.inputs.as_slice() else {
        return Err(bad(format!(
            "expected exactly one input (`{}`), got {}",
            info.input_name,
            req.inputs.len()
        )));
    };
    let fp32 = input
        .contents
        .as_ref()
        .map_or(&[][..], |c| &c.fp32_contents[..]);
    let from_contents: Vec<u8>;
    let data: &[u8] = match (req.raw_input_contents.as_slice(), fp32.is_empty()) {
        ([one], true) => one,
        ([], false) => {
            from_contents = fp32.iter().flat_map(|f| f.to_le_bytes()).collect();
            &from_contents
        }
        _ => {
            return Err(bad(format!(
                "input `{}`: send the tensor once, in raw_input_contents (what tritonclient does) or fp32_contents",
                input.name
            )))
        }
    };
    let (h, w) = info.input_hw;
    message
        .grow((3 * h * w * 4) as u64 + engine.output_bytes())
        .map_err(crate::api::body::budget_refusal)?;
    let tensor = raw::input_tensor(info, &input.name, &input.datatype, &input.shape, data)?;
    let wanted: Vec<String> = if req.outputs.is_empty() {
        config.outputs.iter().map(|o| o.name.clone()).collect()
    } else {
        req.outputs
            .iter()
            .map(|o| {
                if config.outputs.iter().any(|c| c.name == o.name) {
                    Ok(o.name.clone())
                } else {
                    Err(bad(format!("unknown output `{}` of the raw model", o.name)))
                }
            })
            .collect::<Result<_, AppError>>()?
    };
    let name = req.model_name.clone();
    let id = req.id.clone();
    drop(req);
    let mut results = raw::run(&engine, tensor, None).await?;
    let mut outputs = Vec::new();
    let mut raw_output_contents = Vec::new();
    for want in wanted {
        let i = results
            .iter()
            .position(|r| r.0 == want)
            .expect("checked above");
        let (name, shape, values) = results.swap_remove(i);
        // Each output's bytes hold their own reservation until tonic has encoded them.
        let mut part = budget.reservation();
        part.grow(values.len() as u64 * 4)
            .map_err(crate::api::body::budget_refusal)?;
        let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
        raw_output_contents.push(held(Bytes::from(bytes), part));
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name,
            datatype: "FP32".into(),
            shape: shape.into_iter().map(|d| d as i64).collect(),
            ..Default::default()
        });
    }
    drop((results, message));
    Ok(pb::ModelInferResponse {
        model_name: name,
        model_version: MODEL_VERSION.into(),
        id,
        outputs,
        raw_output_contents,
        ..Default::default()
    })
}
