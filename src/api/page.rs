//! The browser-facing routes: the upload page and its assets (`assets`), `POST /v1/render` (the photo with its detections
//! drawn on it) and, in `frontend`, PixelLib's `POST /segmentfrontend`. Segmenting and
//! drawing is `draw`; this module only extracts, calls and shapes replies.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::assets::{self, CSP};
use super::draw::{choose_encoding, segment_and_draw};
use super::frontend;
use super::params::{Params, RenderExtra};
use super::reply;
use super::upload::ImageUpload;
use super::AppState;
use crate::error::AppError;

/// The page routes, with their security headers. Merged into `api::router`.
pub fn routes() -> OpenApiRouter<AppState> {
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    OpenApiRouter::new()
        .routes(routes!(assets::index))
        .routes(routes!(assets::app_js))
        .routes(routes!(assets::style_css))
        .routes(routes!(render_image))
        .routes(routes!(frontend::segmentfrontend))
        .layer(header(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
}

/// `POST /v1/render`: the same upload and options as `/v1/segment`, plus `format=png|jpeg`;
/// answers the upright photo with every instance drawn on it, at the photo's size.
#[utoipa::path(post, path = "/v1/render", tag = "segserve",
    params(super::openapi::FilterQuery,
        ("format" = Option<String>, Query, description = "`png` or `jpeg`; default from the Accept header, else JPEG"),
        ("masks" = Option<String>, Query, description = "`rle` (default: masks drawn) or `none` (boxes only)"),
    ),
    request_body(content(
        (super::handlers::ImageForm = "multipart/form-data"),
        (Vec<u8> = "image/*"),
        (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The upright photo with masks, boxes and labels drawn, same size", body = Vec<u8>, content_type = "image/jpeg"),
        super::openapi::UploadErrors))]
pub async fn render_image(
    State(s): State<AppState>,
    params: Params<RenderExtra>,
    headers: HeaderMap,
    upload: ImageUpload,
) -> Result<Response, AppError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let encoding = choose_encoding(params.extra.get("format").map(String::as_str), accept)?;
    let r = segment_and_draw(params, upload, &s.pipeline, encoding).await?;
    let t = r.seg.timing;
    // Server-Timing lets the page (and browser dev tools) show where the time went.
    let timing = format!(
        "inference;dur={:.1}, total;dur={:.1}",
        t.inference.as_secs_f64() * 1e3,
        t.total.as_secs_f64() * 1e3
    );
    let detections = r.seg.detections.len().to_string();
    let mut resp = reply::bytes(r.bytes, r.encoding.mime(), r.reservation);
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in [("server-timing", timing), ("x-detections", detections)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    Ok(resp)
}
