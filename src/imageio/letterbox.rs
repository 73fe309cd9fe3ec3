//! The model's input: the upright photo letterboxed onto the canvas as a planar [3, H, W]
//! RGB tensor scaled to 0..1, exactly as Ultralytics prepares it.

use image::RgbImage;

use crate::geometry::Letterbox;
use crate::resize::RowResizer;

/// `v / 255` for every byte, computed once: a table lookup is exact and cheaper than a divide.
fn unit_lut() -> &'static [f32; 256] {
    static LUT: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    LUT.get_or_init(|| std::array::from_fn(|i| i as f32 / 255.0))
}

/// Letterboxes `img` into `out`, a planar [3, H, W] RGB tensor scaled to 0..1, padding with
/// 114 (Ultralytics' grey). The resize is OpenCV's INTER_LINEAR, bit-exact (see `resize`);
/// each resized row goes straight into the three planes, so no resized copy of the photo
/// is ever stored.
pub fn letterbox_into(img: &RgbImage, lb: &Letterbox, out: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut writer = LetterboxWriter::new(lb, w, h, out);
    for (sy, row) in img.as_raw().chunks_exact(w * 3).enumerate() {
        writer.push(sy, row);
    }
    debug_assert!(writer.done());
}

/// The letterbox fed one source row at a time, top to bottom (from a decoder, or from a
/// stored photo): padding is written at once, and each row of the resized photo goes into
/// the three planes as soon as the source rows it needs have arrived. The source may be
/// smaller than the photo the letterbox was planned for (a DCT-scaled JPEG decode): it is
/// then resized from its own size to the letterbox's.
pub struct LetterboxWriter<'a> {
    out: &'a mut [f32],
    lb: Letterbox,
    /// None when the source already has the resized size (rows are copied as they are).
    resizer: Option<RowResizer>,
    src_h: usize,
    /// Source rows taken so far.
    rows: usize,
}

impl<'a> LetterboxWriter<'a> {
    /// Pads `out` ([3, H, W] of the letterbox's canvas) and gets ready for `src_w` x `src_h`
    /// rows of packed RGB8.
    pub fn new(lb: &Letterbox, src_w: usize, src_h: usize, out: &'a mut [f32]) -> Self {
        let (cw, ch) = (lb.canvas_w as usize, lb.canvas_h as usize);
        assert_eq!(out.len(), 3 * cw * ch, "input buffer must be [3, H, W]");
        let (nw, nh) = (lb.new_w as usize, lb.new_h as usize);
        let pad = unit_lut()[114];
        let (left, top) = (lb.left as usize, lb.top as usize);
        // Padding: whole rows above and below, and the strips beside the photo.
        for p in out.chunks_exact_mut(cw * ch) {
            for y in 0..ch {
                let row = &mut p[y * cw..(y + 1) * cw];
                if y < top || y >= top + nh {
                    row.fill(pad);
                } else {
                    row[..left].fill(pad);
                    row[left + nw..].fill(pad);
                }
            }
        }
        let resizer = ((src_w, src_h) != (nw, nh)).then(|| RowResizer::new(src_w, src_h, nw, nh));
        LetterboxWriter {
            out,
            lb: *lb,
            resizer,
            src_h,
            rows: 0,
        }
    }

    /// Whether the next source row is needed (a shrink needs about two rows per output row;
    /// a decoder may skip converting the others).
    pub fn wants_next(&self) -> bool {
        match &self.resizer {
            Some(r) => r.wants(self.rows),
            None => self.rows < self.src_h,
        }
    }

    /// Takes the next source row (packed RGB8).
    pub fn push(&mut self, sy: usize, row: &[u8]) {
        debug_assert_eq!(sy, self.rows, "rows in order");
        self.rows = sy + 1;
        let (out, lb) = (&mut *self.out, &self.lb);
        match &mut self.resizer {
            Some(r) => r.push(sy, row, &mut |dy, px| put(out, lb, dy, px)),
            None => put(out, lb, sy, row),
        }
    }

    /// Skips the next source row (one [`LetterboxWriter::wants_next`] said was not needed).
    pub fn skip(&mut self) {
        self.rows += 1;
    }

    /// Whether every row of the resized photo has been written.
    pub fn done(&self) -> bool {
        match &self.resizer {
            Some(r) => r.done(),
            None => self.rows >= self.src_h,
        }
    }
}

/// Writes row `dy` of the resized photo (packed RGB8) into the three planes.
fn put(out: &mut [f32], lb: &Letterbox, dy: usize, src: &[u8]) {
    let lut = unit_lut();
    let (cw, ch, nw) = (
        lb.canvas_w as usize,
        lb.canvas_h as usize,
        lb.new_w as usize,
    );
    let plane = cw * ch;
    let at = (lb.top as usize + dy) * cw + lb.left as usize;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let (r, g, b) = (
        &mut r[at..at + nw],
        &mut g[at..at + nw],
        &mut b[at..at + nw],
    );
    for (i, px) in src.chunks_exact(3).enumerate() {
        r[i] = lut[px[0] as usize];
        g[i] = lut[px[1] as usize];
        b[i] = lut[px[2] as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_pads_with_114_and_copies_pixels() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([255, 0, 51]));
        let lb = Letterbox::new(4, 2, 4, 4);
        let mut out = vec![0.0; 3 * 16];
        letterbox_into(&img, &lb, &mut out);
        assert_eq!((lb.top, lb.bottom), (1, 1));
        let pad = 114.0 / 255.0;
        assert_eq!(out[0], pad); // R plane, row 0
        assert_eq!(out[4], 1.0); // R plane, row 1
        assert_eq!(out[16 + 4], 0.0); // G plane, row 1
        assert_eq!(out[32 + 4], 0.2); // B plane, row 1
        assert_eq!(out[32 + 15], pad); // B plane, row 3
    }
}
