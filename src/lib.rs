//! segserve: instance segmentation over HTTP with Ultralytics YOLO ONNX models.
//!
//! [`run`] wires it together: load the models in the background (readiness stays 503 until
//! they are warm), serve the router, and shut down gracefully on the given signal.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | `main.rs`, [`cli`] | the command line: clap's flags, their checks into settings, `predict` and `models` |
//! | [`config`] | the checked settings `run` takes (plain data) |
//! | [`host`] | what the machine gives the process: memory limit, CPUs |
//! | [`serve`](mod@serve), [`lifecycle`] | the server's life: start, load, serve, drain; its phase |
//! | [`models`] | loading and warming the configured models |
//! | [`metrics`] | the Prometheus recorder and every series' description |
//! | [`api`] | everything HTTP: connections, guards, extractors, handlers, replies |
//! | [`error`] | `AppError`: the only place statuses are chosen |
//! | [`options`] | what a request may ask for, whatever the front end (query, KServe, flags) |
//! | [`pipeline`] | one photo from bytes to an answer, under a stage place and a reservation |
//! | [`budget`] | the memory budget every request reserves from |
//! | [`imageio`] | header probing, decoding, letterboxing (whole or streamed from the decoder) |
//! | [`geometry`], [`resize`] | the photo's place on the model's canvas; OpenCV's bilinear resize |
//! | [`engine`] | ONNX Runtime sessions, output layouts, NMS, masks from prototypes, devices |
//! | [`mask`] | box-cropped masks and their encodings (COCO RLE, polygons) |
//! | [`render`] | drawing detections onto the photo |
//! | [`schema`] | the JSON shapes of results, shared by the API and the CLI |
//! | [`meter`] | the counting allocator: live heap, per-request live and peak bytes |
//! | [`telemetry`] | logs, and OpenTelemetry traces over OTLP |
//! | [`alloc`], [`shutdown`] | the allocator's settings; the shutdown signal |
//!
//! Dependencies point one way: `cli` -> `config` (flags become settings, never back);
//! `serve` uses `api` and `models`; `api` and `cli` use `pipeline`, `options` and `schema`;
//! `pipeline` uses `engine`, `imageio` and `budget`; none of those knows HTTP or clap.
//!
//! # A request's path
//!
//! `api::server` accepts the connection (header timeout, connection cap) -> `api::security`
//! checks sizes, the key and the deadline -> `api::params::Params` parses the query and picks
//! the model -> `api::upload::ImageUpload` reads the photo, reserving its bytes ->
//! `Pipeline::segment` takes a place in the model's compute stage, probes the header and
//! reserves the decode, decodes and letterboxes on the blocking pool, runs the model on an
//! inference thread, decodes outputs and masks (reserving them once the boxes are known) and
//! builds the answer on the blocking pool -> `api::reply` sends it, holding its reservation
//! until it is gone -> the request middleware logs it and counts it.

pub mod alloc;
pub mod api;
pub mod budget;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod geometry;
pub mod host;
pub mod imageio;
pub mod lifecycle;
pub mod mask;
pub mod meter;
pub mod metrics;
pub mod models;
pub mod options;
pub mod pipeline;
pub mod render;
pub mod resize;
pub mod schema;
pub mod serve;
pub mod shutdown;
pub mod telemetry;

pub use serve::run;

/// Every Rust allocation goes through the meter (see [`meter`]); tests and benchmarks that
/// link this crate are measured the same way.
#[cfg(feature = "alloc-meter")]
#[global_allocator]
static ALLOCATOR: meter::Counting = meter::Counting;
