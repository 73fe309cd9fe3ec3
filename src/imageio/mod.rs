//! Image input: decode an upload into an upright RGB8 photo under size limits, and
//! letterbox it into the model's input tensor. No HTTP, no model code.

use std::io::Cursor;

use image::codecs::{
    bmp::BmpDecoder, gif::GifDecoder, jpeg::JpegDecoder, png::PngDecoder, tiff::TiffDecoder,
    webp::WebPDecoder,
};
use image::error::LimitErrorKind;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};

use crate::budget::{BudgetError, Reservation};

mod headers;
mod jpeg;
mod letterbox;

pub use letterbox::{letterbox_into, LetterboxWriter};

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

/// Decoder state beyond the pixel buffers (Huffman tables, row buffers, zlib windows), as a
/// flat allowance: measured well under this for every format.
const DECODER_OVERHEAD: u64 = 2 << 20;

/// The png crate's allocation cap, set while reading the header: it counts the chunks the
/// png crate buffers and its output row (at most 16384 x 8 bytes), nothing else. image 0.25
/// cannot change it once the decoder exists (its `PngDecoder::set_limits` keeps the new
/// limits to itself), so it holds for the decode too, where those are still all it counts.
const HEADER_ALLOC: u64 = 4 << 20;

/// An upload whose header has been read and checked, ready to decode: the dimensions and
/// the memory decoding will take are known before any pixel buffer is allocated.
pub struct Probe<'a> {
    bytes: &'a [u8],
    format: ImageFormat,
    /// The `image` crate's decoder, made from the header. None for a JPEG: libjpeg decodes
    /// those, and the `image` crate's JPEG decoder copies the whole upload as it is made,
    /// so it is made only for a JPEG libjpeg hands back.
    decoder: Option<Box<dyn ImageDecoder + 'a>>,
    /// Stored (not yet rotated) size.
    width: u32,
    height: u32,
    orientation: Orientation,
    limits: DecodeLimits,
    /// Bytes of the decoder's native output (`total_bytes()`: size x sample type; RGB8 for
    /// a JPEG).
    native_bytes: u64,
    /// Whether that output is already RGB8 (no conversion copy).
    native_rgb8: bool,
    /// Decoder-internal buffers of image size: libjpeg's coefficient arrays and rows, the
    /// tiff crate's own buffer, WebP planes, a GIF frame that differs from the screen.
    internal_bytes: u64,
    /// JPEG only: what the header says beyond the size.
    jpeg: Option<JpegCost>,
}

/// The parts of a JPEG's header the estimate keeps.
#[derive(Debug, Clone, Copy)]
struct JpegCost {
    /// 4: CMYK or YCCK, which the `image` crate decodes after libjpeg has checked it.
    components: u32,
    /// libjpeg's buffers were every component's coefficients kept at full resolution: the
    /// most a file of this size and component count can make it allocate.
    worst_internal_bytes: u64,
}

