//! PixelLib's background edits as one route, `POST /v1/background`: the photo with its
//! background made transparent, a colour, grey, blurred or another picture (`tune_bg`'s
//! `change_bg_img`, `color_bg`, `gray_bg`, `blur_bg`). Cut-out objects are `cutouts`. The
//! pixel work is `render::edit`; this module parses the options, reserves what the work will
//! hold, and shapes the answer.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use utoipa::ToSchema;

use super::draw::choose_encoding;
use super::params::{Extra, Params};
use super::reply::{self, ReservedWriter};
use super::upload::{ImageUpload, WithBackground};
use super::AppState;
use crate::budget::Reservation;
use crate::error::AppError;
use crate::imageio::{self, DecodeLimits};
use crate::pipeline::{PipelineError, Wants};
use crate::render::edit::{self, Blur, Edited, Fill};
use crate::render::{self, Encoding};

/// `/v1/background`'s own query keys.
pub struct BackgroundExtra;
impl Extra for BackgroundExtra {
    const KEYS: &'static [&'static str] = &["background", "color", "blur", "feather", "format"];
}

/// Most pixels of edge softening: past this the objects' outlines dissolve.
pub const MAX_FEATHER: u32 = 16;

/// The background asked for; a picture is decoded once the photo is segmented.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Transparent,
    Colour([u8; 3]),
    Gray,
    Blur(Blur),
    Picture,
}

fn bad(msg: String) -> AppError {
    AppError::BadRequest(msg)
}

/// `feather=`: 0 ..= [`MAX_FEATHER`] pixels (default 0).
pub(super) fn feather(extra: &BTreeMap<&'static str, String>) -> Result<u32, AppError> {
    extra.get("feather").map_or(Ok(0), |v| {
        v.parse::<u32>()
            .ok()
            .filter(|f| *f <= MAX_FEATHER)
            .ok_or_else(|| {
                bad(format!(
                    "query parameter `feather` must be a whole number of pixels from 0 to {MAX_FEATHER}, got {v:?}"
                ))
            })
    })
}

