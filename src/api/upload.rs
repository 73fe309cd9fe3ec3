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

use super::body::{self, BodyLimits, Collector, Feed};
use super::server::Peer;
use super::AppState;
use crate::budget::{MemoryBudget, Reservation};
use crate::config::FormLimits;
use crate::error::AppError;
use crate::pipeline::{SegmentRequest, Wants};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The multipart field holding the photo (PixelLib's name).
pub const FIELD: &str = "image";

/// Where a route accepts the photo from.
pub trait Source: Send + Sync + 'static {
    /// Whether a raw `image/*` (or `application/octet-stream`) body is accepted besides a form.
    const RAW: bool;
    /// A second file field the form may carry (e.g. a background picture).
    const SECOND: Option<&'static str> = None;
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

/// A form, or the image itself as the body; the form may also carry the file field
/// `background` (`/v1/background`'s picture to put behind the objects).
pub struct WithBackground;
impl Source for WithBackground {
    const RAW: bool = true;
    const SECOND: Option<&'static str> = Some("background");
}

/// The uploaded photo's bytes, and the reservation that holds them.
pub struct ImageUpload<S = FormOrRaw> {
    /// The encoded image, as sent.
    pub bytes: Bytes,
    /// The route's second file ([`Source::SECOND`]), when the form has it.
    pub second: Option<Bytes>,
    /// The request's memory reservation; the pipeline grows it from here.
    pub reservation: Reservation,
    /// The place in the model's queue taken before the body was read (passed on by
    /// [`ImageUpload::request`]).
    pub admission: Option<crate::engine::Admission>,
    _source: PhantomData<S>,
}

impl<S> ImageUpload<S> {
    /// The pipeline's request for this photo, with its reservation and queue place (a
    /// route's second file, if it wants it, is taken out first).
    pub fn request(self, wants: Wants) -> SegmentRequest {
        SegmentRequest::new(self.bytes, self.reservation, wants).admitted(self.admission)
    }
}

impl<S: Source> FromRequest<AppState> for ImageUpload<S> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let (parts, body) = req.into_parts();
        // Refused from the headers when the model's queue stays full for a moment: the body
        // is then drained (or the connection closed), never parsed, so refusing costs next to
        // nothing, and clients that retry at once cannot spin on refusals.
        let pairs = super::params::query_pairs(parts.uri.query())?;
        let admission = state
            .engine(crate::options::model_param(&pairs))?
            .admit_within(crate::engine::ROOM_HOLD)
            .await?;
        let mut reservation = state.budget.reservation();
        let from = Sender {
            budget: &state.budget,
            client: Peer::ip(&parts.extensions),
        };
        let Files { image, second } = read_files(
            &parts.headers,
            body,
            state.body_limits(),
            state.config.form,
            (S::RAW, S::SECOND),
            &mut reservation,
            from,
        )
        .await?;
        Ok(ImageUpload {
            bytes: image,
            second,
            reservation,
            admission,
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

/// Who is sending, for the budget's shares.
#[derive(Clone, Copy)]
pub struct Sender<'a> {
    /// The budget the body is held against.
    pub budget: &'a Arc<MemoryBudget>,
    /// The client's address (its share of bodies still arriving).
    pub client: Option<IpAddr>,
}

/// Reads the photo of a request with `headers` from `body`: a multipart form's `image`
/// field or (with `raw`) the body itself, held against `reservation` as it arrives.
/// Routes take [`ImageUpload`] instead; this is public for the fuzz target `upload`
/// (`fuzz/`), which drives it without a server.
pub async fn read_image(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    form: FormLimits,
    raw: bool,
    reservation: &mut Reservation,
    from: Sender<'_>,
) -> Result<Bytes, AppError> {
    let files = read_files(headers, body, limits, form, (raw, None), reservation, from).await?;
    Ok(files.image)
}

/// The files of an upload.
struct Files {
    image: Bytes,
    second: Option<Bytes>,
}

async fn read_files(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    form: FormLimits,
    (raw, second): (bool, Option<&'static str>),
    reservation: &mut Reservation,
    from: Sender<'_>,
) -> Result<Files, AppError> {
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
                (limits, declared),
                (form, second),
                reservation,
                from,
            );
            body::within(limits.timeout, read).await?
        }
        ("image", _) | ("application", "octet-stream") if raw => Files {
            image: body::read_limited(body, headers, limits, reservation, from.budget, from.client)
                .await?,
            second: None,
        },
        _ => return Err(unsupported(ctype, raw)),
    };
    if bytes.image.is_empty() {
        return Err(AppError::BadRequest(format!(
            "the `{FIELD}` is empty; send the image bytes"
        )));
    }
    if bytes.second.as_ref().is_some_and(Bytes::is_empty) {
        return Err(AppError::BadRequest(format!(
            "the `{}` file is empty; send its bytes or leave the field out",
            second.unwrap_or_default()
        )));
    }
    Ok(bytes)
}

