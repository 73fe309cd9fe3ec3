//! Gets the image bytes out of a request: a multipart form with the file field `image`
//! (PixelLib clients, browsers) or a raw body with an `image/*` type. Enforces the body
//! size limit and the receive timeout while reading; nothing is written to disk.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::error::AppError;

/// The multipart field holding the photo (PixelLib's name).
pub const FIELD: &str = "image";

/// Bounds on a multipart form besides its total size (`--max-form-parts`,
/// `--max-form-field-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    /// Most parts a form may have; PixelLib sends one, browsers a handful.
    pub max_parts: usize,
    /// Largest non-image field; such fields are read (to reach the next part) and dropped.
    pub max_field_bytes: u64,
}

impl Default for FormLimits {
    fn default() -> Self {
        FormLimits {
            max_parts: 16,
            max_field_bytes: 64 * 1024,
        }
    }
}

/// Where an upload may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only multipart/form-data (PixelLib routes).
    MultipartOnly,
    /// Multipart or a raw `image/*` (or `application/octet-stream`) body.
    MultipartOrRaw,
}

fn too_large(limit: usize) -> AppError {
    AppError::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes"))
}

/// Reads the photo from the request under `limit` bytes and `timeout`.
pub async fn read_image(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    form: FormLimits,
    accept: Accept,
) -> Result<Bytes, AppError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large(limit));
        }
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime: mime::Mime = ctype.parse().map_err(|_| {
        AppError::UnsupportedMediaType(format!("content type {ctype:?} is not supported; send multipart/form-data with a field `{FIELD}`"))
    })?;
    let fut = async {
        match (mime.type_().as_str(), mime.subtype().as_str()) {
            ("multipart", "form-data") => {
                let boundary = multer::parse_boundary(ctype).map_err(|_| AppError::BadRequest("multipart body has no boundary".into()))?;
                read_multipart(body, boundary, limit, form).await
            }
            ("image", _) | ("application", "octet-stream") if accept == Accept::MultipartOrRaw => read_raw(body, limit).await,
            _ => Err(AppError::UnsupportedMediaType(match accept {
                Accept::MultipartOnly => format!("content type {ctype:?} is not supported; send multipart/form-data with a field `{FIELD}`"),
                Accept::MultipartOrRaw => format!(
                    "content type {ctype:?} is not supported; send multipart/form-data with a field `{FIELD}`, or the image itself as image/*"
                ),
            })),
        }
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        AppError::RequestTimeout(format!(
            "the request body was not received within {} ms",
            timeout.as_millis()
        ))
    })?
}

async fn read_raw(body: Body, limit: usize) -> Result<Bytes, AppError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large(limit)
        } else {
            AppError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(AppError::BadRequest(
            "the request body is empty; send the image bytes".into(),
        ));
    }
    Ok(bytes)
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

async fn read_multipart(
    body: Body,
    boundary: String,
    limit: usize,
    form: FormLimits,
) -> Result<Bytes, AppError> {
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit as u64)
            .per_field(limit as u64),
    );
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut image: Option<Bytes> = None;
    let mut parts = 0usize;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        parts += 1;
        if parts > form.max_parts {
            return Err(AppError::BadRequest(format!(
                "the form has more than {} parts",
                form.max_parts
            )));
        }
        if field.name() == Some(FIELD) {
            if image.is_some() {
                return Err(AppError::BadRequest(format!(
                    "the form has more than one `{FIELD}` field; send exactly one"
                )));
            }
            image = Some(field.bytes().await.map_err(|e| multipart_error(e, limit))?);
        } else {
            // Other fields are read (to reach the next part) but bounded and dropped.
            let mut field = field;
            let mut seen = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                seen += chunk.len() as u64;
                if seen > form.max_field_bytes {
                    return Err(AppError::PayloadTooLarge(format!(
                        "a form field exceeds {} bytes",
                        form.max_field_bytes
                    )));
                }
            }
        }
    }
    match image {
        None => Err(AppError::BadRequest(format!(
            "the form has no `{FIELD}` file field"
        ))),
        Some(b) if b.is_empty() => Err(AppError::BadRequest(format!(
            "the `{FIELD}` field is empty"
        ))),
        Some(b) => Ok(b),
    }
}

fn multipart_error(e: multer::Error, limit: usize) -> AppError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large(limit)
        }
        multer::Error::StreamReadFailed(inner) if is_length_limit(inner.as_ref()) => {
            too_large(limit)
        }
        other => AppError::BadRequest(format!("malformed multipart body: {other}")),
    }
}
