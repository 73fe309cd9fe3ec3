//! The browser-facing routes: the upload page and its assets (compiled into the binary, so a
//! container needs no files beside it), `POST /v1/render` (the photo with its detections
//! drawn on it) and, in `frontend`, PixelLib's `POST /segmentfrontend`. Segmenting and
//! drawing is `draw`; this module only extracts, calls and shapes replies.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::draw::{choose_encoding, segment_and_draw};
use super::frontend;
use super::params::{Params, RenderExtra};
use super::reply;
use super::upload::ImageUpload;
use super::AppState;
use crate::error::AppError;

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

/// Scripts only from our own files (no inline script, no eval), images also from the data:
/// and blob: URLs the page and /segmentfrontend build, nothing from other origins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// The page routes, with their security headers. Merged into `api::router`.
pub fn routes() -> OpenApiRouter<AppState> {
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(app_js))
        .routes(routes!(style_css))
        .routes(routes!(render_image))
        .routes(routes!(frontend::segmentfrontend))
        .layer(header(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // no-cache: browsers revalidate, so a new server version is picked up at once.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the upload page.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "The upload page (HTML)", body = String, content_type = "text/html")))]
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /static/app.js`.
#[utoipa::path(get, path = "/static/app.js", tag = "page",
    responses((status = 200, description = "The page's script", body = String, content_type = "text/javascript")))]
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /static/style.css`.
#[utoipa::path(get, path = "/static/style.css", tag = "page",
    responses((status = 200, description = "The page's style sheet", body = String, content_type = "text/css")))]
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
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
    let r = segment_and_draw(params, upload, s.config.runtime.limits, encoding).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_no_inline_script_or_style() {
        // The CSP has no 'unsafe-inline': any inline script or style attribute would be blocked.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains(" style="));
        assert!(!INDEX_HTML.contains("onclick"));
        assert!(INDEX_HTML.contains(r#"<script src="/static/app.js" defer></script>"#));
        assert!(!CSP.contains("unsafe"));
        // The API key field starts hidden, as a password field; app.js shows it on a 401.
        assert!(INDEX_HTML.contains(r#"<div id="key-box" class="field key" hidden>"#));
        assert!(INDEX_HTML.contains(r#"<input id="api-key" type="password""#));
    }
}
