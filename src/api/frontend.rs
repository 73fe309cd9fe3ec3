//! `POST /segmentfrontend`, PixelLib's browser route: a form upload (field `image`) answered
//! with a complete HTML page showing the segmented photo inline (a data: URL, so the upload is
//! never stored anywhere, not even for a follow-up request) and its detections. The page has
//! no script, so it works under the same CSP as the upload page, and without JavaScript.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;

use super::draw::{segment_and_draw, Rendered};
use super::params::Params;
use super::reply;
use super::upload::{FormOnly, ImageUpload};
use super::AppState;
use crate::engine::ModelInfo;
use crate::error::AppError;
use crate::options::{MaskFormat, DEFAULT_POLYGON_TOLERANCE};
use crate::render::{class_colour, Encoding};
use crate::schema::SegmentResponse;

/// `POST /segmentfrontend`: multipart field `image` (options as in `/v1/segment`, in the
/// query); answers an HTML page. Errors are HTML pages too, with the usual status codes.
#[utoipa::path(post, path = "/segmentfrontend", tag = "pixellib",
    request_body(content = super::handlers::ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "HTML page with the drawn photo inline and its detections", body = String, content_type = "text/html"),
        (status = 400, description = "No `image` field (HTML page)", body = String, content_type = "text/html"),
        (status = 408, description = "Body not received in time (HTML page)", body = String, content_type = "text/html"),
        (status = 413, description = "Body or image over a limit (HTML page)", body = String, content_type = "text/html"),
        (status = 415, description = "Not multipart, or an unsupported image format (HTML page)", body = String, content_type = "text/html"),
        (status = 422, description = "Corrupt image (HTML page)", body = String, content_type = "text/html"),
        (status = 503, description = "Overloaded or not ready (HTML page)", body = String, content_type = "text/html")))]
pub async fn segmentfrontend(
    State(s): State<AppState>,
    params: Result<Params, AppError>,
    upload: Result<ImageUpload<FormOnly>, AppError>,
) -> Response {
    let result = async {
        let (params, upload) = (params?, upload?);
        let engine = params.engine.clone();
        let r = segment_and_draw(params, upload, &s.pipeline, Encoding::Jpeg).await?;
        Ok::<_, AppError>((result_page(&r, engine.info()), r.reservation))
    }
    .await;
    match result {
        Ok((html, reservation)) => {
            reply::bytes(html.into_bytes(), "text/html; charset=utf-8", reservation)
        }
        Err(e) => error_page(e),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
<link rel=\"icon\" href=\"data:,\">\n<link rel=\"stylesheet\" href=\"/static/style.css\">\n</head>\n<body>\n\
<header class=\"top\"><h1>segserve</h1><p class=\"tagline\">{}</p></header>\n",
        escape(title),
        escape(title)
    )
}

/// The colour swatch as an SVG data URL: the CSP forbids inline style attributes, and an
/// image needs none.
fn swatch(class_id: usize) -> String {
    let [r, g, b] = class_colour(class_id);
    format!(
        "<img class=\"swatch\" alt=\"\" src=\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' \
width='1' height='1'%3E%3Crect width='1' height='1' fill='%23{r:02x}{g:02x}{b:02x}'/%3E%3C/svg%3E\">"
    )
}

fn result_page(r: &Rendered, info: &ModelInfo) -> String {
    // The page lists boxes and scores; the masks are in the picture.
    let resp =
        SegmentResponse::with_masks(info, &r.seg, MaskFormat::None, DEFAULT_POLYGON_TOLERANCE);
    let n = resp.detections.len();
    let counts = resp
        .object_counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let alt = if n == 0 {
        "The photo; no objects were found.".to_string()
    } else {
        format!("The photo with {n} objects outlined and labelled: {counts}.")
    };
    let mut html = head("Segmentation result");
    html.push_str("<main class=\"result-page\">\n<section class=\"card\">\n");
    let _ = write!(
        html,
        "<h2>Found {n} object{} in a {} × {} photo</h2>\n<ul class=\"counts\" aria-label=\"Objects per class\">",
        if n == 1 { "" } else { "s" },
        resp.image.width,
        resp.image.height
    );
    for (name, k) in &resp.object_counts {
        let id = info.names.iter().position(|x| x == name).unwrap_or(0);
        let _ = write!(html, "<li>{}{} <b>{k}</b></li>", swatch(id), escape(name));
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&r.bytes);
    let _ = write!(
        html,
        "</ul>\n<figure class=\"figure\"><img class=\"result-img\" width=\"{}\" height=\"{}\" alt=\"{}\" src=\"data:{};base64,{b64}\"></figure>\n",
        resp.image.width,
        resp.image.height,
        escape(&alt),
        r.encoding.mime()
    );
    html.push_str(
        "<div class=\"table-wrap\"><table>\n<caption>Detected objects, most confident first</caption>\n\
<thead><tr><th scope=\"col\">#</th><th scope=\"col\">Class</th><th scope=\"col\">Score</th>\
<th scope=\"col\">Box (x1, y1, x2, y2)</th></tr></thead>\n<tbody>\n",
    );
    for (i, d) in resp.detections.iter().enumerate() {
        let b = d.bbox.map(|v| v.round() as i64);
        let _ = writeln!(
            html,
            "<tr><td>{}</td><th scope=\"row\">{}{}</th><td>{:.2}</td><td>{}, {}, {}, {}</td></tr>",
            i + 1,
            swatch(d.class_id),
            escape(&d.class_name),
            d.score,
            b[0],
            b[1],
            b[2],
            b[3]
        );
    }
    let _ = write!(
        html,
        "</tbody></table></div>\n<p class=\"muted timing\">Model {} · inference {:.1} ms · total {:.1} ms</p>\n\
</section>\n<p><a href=\"/\">Segment another photo</a></p>\n</main>\n</body>\n</html>\n",
        escape(&resp.model),
        resp.timing_ms.inference,
        resp.timing_ms.total
    );
    html
}

/// The error as a page a person can read, with the status and message `AppError` picks
/// for the JSON routes (5xx details stay in the log, where the middleware writes them).
fn error_page(e: AppError) -> Response {
    let (status, error_type) = e.status_and_type();
    let mut html = head("Could not segment this photo");
    let _ = write!(
        html,
        "<main class=\"result-page\"><section class=\"card\"><div class=\"error\" role=\"alert\" data-error-type=\"{}\">\
<strong>Could not segment this photo.</strong> <span>{}</span></div>\
<p><a href=\"/\">Try another photo</a></p></section></main>\n</body>\n</html>\n",
        error_type,
        escape(&e.public_message())
    );
    let mut resp = (status, Html(html)).into_response();
    e.decorate(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<img src=x onerror="a">&'"#),
            "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;"
        );
    }

    #[tokio::test]
    async fn errors_are_html_with_their_status() {
        let resp = error_page(AppError::UnsupportedMediaType("not <an> image".into()));
        assert_eq!(resp.status().as_u16(), 415);
        assert!(resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("not &lt;an&gt; image"), "{body}");
        let resp = error_page(AppError::internal("testing", "/secret"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }
}
