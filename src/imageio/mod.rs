//! Image input: decode an upload into an upright RGB8 photo under size limits, and
//! letterbox it into the model's input tensor. No HTTP, no model code.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::budget::{BudgetError, Reservation};

mod headers;
mod jpeg;
mod letterbox;

pub use letterbox::letterbox_into;

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

/// Formats we accept: what phones, browsers and PixelLib clients send.
const ACCEPTED: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Gif,
    ImageFormat::Tiff,
];

/// Decoder state beyond the pixel buffers (Huffman tables, row buffers, zlib windows), as a
/// flat allowance: measured well under this for every format.
const DECODER_OVERHEAD: u64 = 2 << 20;

/// An upload whose header has been read and checked, ready to decode: the dimensions and
/// the memory decoding will take are known before any pixel buffer is allocated.
pub struct Probe<'a> {
    bytes: &'a [u8],
    format: ImageFormat,
    decoder: Box<dyn ImageDecoder + 'a>,
    /// Stored (not yet rotated) size.
    width: u32,
    height: u32,
    orientation: Orientation,
    limits: DecodeLimits,
    /// Bytes of the decoder's native output (`total_bytes()`: size x sample type).
    native_bytes: u64,
    /// Whether that output is already RGB8 (no conversion copy).
    native_rgb8: bool,
    /// Decoder-internal buffers of image size: JPEG coefficient arrays, TIFF's own copy,
    /// WebP planes, a GIF frame that differs from the screen.
    internal_bytes: u64,
}

/// Reads the header of `bytes` (format sniffed from content, never trusted from a name or
/// header) and checks every size it declares against `limits`.
pub fn probe<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Probe<'a>, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let format = reader
        .format()
        .ok_or_else(|| ImageError::Unsupported(String::new()))?;
    if !ACCEPTED.contains(&format) {
        return Err(ImageError::Unsupported(format!(" ({format:?})")));
    }
    if let Some((w, h)) = png_declared_size(bytes) {
        // The png crate reads up to the first IDAT before it reports the size; a bare
        // header declaring 60000x60000 should be "too large", not "corrupt".
        check_dimensions(w, h, limits)?;
    }
    let mut internal_bytes = 0;
    if format == ImageFormat::Gif {
        // The decoder checks the logical screen; the first frame may be larger, and it
        // gets a buffer of its own size.
        if let Some((fw, fh)) = headers::gif_first_frame(bytes) {
            check_dimensions(fw, fh, limits)?;
            internal_bytes = u64::from(fw) * u64::from(fh) * 4;
        }
    }
    let mut reader = reader;
    let mut lim = image::Limits::default();
    // Width/height are checked by us right after the header (clearer errors); the allocation
    // cap is the backstop for decoders that allocate before reporting dimensions.
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(lim);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_decode_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let native_bytes = decoder.total_bytes();
    let native_rgb8 = decoder.color_type() == image::ColorType::Rgb8;
    let pixels = u64::from(width) * u64::from(height);
    internal_bytes += match format {
        ImageFormat::Jpeg => headers::jpeg_coefficient_bytes(bytes).unwrap_or(0),
        // The tiff crate decodes into a buffer of its own, then copies.
        ImageFormat::Tiff => native_bytes.max(pixels * 4),
        // Lossless WebP decodes through 32-bit ARGB, lossy through YUV planes.
        ImageFormat::WebP => pixels * 4,
        _ => 0,
    };
    Ok(Probe {
        bytes,
        format,
        decoder: Box::new(decoder),
        width,
        height,
        orientation,
        limits: *limits,
        native_bytes,
        native_rgb8,
        internal_bytes,
    })
}

