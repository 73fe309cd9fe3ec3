//! The `inference.GRPCInferenceService` RPCs we serve (health, metadata, inference); the
//! others answer UNIMPLEMENTED through the generated defaults. Each RPC does what its REST
//! twin in `api::kserve` does, through the same state and the same shared steps.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use super::convert;
use super::pb::{self, grpc_inference_service_server::GrpcInferenceService};
use super::status::status;
use crate::api::kserve;
use crate::api::kserve::run::{self, Parsed};
use crate::api::kserve::wire::{ModelMetadata, EXTENSIONS, MODEL_VERSION};
use crate::api::AppState;
use crate::budget::{MemoryBudget, Reservation};
use crate::engine::Engine;
use crate::error::AppError;

/// The reservation that holds a received message, handed from the gateway (which read the
/// body under it) to the RPC through the request's extensions (which must be `Clone`).
#[derive(Clone, Default)]
pub struct MessageHold(Arc<Mutex<Option<Reservation>>>);

impl MessageHold {
    /// Holds `reservation` for the RPC to take.
    pub fn new(reservation: Reservation) -> Self {
        MessageHold(Arc::new(Mutex::new(Some(reservation))))
    }

    /// The reservation, once; an empty one of `budget` when there is none.
    fn take(&self, budget: &Arc<MemoryBudget>) -> Reservation {
        // std Mutex: never held across .await.
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| budget.reservation())
    }
}

/// The service: a handle on the shared state.
#[derive(Clone)]
pub struct Inference {
    /// Models, readiness, settings and the budget, as the HTTP routes see them.
    pub state: AppState,
}

fn version_served(version: &str) -> bool {
    version.is_empty() || version == MODEL_VERSION
}

impl Inference {
    fn engine(&self, name: &str, version: &str, method: &str) -> Result<Engine, Status> {
        if !version_served(version) {
            return Err(status(
                AppError::NotFound(format!(
                    "model version {version:?} is not served; the only version is {MODEL_VERSION:?}"
                )),
                method,
            ));
        }
        self.state.engine(Some(name)).map_err(|e| status(e, method))
    }

    async fn infer(
        &self,
        hold: Reservation,
        req: pb::ModelInferRequest,
    ) -> Result<pb::ModelInferResponse, AppError> {
        let s = &self.state;
        if let Some(engine) = kserve::raw::raw_engine(s, &req.model_name)? {
            return super::raw::infer(engine, req, hold, &s.budget).await;
        }
        let engine = s.engine(Some(&req.model_name))?;
        // Turning the message into photos is CPU work on up to --max-body-bytes: on the
        // blocking pool, as the REST route does.
        let (e, budget) = (engine.clone(), s.budget.clone());
        let Parsed {
            id,
            options,
            wanted,
            images,
        } = crate::meter::spawn_blocking(move || convert::parse(req, e.info(), hold, &budget))
            .await
            .map_err(|e| AppError::internal("parsing an inference request", e))??;
        let (results, held) = run::segment_all(s, &engine, &options, &wanted, images, None).await?;
        let (e, budget) = (engine.clone(), s.budget.clone());
        crate::meter::spawn_blocking(move || {
            let estimate = 1024 + held.iter().map(Reservation::held).sum::<u64>();
            let answer = convert::encode(
                e.info(),
                id,
                &results,
                &wanted,
                estimate,
                budget.reservation(),
            );
            drop((results, held));
            answer
        })
        .await
        .map_err(|e| AppError::internal("encoding an inference answer", e))?
        .map_err(AppError::from)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.state.lifecycle.is_ready();
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    /// Not ready, or no such model or version: `ready: false` (Triton's answer; over HTTP
    /// the same cases are a 4xx, which `tritonclient` also reads as false).
    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let req = req.into_inner();
        let ready = self.state.lifecycle.is_ready()
            && version_served(&req.version)
            && self.state.engine(Some(&req.name)).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "segserve".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let req = req.into_inner();
        let engine = self.engine(&req.name, &req.version, "ModelMetadata")?;
        let m = ModelMetadata::new(engine.info());
        let tensor = |t: crate::api::kserve::wire::TensorMetadata| {
            pb::model_metadata_response::TensorMetadata {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            }
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: m.inputs.into_iter().map(tensor).collect(),
            outputs: m.outputs.into_iter().map(tensor).collect(),
        }))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let req = req.into_inner();
        let method = "ModelConfig";
        if !version_served(&req.version) {
            // The same answer as for ModelMetadata.
            self.engine(&req.name, &req.version, method)?;
        }
        let c = kserve::raw::config_of(&self.state, &req.name).map_err(|e| status(e, method))?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(super::raw::model_config(&c)),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let hold = req
            .extensions()
            .get::<MessageHold>()
            .cloned()
            .unwrap_or_default()
            .take(&self.state.budget);
        self.infer(hold, req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| status(e, "ModelInfer"))
    }
}
