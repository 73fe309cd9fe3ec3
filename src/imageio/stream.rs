//! Decoding a JPEG or PNG straight into the model's input: the decoder's rows go through the
//! letterbox as they come, so the photo never exists whole (the routes that draw on it
//! decode whole).

use image::metadata::Orientation;
use image::ImageFormat;

use super::letterbox::{letterbox_into, LetterboxWriter};
use super::probe::{DECODER_OVERHEAD, HEADER_ALLOC};
use super::{
    jpeg, map_decode_error, out_of_memory, png, too_many_scans, truncated, ImageError, Probe,
};
use crate::budget::Reservation;
use crate::geometry::Letterbox;

impl Probe<'_> {
    /// Whether the photo can be decoded straight into the letterbox, row by row, never
    /// stored whole ([`Probe::stream_into`]): a JPEG that libjpeg turns into RGB itself, or
    /// a PNG that is not interlaced, that needs no EXIF turn (a turn needs the rows in
    /// another order than they come).
    pub fn streams(&self) -> bool {
        let rows_in_order = match self.jpeg {
            Some(j) => j.components != 4,
            None => self.format == ImageFormat::Png && png::streams(self.bytes),
        };
        rows_in_order && self.orientation == Orientation::NoTransforms
    }

    /// The DCT scaling [`DecodeMode::Fast`](super::DecodeMode::Fast) uses for a photo letterboxed as `lb`: the
    /// largest 1/2, 1/4 or 1/8 that still leaves the decoded photo at least the resized
    /// size (so the letterbox still shrinks it), or 1 (exact) when even 1/2 would not, or
    /// when the photo does not stream.
    pub fn fast_denominator(&self, lb: &Letterbox) -> u32 {
        if self.jpeg.is_none() || !self.streams() {
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

    /// The most bytes [`Probe::stream_into`] holds: the decoder's buffers (libjpeg's as for
    /// a whole decode; the png crate's few rows), a few decoded rows and the resizer's two
    /// rows; no photo.
    pub fn stream_peak_bytes(&self, lb: &Letterbox, denom: u32) -> u64 {
        let resizer = crate::resize::RowResizer::bytes(lb.new_w as usize);
        if self.jpeg.is_none() {
            return png::work_bytes(self.width) + resizer + DECODER_OVERHEAD;
        }
        let (w, _) = jpeg::scaled_size(self.width, self.height, denom.max(1));
        self.internal_bytes
            + jpeg::ROWS_PER_CALL as u64 * u64::from(w) * 3
            + resizer
            + DECODER_OVERHEAD
    }

    /// Decodes the photo straight into `out` (the letterbox `lb` of the model's input),
    /// holding a few rows instead of the photo. `denom` > 1 is libjpeg's DCT-domain scaling
    /// of a JPEG (approximate: [`DecodeMode::Fast`](super::DecodeMode::Fast)); 1 gives
    /// exactly the pixels of a whole decode followed by [`letterbox_into`]. Only for a probe
    /// that [`Probe::streams`]; a JPEG libjpeg refuses after all is decoded whole by the
    /// fallback decoder (reserving for that) and letterboxed from there.
    /// `budget` must hold [`Probe::stream_peak_bytes`].
    pub fn stream_into(
        self,
        lb: &Letterbox,
        out: &mut [f32],
        budget: &mut Reservation,
        denom: u32,
    ) -> Result<(), ImageError> {
        if !self.streams() {
            return self.whole_into(lb, out, budget);
        }
        let Some(jpeg) = self.jpeg else {
            return self.stream_png(lb, out, budget);
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
            jpeg::Turbo::Failed(_) | jpeg::Turbo::Fallback => self.whole_into(lb, out, budget),
        }
    }

    /// A PNG's rows into `out`; one the png crate hands out of order after all (the IHDR
    /// said otherwise) is decoded whole.
    fn stream_png(
        self,
        lb: &Letterbox,
        out: &mut [f32],
        budget: &mut Reservation,
    ) -> Result<(), ImageError> {
        budget.ensure(self.stream_peak_bytes(lb, 1))?;
        let mut writer = LetterboxWriter::new(lb, self.width as usize, self.height as usize, out);
        match png::stream(self.bytes, HEADER_ALLOC, &mut writer) {
            Ok(()) => Ok(()),
            Err(png::Stop::NotStreamable) => self.whole_into(lb, out, budget),
            Err(png::Stop::Decoding(e)) => {
                Err(map_decode_error(png::as_image_error(e), &self.limits))
            }
        }
    }

    /// The fallback: the whole photo, then the letterbox.
    fn whole_into(
        self,
        lb: &Letterbox,
        out: &mut [f32],
        budget: &mut Reservation,
    ) -> Result<(), ImageError> {
        let img = self.decode(budget)?;
        letterbox_into(&img, lb, out);
        Ok(())
    }
}
