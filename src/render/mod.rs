//! Draws a segmentation onto its photo: each mask blended at 50% in its class colour, the
//! box outline, and a `person 0.87` label; then encodes the result as PNG or JPEG.
//! Pure functions over pixels: no HTTP, no I/O, no model code (detections come in ready).

pub mod edit;
mod mask_png;
mod text;

pub use mask_png::{mask_png, png_bound, png_scratch_bytes};

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::engine::Detection;

/// Ultralytics' default palette (`ultralytics.utils.plotting.Colors`), indexed by class id,
/// so our pictures colour classes the way people who know YOLO expect. `static/app.js`
/// keeps a copy for the table swatches.
const PALETTE: [[u8; 3]; 20] = [
    [0x04, 0x2A, 0xFF],
    [0x0B, 0xDB, 0xEB],
    [0xF3, 0xF3, 0xF3],
    [0x00, 0xDF, 0xB7],
    [0x11, 0x1F, 0x68],
    [0xFF, 0x6F, 0xDD],
    [0xFF, 0x44, 0x4F],
    [0xCC, 0xED, 0x00],
    [0x00, 0xF3, 0x44],
    [0xBD, 0x00, 0xFF],
    [0x00, 0xB4, 0xFF],
    [0xDD, 0x00, 0xBA],
    [0x00, 0xFF, 0xFF],
    [0x26, 0xC0, 0x00],
    [0x01, 0xFF, 0xB3],
    [0x7D, 0x24, 0xFF],
    [0x7B, 0x00, 0x68],
    [0xFF, 0x1B, 0x6C],
    [0xFC, 0x6D, 0x2F],
    [0xA2, 0xFF, 0x0B],
];

/// The stable colour of a class: the same id always gets the same colour.
pub fn class_colour(class_id: usize) -> [u8; 3] {
    PALETTE[class_id % PALETTE.len()]
}

/// An axis-aligned pixel rectangle, `x..x+w` by `y..y+h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// Whether pixel (px, py) lies inside.
    pub fn contains(&self, px: u32, py: u32) -> bool {
        px >= self.x && py >= self.y && px < self.x + self.w && py < self.y + self.h
    }
}

/// Box line width in pixels for a `w` x `h` photo (Ultralytics' `max(round(sum(shape)/2*0.003), 2)`),
/// so lines look alike on thumbnails and on 12 MP photos.
pub fn line_width(w: u32, h: u32) -> u32 {
    (((w + h) as f32 / 2.0 * 0.003).round() as u32).max(2)
}

/// Label font size in pixels for a given line width.
fn font_px(line_width: u32) -> f32 {
    (line_width as f32 * 9.0).clamp(14.0, 96.0)
}

/// The text drawn for one detection.
pub fn label_text(det: &Detection, names: &[String]) -> String {
    let name = names
        .get(det.class_id)
        .map(String::as_str)
        .unwrap_or("object");
    format!("{name} {:.2}", det.score)
}

/// Where a label for `bbox` goes on a `w` x `h` photo: on the box's top edge, outside the box
/// when there is room above, inside it otherwise, and shifted left/up so it stays inside the
/// photo (cropped only if the photo is smaller than the label itself).
pub fn label_rect(w: u32, h: u32, bbox: [f32; 4], text: &str) -> Rect {
    let lw = line_width(w, h);
    let m = text::measure(text, font_px(lw));
    let pad = (font_px(lw) * 0.2).ceil() as u32;
    let lw_box = (m.width.ceil() as u32 + 2 * pad).min(w);
    let lh_box = (m.height.ceil() as u32 + pad).min(h);
    let x1 = bbox[0].max(0.0).round() as u32;
    let y1 = bbox[1].max(0.0).round() as u32;
    let x = x1.min(w - lw_box);
    let y = if y1 >= lh_box { y1 - lh_box } else { y1 }.min(h - lh_box);
    Rect {
        x,
        y,
        w: lw_box,
        h: lh_box,
    }
}

