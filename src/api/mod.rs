//! HTTP layer: the router (`router`: routes, layers, the per-request span, log and metrics)
//! and the shared state (`state`).
//! Only this layer knows HTTP. Photos come in through the [`upload::ImageUpload`]
//! extractor, other bodies through [`body::read_limited`]; answers that outlive the handler
//! keep their memory reservation in [`reply`]; [`inflate`] takes compressed bodies and
//! [`compress`] compresses answers. Routes: `handlers` (native API and probes),
//! `pixellib` (`/segmentapi`), `edit` and `cutouts` (PixelLib's background edits and cut-out objects), `page` and `frontend`
//! (browser), `kserve` (Open Inference Protocol over REST), `openapi` (the spec), `assets`
//! (the pages' static files and /docs); `draw` is the segment-and-draw step the browser
//! routes share; `security` and `drain` guard every request; `server` accepts connections
//! (HTTP/1.1 and h2c; `send_limits` bounds their writes), and hands gRPC calls to `grpc`
//! (the protocol over gRPC).

pub mod assets;
pub mod body;
pub mod compress;
pub mod cutouts;
pub mod drain;
pub mod draw;
pub mod edit;
pub mod frontend;
pub mod grpc;
pub mod handlers;
pub mod inflate;
pub mod kserve;
pub mod openapi;
pub mod page;
pub mod params;
pub mod pixellib;
pub mod reply;
pub mod security;
pub mod send_limits;
pub mod server;
pub mod upload;

mod router;
mod state;

pub use router::{probe_router, router, routes};
pub use state::{AppState, NOT_READY};

// Router tests of the layers (panic, auth, CORS, limits, deadline).
#[cfg(test)]
mod tests;
