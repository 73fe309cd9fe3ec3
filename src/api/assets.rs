//! Every static file the server sends: the upload page, the API docs page and their scripts
//! and style sheets (`static/`), compiled into the binary with `include_str!` so a container
//! needs no files beside it and the docs work offline. Scripts and styles are separate
//! files, never inline, so the pages' CSP needs no `unsafe-inline`.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

/// Scripts only from our own files (no inline script, no eval), images also from the data:
/// and blob: URLs the page and /segmentfrontend build, nothing from other origins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

const DOCS_HTML: &str = include_str!("../../static/docs.html");
const DOCS_JS: &str = include_str!("../../static/docs.js");
const DOCS_CSS: &str = include_str!("../../static/docs.css");

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

/// `GET /docs`: human-readable API docs, rendered in the browser from `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
pub async fn docs() -> Response {
    // Same policy as the upload page: scripts and styles only from our own files.
    ([(header::CONTENT_SECURITY_POLICY, CSP)], Html(DOCS_HTML)).into_response()
}

/// `GET /static/docs.js`: the docs page's script (kept out of the HTML for the CSP).
#[utoipa::path(get, path = "/static/docs.js", tag = "operations",
    responses((status = 200, description = "The docs page's script", body = String, content_type = "text/javascript")))]
pub async fn docs_js() -> Response {
    asset("text/javascript; charset=utf-8", DOCS_JS)
}

/// `GET /static/docs.css`: the docs page's style sheet.
#[utoipa::path(get, path = "/static/docs.css", tag = "operations",
    responses((status = 200, description = "The docs page's style sheet", body = String, content_type = "text/css")))]
pub async fn docs_css() -> Response {
    asset("text/css; charset=utf-8", DOCS_CSS)
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