/// The integer pixel rectangle a box outline covers on a `w` x `h` photo, or `None` when the
/// box lies entirely outside it.
pub fn box_rect(w: u32, h: u32, bbox: [f32; 4]) -> Option<Rect> {
    let clamp = |v: f32, hi: u32| (v.round().max(0.0) as u32).min(hi);
    let (x1, y1) = (clamp(bbox[0], w), clamp(bbox[1], h));
    let (x2, y2) = (clamp(bbox[2], w), clamp(bbox[3], h));
    (x2 > x1 && y2 > y1).then_some(Rect {
        x: x1,
        y: y1,
        w: x2 - x1,
        h: y2 - y1,
    })
}

/// Draws every detection onto `img` (which must be the upright photo the
/// detections refer to). Lower scores are drawn first, so the most confident instance ends
/// on top where instances overlap; labels go last so no mask covers them.
pub fn render(mut img: RgbImage, detections: &[Detection], names: &[String]) -> RgbImage {
    let (w, h) = img.dimensions();
    let lw = line_width(w, h);
    let mut order: Vec<&Detection> = detections.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    for det in &order {
        if let Some(mask) = &det.mask {
            blend_mask(&mut img, mask, class_colour(det.class_id));
        }
    }
    for det in &order {
        if let Some(r) = box_rect(w, h, det.bbox) {
            outline(&mut img, r, lw, class_colour(det.class_id));
        }
    }
    for det in &order {
        if box_rect(w, h, det.bbox).is_none() {
            continue;
        }
        let text = label_text(det, names);
        let r = label_rect(w, h, det.bbox, &text);
        let bg = class_colour(det.class_id);
        fill(&mut img, r, bg);
        let pad = (font_px(lw) * 0.2).ceil();
        text::draw(
            &mut img,
            &text,
            r.x as f32 + pad,
            r.y as f32 + pad / 2.0,
            font_px(lw),
            text_colour(bg),
        );
    }
    img
}

/// Black on light backgrounds, white on dark ones (Rec. 601 luma).
fn text_colour(bg: [u8; 3]) -> [u8; 3] {
    let luma = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    if luma > 150.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

fn blend_mask(img: &mut RgbImage, mask: &crate::mask::BoxMask, colour: [u8; 3]) {
    let (w, h) = img.dimensions();
    for my in 0..mask.h {
        let y = mask.y + my;
        if y >= h {
            break;
        }
        for mx in 0..mask.w {
            let x = mask.x + mx;
            if x >= w {
                break;
            }
            if mask.bits[(my * mask.w + mx) as usize] == 0 {
                continue;
            }
            let p = img.get_pixel_mut(x, y);
            for (dst, src) in p.0.iter_mut().zip(colour) {
                // Exact 50/50 blend, rounding halves up.
                *dst = (*dst as u16 + src as u16).div_ceil(2) as u8;
            }
        }
    }
}

fn fill(img: &mut RgbImage, r: Rect, colour: [u8; 3]) {
    let (w, h) = img.dimensions();
    for y in r.y..(r.y + r.h).min(h) {
        for x in r.x..(r.x + r.w).min(w) {
            img.put_pixel(x, y, image::Rgb(colour));
        }
    }
}

/// A `t`-pixel frame drawn inward from the edges of `r`, so it never leaves the box.
fn outline(img: &mut RgbImage, r: Rect, t: u32, colour: [u8; 3]) {
    let tw = t.min(r.w);
    let th = t.min(r.h);
    fill(img, Rect { h: th, ..r }, colour);
    fill(
        img,
        Rect {
            y: r.y + r.h - th,
            h: th,
            ..r
        },
        colour,
    );
    fill(img, Rect { w: tw, ..r }, colour);
    fill(
        img,
        Rect {
            x: r.x + r.w - tw,
            w: tw,
            ..r
        },
        colour,
    );
}

/// Output encodings of a rendered image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lossless; larger and slower to encode.
    Png,
    /// Quality 90: small and fast, good for photos.
    Jpeg,
}

