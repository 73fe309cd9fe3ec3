//! Reading an upload's header into a [`Probe`]: its format, size, orientation and what
//! decoding it will take, all known before any pixel buffer exists; then the decode itself,
//! whole or streamed, under the reservation that covers it.

use std::io::Cursor;

use image::codecs::{
    bmp::BmpDecoder, gif::GifDecoder, jpeg::JpegDecoder, png::PngDecoder, tiff::TiffDecoder,
    webp::WebPDecoder,
};
use image::metadata::Orientation;
use image::{ImageDecoder, ImageFormat};

use super::*;

/// Decoder state beyond the pixel buffers (Huffman tables, row buffers, zlib windows), as a
/// flat allowance: measured well under this for every format.
pub(super) const DECODER_OVERHEAD: u64 = 2 << 20;

/// The png crate's allocation cap, set while reading the header: it counts the chunks the
/// png crate buffers and its output row (at most 16384 x 8 bytes), nothing else. image 0.25
/// cannot change it once the decoder exists (its `PngDecoder::set_limits` keeps the new
/// limits to itself), so it holds for the decode too, where those are still all it counts.
pub(super) const HEADER_ALLOC: u64 = 4 << 20;

/// An upload whose header has been read and checked, ready to decode: the dimensions and
/// the memory decoding will take are known before any pixel buffer is allocated.
pub struct Probe<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) format: ImageFormat,
    /// The `image` crate's decoder, made from the header. None for a JPEG: libjpeg decodes
    /// those, and the `image` crate's JPEG decoder copies the whole upload as it is made,
    /// so it is made only for a JPEG libjpeg hands back.
    pub(super) decoder: Option<Box<dyn ImageDecoder + 'a>>,
    /// Stored (not yet rotated) size.
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) orientation: Orientation,
    pub(super) limits: DecodeLimits,
    /// Bytes of the decoder's native output (`total_bytes()`: size x sample type; RGB8 for
    /// a JPEG).
    pub(super) native_bytes: u64,
    /// Whether that output is already RGB8 (no conversion copy).
    native_rgb8: bool,
    /// Decoder-internal buffers of image size: libjpeg's coefficient arrays and rows, the
    /// tiff crate's own buffer, WebP planes, a GIF frame that differs from the screen.
    pub(super) internal_bytes: u64,
    /// JPEG only: what the header says beyond the size.
    pub(super) jpeg: Option<JpegCost>,
}

/// The parts of a JPEG's header the estimate keeps.
#[derive(Debug, Clone, Copy)]
pub(super) struct JpegCost {
    /// 4: CMYK or YCCK, which the `image` crate decodes after libjpeg has checked it.
    pub(super) components: u32,
    /// libjpeg's buffers were every component's coefficients kept at full resolution: the
    /// most a file of this size and component count can make it allocate.
    pub(super) worst_internal_bytes: u64,
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
