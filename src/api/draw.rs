//! Segment a photo and draw the result: the step `/v1/render` (an image answer) and
//! `/segmentfrontend` (an HTML page around it) share. Drawing itself is `crate::render`;
//! this module picks the encoding and runs the drawing inside the pipeline's bounded stage,
//! against the request's memory reservation.

use super::params::{Extra, Params};
use super::reply::ReservedWriter;
use super::upload::{ImageUpload, Source};
use crate::budget::Reservation;
use crate::error::AppError;
use crate::options::MaskFormat;
use crate::pipeline::{Pipeline, PipelineError, Segmentation, Wants};
use crate::render::{self, Encoding};

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
pub struct Rendered {
    /// The detections (the photo itself is gone once drawn).
    pub seg: Segmentation,
    /// The encoded picture.
    pub bytes: Vec<u8>,
    /// Its encoding.
    pub encoding: Encoding,
    /// Bytes still held for `bytes` (and whatever the caller builds from them).
    pub reservation: Reservation,
}

/// Segments the upload with the query's options and model, and draws the result in
/// `encoding`.
pub async fn segment_and_draw<E: Extra, S: Source>(
    params: Params<E>,
    upload: ImageUpload<S>,
    pipeline: &Pipeline,
    encoding: Encoding,
) -> Result<Rendered, AppError> {
    let (engine, options) = (&params.engine, params.options);
    let wants = Wants::boxes_or_masks(options.masks == MaskFormat::Rle).on_photo();
    let req = upload.request(wants).options(&options);
    let names = engine.info().names.clone();
    let done = pipeline
        .segment(engine, req, move |mut seg, res| {
            let photo = seg
                .image
                .take()
                .expect("the route wants the photo, so the pipeline hands it over");
            let (w, h) = photo.dimensions();
            let drawn = render::render(photo, &seg.detections, &names);
            // The encoder writes into reserved memory as it goes (a picture that does not
            // compress is refused when the budget is spent, not allocated past it).
            let advice = "send a smaller image, or ask POST /v1/segment for the detections";
            let before = res.held();
            let mut out = ReservedWriter::new(Vec::new(), res);
            let encoded = render::encode_into(&drawn, encoding, &mut out);
            let ReservedWriter {
                mut buf, refused, ..
            } = out;
            if let Some(error) = refused {
                return Err(PipelineError::Budget(
                    error.refusing(format!("drawing this {w}x{h} photo"), advice),
                ));
            }
            encoded.map_err(|e| PipelineError::Task(e.to_string()))?;
            drop(drawn);
            buf.shrink_to_fit();
            // The photo is gone and the encoded bytes take what they take.
            let photo_bytes = u64::from(w) * u64::from(h) * 3;
            res.shrink_to(before.saturating_sub(photo_bytes) + buf.capacity() as u64);
            let bytes = buf;
            Ok((seg, bytes))
        })
        .await?;
    let (seg, bytes) = done.value;
    Ok(Rendered {
        seg,
        bytes,
        encoding,
        reservation: done.reservation,
    })
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
}
