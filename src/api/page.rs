//! The browser-facing routes: the upload page and its assets (compiled into the binary, so a
//! container needs no files beside it), `POST /v1/render` (the photo with its detections
//! drawn on it) and, in `frontend`, PixelLib's `POST /segmentfrontend`. Drawing itself lives
//! in `crate::render`; this module only extracts, calls and shapes replies.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::frontend;
use super::handlers::record_detections;
use super::types::{query_pairs, MaskFormat, SegmentQuery};
use super::upload::{read_image, Accept};
use super::AppState;
use crate::error::AppError;
use crate::pipeline::{self, SegmentRequest, Segmentation};
use crate::render::{self, Encoding};

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

/// Picks the encoding: `format=png|jpeg` wins, then whichever of image/png and image/jpeg the
/// `Accept` header ranks higher (wildcards ignored), then JPEG, which is small and quick for
/// photos.
pub fn choose_encoding(format: Option<&str>, accept: Option<&str>) -> Result<Encoding, AppError> {
    match format.map(str::to_ascii_lowercase).as_deref() {
        Some("png") => return Ok(Encoding::Png),
        Some("jpeg" | "jpg") => return Ok(Encoding::Jpeg),
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "query parameter `format` must be png or jpeg, got {other:?}"
            )))
        }
        None => {}
    }
    let (mut png, mut jpeg) = (0.0f32, 0.0f32);
    for item in accept.unwrap_or("").split(',') {
        let mut parts = item.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match kind.as_str() {
            "image/png" => png = png.max(q),
            "image/jpeg" | "image/jpg" => jpeg = jpeg.max(q),
            _ => {}
        }
    }
    Ok(if png > jpeg {
        Encoding::Png
    } else {
        Encoding::Jpeg
    })
}

/// A photo segmented and drawn.
pub(super) struct Rendered {
    /// The detections (the photo itself dropped once drawn).
    pub seg: Segmentation,
    /// The encoded picture.
    pub bytes: Vec<u8>,
    /// Its encoding.
    pub encoding: Encoding,
    /// The model that ran.
    pub engine: crate::engine::Engine,
}

