//! The integration tests, as one binary: a module per topic, and one module of helpers
//! (`common`) that every topic shares. One binary links once, where a binary per file linked
//! the server and the test dependencies twenty-odd times.
//!
//! `cargo test --release --test tests -- TOPIC::` runs one topic (`-- --list` lists them).
//! Every topic's tests share this process, side by side: `common::turns` says how the ones
//! that measure the process or the machine keep others from disturbing them.

mod common;

mod bad_inputs;
mod batching;
mod browser;
mod cli;
mod connections;
mod decode_estimates;
mod device;
mod grpc;
mod http_api;
mod k8s_manifests;
mod kserve_manifest;
mod layouts;
mod logs;
mod metrics;
mod openapi;
mod parity;
mod port_env;
mod protocols;
mod queue_metrics;
mod render_http;
mod resource_attacks;
mod shutdown;
mod traces;