/// A file part that is not named `image`: used only when it is the form's one file.
struct OtherFile {
    name: String,
    bytes: Option<Bytes>,
}

/// Most bytes of headers one form part may have (a file part's are ~150).
const MAX_PART_HEADER_BYTES: usize = 8 << 10;

/// Reads the form's `image` (and `second_field`) within the body's `limits` and declared
/// length and the `form` limits.
async fn read_multipart(
    body: Body,
    boundary: String,
    (limits, declared): (BodyLimits, Option<u64>),
    (form, second_field): (FormLimits, Option<&'static str>),
    reservation: &mut Reservation,
    from: Sender<'_>,
) -> Result<Files, AppError> {
    let limit = limits.max_bytes;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit as u64)
            .per_field(limit as u64),
    );
    // The parser's own buffer (preamble, part headers, read-ahead) is reserved as it is fed;
    // the photo is collected into the request's reservation below.
    let (feed, taken) = Feed::new(
        body,
        limits,
        from.budget.reservation(),
        from.budget.receiving(from.client),
        &boundary,
    );
    let mut mp = multer::Multipart::with_constraints(feed.into_stream(), boundary, constraints);
    let take = Take {
        taken,
        from,
        limit,
        declared,
    };
    let mut image: Option<Bytes> = None;
    let mut second: Option<Bytes> = None;
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
        let header_bytes: usize = field
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > MAX_PART_HEADER_BYTES {
            return Err(AppError::BadRequest(format!(
                "a form part has {header_bytes} bytes of headers; the limit is {MAX_PART_HEADER_BYTES}"
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
            image = Some(take.collect(&mut field, reservation).await?);
        } else if second_field == Some(name.as_str()) {
            if second.is_some() {
                return Err(AppError::BadRequest(format!(
                    "the form has more than one `{name}` field; send at most one"
                )));
            }
            second = Some(take.collect(&mut field, reservation).await?);
        } else if is_file && image.is_none() && others.is_empty() {
            // Kept in case it is the only file (FastAPI-style clients send `file`).
            let bytes = take.collect(&mut field, reservation).await?;
            others.push(OtherFile {
                name,
                bytes: Some(bytes),
            });
        } else if is_file {
            // Another file: only its name matters, for the error.
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                take.skipped(chunk.len());
            }
            others.push(OtherFile { name, bytes: None });
        } else {
            // Other fields are read (to reach the next part) but bounded and dropped.
            let mut seen = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                take.skipped(chunk.len());
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
    if let Some(image) = image {
        return Ok(Files { image, second });
    }
    match others.as_mut_slice() {
        [one] => Ok(Files {
            image: one.bytes.take().expect("the first other file is kept"),
            second,
        }),
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

/// Takes field data out of the parser, telling the feed what no longer sits in its buffer.
struct Take<'a> {
    taken: Arc<AtomicU64>,
    from: Sender<'a>,
    limit: usize,
    declared: Option<u64>,
}

impl Take<'_> {
    fn skipped(&self, n: usize) {
        self.taken.fetch_add(n as u64, Ordering::Release);
    }

    async fn collect(
        &self,
        field: &mut multer::Field<'_>,
        reservation: &mut Reservation,
    ) -> Result<Bytes, AppError> {
        let mut c = Collector::new(
            self.limit,
            self.declared,
            reservation,
            self.from.budget,
            self.from.client,
        );
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(e, self.limit))?
        {
            c.push(&chunk)?;
            self.skipped(chunk.len());
        }
        Ok(c.finish())
    }
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
