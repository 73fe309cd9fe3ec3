//! The model's input: the upright photo letterboxed onto the canvas as a planar [3, H, W]
//! RGB tensor scaled to 0..1, exactly as Ultralytics prepares it.

use image::RgbImage;

use crate::geometry::Letterbox;

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
    let (cw, ch) = (lb.canvas_w as usize, lb.canvas_h as usize);
    assert_eq!(out.len(), 3 * cw * ch, "input buffer must be [3, H, W]");
    let (nw, nh) = (lb.new_w as usize, lb.new_h as usize);
    let lut = unit_lut();
    let pad = lut[114];
    let plane = cw * ch;
    let (left, top) = (lb.left as usize, lb.top as usize);
    // Padding: whole rows above and below, and the strips beside the photo.
    for p in out.chunks_exact_mut(plane) {
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
    let mut put = |dy: usize, src: &[u8]| {
        let at = (top + dy) * cw + left;
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
    };
    if (img.width(), img.height()) == (lb.new_w, lb.new_h) {
        for (dy, row) in img.as_raw().chunks_exact(nw * 3).enumerate() {
            put(dy, row);
        }
    } else {
        crate::resize::resize_rgb8_rows(
            img.as_raw(),
            img.width() as usize,
            img.height() as usize,
            nw,
            nh,
            put,
        );
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
