//! Image input: decode an upload into an upright RGB8 photo under size limits, and
//! letterbox it into the model's input tensor. No HTTP, no model code.

use image::error::LimitErrorKind;
use image::{DynamicImage, ImageFormat, RgbImage};

use crate::budget::{BudgetError, Reservation};

mod headers;
mod jpeg;
mod letterbox;
mod png;
mod probe;
mod stream;

pub use letterbox::{letterbox_into, LetterboxWriter};
pub use probe::{probe, Probe};

/// Why an upload could not become a photo.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Empty body.
    #[error("the image is empty")]
    Empty,
    /// Not a format we decode.
    #[error("unsupported image format{0}; send JPEG, PNG, WebP, BMP, GIF or TIFF")]
    Unsupported(String),
    /// Header or pixel data is broken.
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
    /// Declared dimensions exceed the configured limits.
    #[error("image is {width}x{height}; the limit is {max_side} pixels per side and {max_pixels} pixels in all")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Configured side limit.
        max_side: u32,
        /// Configured pixel-count limit.
        max_pixels: u64,
    },
    /// Zero-sized image.
    #[error("image has no pixels ({0}x{1})")]
    NoPixels(u32, u32),
    /// Decoding would not fit the memory budget (see `crate::budget`).
    #[error("decoding this image {0}")]
    Budget(#[from] BudgetError),
}

/// Limits checked against the header before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest width or height.
    pub max_side: u32,
    /// Largest width x height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_side: 16_384,
            max_pixels: 40_000_000,
        }
    }
}

/// How a JPEG is decoded for the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// Every pixel as OpenCV decodes it (what Ultralytics sees): the default, and the only
    /// mode of routes that draw on the photo.
    #[default]
    Exact,
    /// libjpeg's DCT-domain scaling by 1/2, 1/4 or 1/8 when the photo is at least twice the
    /// size it is resized to (OpenCV's `IMREAD_REDUCED_COLOR_*`): much faster for large
    /// photos, but it moves detections about as much as an antialiased resize does
    /// (docs/performance.md has the table). JPEG only; other photos decode exactly.
    Fast,
}

impl std::str::FromStr for DecodeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(DecodeMode::Exact),
            "fast" => Ok(DecodeMode::Fast),
            other => Err(format!("must be exact or fast, got {other:?}")),
        }
    }
}

impl std::fmt::Display for DecodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeMode::Exact => "exact",
            DecodeMode::Fast => "fast",
        })
    }
}

/// Formats we accept: what phones, browsers and PixelLib clients send.
const ACCEPTED: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Gif,
    ImageFormat::Tiff,
];

fn truncated() -> ImageError {
    ImageError::Corrupt("the JPEG data ends before the image does (truncated upload?)".into())
}

fn too_many_scans(n: u32) -> ImageError {
    ImageError::Corrupt(format!(
        "the JPEG has more than {n} scans (real photos have a dozen at most)"
    ))
}

fn out_of_memory() -> ImageError {
    ImageError::Corrupt(
        "the JPEG needs more decoder memory than any JPEG of its size and components can".into(),
    )
}

fn into_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    }
}

/// Probes and decodes in one step, with no memory budget (tools, tests, benchmarks).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let p = probe(bytes, limits)?;
    let mut unlimited = crate::budget::MemoryBudget::unlimited().reservation();
    p.decode(&mut unlimited)
}

/// Width and height from a PNG's IHDR, which the format requires to come first.
fn png_declared_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let ihdr = bytes.strip_prefix(b"\x89PNG\r\n\x1a\n")?.get(4..16)?;
    let (kind, dims) = ihdr.split_at(4);
    (kind == b"IHDR").then(|| {
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&dims[..4]), be(&dims[4..]))
    })
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::NoPixels(width, height));
    }
    if width > limits.max_side
        || height > limits.max_side
        || width as u64 * height as u64 > limits.max_pixels
    {
        return Err(ImageError::TooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

fn map_decode_error(e: image::ImageError, limits: &DecodeLimits) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported(format!(" ({u})")),
        // Only the allocation caps can say this (we set no size limits on the decoders):
        // a decoder wanted more than its header let us reserve.
        image::ImageError::Limits(l) if matches!(l.kind(), LimitErrorKind::InsufficientMemory) => {
            ImageError::Corrupt("decoding it needs more memory than its header declares".into())
        }
        image::ImageError::Limits(_) => ImageError::TooLarge {
            width: 0,
            height: 0,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        },
        other => ImageError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod png_tests;
#[cfg(test)]
mod tests;
