//! A PNG's rows straight into the letterbox, one at a time: the png crate inflates and
//! unfilters a row, we convert it to RGB8 exactly as the `image` crate's whole decode does
//! (the same `EXPAND` transformation, then `into_rgb8`: grey replicated, alpha dropped
//! without compositing, 16-bit rounded to 8 as `round(v * 255 / 65535)`), and the letterbox
//! takes it. Interlaced PNGs do not stream: their rows come in seven passes.

use super::headers::PngEssentials;
use super::letterbox::LetterboxWriter;

/// Whether a PNG with this IHDR streams: not interlaced (Adam7 hands out rows in passes).
pub(super) fn streams(bytes: &[u8]) -> bool {
    // Signature (8), IHDR length and type (8), then width, height, bit depth, colour type,
    // compression and filter method (12): the interlace method is byte 28.
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
        && bytes.get(12..16) == Some(&b"IHDR"[..])
        && bytes.get(28) == Some(&0)
}

/// The most bytes [`stream`] holds for a `width` pixels wide PNG, beside the decompressor's
/// fixed state: the png crate's buffer of inflated rows (it shifts it back once four rows'
/// worth, or 128 KiB, is consumed, and keeps inflate's 32 KiB window), its unfiltered and
/// transformed rows, and our RGB8 row. Rows counted at 8 bytes a pixel, the widest.
pub(super) fn work_bytes(width: u32) -> u64 {
    let raw_row = u64::from(width) * 8 + 1;
    let inflated = 2 * (4 * raw_row).max(128 << 10) + (32 << 10) + raw_row + (8 << 10);
    inflated + 3 * raw_row + u64::from(width) * 3
}

/// The `image` crate's reading of a png crate error, so a streamed PNG is refused with the
/// words a whole decode would use.
pub(super) fn as_image_error(err: png::DecodingError) -> image::ImageError {
    use image::error::{
        DecodingError, LimitError, LimitErrorKind, ParameterError, ParameterErrorKind,
    };
    match err {
        png::DecodingError::IoError(err) => image::ImageError::IoError(err),
        err @ png::DecodingError::Format(_) => {
            image::ImageError::Decoding(DecodingError::new(image::ImageFormat::Png.into(), err))
        }
        err @ png::DecodingError::Parameter(_) => image::ImageError::Parameter(
            ParameterError::from_kind(ParameterErrorKind::Generic(err.to_string())),
        ),
        png::DecodingError::LimitsExceeded => {
            image::ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
        }
    }
}

/// Why a PNG stopped streaming.
#[derive(Debug)]
pub(super) enum Stop {
    /// The png crate refused it (broken data, or its allocation cap).
    Decoding(png::DecodingError),
    /// Its rows came interlaced, or of a kind the whole decode refuses too: decode whole.
    NotStreamable,
}

/// Decodes every row of `bytes` into `out`. `max_alloc` caps the png crate's allocations,
/// as the whole decode's header cap does.
pub(super) fn stream(
    bytes: &[u8],
    max_alloc: u64,
    out: &mut LetterboxWriter<'_>,
) -> Result<(), Stop> {
    let limits = png::Limits {
        bytes: usize::try_from(max_alloc).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(PngEssentials::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(Stop::Decoding)?;
    if reader.info().interlaced {
        return Err(Stop::NotStreamable);
    }
    let (color, depth) = reader.output_color_type();
    let channels = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(Stop::NotStreamable),
    };
    let wide = match depth {
        png::BitDepth::Eight => false,
        png::BitDepth::Sixteen => true,
        // EXPAND leaves no other depth; the whole decode reports what it is.
        _ => return Err(Stop::NotStreamable),
    };
    let (width, height) = (reader.info().width as usize, reader.info().height as usize);
    let mut rgb = vec![0u8; width * 3];
    for sy in 0..height {
        let row = reader
            .next_row()
            .map_err(Stop::Decoding)?
            .ok_or(Stop::Decoding(png::DecodingError::IoError(
                std::io::ErrorKind::UnexpectedEof.into(),
            )))?;
        if !out.wants_next() {
            out.skip();
            continue;
        }
        to_rgb8(row.data(), channels, wide, &mut rgb);
        out.push(sy, &rgb);
    }
    // Past the last row the png crate reads the rest of the image data, as a whole decode
    // does after its rows.
    match reader.next_row().map_err(Stop::Decoding)? {
        None => Ok(()),
        Some(_) => Err(Stop::NotStreamable),
    }
}

/// One row of `channels` samples a pixel (big-endian u16 when `wide`) as packed RGB8.
fn to_rgb8(src: &[u8], channels: usize, wide: bool, rgb: &mut [u8]) {
    let step = channels * if wide { 2 } else { 1 };
    let sample = |px: &[u8], c: usize| -> u8 {
        if wide {
            narrow(u16::from_be_bytes([px[2 * c], px[2 * c + 1]]))
        } else {
            px[c]
        }
    };
    for (px, out) in src.chunks_exact(step).zip(rgb.chunks_exact_mut(3)) {
        if channels < 3 {
            out.fill(sample(px, 0));
        } else {
            for (c, o) in out.iter_mut().enumerate() {
                *o = sample(px, c);
            }
        }
    }
}

/// 16-bit to 8-bit as the `image` crate converts it: `round(v * 255 / 65535)`.
fn narrow(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_is_the_image_crates_for_every_value() {
        for v in 0..=u16::MAX {
            let img = image::DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(
                1,
                1,
                image::Luma([v]),
            ));
            assert_eq!(narrow(v), img.to_rgb8().get_pixel(0, 0).0[0], "{v}");
        }
    }
}
