//! The photo of a request, as an extractor: [`ImageUpload`] reads a multipart form with the
//! file field `image` (PixelLib clients, browsers) or, where the route allows it, a raw
//! `image/*` body. Every route that takes a photo uses it, so the body limit, the receive
//! timeout, the form limits and the memory reservation are applied in one place. Nothing is
//! written to disk.

use std::marker::PhantomData;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures_util::TryStreamExt;

use super::body::{self, BodyLimits, Collector};
use super::AppState;
use crate::budget::Reservation;
use crate::config::FormLimits;
use crate::error::AppError;

/// The multipart field holding the photo (PixelLib's name).
pub const FIELD: &str = "image";

/// Where a route accepts the photo from.
pub trait Source: Send + Sync + 'static {
    /// Whether a raw `image/*` (or `application/octet-stream`) body is accepted besides a form.
    const RAW: bool;
}

/// Only `multipart/form-data` (the PixelLib routes).
pub struct FormOnly;
impl Source for FormOnly {
    const RAW: bool = false;
}

/// A form, or the image itself as the body.
pub struct FormOrRaw;
impl Source for FormOrRaw {
    const RAW: bool = true;
}

/// The uploaded photo's bytes, and the reservation that holds them.
pub struct ImageUpload<S = FormOrRaw> {
    /// The encoded image, as sent.
    pub bytes: Bytes,
    /// The request's memory reservation; the pipeline grows it from here.
    pub reservation: Reservation,
    _source: PhantomData<S>,
}

impl<S: Source> FromRequest<AppState> for ImageUpload<S> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let mut reservation = state.budget.reservation();
        let (parts, body) = req.into_parts();
        let bytes = read_image(
            &parts.headers,
            body,
            state.body_limits(),
            state.config.form,
            S::RAW,
            &mut reservation,
        )
        .await?;
        Ok(ImageUpload {
            bytes,
            reservation,
            _source: PhantomData,
        })
    }
}

fn unsupported(ctype: &str, raw: bool) -> AppError {
    AppError::UnsupportedMediaType(if raw {
        format!("content type {ctype:?} is not supported; send multipart/form-data with a field `{FIELD}`, or the image itself as image/*")
    } else {
        format!("content type {ctype:?} is not supported; send multipart/form-data with a field `{FIELD}`")
    })
}

async fn read_image(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    form: FormLimits,
    raw: bool,
    reservation: &mut Reservation,
) -> Result<Bytes, AppError> {
    let declared = body::declared_length(headers, limits.max_bytes)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime: mime::Mime = ctype.parse().map_err(|_| unsupported(ctype, raw))?;
    let bytes = match (mime.type_().as_str(), mime.subtype().as_str()) {
        ("multipart", "form-data") => {
            let boundary = multer::parse_boundary(ctype)
                .map_err(|_| AppError::BadRequest("multipart body has no boundary".into()))?;
            let read = read_multipart(
                body,
                boundary,
                limits.max_bytes,
                declared,
                form,
                reservation,
            );
            body::within(limits.timeout, read).await?
        }
        ("image", _) | ("application", "octet-stream") if raw => {
            body::read_limited(body, headers, limits, reservation).await?
        }
        _ => return Err(unsupported(ctype, raw)),
    };
    if bytes.is_empty() {
        return Err(AppError::BadRequest(format!(
            "the `{FIELD}` is empty; send the image bytes"
        )));
    }
    Ok(bytes)
}

/// A file part that is not named `image`: used only when it is the form's one file.
struct OtherFile {
    name: String,
    bytes: Option<Bytes>,
}

async fn read_multipart(
    body: Body,
    boundary: String,
    limit: usize,
    declared: Option<u64>,
    form: FormLimits,
    reservation: &mut Reservation,
) -> Result<Bytes, AppError> {
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit as u64)
            .per_field(limit as u64),
    );
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut image: Option<Bytes> = None;
    let mut others: Vec<OtherFile> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut parts = 0usize;
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        parts += 1;
        if parts > form.max_parts {
            return Err(AppError::BadRequest(format!(
                "the form has more than {} parts",
                form.max_parts
            )));
        }
        let name = field.name().unwrap_or("").to_string();
        let is_file = field.file_name().is_some();
        if name == FIELD {
            if image.is_some() {
                return Err(AppError::BadRequest(format!(
                    "the form has more than one `{FIELD}` field; send exactly one"
                )));
            }
            image = Some(collect(&mut field, limit, declared, reservation).await?);
        } else if is_file && image.is_none() && others.is_empty() {
            // Kept in case it is the only file (FastAPI-style clients send `file`).
            let bytes = collect(&mut field, limit, declared, reservation).await?;
            others.push(OtherFile {
                name,
                bytes: Some(bytes),
            });
        } else if is_file {
            // Another file: only its name matters, for the error.
            while field
                .chunk()
                .await
                .map_err(|e| multipart_error(e, limit))?
                .is_some()
            {}
            others.push(OtherFile { name, bytes: None });
        } else {
            // Other fields are read (to reach the next part) but bounded and dropped.
            let mut seen = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                seen += chunk.len() as u64;
                if seen > form.max_field_bytes {
                    return Err(AppError::PayloadTooLarge(format!(
                        "form field `{name}` exceeds {} bytes (only the file field `{FIELD}` may be larger)",
                        form.max_field_bytes
                    )));
                }
            }
            fields.push(name);
        }
    }
    if let Some(b) = image {
        return Ok(b);
    }
    match others.as_mut_slice() {
        [one] => Ok(one.bytes.take().expect("the first other file is kept")),
        [] if fields.is_empty() => Err(AppError::BadRequest(format!(
            "the form is empty; send the photo as the file field `{FIELD}`"
        ))),
        [] => Err(AppError::BadRequest(format!(
            "the form has no file field `{FIELD}` (it has {}); send the photo as the file field `{FIELD}`",
            list(&fields)
        ))),
        many => Err(AppError::BadRequest(format!(
            "the form has no file field `{FIELD}` and {} other files ({}); send one photo as the file field `{FIELD}`",
            many.len(),
            list(&many.iter().map(|o| o.name.clone()).collect::<Vec<_>>())
        ))),
    }
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn collect(
    field: &mut multer::Field<'_>,
    limit: usize,
    declared: Option<u64>,
    reservation: &mut Reservation,
) -> Result<Bytes, AppError> {
    let mut c = Collector::new(limit, declared, reservation)?;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        c.push(&chunk)?;
    }
    Ok(c.finish())
}

fn multipart_error(e: multer::Error, limit: usize) -> AppError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            body::too_large(limit)
        }
        multer::Error::StreamReadFailed(inner) => body::read_error(inner.as_ref(), limit),
        other => AppError::BadRequest(format!("malformed multipart body: {other}")),
    }
}
