//! The protocol's health and metadata routes: server metadata, liveness, readiness (of
//! the server and of each model), model metadata, and the `/versions/{version}` forms.

use axum::extract::{Path, State};
use axum::Json;

use super::wire::{ModelMetadata, ReadyBody, ServerMetadata, EXTENSIONS, MODEL_VERSION};
use crate::api::{AppState, NOT_READY};
use crate::error::{AppError, ErrorBody};

fn ready_or_400(s: &AppState) -> Result<(), AppError> {
    if s.lifecycle.is_ready() {
        Ok(())
    } else {
        // The protocol: "a 4xx status code indicates false".
        Err(AppError::BadRequest(NOT_READY.into()))
    }
}

/// `GET /v2`: server metadata.
#[utoipa::path(get, path = "/v2", tag = "kserve",
    responses((status = 200, description = "Server name, version, extensions", body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "segserve".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
    })
}

/// `GET /v2/health/live`: the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve",
    responses((status = 200, description = "Alive", body = ReadyBody)))]
pub async fn live() -> Json<ReadyBody> {
    Json(ReadyBody {
        name: None,
        ready: true,
    })
}

/// `GET /v2/health/ready`: every model is loaded and warmed up.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve",
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 400, description = "Not ready (loading or shutting down)", body = ErrorBody)))]
pub async fn ready(State(s): State<AppState>) -> Result<Json<ReadyBody>, AppError> {
    ready_or_400(&s)?;
    Ok(Json(ReadyBody {
        name: None,
        ready: true,
    }))
}

/// `GET /v2/models/{name}/ready`: the model exists and can serve.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)")),
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 400, description = "Not ready (loading or shutting down)", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody)))]
pub async fn model_ready(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ReadyBody>, AppError> {
    ready_or_400(&s)?;
    s.engine(Some(&name))?;
    Ok(Json(ReadyBody {
        name: Some(name),
        ready: true,
    }))
}

/// `GET /v2/models/{name}`: model metadata.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)")),
    responses(
        (status = 200, description = "Inputs and outputs of the model", body = ModelMetadata),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 503, description = "Models still loading", body = ErrorBody)))]
pub async fn model_metadata(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, AppError> {
    let engine = s.engine(Some(&name))?;
    Ok(Json(
        ModelMetadata::new(engine.info()).with_device(engine.device().as_str()),
    ))
}

/// The protocol's optional `/versions/{version}` paths name the one version we serve.
pub(super) fn check_version(version: &str) -> Result<(), AppError> {
    if version == MODEL_VERSION {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "model version {version:?} is not served; the only version is {MODEL_VERSION:?}"
        )))
    }
}

/// `GET /v2/models/{name}/versions/{version}`: model metadata of one version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)"),
           ("version" = String, Path, description = "Model version (always \"1\")")),
    responses(
        (status = 200, description = "Inputs and outputs of the model", body = ModelMetadata),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 503, description = "Models still loading", body = ErrorBody)))]
pub async fn model_version_metadata(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, AppError> {
    check_version(&version)?;
    model_metadata(State(s), Path(name)).await
}

/// `GET /v2/models/{name}/versions/{version}/ready`: readiness of one version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "kserve",
    params(("name" = String, Path, description = "Model name (file stem)"),
           ("version" = String, Path, description = "Model version (always \"1\")")),
    responses(
        (status = 200, description = "Ready", body = ReadyBody),
        (status = 400, description = "Not ready (loading or shutting down)", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody)))]
pub async fn model_version_ready(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ReadyBody>, AppError> {
    check_version(&version)?;
    model_ready(State(s), Path(name)).await
}
