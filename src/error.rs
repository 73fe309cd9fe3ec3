//! `AppError`: every failure a handler can return, and the only place HTTP status codes
//! and `error_type` strings are chosen. 5xx bodies stay generic; details go to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::engine::EngineError;
use crate::imageio::ImageError;
use crate::pipeline::PipelineError;

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
    /// Body or image over a configured limit.
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
    /// Queue full or waited too long: retry later.
    #[error("{0}")]
    Overloaded(String),
    /// Model still loading or server draining.
    #[error("{0}")]
    NotReady(String),
    /// Anything else; the message is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

/// JSON error body, the shape TEI and our clients expect.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Human-readable explanation.
    pub error: String,
    /// Stable machine-readable code.
    pub error_type: String,
}

impl AppError {
    /// Status code and `error_type` for this error.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
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
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_type();
        let error = if status.is_server_error()
            && !matches!(
                self,
                AppError::Overloaded(_) | AppError::NotReady(_) | AppError::ServerTimeout(_)
            ) {
            tracing::error!(error = %self, "request failed");
            "internal server error".to_string()
        } else {
            self.to_string()
        };
        let mut resp = (
            status,
            Json(ErrorBody {
                error,
                error_type: error_type.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
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
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<PipelineError> for AppError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Image(i) => i.into(),
            PipelineError::Engine(en) => en.into(),
            PipelineError::Task(t) => AppError::Internal(t),
        }
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
        ];
        for (err, status, kind) in cases {
            let (s, t) = err.status_and_type();
            assert_eq!((s.as_u16(), t), (status, kind));
        }
    }

    #[tokio::test]
    async fn internal_details_are_not_sent_and_503_has_retry_after() {
        let resp = AppError::Internal("/secret/path.onnx exploded".into()).into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
        let resp = AppError::Overloaded("busy".into()).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
