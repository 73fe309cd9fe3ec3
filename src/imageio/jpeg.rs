//! JPEG through libjpeg-turbo (the MozJPEG build of it): the decoder OpenCV uses, so the
//! pixels Ultralytics sees. Also the judge of truncation: libjpeg pads a cut-off file with
//! grey and only *warns*, which would have us segment half a photo of grey without a word.
//!
//! Driven through mozjpeg-sys rather than the mozjpeg crate, whose `Decompress` keeps
//! `cinfo` private: we need `cinfo.mem->max_memory_to_use`, libjpeg's own cap on what it
//! may hold.

use std::cell::Cell;
use std::os::raw::{c_int, c_long, c_ulong};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use image::RgbImage;

use super::letterbox::LetterboxWriter;
use mozjpeg_sys::{
    jpeg_common_struct, jpeg_create_decompress, jpeg_decompress_struct, jpeg_destroy_decompress,
    jpeg_error_mgr, jpeg_finish_decompress, jpeg_mem_src, jpeg_read_header, jpeg_read_scanlines,
    jpeg_start_decompress, jpeg_std_error, JDIMENSION, JERR_NO_BACKING_STORE, JERR_OUT_OF_MEMORY,
    JTRC_SOS, JWRN_JPEG_EOF, J_COLOR_SPACE,
};

/// Most scans a JPEG may have. Encoders write one (baseline) or about ten (progressive);
/// each scan makes libjpeg walk the whole coefficient buffer again, so a file of thousands
/// of tiny scans is a CPU bomb (libjpeg-turbo's own tools cap it the same way).
pub(super) const MAX_SCANS: u32 = 100;

/// `jpeg_read_header`'s answer for a file with an image (jpeglib.h).
const JPEG_HEADER_OK: c_int = 1;

/// Rows handed to one `jpeg_read_scanlines` call (libjpeg's `rec_outbuf_height` is at most 4).
pub(super) const ROWS_PER_CALL: usize = 16;

thread_local! {
    // Scans seen by the decode running on this thread (libjpeg decodes on the caller's thread).
    static SCANS: Cell<u32> = const { Cell::new(0) };
}

/// What libjpeg made of a JPEG.
#[derive(Debug)]
pub(super) enum Turbo<T> {
    /// Decoded to RGB (the photo, or `()` when its rows went to a letterbox).
    Done(T),
    /// Complete, but not something libjpeg turns into RGB (CMYK/YCCK): the caller decodes it
    /// with the `image` crate, which converts CMYK.
    Fallback,
    /// The data ends before the image does (libjpeg's premature-EOF warning).
    Truncated,
    /// More scans than [`MAX_SCANS`].
    TooManyScans(u32),
    /// libjpeg would have needed more than `max_memory` for its buffers.
    OutOfMemory,
    /// libjpeg refused it (its message; safe to show: it names no file or path).
    Failed(String),
}

/// Unwind payload of the premature-EOF warning.
struct TruncatedPayload;

/// Unwind payload of the scan limit.
struct TooManyScansPayload;

/// Unwind payload of a refused allocation.
struct OutOfMemoryPayload;

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
/// of mozjpeg-sys builds libjpeg so that this crosses its C frames safely). With the
/// memory manager of jmemnobs.c, going over `max_memory_to_use` is JERR_NO_BACKING_STORE
/// (no temporary files to spill the coefficient arrays to); a failed malloc is
/// JERR_OUT_OF_MEMORY.
extern "C-unwind" fn on_fatal(cinfo: &mut jpeg_common_struct) {
    // SAFETY: as above.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code).unwrap_or(-1) };
    if code == JERR_NO_BACKING_STORE as c_int || code == JERR_OUT_OF_MEMORY as c_int {
        resume_unwind(Box::new(OutOfMemoryPayload));
    }
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

/// A decompressor and its error manager, together on the heap so the pointer libjpeg keeps
/// to the manager stays valid; destroyed however decoding ends, an unwind from our hooks
/// included (the guard drops while the unwind passes).
struct Decompressor {
    cinfo: jpeg_decompress_struct,
    err: jpeg_error_mgr,
}

struct Guard(Box<Decompressor>);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: jpeg_destroy frees the memory manager's pools if it was created, and
        // only marks the struct destroyed if not (its `mem` is still null).
        unsafe { jpeg_destroy_decompress(&mut self.0.cinfo) }
    }
}