/// `color=`: `#rrggbb`, `rrggbb` or `r,g,b` (0..=255 each).
fn colour(text: &str) -> Result<[u8; 3], AppError> {
    let err = || {
        bad(format!(
            "query parameter `color` must be #rrggbb or r,g,b (0-255 each), got {text:?}"
        ))
    };
    if text.contains(',') {
        let parts: Vec<u8> = text
            .split(',')
            .map(|p| p.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|_| err())?;
        return <[u8; 3]>::try_from(parts).map_err(|_| err());
    }
    let hex = text.strip_prefix('#').unwrap_or(text);
    if hex.len() != 6 || !hex.is_ascii() {
        return Err(err());
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| err());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

/// The background edit a request asks for.
#[derive(Debug)]
struct EditSpec {
    want: Want,
    feather: u32,
    encoding: Encoding,
}

impl EditSpec {
    /// From the query's keys, the `Accept` header and whether a background picture was
    /// uploaded (which, without `background=`, means `background=image`).
    fn parse(
        extra: &BTreeMap<&'static str, String>,
        accept: Option<&str>,
        picture: bool,
    ) -> Result<EditSpec, AppError> {
        let kind = extra
            .get("background")
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_else(|| if picture { "image" } else { "transparent" }.into());
        let want = match kind.as_str() {
            "transparent" => Want::Transparent,
            "color" | "colour" => Want::Colour(colour(
                extra.get("color").map_or("#ffffff", String::as_str),
            )?),
            "gray" | "grey" => Want::Gray,
            "blur" => Want::Blur(match extra.get("blur").map(|v| v.to_ascii_lowercase()) {
                None => Blur::Moderate,
                Some(v) => match v.as_str() {
                    "low" => Blur::Low,
                    "moderate" => Blur::Moderate,
                    "extreme" => Blur::Extreme,
                    _ => {
                        return Err(bad(format!(
                            "query parameter `blur` must be low, moderate or extreme, got {v:?}"
                        )))
                    }
                },
            }),
            "image" => Want::Picture,
            other => {
                return Err(bad(format!(
                    "query parameter `background` must be transparent, color, gray, blur or image, got {other:?}"
                )))
            }
        };
        if let Some(c) = extra.get("color") {
            colour(c)?;
        }
        match (&want, picture) {
            (Want::Picture, false) => {
                return Err(bad(
                    "background=image needs the picture as the form's file field `background` (multipart/form-data)".into(),
                ))
            }
            (w, true) if *w != Want::Picture => {
                return Err(bad(format!(
                    "the form has a `background` picture but the query asks for background={kind}; send background=image or leave the picture out"
                )))
            }
            _ => {}
        }
        let format = extra.get("format").map(String::as_str);
        let encoding = if want == Want::Transparent {
            match format.map(str::to_ascii_lowercase).as_deref() {
                None | Some("png") => Encoding::Png,
                Some("jpeg" | "jpg") => {
                    return Err(bad(
                        "a JPEG cannot be transparent: ask format=png, or another background (color, gray, blur, image)".into(),
                    ))
                }
                Some(other) => {
                    return Err(bad(format!(
                        "query parameter `format` must be png or jpeg, got {other:?}"
                    )))
                }
            }
        } else {
            choose_encoding(format, accept)?
        };
        Ok(EditSpec {
            want,
            feather: feather(extra)?,
            encoding,
        })
    }
}

/// `POST /v1/background`: the photo with everything but the detected objects replaced.
#[utoipa::path(post, path = "/v1/background", tag = "segserve",
    params(super::openapi::FilterQuery,
        ("background" = Option<String>, Query, description = "`transparent` (default; PNG with alpha), `color`, `gray`, `blur` or `image` (the form's file field `background`, scaled to the photo; the default when that field is sent)"),
        ("color" = Option<String>, Query, description = "With background=color: `#rrggbb` or `r,g,b` (default #ffffff)"),
        ("blur" = Option<String>, Query, description = "With background=blur: `low`, `moderate` (default) or `extreme`: PixelLib's 21, 39 and 81 pixel box blurs"),
        ("feather" = Option<u32>, Query, description = "Soften the objects' edges over this many pixels, 0 (default) to 16"),
        ("format" = Option<String>, Query, description = "`png` or `jpeg` (not with background=transparent); default PNG when transparent, else from the Accept header, else JPEG"),
    ),
    request_body(content(
        (BackgroundForm = "multipart/form-data"),
        (Vec<u8> = "image/*"),
        (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The edited photo, upright, same size; `X-Detections`: the objects kept", body = Vec<u8>, content_type = "image/png"),
        super::openapi::UploadErrors))]
pub async fn background(
    State(s): State<AppState>,
    params: Params<BackgroundExtra>,
    headers: HeaderMap,
    upload: ImageUpload<WithBackground>,
) -> Result<Response, AppError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let spec = EditSpec::parse(&params.extra, accept, upload.second.is_some())?;
    let limits = *s.pipeline.limits();
    let mut upload = upload;
    let picture = upload.second.take();
    let req = upload.request(Wants::MasksOnPhoto).options(&params.options);
    let encoding = spec.encoding;
    let done = s
        .pipeline
        .segment(&params.engine, req, move |mut seg, res| {
            let photo = seg
                .image
                .take()
                .expect("the route wants the photo, so the pipeline hands it over");
            let (w, h) = photo.dimensions();
            let what = || format!("editing this {w}x{h} photo's background");
            let advice = "send a smaller photo";
            let before = res.held();
            let fill = match spec.want {
                Want::Transparent => Fill::Transparent,
                Want::Colour(c) => Fill::Colour(c),
                Want::Gray => Fill::Gray,
                Want::Blur(b) => Fill::Blur(b),
                Want::Picture => Fill::Picture(scaled_picture(
                    &picture.expect("checked by EditSpec::parse"),
                    (w, h),
                    &limits,
                    res,
                )?),
            };
            let px = u64::from(w) * u64::from(h);
            // The matte, and what the edit allocates beside the photo.
            res.grow(px + edit::edit_bytes(&fill, w, h))
                .map_err(|e| e.refusing(what(), advice))?;
            let alpha = edit::matte(&seg.detections, w, h, spec.feather);
            let edited = edit::edit(photo, &alpha, fill);
            drop(alpha);
            let mut out = ReservedWriter::new(Vec::new(), res);
            let encoded = match &edited {
                Edited::Rgba(img) => {
                    render::encode_png_into(img.as_raw(), w, h, png::ColorType::Rgba, &mut out)
                }
                Edited::Rgb(img) => render::encode_into(img, encoding, &mut out),
            };
            let ReservedWriter {
                mut buf, refused, ..
            } = out;
            if let Some(error) = refused {
                return Err(PipelineError::Budget(error.refusing(what(), advice)));
            }
            encoded.map_err(|e| PipelineError::Task(e.to_string()))?;
            drop(edited);
            buf.shrink_to_fit();
            // The photo, the matte, the edit and the picture are gone; the encoded bytes stay.
            res.shrink_to(before.saturating_sub(3 * px) + buf.capacity() as u64);
            Ok((seg.detections.len(), buf))
        })
        .await?;
    let (kept, bytes) = done.value;
    let mut resp = reply::bytes(bytes, encoding.mime(), done.reservation);
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("x-detections"),
        HeaderValue::from(kept),
    );
    Ok(resp)
}