/// Reads the header of `bytes` (format sniffed from content, never trusted from a name or
/// header) and checks every size it declares against `limits`. Nothing of image size is
/// allocated: JPEG, PNG, WebP and TIFF headers are read by our own walkers first, and the
/// decoders made here read only headers, with ancillary PNG chunks hidden from them.
pub fn probe<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Probe<'a>, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::Unsupported(String::new()))?;
    if !ACCEPTED.contains(&format) {
        return Err(ImageError::Unsupported(format!(" ({format:?})")));
    }
    if format == ImageFormat::Jpeg {
        return probe_jpeg(bytes, limits);
    }
    if let Some((w, h)) = png_declared_size(bytes) {
        // The png crate reads up to the first IDAT before it reports the size; a bare
        // header declaring 60000x60000 should be "too large", not "corrupt".
        check_dimensions(w, h, limits)?;
    }
    let mut internal_bytes = 0;
    let mut orientation = None;
    let mut tiff_cmyk = false;
    let err = |e| map_decode_error(e, limits);
    let mut decoder: Box<dyn ImageDecoder + 'a> = match format {
        ImageFormat::Png => {
            orientation = Some(exif_orientation(headers::png_exif(bytes)));
            let mut lim = image::Limits::no_limits();
            lim.max_alloc = Some(HEADER_ALLOC);
            let essentials = headers::PngEssentials::new(bytes);
            Box::new(PngDecoder::with_limits(essentials, lim).map_err(err)?)
        }
        ImageFormat::WebP => {
            let header = headers::webp_header(bytes).map_err(|refusal| match refusal {
                headers::WebpRefusal::Animated => ImageError::Unsupported(
                    " (animated WebP is not supported; send a still image)".into(),
                ),
                headers::WebpRefusal::FrameSize { frame, canvas } => ImageError::Corrupt(format!(
                    "the WebP's frame is {}x{} but its canvas {}x{}",
                    frame.0, frame.1, canvas.0, canvas.1
                )),
            })?;
            // Read here, from the upload: image-webp would copy the chunk out first, at
            // whatever size its header declares.
            orientation = Some(exif_orientation(header.exif));
            Box::new(WebPDecoder::new(Cursor::new(bytes)).map_err(err)?)
        }
        ImageFormat::Tiff => {
            let header = headers::tiff_header(bytes);
            if header.jpeg {
                return Err(ImageError::Unsupported(
                    " (JPEG-compressed TIFF is not supported; send the photo as a JPEG, or \
                     as an uncompressed, LZW or Deflate TIFF)"
                        .into(),
                ));
            }
            tiff_cmyk = header.cmyk;
            Box::new(TiffDecoder::new(Cursor::new(bytes)).map_err(err)?)
        }
        ImageFormat::Gif => {
            // The decoder checks the logical screen; the first frame may be larger, and it
            // gets a buffer of its own size.
            if let Some((fw, fh)) = headers::gif_first_frame(bytes) {
                check_dimensions(fw, fh, limits)?;
                internal_bytes = u64::from(fw) * u64::from(fh) * 4;
            }
            Box::new(GifDecoder::new(Cursor::new(bytes)).map_err(err)?)
        }
        _ => Box::new(BmpDecoder::new(Cursor::new(bytes)).map_err(err)?),
    };
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let orientation = match orientation {
        Some(o) => o,
        // TIFF's Orientation tag; none for GIF and BMP.
        None => decoder.orientation().unwrap_or(Orientation::NoTransforms),
    };
    let native_bytes = decoder.total_bytes();
    let native_rgb8 = decoder.color_type() == image::ColorType::Rgb8;
    let pixels = u64::from(width) * u64::from(height);
    internal_bytes += match format {
        // The tiff crate decodes into a buffer of its own (4 samples a pixel for CMYK,
        // which the image crate reports as RGB), then the image crate copies it out.
        ImageFormat::Tiff if tiff_cmyk => native_bytes / 3 * 4,
        ImageFormat::Tiff => native_bytes,
        // Lossless WebP decodes through 32-bit ARGB, lossy through YUV planes.
        ImageFormat::WebP => pixels * 4,
        _ => 0,
    };
    Ok(Probe {
        bytes,
        format,
        decoder: Some(decoder),
        width,
        height,
        orientation,
        limits: *limits,
        native_bytes,
        native_rgb8,
        internal_bytes,
        jpeg: None,
    })
}

