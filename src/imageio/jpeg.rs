//! JPEG through libjpeg-turbo (the MozJPEG build of it): the decoder OpenCV uses, so the
//! pixels Ultralytics sees. Also the judge of truncation: libjpeg pads a cut-off file with
//! grey and only *warns*, which would have us segment half a photo of grey without a word.

use std::os::raw::c_int;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use image::RgbImage;
use std::cell::Cell;

use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JTRC_SOS, JWRN_JPEG_EOF};

/// Most scans a JPEG may have. Encoders write one (baseline) or about ten (progressive);
/// each scan makes libjpeg walk the whole coefficient buffer again, so a file of thousands
/// of tiny scans is a CPU bomb (libjpeg-turbo's own tools cap it the same way).
pub(super) const MAX_SCANS: u32 = 100;

thread_local! {
    // Scans seen by the decode running on this thread (libjpeg decodes on the caller's thread).
    static SCANS: Cell<u32> = const { Cell::new(0) };
}

/// What libjpeg made of a JPEG.
#[derive(Debug)]
pub(super) enum Turbo {
    /// Decoded to RGB.
    Rgb(RgbImage),
    /// Complete, but not something libjpeg turns into RGB (CMYK/YCCK): the caller decodes it
    /// with the `image` crate, which converts CMYK.
    Fallback,
    /// The data ends before the image does (libjpeg's premature-EOF warning).
    Truncated,
    /// More scans than [`MAX_SCANS`].
    TooManyScans(u32),
    /// libjpeg refused it (its message; safe to show: it names no file or path).
    Failed(String),
}

/// Unwind payload of the premature-EOF warning.
struct TruncatedPayload;

/// Unwind payload of the scan limit.
struct TooManyScansPayload;

/// `emit_message` hook: level -1 is a warning about corrupt data. Premature end of file is
/// the one we refuse; the others ("extraneous bytes before marker" and friends) are common
/// in real cameras' files and OpenCV decodes them, so they stay silent. libjpeg also calls
/// this for every trace message (level >= 1), whatever its trace level: start-of-scan
/// traces are how we count scans.
extern "C-unwind" fn on_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: libjpeg calls this with `err` pointing at our live error manager.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code) };
    if level < 0 && code == Some(JWRN_JPEG_EOF as c_int) {
        resume_unwind(Box::new(TruncatedPayload));
    }
    if code == Some(JTRC_SOS as c_int) {
        let n = SCANS.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        if n > MAX_SCANS {
            resume_unwind(Box::new(TooManyScansPayload));
        }
    }
}

/// `error_exit` hook: libjpeg must not return from it; we unwind (the `unwinding` feature
/// of mozjpeg-sys builds libjpeg so that this crosses its C frames safely).
extern "C-unwind" fn on_fatal(cinfo: &mut jpeg_common_struct) {
    // SAFETY: as above.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code).unwrap_or(-1) };
    resume_unwind(Box::new(format!("libjpeg error code {code}")));
}

fn error_mgr() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager; we then replace the
    // two hooks with ours.
    unsafe {
        let mut err: jpeg_error_mgr = std::mem::zeroed();
        jpeg_std_error(&mut err);
        err.error_exit = Some(on_fatal);
        err.emit_message = Some(on_message);
        err
    }
}

/// Decodes `bytes` (a JPEG whose header declared `width` x `height`, already checked against
/// the limits) with libjpeg-turbo.
pub(super) fn decode(bytes: &[u8], width: u32, height: u32) -> Turbo {
    SCANS.with(|s| s.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Option<Vec<u8>>> {
        let d = mozjpeg::Decompress::with_err(error_mgr()).from_mem(bytes)?;
        if (d.width(), d.height()) != (width as usize, height as usize) {
            return Err(std::io::Error::other("header dimensions disagree"));
        }
        let cmyk = matches!(
            d.color_space(),
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
        );
        // CMYK: decode anyway (as CMYK) so truncation is caught here too; the pixels are
        // then produced by the `image` crate.
        let mut started = if cmyk {
            d.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)?
        } else {
            d.rgb()?
        };
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok((!cmyk).then_some(pixels))
    }));
    match result {
        Ok(Ok(Some(pixels))) => match RgbImage::from_raw(width, height, pixels) {
            Some(rgb) => Turbo::Rgb(rgb),
            None => Turbo::Failed("libjpeg returned fewer pixels than declared".into()),
        },
        Ok(Ok(None)) => Turbo::Fallback,
        Ok(Err(e)) => Turbo::Failed(e.to_string()),
        Err(payload) if payload.is::<TruncatedPayload>() => Turbo::Truncated,
        Err(payload) if payload.is::<TooManyScansPayload>() => Turbo::TooManyScans(MAX_SCANS),
        Err(payload) => Turbo::Failed(
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg failed".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_jpeg() -> Vec<u8> {
        let mut v = Vec::new();
        image::DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 8, image::Rgb([9, 99, 199])))
            .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .unwrap();
        v
    }

    /// libjpeg reads its own header: if it disagrees with the size the limits were checked
    /// against (two decoders, one file), it must not allocate for its own idea of the size.
    #[test]
    fn a_header_disagreeing_with_the_checked_size_is_refused_before_decoding() {
        let mut jpg = small_jpeg();
        let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        jpg[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]); // 50000x50000
        assert!(matches!(decode(&jpg, 16, 8), Turbo::Failed(m) if m.contains("disagree")));
    }

    #[test]
    fn whole_truncated_and_garbage() {
        let jpg = small_jpeg();
        assert!(matches!(decode(&jpg, 16, 8), Turbo::Rgb(img) if img.dimensions() == (16, 8)));
        assert!(matches!(
            decode(&jpg[..jpg.len() - 40], 16, 8),
            Turbo::Truncated
        ));
        assert!(matches!(
            decode(b"\xFF\xD8garbage", 16, 8),
            Turbo::Failed(_) | Turbo::Truncated
        ));
    }
}
