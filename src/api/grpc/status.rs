//! `AppError` as a gRPC status: the one place gRPC codes are chosen, as `AppError::status_and_type`
//! is for HTTP. Messages are the same words the REST route sends; 5xx-class failures send a
//! generic line and are logged whole by the caller.

use tonic::{Code, Status};

use crate::api::router::error_chain;
use crate::error::AppError;

/// The gRPC code for `e` (KServe's and Triton's mapping: a bad request is INVALID_ARGUMENT,
/// busy is UNAVAILABLE, too large is RESOURCE_EXHAUSTED, an unknown model NOT_FOUND).
pub fn code(e: &AppError) -> Code {
    match e {
        AppError::BadRequest(_)
        | AppError::UnsupportedMediaType(_)
        | AppError::InvalidImage(_)
        | AppError::UriTooLong(_) => Code::InvalidArgument,
        AppError::Unauthorized => Code::Unauthenticated,
        AppError::NotFound(_) => Code::NotFound,
        AppError::MethodNotAllowed => Code::Unimplemented,
        AppError::PayloadTooLarge(_) | AppError::HeadersTooLarge(_) => Code::ResourceExhausted,
        AppError::RequestTimeout(_) | AppError::ServerTimeout(_) => Code::DeadlineExceeded,
        AppError::Overloaded(_) | AppError::NotReady(_) => Code::Unavailable,
        AppError::Internal { .. } => Code::Internal,
    }
}

/// `e` as the status sent to the client, after logging it (a server fault with its source
/// chain at error level, a refusal at info).
pub fn status(e: AppError, method: &str) -> Status {
    if e.is_server_fault() {
        tracing::error!(method, error = %error_chain(&e), "gRPC call failed");
    } else {
        tracing::info!(method, error = %e, "gRPC call refused");
    }
    Status::new(code(&e), e.public_message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_class_has_the_protocols_code() {
        let cases = [
            (AppError::BadRequest("x".into()), Code::InvalidArgument),
            (AppError::InvalidImage("x".into()), Code::InvalidArgument),
            (AppError::NotFound("x".into()), Code::NotFound),
            (
                AppError::PayloadTooLarge("x".into()),
                Code::ResourceExhausted,
            ),
            (AppError::Overloaded("x".into()), Code::Unavailable),
            (AppError::NotReady("x".into()), Code::Unavailable),
            (AppError::Unauthorized, Code::Unauthenticated),
            (AppError::internal("x", "secret detail"), Code::Internal),
        ];
        for (e, want) in cases {
            let s = status(e, "test");
            assert_eq!(s.code(), want);
            assert!(!s.message().contains("secret"), "{}", s.message());
        }
    }
}