/// A JPEG's probe, from our header walker alone.
fn probe_jpeg<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Probe<'a>, ImageError> {
    let header = headers::jpeg_header(bytes).ok_or_else(|| {
        ImageError::Corrupt("the JPEG has no frame header (SOF) before its image data".into())
    })?;
    let (width, height) = (header.width, header.height);
    check_dimensions(width, height, limits)?;
    Ok(Probe {
        bytes,
        format: ImageFormat::Jpeg,
        decoder: None,
        width,
        height,
        orientation: header.orientation.unwrap_or(Orientation::NoTransforms),
        limits: *limits,
        native_bytes: u64::from(width) * u64::from(height) * 3,
        native_rgb8: true,
        internal_bytes: header.coefficient_bytes + header.row_bytes,
        jpeg: Some(JpegCost {
            components: header.components,
            worst_internal_bytes: header.full_coefficient_bytes + header.row_bytes,
        }),
    })
}

fn exif_orientation(exif: Option<&[u8]>) -> Orientation {
    exif.and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
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
        self.peak_with(self.internal_bytes)
    }

    fn peak_with(&self, internal_bytes: u64) -> u64 {
        let rgb = self.output_bytes();
        let work = match self.jpeg {
            // libjpeg writes RGB8 straight into the output buffer. A CMYK one it only reads
            // through (to catch truncation), and the image crate decodes it afterwards.
            Some(jpeg) if jpeg.components == 4 => internal_bytes.max(self.fallback_work()),
            Some(_) => internal_bytes + rgb,
            None => {
                let native = self.native_bytes;
                let converting = if self.native_rgb8 { 0 } else { native + rgb };
                (internal_bytes + native).max(converting)
            }
        };
        let rotating = if self.swaps_axes() { 2 * rgb } else { 0 };
        work.max(rotating) + DECODER_OVERHEAD
    }

    /// What the `image` crate's JPEG decoder holds: its copy of the upload, zune-jpeg's
    /// coefficients (whole-image for the same files as libjpeg's, i16 each: mcu.rs,
    /// mcu_prog.rs), its output, and our RGB8 copy of a grey one.
    fn fallback_work(&self) -> u64 {
        self.bytes.len() as u64 + self.internal_bytes + self.native_bytes + self.output_bytes()
    }

    /// What decoding takes if libjpeg refuses a JPEG and the `image` crate's decoder tries it.
    fn fallback_peak_bytes(&self) -> u64 {
        let rotating = if self.swaps_axes() {
            2 * self.output_bytes()
        } else {
            0
        };
        self.fallback_work().max(rotating) + DECODER_OVERHEAD
    }

    /// Decodes into an upright RGB8 image: EXIF orientation applied, grayscale replicated,
    /// alpha dropped without compositing and 16-bit scaled to 8-bit (what OpenCV's `imdecode`
    /// gives Ultralytics). `budget` must already hold [`Probe::peak_bytes`] (it is made to,
    /// for callers that did not); it is grown only if a JPEG has to take the fallback
    /// decoder, or libjpeg needs more than the estimate. The decoders are capped at what
    /// was reserved: libjpeg by `max_memory_to_use`, the `image` crate's by `max_alloc`
    /// where they honour it (TIFF and GIF; not PNG, whose cap is the header's, nor WebP,
    /// BMP or the JPEG fallback, which ignore it).
    pub fn decode(self, budget: &mut Reservation) -> Result<RgbImage, ImageError> {
        let peak = self.peak_bytes();
        budget.ensure(peak)?;
        let Some(jpeg) = self.jpeg else {
            // `from_decoder` allocates the native output outside the decoder's accounting
            // (as `ImageReader::decode` does, by reserving it before `set_limits`). The tiff
            // crate also counts each strip's compressed size against the same allowance
            // (`intermediate_buffer_size`) although it streams it from the upload, so the
            // upload's length is added for it.
            let mut allowance = peak - self.native_bytes;
            if self.format == ImageFormat::Tiff {
                allowance += self.bytes.len() as u64;
            }
            return self.decode_with_image_crate(Some(allowance));
        };
        // libjpeg's share: all that was reserved but the RGB output, which is ours.
        let rgb = self.output_bytes();
        let mut turbo = jpeg::decode(self.bytes, self.width, self.height, peak - rgb);
        if matches!(turbo, jpeg::Turbo::OutOfMemory) {
            // The estimate missed; the worst case this size allows is a budget question.
            let worst = self.peak_with(jpeg.worst_internal_bytes);
            if worst > peak {
                budget.ensure(worst)?;
                turbo = jpeg::decode(self.bytes, self.width, self.height, worst - rgb);
            }
        }
        match turbo {
            jpeg::Turbo::Done(rgb) => {
                let mut img = DynamicImage::ImageRgb8(rgb);
                img.apply_orientation(self.orientation);
                Ok(into_rgb8(img))
            }
            jpeg::Turbo::Truncated => Err(truncated()),
            jpeg::Turbo::TooManyScans(n) => Err(too_many_scans(n)),
            jpeg::Turbo::OutOfMemory => Err(out_of_memory()),
            // libjpeg failures fall back too: the `image` crate decodes a few files libjpeg
            // refuses, and reports its own error for the rest.
            jpeg::Turbo::Failed(why) => {
                tracing::debug!(%why, "libjpeg refused the JPEG; trying the image crate");
                budget.ensure(self.fallback_peak_bytes())?;
                self.decode_with_image_crate(None)
            }
            jpeg::Turbo::Fallback => {
                budget.ensure(self.fallback_peak_bytes())?;
                self.decode_with_image_crate(None)
            }
        }
    }

    /// Whether the photo can be decoded straight into the letterbox, row by row, never
    /// stored whole ([`Probe::stream_into`]): a JPEG that libjpeg turns into RGB itself and
    /// that needs no EXIF turn (a turn needs the rows in another order than they come).
    pub fn streams(&self) -> bool {
        matches!(self.jpeg, Some(j) if j.components != 4)
            && self.orientation == Orientation::NoTransforms
    }

    /// The DCT scaling [`DecodeMode::Fast`] uses for a photo letterboxed as `lb`: the
    /// largest 1/2, 1/4 or 1/8 that still leaves the decoded photo at least the resized
    /// size (so the letterbox still shrinks it), or 1 (exact) when even 1/2 would not, or
    /// when the photo does not stream.
    pub fn fast_denominator(&self, lb: &crate::geometry::Letterbox) -> u32 {
        if !self.streams() {
            return 1;
        }
        [8, 4, 2]
            .into_iter()
            .find(|&d| {
                let (w, h) = jpeg::scaled_size(self.width, self.height, d);
                w >= lb.new_w && h >= lb.new_h
            })
            .unwrap_or(1)
    }

    /// The most bytes [`Probe::stream_into`] holds: libjpeg's buffers (as for a whole
    /// decode), a few decoded rows and the resizer's two rows; no photo.
    pub fn stream_peak_bytes(&self, lb: &crate::geometry::Letterbox, denom: u32) -> u64 {
        let (w, _) = jpeg::scaled_size(self.width, self.height, denom.max(1));
        self.internal_bytes
            + jpeg::ROWS_PER_CALL as u64 * u64::from(w) * 3
            + crate::resize::RowResizer::bytes(lb.new_w as usize)
            + DECODER_OVERHEAD
    }

    /// Decodes the photo straight into `out` (the letterbox `lb` of the model's input),
    /// holding a few rows instead of the photo. `denom` > 1 is libjpeg's DCT-domain scaling
    /// (approximate: [`DecodeMode::Fast`]); 1 gives exactly the pixels of a whole decode
    /// followed by [`letterbox_into`]. Only for a probe that [`Probe::streams`]; a JPEG
    /// libjpeg refuses after all is decoded whole by the fallback decoder (reserving for
    /// that) and letterboxed from there. `budget` must hold [`Probe::stream_peak_bytes`].
    pub fn stream_into(
        self,
        lb: &crate::geometry::Letterbox,
        out: &mut [f32],
        budget: &mut Reservation,
        denom: u32,
    ) -> Result<(), ImageError> {
        let Some(jpeg) = self.jpeg.filter(|_| self.streams()) else {
            let img = self.decode(budget)?;
            letterbox_into(&img, lb, out);
            return Ok(());
        };
        let denom = denom.max(1);
        let peak = self.stream_peak_bytes(lb, denom);
        budget.ensure(peak)?;
        let (sw, sh) = jpeg::scaled_size(self.width, self.height, denom);
        // libjpeg's share: all but the rows and the resizer, which are ours.
        let ours = peak - self.internal_bytes - DECODER_OVERHEAD;
        let run = |max_memory: u64, out: &mut [f32]| {
            let mut writer = LetterboxWriter::new(lb, sw as usize, sh as usize, out);
            let turbo = jpeg::stream(
                self.bytes,
                self.width,
                self.height,
                max_memory,
                denom,
                &mut writer,
            );
            debug_assert!(!matches!(turbo, jpeg::Turbo::Done(())) || writer.done());
            turbo
        };
        let mut turbo = run(peak - ours, out);
        if matches!(turbo, jpeg::Turbo::OutOfMemory) {
            let worst = jpeg.worst_internal_bytes + ours + DECODER_OVERHEAD;
            if worst > peak {
                budget.ensure(worst)?;
                turbo = run(worst - ours, out);
            }
        }
        match turbo {
            jpeg::Turbo::Done(()) => Ok(()),
            jpeg::Turbo::Truncated => Err(truncated()),
            jpeg::Turbo::TooManyScans(n) => Err(too_many_scans(n)),
            jpeg::Turbo::OutOfMemory => Err(out_of_memory()),
            jpeg::Turbo::Failed(_) | jpeg::Turbo::Fallback => {
                let img = self.decode(budget)?;
                letterbox_into(&img, lb, out);
                Ok(())
            }
        }
    }

    /// Decodes with the `image` crate, whose decoder may allocate `allowance` bytes beside
    /// its output; None for a JPEG, whose decoder (zune-jpeg) takes only size limits.
    fn decode_with_image_crate(self, allowance: Option<u64>) -> Result<RgbImage, ImageError> {
        let (limits, orientation) = (self.limits, self.orientation);
        let err = |e| map_decode_error(e, &limits);
        let mut lim = image::Limits::no_limits();
        let decoder = match (self.decoder, allowance) {
            (Some(mut decoder), Some(allowance)) => {
                lim.max_alloc = Some(allowance);
                decoder.set_limits(lim).map_err(err)?;
                decoder
            }
            (Some(decoder), None) => decoder,
            (None, _) => {
                let mut decoder = JpegDecoder::new(Cursor::new(self.bytes)).map_err(err)?;
                // zune-jpeg parses the header again; the reservation was made from ours.
                if decoder.dimensions() != (self.width, self.height) {
                    return Err(ImageError::Corrupt("header dimensions disagree".into()));
                }
                lim.max_image_width = Some(self.width);
                lim.max_image_height = Some(self.height);
                decoder.set_limits(lim).map_err(err)?;
                Box::new(decoder)
            }
        };
        let img = DynamicImage::from_decoder(decoder).map_err(err)?;
        // Convert before rotating, so a quarter turn copies 3 bytes a pixel, not up to 16.
        let mut img = match img {
            DynamicImage::ImageRgb8(rgb) => DynamicImage::ImageRgb8(rgb),
            other => DynamicImage::ImageRgb8(other.into_rgb8()),
        };
        img.apply_orientation(orientation);
        Ok(into_rgb8(img))
    }
}

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

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(crc.sum().to_be_bytes());
    }

    /// Inserts chunks right after IHDR (which ends 33 bytes in).
    fn with_chunks(png: &[u8], chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut out = png[..33].to_vec();
        for (kind, data) in chunks {
            png_chunk(&mut out, kind, data);
        }
        out.extend_from_slice(&png[33..]);
        out
    }

    fn zlib_zeros(n: usize) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        let block = vec![0u8; 1 << 20];
        for _ in 0..n >> 20 {
            z.write_all(&block).unwrap();
        }
        z.finish().unwrap()
    }

    /// An iCCP profile that inflates to 256 MiB, and large text chunks: the png crate would
    /// inflate or buffer them while reading the header; they are never shown to it, and
    /// the header is read under a cap of a few MiB that they would break.
    #[test]
    fn png_ancillary_bombs_are_never_inflated() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([x as u8 * 6, y as u8 * 8, 99])
        }));
        let plain = png(&img);
        let mut iccp = b"bomb\0\0".to_vec();
        iccp.extend(zlib_zeros(256 << 20));
        let mut ztxt = b"Comment\0\0".to_vec();
        ztxt.extend(zlib_zeros(64 << 20));
        let bombed = with_chunks(
            &plain,
            &[
                (b"iCCP", iccp),
                (b"zTXt", ztxt),
                (b"tEXt", [&b"Comment\0"[..], &[b'a'; 8 << 20]].concat()),
            ],
        );
        let p = probe(&bombed, &DecodeLimits::default()).unwrap();
        assert_eq!(
            p.peak_bytes(),
            probe(&plain, &DecodeLimits::default())
                .unwrap()
                .peak_bytes()
        );
        let got = decode(&bombed, &DecodeLimits::default()).unwrap();
        assert_eq!(got, decode(&plain, &DecodeLimits::default()).unwrap());
    }

    /// tRNS changes the pixels (it becomes alpha, which is then dropped): it must reach the
    /// decoder, while the eXIf orientation is read by us.
    #[test]
    fn png_keeps_trns_and_reads_exif_orientation_itself() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(4, 2, |x, _| {
            image::Luma([x as u8 * 50])
        }));
        let trns = with_chunks(&png(&grey), &[(b"tRNS", vec![0, 50])]);
        let p = probe(&trns, &DecodeLimits::default()).unwrap();
        assert_eq!(
            p.decoder.as_ref().unwrap().color_type(),
            image::ColorType::La8
        );
        // Orientation 6 (a quarter turn), big-endian TIFF.
        let mut exif = b"MM\0*\0\0\0\x08\0\x01".to_vec();
        exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let turned = with_chunks(&png(&grey), &[(b"eXIf", exif)]);
        assert_eq!(
            decode(&turned, &DecodeLimits::default())
                .unwrap()
                .dimensions(),
            (2, 4)
        );
    }

    /// One stray byte after the frame header: libjpeg warns and decodes, buffering the
    /// whole coefficient arrays of a progressive file; the estimate must include them.
    #[test]
    fn jpeg_with_a_stray_byte_after_its_frame_header_is_costed_and_decodes() {
        let jpg = headers::tests::mozjpeg(320, 240, true);
        let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC2]).unwrap();
        let end = sof + 2 + usize::from(u16::from_be_bytes([jpg[sof + 2], jpg[sof + 3]]));
        let stray = [&jpg[..end], &[0x42], &jpg[end..]].concat();
        let limits = DecodeLimits::default();
        let (clean, odd) = (
            probe(&jpg, &limits).unwrap(),
            probe(&stray, &limits).unwrap(),
        );
        assert_eq!(odd.peak_bytes(), clean.peak_bytes());
        assert!(odd.internal_bytes >= 320 * 240 * 2 * 3 / 2);
        assert_eq!(
            decode(&stray, &limits).unwrap(),
            decode(&jpg, &limits).unwrap()
        );
    }

    #[test]
    fn jpeg_exif_orientation_is_read_from_app1() {
        let jpg = headers::tests::mozjpeg(64, 32, false);
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
        exif.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut turned = jpg[..2].to_vec();
        turned.extend([0xFF, 0xE1]);
        turned.extend(((exif.len() + 2) as u16).to_be_bytes());
        turned.extend(exif);
        turned.extend(&jpg[2..]);
        let p = probe(&turned, &DecodeLimits::default()).unwrap();
        assert_eq!((p.width(), p.height()), (32, 64));
        assert_eq!(
            decode(&turned, &DecodeLimits::default())
                .unwrap()
                .dimensions(),
            (32, 64)
        );
    }

    /// Decoding row by row into the letterbox must give the very tensor a whole decode and
    /// `letterbox_into` give: shrinking and enlarging, square and rect canvases, baseline
    /// and progressive, odd sizes, and the real photos.
    #[test]
    fn streaming_into_the_letterbox_matches_a_whole_decode() {
        use crate::geometry::Letterbox;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
        let mut files: Vec<Vec<u8>> = ["bus.jpg", "zidane.jpg"]
            .iter()
            .filter_map(|n| std::fs::read(dir.join(n)).ok())
            .collect();
        for (w, h, progressive) in [
            (333, 217, true),
            (333, 217, false),
            (97, 61, true),
            (1, 7, false),
        ] {
            files.push(headers::tests::mozjpeg(w, h, progressive));
        }
        let limits = DecodeLimits::default();
        for jpg in &files {
            let whole = decode(jpg, &limits).unwrap();
            let (w, h) = whole.dimensions();
            for lb in [
                Letterbox::new(w, h, 320, 320),
                Letterbox::new(w, h, 640, 640),
                Letterbox::new(w, h, 64, 48),
                Letterbox::rect(w, h, 640, 640, 32),
            ] {
                let mut want = vec![0.0; lb.tensor_len()];
                letterbox_into(&whole, &lb, &mut want);
                let p = probe(jpg, &limits).unwrap();
                assert!(p.streams());
                let mut got = vec![-1.0; lb.tensor_len()];
                let mut r = crate::budget::MemoryBudget::unlimited().reservation();
                p.stream_into(&lb, &mut got, &mut r, 1).unwrap();
                assert!(got == want, "{w}x{h} onto {}x{}", lb.canvas_w, lb.canvas_h);
            }
        }
    }

    /// Fast decoding scales by the largest power of two that keeps the photo at least the
    /// resized size, and only for JPEGs that stream; its tensor is close to the exact one.
    #[test]
    fn fast_decoding_picks_its_scale_and_stays_close() {
        use crate::geometry::Letterbox;
        let limits = DecodeLimits::default();
        let jpg = headers::tests::mozjpeg(1280, 960, false);
        let p = probe(&jpg, &limits).unwrap();
        let lb = Letterbox::new(1280, 960, 320, 320);
        assert_eq!(p.fast_denominator(&lb), 4);
        assert_eq!(p.fast_denominator(&Letterbox::new(1280, 960, 640, 640)), 2);
        assert_eq!(
            p.fast_denominator(&Letterbox::new(1280, 960, 1024, 1024)),
            1
        );
        assert!(p.stream_peak_bytes(&lb, 4) < p.stream_peak_bytes(&lb, 1));
        let mut exact = vec![0.0; lb.tensor_len()];
        let mut fast = vec![0.0; lb.tensor_len()];
        let mut r = crate::budget::MemoryBudget::unlimited().reservation();
        probe(&jpg, &limits)
            .unwrap()
            .stream_into(&lb, &mut exact, &mut r, 1)
            .unwrap();
        p.stream_into(&lb, &mut fast, &mut r, 4).unwrap();
        let mean = exact
            .iter()
            .zip(&fast)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / exact.len() as f32;
        assert!(mean > 0.0 && mean < 0.02, "mean difference {mean}");
        let png = png(&DynamicImage::ImageRgb8(RgbImage::new(1280, 960)));
        assert_eq!(probe(&png, &limits).unwrap().fast_denominator(&lb), 1);
    }

    /// A truncated JPEG is refused on the streaming path too, however far it got.
    #[test]
    fn streaming_refuses_a_truncated_jpeg() {
        use crate::geometry::Letterbox;
        let jpg = headers::tests::mozjpeg(640, 480, false);
        let cut = &jpg[..jpg.len() / 2];
        let lb = Letterbox::new(640, 480, 320, 320);
        let mut out = vec![0.0; lb.tensor_len()];
        let mut r = crate::budget::MemoryBudget::unlimited().reservation();
        let err = probe(cut, &DecodeLimits::default())
            .unwrap()
            .stream_into(&lb, &mut out, &mut r, 1)
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    /// The 88-byte attack: an animated WebP with a 6000x4000 canvas.
    #[test]
    fn animated_webp_is_refused_from_its_header() {
        let mut body = b"WEBPVP8X".to_vec();
        body.extend(10u32.to_le_bytes());
        body.extend([0x02, 0, 0, 0]);
        body.extend(&5999u32.to_le_bytes()[..3]);
        body.extend(&3999u32.to_le_bytes()[..3]);
        body.extend(b"ANIM");
        body.extend(6u32.to_le_bytes());
        body.extend([0; 6]);
        body.extend(b"ANMF");
        body.extend(24u32.to_le_bytes());
        body.extend([0; 24]);
        let mut webp = b"RIFF".to_vec();
        webp.extend((body.len() as u32).to_le_bytes());
        webp.extend(body);
        let Err(ImageError::Unsupported(why)) = probe(&webp, &DecodeLimits::default()) else {
            panic!("an animated WebP was accepted")
        };
        assert!(
            why.contains("animated WebP is not supported; send a still image"),
            "{why}"
        );
    }

    /// Compression 7 (JPEG) in IFD0: the tiff crate would decode each strip at the size
    /// its embedded JPEG declares.
    #[test]
    fn jpeg_compressed_tiff_is_refused() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(8, 8));
        let mut tiff = Vec::new();
        img.write_to(&mut Cursor::new(&mut tiff), ImageFormat::Tiff)
            .unwrap();
        assert!(probe(&tiff, &DecodeLimits::default()).is_ok());
        // Compression (259 = 0x0103), SHORT, count 1, value 1: make it 7.
        let entry = [0x03, 0x01, 3, 0, 1, 0, 0, 0, 1, 0];
        let at = tiff.windows(10).position(|w| w == entry).unwrap();
        tiff[at + 8] = 7;
        let Err(ImageError::Unsupported(why)) = probe(&tiff, &DecodeLimits::default()) else {
            panic!("a JPEG-compressed TIFF was accepted")
        };
        assert!(why.contains("JPEG-compressed TIFF"), "{why}");
    }

    /// The hard cap: a budget reservation that libjpeg's arrays do not fit is refused by
    /// libjpeg, then grown to the worst case this size allows (a budget question), and only
    /// a budget that cannot hold that refuses the decode.
    #[test]
    fn libjpeg_over_the_estimate_grows_the_reservation_or_refuses() {
        // Coefficient arrays of 3 MiB, more than the flat allowance.
        let jpg = headers::tests::mozjpeg(1024, 1024, true);
        let mut p = probe(&jpg, &DecodeLimits::default()).unwrap();
        // As if the walker had missed the coefficient arrays.
        p.internal_bytes = 0;
        let budget = crate::budget::MemoryBudget::new(p.peak_bytes() + (1 << 20));
        let mut r = budget.reservation();
        r.grow(p.peak_bytes()).unwrap();
        assert!(matches!(p.decode(&mut r), Err(ImageError::Budget(_))));
        let mut p = probe(&jpg, &DecodeLimits::default()).unwrap();
        p.internal_bytes = 0;
        let mut r = crate::budget::MemoryBudget::unlimited().reservation();
        assert_eq!(p.decode(&mut r).unwrap().dimensions(), (1024, 1024));
        assert!(r.held() > 1024 * 1024 * 3 * 2);
    }
}