/// The uploaded background picture, decoded upright and scaled to the photo's `w` x `h`
/// (bilinear, as PixelLib's `cv2.resize`). The decode holds its own share of the
/// reservation until the scaled copy, which `res` keeps holding, is made.
fn scaled_picture(
    bytes: &[u8],
    (w, h): (u32, u32),
    limits: &DecodeLimits,
    res: &mut Reservation,
) -> Result<image::RgbImage, PipelineError> {
    let what = || "decoding the background picture".to_string();
    let advice = "send a smaller background picture";
    let probe = imageio::probe(bytes, limits).map_err(PipelineError::Image)?;
    let mut decoding = res.split_off(0);
    decoding
        .grow(probe.peak_bytes())
        .map_err(|e| e.refusing(what(), advice))?;
    let picture = probe.decode(&mut decoding).map_err(|e| match e {
        imageio::ImageError::Budget(b) => PipelineError::Budget(b.refusing(what(), advice)),
        other => PipelineError::Image(other),
    })?;
    res.grow(u64::from(w) * u64::from(h) * 3)
        .map_err(|e| e.refusing(what(), advice))?;
    let mut scaled = vec![0u8; w as usize * h as usize * 3];
    crate::resize::resize_rgb8(
        picture.as_raw(),
        picture.width() as usize,
        picture.height() as usize,
        &mut scaled,
        w as usize,
        h as usize,
    );
    Ok(image::RgbImage::from_raw(w, h, scaled).expect("sized above"))
}

/// The form `/v1/background` takes (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BackgroundForm {
    /// The photo: JPEG, PNG, WebP, BMP, GIF or TIFF.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// With background=image: the picture to put behind the objects (any size; scaled to
    /// the photo).
    #[schema(value_type = Option<String>, format = Binary)]
    background: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairs: &[(&'static str, &str)], picture: bool) -> Result<EditSpec, u16> {
        let extra = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        EditSpec::parse(&extra, None, picture).map_err(|e| e.status_and_type().0.as_u16())
    }

    #[test]
    fn options_parse_with_pixellib_defaults() {
        let s = spec(&[], false).unwrap();
        assert_eq!(
            (s.want, s.feather, s.encoding),
            (Want::Transparent, 0, Encoding::Png)
        );
        assert_eq!(spec(&[], true).unwrap().want, Want::Picture);
        let s = spec(&[("background", "blur")], false).unwrap();
        assert_eq!(
            (s.want, s.encoding),
            (Want::Blur(Blur::Moderate), Encoding::Jpeg)
        );
        let s = spec(
            &[
                ("background", "blur"),
                ("blur", "EXTREME"),
                ("format", "png"),
            ],
            false,
        );
        assert_eq!(s.unwrap().want, Want::Blur(Blur::Extreme));
        let c = |v: &str| spec(&[("background", "color"), ("color", v)], false).map(|s| s.want);
        assert_eq!(c("#00ff80"), Ok(Want::Colour([0, 255, 128])));
        assert_eq!(c("0, 255,128"), Ok(Want::Colour([0, 255, 128])));
        assert_eq!(
            spec(&[("background", "color")], false).unwrap().want,
            Want::Colour([255; 3])
        );
        assert_eq!(
            spec(&[("background", "grey"), ("feather", "3")], false)
                .unwrap()
                .feather,
            3
        );
    }

    #[test]
    fn bad_options_are_400() {
        for (pairs, picture) in [
            (
                &[("background", "transparent"), ("format", "jpeg")][..],
                false,
            ),
            (&[("background", "sepia")][..], false),
            (&[("background", "image")][..], false),
            (&[("background", "gray")][..], true),
            (&[("background", "blur"), ("blur", "huge")][..], false),
            (&[("background", "color"), ("color", "#12345")][..], false),
            (&[("background", "color"), ("color", "1,2,300")][..], false),
            (&[("background", "color"), ("color", "1,2")][..], false),
            (&[("feather", "17")][..], false),
            (&[("feather", "-1")][..], false),
            (&[("format", "gif"), ("background", "gray")][..], false),
        ] {
            assert_eq!(spec(pairs, picture).unwrap_err(), 400, "{pairs:?}");
        }
    }
}