/// Decodes `bytes` (a JPEG whose header declared `width` x `height`, already checked against
/// the limits) with libjpeg-turbo, which may hold at most `max_memory` bytes of its own
/// (the RGB output is ours, outside that). `max_memory_to_use` is what libjpeg checks when
/// it allocates its whole-image coefficient arrays (jmemmgr.c `realize_virt_arrays`, through
/// jmemnobs.c `jpeg_mem_available`), against everything it holds by then: going over is a
/// refusal ([`Turbo::OutOfMemory`]), never an allocation. Its other allocations (row
/// buffers, a fixed few per component, and small tables) are made before that check and
/// counted in it, bar a few hundred bytes.
pub(super) fn decode(bytes: &[u8], width: u32, height: u32, max_memory: u64) -> Turbo<RgbImage> {
    let turbo = guarded(bytes, width, height, max_memory, 1, |cinfo, cmyk| {
        read_whole(cinfo, width, height, cmyk)
    });
    match turbo {
        Turbo::Done(Some(pixels)) => match RgbImage::from_raw(width, height, pixels) {
            Some(rgb) => Turbo::Done(rgb),
            None => Turbo::Failed("libjpeg returned fewer pixels than declared".into()),
        },
        Turbo::Done(None) => Turbo::Fallback,
        other => other.map(|_| unreachable!()),
    }
}

/// Decodes `bytes` row by row into `out`, holding a few rows instead of the photo, with
/// libjpeg's DCT-domain scaling by 1/`denom` (1: exact; 2, 4 or 8: approximate and faster,
/// see `DecodeMode::Fast`). `out` must have been made for the scaled size
/// ([`scaled_size`]). A CMYK/YCCK JPEG is [`Turbo::Fallback`] before anything is decoded.
pub(super) fn stream(
    bytes: &[u8],
    width: u32,
    height: u32,
    max_memory: u64,
    denom: u32,
    out: &mut LetterboxWriter<'_>,
) -> Turbo<()> {
    let turbo = guarded(bytes, width, height, max_memory, denom, |cinfo, cmyk| {
        if cmyk {
            return Ok(None);
        }
        read_rows(cinfo, out).map(Some)
    });
    match turbo {
        Turbo::Done(Some(())) => Turbo::Done(()),
        Turbo::Done(None) => Turbo::Fallback,
        other => other.map(|_| unreachable!()),
    }
}

/// The size libjpeg decodes a `width` x `height` JPEG to when scaling by 1/`denom`.
pub(super) fn scaled_size(width: u32, height: u32, denom: u32) -> (u32, u32) {
    (width.div_ceil(denom), height.div_ceil(denom))
}

impl<T> Turbo<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Turbo<U> {
        match self {
            Turbo::Done(t) => Turbo::Done(f(t)),
            Turbo::Fallback => Turbo::Fallback,
            Turbo::Truncated => Turbo::Truncated,
            Turbo::TooManyScans(n) => Turbo::TooManyScans(n),
            Turbo::OutOfMemory => Turbo::OutOfMemory,
            Turbo::Failed(e) => Turbo::Failed(e),
        }
    }
}

/// Runs `body` on a started decompressor, turning libjpeg's errors (which leave by
/// unwinding) into [`Turbo`] answers.
fn guarded<T>(
    bytes: &[u8],
    width: u32,
    height: u32,
    max_memory: u64,
    denom: u32,
    body: impl FnOnce(&mut jpeg_decompress_struct, bool) -> Result<T, String>,
) -> Turbo<T> {
    SCANS.with(|s| s.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| {
        decode_unwinding(bytes, width, height, max_memory, denom, body)
    }));
    match result {
        Ok(Ok(t)) => Turbo::Done(t),
        Ok(Err(e)) => Turbo::Failed(e),
        Err(payload) if payload.is::<TruncatedPayload>() => Turbo::Truncated,
        Err(payload) if payload.is::<TooManyScansPayload>() => Turbo::TooManyScans(MAX_SCANS),
        Err(payload) if payload.is::<OutOfMemoryPayload>() => Turbo::OutOfMemory,
        Err(payload) => Turbo::Failed(
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg failed".into()),
        ),
    }
}

