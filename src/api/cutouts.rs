//! `POST /v1/cutouts`, PixelLib's `extract_segmented_objects`: each detected object as an
//! RGBA PNG of its mask's rectangle, with the mask as alpha, in JSON beside its class, score
//! and place. The pixel work is `render::edit::cutout`; the objects' bytes are held in the
//! memory budget as they are made.

use axum::extract::State;
use axum::response::Response;
use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::edit::feather;
use super::params::{Extra, Params};
use super::reply::{self, ReservedWriter};
use super::upload::ImageUpload;
use super::AppState;
use crate::error::AppError;
use crate::pipeline::{PipelineError, Wants};
use crate::render::{self, edit};

/// `/v1/cutouts`' own query key.
pub struct CutoutExtra;
impl Extra for CutoutExtra {
    const KEYS: &'static [&'static str] = &["feather"];
}

/// One object of `/v1/cutouts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cutout {
    /// Class id.
    pub class_id: usize,
    /// Class name.
    pub class_name: String,
    /// Score in 0..1.
    pub score: f32,
    /// x1, y1, x2, y2 of the detection in photo pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Where the PNG sits in the photo: x, y, width, height in pixels.
    pub rect: [u32; 4],
    /// The object as an RGBA PNG (base64): the photo's pixels inside `rect`, with the mask
    /// as alpha.
    pub png: String,
}

/// `/v1/cutouts` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CutoutsResponse {
    /// Model used.
    pub model: String,
    /// Upright photo size.
    pub image: crate::schema::ImageSize,
    /// One entry per detected object (with a mask), best score first.
    pub objects: Vec<Cutout>,
}

/// `POST /v1/cutouts`: each detected object cut out of the photo as an RGBA PNG.
#[utoipa::path(post, path = "/v1/cutouts", tag = "segserve",
    params(super::openapi::FilterQuery,
        ("feather" = Option<u32>, Query, description = "Soften each cutout's edge over this many pixels, 0 (default) to 16"),
    ),
    request_body(content(
        (super::handlers::ImageForm = "multipart/form-data"),
        (Vec<u8> = "image/*"),
        (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The objects as base64 RGBA PNGs with their place in the photo", body = CutoutsResponse),
        super::openapi::UploadErrors))]
pub async fn cutouts(
    State(s): State<AppState>,
    params: Params<CutoutExtra>,
    upload: ImageUpload,
) -> Result<Response, AppError> {
    let feather = feather(&params.extra)?;
    let req = upload.request(Wants::MasksOnPhoto).options(&params.options);
    let e = params.engine.clone();
    let done = s.pipeline.segment(&params.engine, req, move |mut seg, res| {
        let photo = seg
            .image
            .take()
            .expect("the route wants the photo, so the pipeline hands it over");
        let advice = "ask for fewer objects (a higher conf, a lower max_det, classes=) or send a smaller photo";
        let base = res.held();
        let mut objects = Vec::with_capacity(seg.detections.len());
        let mut text = 0u64;
        for d in &seg.detections {
            let Some(m) = d.mask.as_ref().filter(|m| m.w > 0 && m.h > 0) else {
                continue;
            };
            // The cutout and its PNG while it is made, then the base64 text that stays.
            let scratch = edit::cutout_bytes(m);
            res.grow(scratch)
                .map_err(|e| e.refusing("cutting out these objects", advice))?;
            let rgba = edit::cutout(&photo, d, feather).expect("has a mask");
            let mut out = ReservedWriter::new(Vec::new(), res);
            let encoded = render::encode_png_into(rgba.as_raw(), m.w, m.h, png::ColorType::Rgba, &mut out);
            let ReservedWriter { buf, refused, .. } = out;
            if let Some(error) = refused {
                return Err(PipelineError::Budget(error.refusing("cutting out these objects", advice)));
            }
            encoded.map_err(|e| PipelineError::Task(e.to_string()))?;
            drop(rgba);
            let b64 = (buf.len() as u64).div_ceil(3) * 4;
            res.set(base + text + b64 + buf.capacity() as u64)
                .map_err(|e| e.refusing("cutting out these objects", advice))?;
            let png = base64::engine::general_purpose::STANDARD.encode(&buf);
            drop(buf);
            text += png.len() as u64 + 256;
            res.shrink_to(base + text);
            objects.push(Cutout {
                class_id: d.class_id,
                class_name: e.info().names[d.class_id].clone(),
                score: d.score,
                bbox: d.bbox,
                rect: [m.x, m.y, m.w, m.h],
                png,
            });
        }
        let (w, h) = photo.dimensions();
        drop(photo);
        res.shrink_to(base.saturating_sub(u64::from(w) * u64::from(h) * 3) + text);
        let body = CutoutsResponse {
            model: e.info().name.clone(),
            image: crate::schema::ImageSize { width: w, height: h },
            objects,
        };
        let json = reply::to_json(&body, text + 1024, res)?;
        drop(body);
        res.shrink_to(json.capacity() as u64);
        Ok(json)
    })
    .await?;
    Ok(reply::json(done.value, done.reservation))
}