/// Reads the upload, segments it with the query's options and draws the result: the work
/// shared by `/v1/render` and `/segmentfrontend`.
pub(super) async fn segment_and_draw(
    s: &AppState,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
    accept: Accept,
    encoding: Encoding,
) -> Result<Rendered, AppError> {
    let query = SegmentQuery::parse(pairs, |name| Ok(s.engine(name)?.info().names.clone()))?;
    let engine = s.engine(query.model.as_deref())?;
    let bytes = read_image(
        headers,
        body,
        s.config.max_body_bytes,
        s.config.body_timeout,
        s.config.form,
        accept,
    )
    .await?;
    let req = SegmentRequest {
        bytes,
        filter: query.filter,
        masks: query.masks == MaskFormat::Rle,
        keep_image: true,
    };
    let mut seg = pipeline::segment(&engine, s.config.runtime.limits, req).await?;
    record_detections(&seg);
    let photo = seg
        .image
        .take()
        .expect("keep_image was set, so the pipeline returns the photo");
    let names = engine.info().names.clone();
    // Drawing and encoding a full-size photo takes milliseconds: off the runtime threads.
    let (seg, bytes) = tokio::task::spawn_blocking(move || {
        let drawn = render::render(&photo, &seg.detections, &names);
        render::encode(&drawn, encoding).map(|b| (seg, b))
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Rendered {
        seg,
        bytes,
        encoding,
        engine,
    })
}

/// `POST /v1/render`: the same upload and options as `/v1/segment`, plus `format=png|jpeg`;
/// answers the upright photo with every instance drawn on it, at the photo's size.
#[utoipa::path(post, path = "/v1/render", tag = "segserve",
    params(
        ("format" = Option<String>, Query, description = "`png` or `jpeg`; default from the Accept header, else JPEG"),
        ("conf" = Option<f32>, Query, description = "Score threshold, 0..1 (0.25)"),
        ("iou" = Option<f32>, Query, description = "NMS IoU threshold, 0..1 (0.7)"),
        ("max_det" = Option<usize>, Query, description = "Most detections drawn, 1..=1000 (300)"),
        ("classes" = Option<String>, Query, description = "Keep only these classes: names or ids, comma-separated"),
        ("masks" = Option<String>, Query, description = "`rle` (default: masks drawn) or `none` (boxes only)"),
        ("model" = Option<String>, Query, description = "Model name (file stem); default: the first --model"),
    ),
    request_body(content(
        (super::handlers::ImageForm = "multipart/form-data"),
        (Vec<u8> = "image/*"),
        (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The upright photo with masks, boxes and labels drawn, same size", body = Vec<u8>, content_type = "image/jpeg"),
        (status = 400, description = "No image, or a bad parameter", body = crate::error::ErrorBody),
        (status = 404, description = "No such model", body = crate::error::ErrorBody),
        (status = 408, description = "Body not received in time", body = crate::error::ErrorBody),
        (status = 413, description = "Body or image over a limit", body = crate::error::ErrorBody),
        (status = 415, description = "Unsupported content type or image format", body = crate::error::ErrorBody),
        (status = 422, description = "Corrupt image", body = crate::error::ErrorBody),
        (status = 503, description = "Overloaded or not ready; retry", body = crate::error::ErrorBody)))]
pub async fn render_image(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let mut pairs = query_pairs(q.as_deref())?;
    let format = take(&mut pairs, "format");
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let encoding = choose_encoding(format.as_deref(), accept)?;
    let r = segment_and_draw(&s, &pairs, &headers, body, Accept::MultipartOrRaw, encoding).await?;
    let t = r.seg.timing;
    // Server-Timing lets the page (and browser dev tools) show where the time went.
    let timing = format!(
        "inference;dur={:.1}, total;dur={:.1}",
        t.inference.as_secs_f64() * 1e3,
        t.total.as_secs_f64() * 1e3
    );
    Ok((
        [
            (header::CONTENT_TYPE, r.encoding.mime().to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (HeaderName::from_static("server-timing"), timing),
            (
                HeaderName::from_static("x-detections"),
                r.seg.detections.len().to_string(),
            ),
        ],
        r.bytes,
    )
        .into_response())
}

/// Removes every `key` from the pairs and returns the last value.
fn take(pairs: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let mut found = None;
    pairs.retain(|(k, v)| {
        if k == key {
            found = Some(v.clone());
            false
        } else {
            true
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_from_format_then_accept_then_default() {
        let pick = |f, a| choose_encoding(f, a).unwrap();
        assert_eq!(pick(Some("png"), Some("image/jpeg")), Encoding::Png);
        assert_eq!(pick(Some("JPEG"), None), Encoding::Jpeg);
        assert_eq!(pick(None, Some("image/png")), Encoding::Png);
        assert_eq!(
            pick(None, Some("image/png;q=0.5, image/jpeg")),
            Encoding::Jpeg
        );
        assert_eq!(
            pick(None, Some("image/avif,image/webp,*/*;q=0.8")),
            Encoding::Jpeg
        );
        assert_eq!(pick(None, None), Encoding::Jpeg);
        let err = choose_encoding(Some("gif"), None).unwrap_err();
        assert_eq!(err.status_and_type().0.as_u16(), 400);
    }

    #[test]
    fn take_removes_the_key() {
        let mut p = vec![
            ("format".into(), "png".into()),
            ("conf".into(), "0.5".into()),
        ];
        assert_eq!(take(&mut p, "format").as_deref(), Some("png"));
        assert_eq!(p, vec![("conf".to_string(), "0.5".to_string())]);
        assert_eq!(take(&mut p, "format"), None);
    }

    #[test]
    fn page_has_no_inline_script_or_style() {
        // The CSP has no 'unsafe-inline': any inline script or style attribute would be blocked.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains(" style="));
        assert!(!INDEX_HTML.contains("onclick"));
        assert!(INDEX_HTML.contains(r#"<script src="/static/app.js" defer></script>"#));
        assert!(!CSP.contains("unsafe"));
    }
}