impl Probe<'_> {
    /// Upright width (after the EXIF orientation).
    pub fn width(&self) -> u32 {
        if self.swaps_axes() {
            self.height
        } else {
            self.width
        }
    }

    /// Upright height.
    pub fn height(&self) -> u32 {
        if self.swaps_axes() {
            self.width
        } else {
            self.height
        }
    }

    fn swaps_axes(&self) -> bool {
        matches!(
            self.orientation,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Rotate90FlipH
                | Orientation::Rotate270FlipH
        )
    }

    /// Bytes of the decoded upright RGB8 photo.
    pub fn output_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * 3
    }

    /// The most bytes decoding holds at once: the decoder's own buffers and its native
    /// output, then the RGB8 conversion beside it, then (for a quarter turn) the rotated copy
    /// beside the unrotated one. Compressed input not included.
    pub fn peak_bytes(&self) -> u64 {
        let rgb = self.output_bytes();
        let native = if self.format == ImageFormat::Jpeg {
            // libjpeg writes RGB8 straight into the output buffer.
            rgb
        } else {
            self.native_bytes
        };
        let decoding = self.internal_bytes + native;
        let converting = if self.format == ImageFormat::Jpeg || self.native_rgb8 {
            0
        } else {
            native + rgb
        };
        let rotating = if self.swaps_axes() { 2 * rgb } else { 0 };
        decoding.max(converting).max(rotating) + DECODER_OVERHEAD
    }

    /// What decoding takes if libjpeg refuses a JPEG and the `image` crate's decoder tries it
    /// (it holds its own component planes beside the output).
    fn fallback_peak_bytes(&self) -> u64 {
        self.native_bytes * 2 + self.output_bytes() + DECODER_OVERHEAD
    }

    /// Decodes into an upright RGB8 image: EXIF orientation applied, grayscale replicated,
    /// alpha dropped without compositing and 16-bit scaled to 8-bit (what OpenCV's `imdecode`
    /// gives Ultralytics). `budget` must already hold [`Probe::peak_bytes`]; it is grown only
    /// if a JPEG has to take the fallback decoder.
    pub fn decode(self, budget: &mut Reservation) -> Result<RgbImage, ImageError> {
        let turbo = if self.format == ImageFormat::Jpeg {
            jpeg::decode(self.bytes, self.width, self.height)
        } else {
            jpeg::Turbo::Fallback
        };
        let img = match turbo {
            jpeg::Turbo::Rgb(rgb) => {
                let mut img = DynamicImage::ImageRgb8(rgb);
                img.apply_orientation(self.orientation);
                img
            }
            jpeg::Turbo::Truncated => {
                return Err(ImageError::Corrupt(
                    "the JPEG data ends before the image does (truncated upload?)".into(),
                ))
            }
            jpeg::Turbo::TooManyScans(n) => {
                return Err(ImageError::Corrupt(format!(
                    "the JPEG has more than {n} scans (real photos have a dozen at most)"
                )))
            }
            // libjpeg failures fall back too: the `image` crate decodes a few files libjpeg
            // refuses, and reports its own error for the rest.
            jpeg::Turbo::Failed(why) => {
                tracing::debug!(%why, "libjpeg refused the JPEG; trying the image crate");
                budget.ensure(self.fallback_peak_bytes())?;
                self.decode_with_image_crate()?
            }
            jpeg::Turbo::Fallback => {
                if self.format == ImageFormat::Jpeg {
                    budget.ensure(self.fallback_peak_bytes())?;
                }
                self.decode_with_image_crate()?
            }
        };
        Ok(match img {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.into_rgb8(),
        })
    }

    fn decode_with_image_crate(self) -> Result<DynamicImage, ImageError> {
        let (limits, orientation) = (self.limits, self.orientation);
        let img =
            DynamicImage::from_decoder(self.decoder).map_err(|e| map_decode_error(e, &limits))?;
        // Convert before rotating, so a quarter turn copies 3 bytes a pixel, not up to 16.
        let mut img = match img {
            DynamicImage::ImageRgb8(rgb) => DynamicImage::ImageRgb8(rgb),
            other => DynamicImage::ImageRgb8(other.into_rgb8()),
        };
        img.apply_orientation(orientation);
        Ok(img)
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
mod tests {
    use super::*;

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut Cursor::new(&mut v), ImageFormat::Png)
            .unwrap();
        v
    }

    #[test]
    fn decodes_gray_alpha_and_16bit_to_rgb8() {
        let gray = DynamicImage::ImageLumaA8(image::ImageBuffer::from_pixel(
            3,
            2,
            image::LumaA([200u8, 10]),
        ));
        let rgb = decode(&png(&gray), &DecodeLimits::default()).unwrap();
        assert_eq!((rgb.width(), rgb.height()), (3, 2));
        assert_eq!(rgb.get_pixel(1, 1).0, [200, 200, 200]);
        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            2,
            2,
            image::Rgb([65535u16, 0, 32896]),
        ));
        assert_eq!(
            decode(&png(&deep), &DecodeLimits::default())
                .unwrap()
                .get_pixel(0, 0)
                .0,
            [255, 0, 128]
        );
    }

    #[test]
    fn refuses_empty_text_and_oversized() {
        assert!(matches!(
            decode(b"", &DecodeLimits::default()),
            Err(ImageError::Empty)
        ));
        assert!(matches!(
            decode(b"hello world", &DecodeLimits::default()),
            Err(ImageError::Unsupported(_))
        ));
        let img = DynamicImage::ImageRgb8(RgbImage::new(40, 30));
        let small = DecodeLimits {
            max_side: 32,
            max_pixels: 10_000,
        };
        assert!(matches!(
            decode(&png(&img), &small),
            Err(ImageError::TooLarge {
                width: 40,
                height: 30,
                ..
            })
        ));
    }

    /// libjpeg pads a truncated JPEG with grey and only warns; we refuse it.
    #[test]
    fn truncated_jpeg_is_refused_and_the_whole_one_decodes() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([x as u8 * 4, y as u8 * 5, 77])
        }));
        let mut jpg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
            .unwrap();
        let limits = DecodeLimits::default();
        assert_eq!(decode(&jpg, &limits).unwrap().dimensions(), (64, 48));
        let cut = &jpg[..jpg.len() * 2 / 3];
        let err = decode(cut, &limits).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    /// A header declaring 50000x50000 is refused from the header alone (decoding it would
    /// need 7.5 GB).
    #[test]
    fn huge_declared_jpeg_is_refused_before_decoding() {
        let mut jpg = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::new(16, 16))
            .write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
            .unwrap();
        let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        jpg[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]);
        assert!(matches!(
            decode(&jpg, &DecodeLimits::default()),
            Err(ImageError::TooLarge {
                width: 50_000,
                height: 50_000,
                ..
            })
        ));
    }
}