/// Sets up the decompressor, checks libjpeg's idea of the size against ours, starts it and
/// hands it to `body` (with whether it is CMYK/YCCK), then finishes it.
fn decode_unwinding<T>(
    bytes: &[u8],
    width: u32,
    height: u32,
    max_memory: u64,
    denom: u32,
    body: impl FnOnce(&mut jpeg_decompress_struct, bool) -> Result<T, String>,
) -> Result<T, String> {
    // SAFETY: all zeroes is what jpeg_create_decompress starts from, and what the guard's
    // jpeg_destroy_decompress accepts should creation fail.
    let mut guard = Guard(Box::new(unsafe { std::mem::zeroed::<Decompressor>() }));
    let d = &mut *guard.0;
    d.err = error_mgr();
    d.cinfo.common.err = &mut d.err;
    let cinfo = &mut d.cinfo;
    // SAFETY: `cinfo` is created before use; `bytes` (non-empty, as the probe requires)
    // outlives it, and libjpeg only reads it.
    unsafe {
        jpeg_create_decompress(cinfo);
        // 0 would mean "no limit" to libjpeg.
        (*cinfo.common.mem).max_memory_to_use =
            c_long::try_from(max_memory.max(1)).unwrap_or(c_long::MAX);
        jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
        if jpeg_read_header(cinfo, 0) != JPEG_HEADER_OK {
            return Err("no image in the JPEG file".into());
        }
    }
    // libjpeg reads its own header: if it disagrees with the size the limits and the
    // estimate were worked out from (two parsers, one file), it must not allocate for its
    // own idea of the size.
    if (cinfo.image_width, cinfo.image_height) != (width, height) {
        return Err("header dimensions disagree".into());
    }
    let cmyk = matches!(
        cinfo.jpeg_color_space,
        J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK
    );
    // CMYK: decode anyway (as CMYK) so truncation is caught here too; the pixels are then
    // produced by the `image` crate.
    cinfo.out_color_space = if cmyk {
        J_COLOR_SPACE::JCS_CMYK
    } else {
        J_COLOR_SPACE::JCS_RGB
    };
    cinfo.scale_num = 1;
    cinfo.scale_denom = denom.max(1);
    // SAFETY: header read; a memory source never suspends.
    if unsafe { jpeg_start_decompress(cinfo) } == 0 {
        return Err("libjpeg suspended".into());
    }
    let channels = if cmyk { 4 } else { 3 };
    let (out_w, out_h) = scaled_size(width, height, denom.max(1));
    if (cinfo.output_width, cinfo.output_height) != (out_w, out_h)
        || cinfo.output_components != channels
    {
        return Err("libjpeg's output differs from the header".into());
    }
    let t = body(cinfo, cmyk)?;
    // SAFETY: every scanline has been read (or the body returned before starting, in which
    // case libjpeg is only destroyed, by the guard).
    if cinfo.output_scanline >= cinfo.output_height {
        unsafe { jpeg_finish_decompress(cinfo) };
    }
    Ok(t)
}

/// Reads every row into one buffer (RGB), or through a few rows only to catch truncation
/// (CMYK: `None`).
fn read_whole(
    cinfo: &mut jpeg_decompress_struct,
    width: u32,
    height: u32,
    cmyk: bool,
) -> Result<Option<Vec<u8>>, String> {
    let row = width as usize * if cmyk { 4 } else { 3 };
    let mut pixels = vec![0u8; row * if cmyk { ROWS_PER_CALL } else { height as usize }];
    let base = pixels.as_mut_ptr();
    while cinfo.output_scanline < cinfo.output_height {
        let done = cinfo.output_scanline as usize;
        let first = if cmyk { 0 } else { done };
        let n = ROWS_PER_CALL.min(height as usize - done);
        // SAFETY: rows `first..first + n` lie inside `pixels`, each `row` bytes long.
        let mut rows: [*mut u8; ROWS_PER_CALL] =
            std::array::from_fn(|i| unsafe { base.add((first + i.min(n - 1)) * row) });
        // SAFETY: `rows` holds `n` valid row pointers.
        let got = unsafe { jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), n as JDIMENSION) };
        if got == 0 {
            return Err("libjpeg returned no rows".into());
        }
    }
    Ok((!cmyk).then_some(pixels))
}

