//! The raw model over REST (see `raw`): `GET /v2/models/{name}/config` (Triton's
//! model-configuration extension, for the photo model and the raw one), and inference on a
//! raw name, whose one tensor comes as binary data (what `tritonclient.http` sends) and whose
//! outputs go back binary or as JSON, as the request asks.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use super::binary::{self, Framing};
use super::inputs::{binary_data_size, flag};
use super::raw::{self, config_of, ModelConfig};
use super::wire::{
    InferRequest, InferResponse, OutputData, Parameters, ResponseOutput, MODEL_VERSION,
};
use crate::api::{body, AppState};
use crate::engine::Engine;
use crate::error::{AppError, ErrorBody};

/// Triton's JSON of a model configuration.
fn config_json(c: &ModelConfig) -> Value {
    let tensors = |v: &[raw::TensorConfig]| -> Vec<Value> {
        v.iter()
            .map(|t| json!({"name": t.name, "data_type": t.data_type, "dims": t.dims}))
            .collect()
    };
    let mut v = json!({
        "name": c.name,
        "platform": super::wire::PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": 0,
        "input": tensors(&c.inputs),
        "output": tensors(&c.outputs),
    });
    if let Some(m) = &c.metadata {
        v["parameters"] = json!({"metadata": {"string_value": m}});
    }
    v
}

/// `GET /v2/models/{name}/config`: the model configuration.
#[utoipa::path(get, path = "/v2/models/{name}/config", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem), or `<stem>-raw` for the raw model")),
    responses(
        (status = 200, description = "Triton's model configuration: `input`, `output` (`name`, `data_type`, `dims`); a raw model's `parameters.metadata.string_value` is the Ultralytics metadata dict", body = Object),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 503, description = "Models still loading", body = ErrorBody)))]
pub async fn model_config(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(config_json(&config_of(&s, &name)?)))
}

/// Inference on the raw model `engine` serves under `name`.
pub async fn infer(
    s: &AppState,
    engine: Engine,
    name: String,
    client: Option<std::net::IpAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let info = engine.info();
    let config = raw::raw_config(info)?;
    let header = match binary::framing(&headers, s.config.max_body_bytes)? {
        Framing::Binary { header } => header,
        _ => {
            return Err(AppError::BadRequest(format!(
                "the raw model {name} takes its tensor as binary data (tritonclient's default): \
                 a JSON header of Inference-Header-Content-Length bytes, then the tensor's bytes"
            )))
        }
    };
    let (admission, mut reservation, raw) =
        super::admitted_body(s, &engine, &headers, body, client).await?;
    let (json, data) = binary::split(&raw, header)?;
    let req: InferRequest = serde_json::from_slice(&json)
        .map_err(|e| AppError::BadRequest(format!("malformed inference request: {e}")))?;
    let [input] = req.inputs.as_slice() else {
        return Err(AppError::BadRequest(format!(
            "expected exactly one input (`{}`), got {}",
            info.input_name,
            req.inputs.len()
        )));
    };
    if binary_data_size(input)? != Some(data.len() as u64) {
        return Err(AppError::BadRequest(format!(
            "input `{}` must be binary data whose binary_data_size is the {} bytes after the JSON header",
            input.name,
            data.len()
        )));
    }
    // The f32 copy of the tensor, and the outputs the session's results are copied into.
    let (h, w) = info.input_hw;
    reservation
        .grow((3 * h * w * 4) as u64 + engine.output_bytes())
        .map_err(body::budget_refusal)?;
    let tensor = raw::input_tensor(info, &input.name, &input.datatype, &input.shape, &data)?;
    drop((raw, data, json));
    let binary_default = flag(req.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    let wanted: Vec<(String, bool)> = match &req.outputs {
        None => config
            .outputs
            .iter()
            .map(|o| (o.name.clone(), binary_default))
            .collect(),
        Some(asked) => asked
            .iter()
            .map(|o| {
                if !config.outputs.iter().any(|c| c.name == o.name) {
                    return Err(AppError::BadRequest(format!(
                        "unknown output `{}`; the raw model has {}",
                        o.name,
                        config
                            .outputs
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let binary = flag(o.parameters.as_ref(), "binary_data")?.unwrap_or(binary_default);
                Ok((o.name.clone(), binary))
            })
            .collect::<Result<_, AppError>>()?,
    };
    let mut results = raw::run(&engine, tensor, admission).await?;
    let mut outputs = Vec::new();
    let mut binary_data = Vec::new();
    for (want, binary) in wanted {
        let i = results
            .iter()
            .position(|r| r.0 == want)
            .expect("checked above");
        let (name, shape, values) = results.swap_remove(i);
        let data = OutputData::Fp32(values);
        let (parameters, data) = if binary {
            let size = binary::encoded_size(&data) as u64;
            binary_data.push(data);
            (
                Some(Parameters::from([("binary_data_size".into(), size.into())])),
                None,
            )
        } else {
            (None, Some(data))
        };
        outputs.push(ResponseOutput {
            name,
            shape,
            datatype: "FP32".into(),
            parameters,
            data,
        });
    }
    drop(results);
    let resp = InferResponse {
        model_name: name,
        model_version: MODEL_VERSION.into(),
        id: req.id,
        parameters: Parameters::new(),
        outputs,
    };
    let mut reservation = s.budget.reservation();
    let estimate = 1024
        + resp
            .outputs
            .iter()
            .filter(|o| o.data.is_some())
            .map(|o| o.shape.iter().product::<usize>() as u64 * 16)
            .sum::<u64>();
    let encoded = super::codec::serialise(&resp, &binary_data, estimate, &mut reservation)?;
    Ok(super::codec::answer(encoded, reservation))
}
