//! The Open Inference Protocol (KServe v2, Triton) over gRPC: `inference.GRPCInferenceService`
//! from Triton's vendored `proto/grpc_service.proto`, served on the HTTP port (HTTP/2
//! without TLS, h2c, told apart from HTTP/1.1 by its preface and routed here by its
//! `application/grpc` content type) and, with `--grpc-port`, on a port of its own.
//!
//! Same model, inputs, outputs, parameters and errors as the REST route (`api::kserve`),
//! whose checks and pipeline runs it shares: one BYTES input `image` of 1 to 16 encoded
//! photos (`raw_input_contents`, as `tritonclient` sends them, or `bytes_contents`), every
//! output in `raw_output_contents`. Each model is also served raw under `<name>-raw` (its own
//! tensors, and `ModelConfig` with the metadata Ultralytics reads: `raw`). Errors are gRPC
//! statuses (`status`). The gateway (`gateway`) guards and reads each call; the RPCs are in
//! `service`; the message conversions in `convert`.

mod convert;
mod gateway;
mod raw;
mod service;
mod status;

/// The types and service generated from the vendored protos (by build.rs). The client is
/// there for tests and examples. The protos' comments are Triton's, written for protoc's
/// docs (`<model name>` is not HTML), so rustdoc's checks are off here.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod pb {
    tonic::include_proto!("inference");
}

pub use gateway::{is_grpc, Gateway};
pub use status::code;