/// Reads every row through a buffer of [`ROWS_PER_CALL`] rows into `out`.
fn read_rows(
    cinfo: &mut jpeg_decompress_struct,
    out: &mut LetterboxWriter<'_>,
) -> Result<(), String> {
    let (width, height) = (cinfo.output_width as usize, cinfo.output_height as usize);
    let row = width * 3;
    let mut pixels = vec![0u8; row * ROWS_PER_CALL];
    let base = pixels.as_mut_ptr();
    while cinfo.output_scanline < cinfo.output_height {
        let done = cinfo.output_scanline as usize;
        let n = ROWS_PER_CALL.min(height - done);
        // SAFETY: rows `0..n` lie inside `pixels`, each `row` bytes long.
        let mut rows: [*mut u8; ROWS_PER_CALL] =
            std::array::from_fn(|i| unsafe { base.add(i.min(n - 1) * row) });
        // SAFETY: `rows` holds `n` valid row pointers.
        let got = unsafe { jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), n as JDIMENSION) };
        if got == 0 {
            return Err("libjpeg returned no rows".into());
        }
        for (i, px) in pixels.chunks_exact(row).take(got as usize).enumerate() {
            if out.wants_next() {
                out.push(done + i, px);
            } else {
                out.skip();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plenty for the small test images.
    const ROOMY: u64 = 64 << 20;

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
        assert!(matches!(decode(&jpg, 16, 8, ROOMY), Turbo::Failed(m) if m.contains("disagree")));
    }

    #[test]
    fn whole_truncated_and_garbage() {
        let jpg = small_jpeg();
        assert!(
            matches!(decode(&jpg, 16, 8, ROOMY), Turbo::Done(img) if img.dimensions() == (16, 8))
        );
        assert!(matches!(
            decode(&jpg[..jpg.len() - 40], 16, 8, ROOMY),
            Turbo::Truncated
        ));
        assert!(matches!(
            decode(b"\xFF\xD8garbage", 16, 8, ROOMY),
            Turbo::Failed(_) | Turbo::Truncated
        ));
    }

    /// The pixels must be exactly those of the mozjpeg crate's decoder, which this code
    /// replaced (and so OpenCV's, which Ultralytics uses).
    #[test]
    fn pixels_are_those_of_the_mozjpeg_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
        let mut files: Vec<Vec<u8>> = ["bus.jpg", "zidane.jpg", "zidane_exif6.jpg"]
            .iter()
            .filter_map(|n| std::fs::read(dir.join(n)).ok())
            .collect();
        files.push(super::super::headers::tests::mozjpeg(333, 217, true));
        files.push(super::super::headers::tests::mozjpeg(333, 217, false));
        for jpg in &files {
            let d = mozjpeg::Decompress::new_mem(jpg).unwrap();
            let (w, h) = (d.width() as u32, d.height() as u32);
            let mut started = d.rgb().unwrap();
            let theirs: Vec<u8> = started.read_scanlines().unwrap();
            started.finish().unwrap();
            let Turbo::Done(ours) = decode(jpg, w, h, 256 << 20) else {
                panic!("libjpeg refused a {w}x{h} JPEG")
            };
            assert!(ours.as_raw() == &theirs, "{w}x{h}: pixels differ");
        }
    }

    /// `max_memory_to_use` below the coefficient arrays of a progressive JPEG: libjpeg
    /// refuses instead of allocating them.
    #[test]
    fn libjpeg_refuses_coefficient_arrays_over_its_memory_cap() {
        let jpg = super::super::headers::tests::mozjpeg(512, 512, true);
        let header = super::super::headers::jpeg_header(&jpg).unwrap();
        // 4:2:0, 32x32 MCUs of 6 blocks.
        assert_eq!(header.coefficient_bytes, 32 * 32 * 6 * 128);
        assert!(matches!(
            decode(&jpg, 512, 512, header.coefficient_bytes / 2),
            Turbo::OutOfMemory
        ));
        // What the probe allows it: the arrays, the rows and the flat allowance.
        let allowance = header.coefficient_bytes + header.row_bytes + (2 << 20);
        assert!(matches!(decode(&jpg, 512, 512, allowance), Turbo::Done(_)));
    }
}