impl Encoding {
    /// The MIME type of this encoding.
    pub fn mime(self) -> &'static str {
        match self {
            Encoding::Png => "image/png",
            Encoding::Jpeg => "image/jpeg",
        }
    }
}

/// Encoding failed (only on an encoder bug or an impossible size).
#[derive(Debug, thiserror::Error)]
#[error("could not encode the rendered image: {0}")]
pub struct EncodeError(#[from] image::ImageError);

/// Encodes `img` in memory.
/// The most bytes [`encode`] can produce for a `w` x `h` photo (incompressible pixels: PNG
/// stores them with a filter byte a row and deflate's framing; JPEG at quality 90 stays
/// well under 3 bytes a pixel). [`encode`] allocates this up front, so the memory it takes
/// is known before it starts.
pub fn encoded_bound(w: u32, h: u32) -> u64 {
    let raw = u64::from(w) * u64::from(h) * 3 + u64::from(h);
    raw + raw / 1000 + (64 << 10)
}

/// Encodes the drawn photo.
pub fn encode(img: &RgbImage, enc: Encoding) -> Result<Vec<u8>, EncodeError> {
    let (w, h) = img.dimensions();
    let mut out = Vec::with_capacity(encoded_bound(w, h) as usize);
    encode_into(img, enc, &mut out)?;
    Ok(out)
}

/// Encodes the drawn photo into `out` as it goes: neither encoder holds a whole-image
/// buffer of its own (the PNG one compresses row by row through the png crate's stream
/// writer; `image`'s PNG encoder would first deflate the whole picture into a vector of its
/// own, a second photo-sized buffer when the picture does not compress), so what `out`
/// holds is what encoding costs.
pub fn encode_into(
    img: &RgbImage,
    enc: Encoding,
    out: impl std::io::Write,
) -> Result<(), EncodeError> {
    let (w, h) = img.dimensions();
    match enc {
        // Fast compression: the bytes only travel to a browser; saving ~10% is not worth
        // several times the encode time on a 1 MP overlay.
        Encoding::Png => encode_png_into(img.as_raw(), w, h, png::ColorType::Rgb, out)?,
        Encoding::Jpeg => JpegEncoder::new_with_quality(out, 90).write_image(
            img.as_raw(),
            w,
            h,
            ExtendedColorType::Rgb8,
        )?,
    }
    Ok(())
}

/// Encodes 8-bit pixels of `color` (RGB, RGBA or grey) as PNG into `out`, row by row
/// through the png crate's stream writer (see [`encode_into`]).
pub fn encode_png_into(
    raw: &[u8],
    w: u32,
    h: u32,
    color: png::ColorType,
    out: impl std::io::Write,
) -> Result<(), EncodeError> {
    let mut e = png::Encoder::new(out, w, h);
    e.set_color(color);
    e.set_depth(png::BitDepth::Eight);
    e.set_compression(png::Compression::Fast);
    e.set_filter(png::Filter::Adaptive);
    let mut header = e.write_header().map_err(png_error)?;
    let mut stream = header.stream_writer().map_err(png_error)?;
    std::io::Write::write_all(&mut stream, raw).map_err(|e| EncodeError(e.into()))?;
    stream.finish().map_err(png_error)?;
    Ok(())
}

fn png_error(e: png::EncodingError) -> EncodeError {
    let e = match e {
        png::EncodingError::IoError(io) => image::ImageError::IoError(io),
        other => image::ImageError::Encoding(image::error::EncodingError::new(
            image::error::ImageFormatHint::Exact(image::ImageFormat::Png),
            other,
        )),
    };
    EncodeError(e)
}

#[cfg(test)]
mod tests;
