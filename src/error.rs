//! `AppError`: every failure a handler can return, and the only place HTTP status codes
//! and `error_type` strings are chosen. Turning one into a response has no side effects:
//! the error itself rides along in a response extension ([`LoggedError`]) and the request
//! middleware logs it once, with its source chain (axum's `error-handling` example).
//! 5xx bodies stay generic; details go to the log only.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::budget::{BudgetError, Refusal};
use crate::engine::EngineError;
use crate::imageio::ImageError;
use crate::options::OptionError;
use crate::pipeline::PipelineError;

/// The source of an internal error, kept whole for the log.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// A request failure, mapped to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Missing field, bad parameter, malformed body.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// No such model or route.
    #[error("{0}")]
    NotFound(String),
    /// Known route, wrong method.
    #[error("method not allowed for this route")]
    MethodNotAllowed,
    /// Body or image over a configured limit, or work that can never fit the memory budget.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Unsupported content type or image format.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Corrupt image or impossible dimensions.
    #[error("{0}")]
    InvalidImage(String),
    /// Query string over `--max-query-bytes`.
    #[error("{0}")]
    UriTooLong(String),
    /// Request headers over `--max-header-bytes`.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The client was too slow sending its request.
    #[error("{0}")]
    RequestTimeout(String),
    /// The server did not finish within `--request-timeout-ms`: retry later.
    #[error("{0}")]
    ServerTimeout(String),
    /// Queue full, waited too long, or the memory budget is in use: retry later.
    #[error("{0}")]
    Overloaded(String),
    /// Model still loading or server draining.
    #[error("{0}")]
    NotReady(String),
    /// Anything else; logged with its sources, never sent.
    #[error("{context}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: Source,
    },
}

/// JSON error body, the shape TEI and our clients expect.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Human-readable explanation.
    pub error: String,
    /// Stable machine-readable code.
    pub error_type: String,
}

/// The error behind an error response, for the request middleware to log.
#[derive(Debug, Clone)]
pub struct LoggedError(pub Arc<AppError>);

impl AppError {
    /// An internal failure while doing `context`.
    pub fn internal(context: &'static str, source: impl Into<Source>) -> Self {
        AppError::Internal {
            context,
            source: source.into(),
        }
    }

    /// Status code and `error_type` for this error.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::InvalidImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
            AppError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            AppError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            AppError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            AppError::ServerTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            AppError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            AppError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            AppError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// What the client is told: the message for 4xx and the "retry later" 503s, a generic
    /// line for everything else (whose details may name files or internals).
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal { .. } => "internal server error".to_string(),
            other => other.to_string(),
        }
    }

    /// Whether this is a failure of ours (logged at error level), not of the request.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, AppError::Internal { .. })
    }

    /// Adds the headers this error's status calls for, and the error itself as a
    /// [`LoggedError`] extension. Used for every rendering of an error (JSON or HTML).
    pub fn decorate(self, resp: &mut Response) {
        let status = resp.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(LoggedError(Arc::new(self)));
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        let body = ErrorBody {
            error: self.public_message(),
            error_type: error_type.to_string(),
        };
        let mut resp = (status, Json(body)).into_response();
        self.decorate(&mut resp);
        resp
    }
}

impl From<ImageError> for AppError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Empty => AppError::BadRequest("the image is empty".into()),
            ImageError::Unsupported(_) => AppError::UnsupportedMediaType(e.to_string()),
            ImageError::TooLarge { .. } => AppError::PayloadTooLarge(e.to_string()),
            ImageError::Corrupt(_) | ImageError::NoPixels(..) => {
                AppError::InvalidImage(e.to_string())
            }
            ImageError::Budget(b) => b
                .refusing("decoding this image", "send a smaller image")
                .into(),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded | EngineError::QueueTimeout => {
                AppError::Overloaded(format!("{e}; retry later"))
            }
            EngineError::Closed => AppError::NotReady(e.to_string()),
            EngineError::UnknownModel(_) => AppError::NotFound(format!("{e}; see GET /v1/models")),
            other => AppError::internal("running the model", other),
        }
    }
}

/// The one conversion of a memory-budget refusal: 413 when the work could never fit (with
/// what to ask for instead), 503 when it does not fit now or used more than it reserved
/// (500 in auditor mode: there an overrun is a bug to fix, not load to shed).
impl From<Refusal> for AppError {
    fn from(r: Refusal) -> Self {
        let Refusal {
            what,
            advice,
            error,
        } = r;
        match error {
            BudgetError::NeverFits { .. } => {
                AppError::PayloadTooLarge(format!("{what} {error}; {advice}"))
            }
            BudgetError::Busy { .. } => AppError::Overloaded(format!(
                "{what} {error}; the server is busy with other requests, retry later"
            )),
            BudgetError::Overrun(_) if crate::budget::audit() => {
                AppError::internal("the memory audit", format!("{what} {error}"))
            }
            BudgetError::Overrun(_) => AppError::Overloaded(format!(
                "{what} {error}; the server stopped it to stay within its memory, retry later"
            )),
        }
    }
}

impl From<PipelineError> for AppError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Image(i) => i.into(),
            PipelineError::Engine(en) => en.into(),
            PipelineError::Budget(r) => r.into(),
            PipelineError::Task(_) => AppError::internal("a blocking task", e),
        }
    }
}

/// Query-string options; KServe words its parameters itself.
impl From<OptionError> for AppError {
    fn from(e: OptionError) -> Self {
        AppError::BadRequest(format!("query parameter {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let cases: Vec<(AppError, u16, &str)> = vec![
            (ImageError::Empty.into(), 400, "bad_request"),
            (
                ImageError::Unsupported(String::new()).into(),
                415,
                "unsupported_media_type",
            ),
            (ImageError::Corrupt("x".into()).into(), 422, "invalid_image"),
            (
                ImageError::TooLarge {
                    width: 1,
                    height: 1,
                    max_side: 1,
                    max_pixels: 1,
                }
                .into(),
                413,
                "payload_too_large",
            ),
            (EngineError::Overloaded.into(), 503, "overloaded"),
            (EngineError::Inference("x".into()).into(), 500, "internal"),
            (AppError::MethodNotAllowed, 405, "method_not_allowed"),
        ];
        for (err, status, kind) in cases {
            let (s, t) = err.status_and_type();
            assert_eq!((s.as_u16(), t), (status, kind));
        }
    }

    #[tokio::test]
    async fn internal_details_are_not_sent_and_503_has_retry_after() {
        let resp = AppError::internal("loading", "/secret/path.onnx exploded").into_response();
        // The details stay with the response for the log, never in the body.
        let logged = resp.extensions().get::<LoggedError>().unwrap().clone();
        assert!(std::error::Error::source(&*logged.0)
            .unwrap()
            .to_string()
            .contains("secret"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
        let resp = AppError::Overloaded("busy".into()).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
