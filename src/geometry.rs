//! Letterbox geometry shared by preprocessing (`imageio`) and postprocessing (`engine`):
//! where the resized photo sits on the model's canvas, and how to map boxes back.
//! Pure arithmetic, reproducing Ultralytics' `LetterBox` and `scale_boxes` to the rounding.

/// Python's `round()`: half to even. Ultralytics rounds with it, so we must too.
pub fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 {
        2.0 * (v / 2.0).round()
    } else {
        r
    }
}

/// Placement of a `src_w` x `src_h` image on a `canvas_w` x `canvas_h` canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letterbox {
    /// Source (upright photo) width.
    pub src_w: u32,
    /// Source height.
    pub src_h: u32,
    /// Model input width.
    pub canvas_w: u32,
    /// Model input height.
    pub canvas_h: u32,
    /// Width of the photo once resized (before padding).
    pub new_w: u32,
    /// Height of the photo once resized.
    pub new_h: u32,
    /// Padding on each side, in canvas pixels.
    pub left: u32,
    /// Top padding.
    pub top: u32,
    /// Right padding.
    pub right: u32,
    /// Bottom padding.
    pub bottom: u32,
}

impl Letterbox {
    /// Computes the placement exactly as Ultralytics' `LetterBox(auto=False, scaleup=True)`:
    /// the smaller ratio, the rounded new size, and the padding split with -0.1/+0.1.
    pub fn new(src_w: u32, src_h: u32, canvas_w: u32, canvas_h: u32) -> Self {
        let r = f64::min(
            canvas_h as f64 / src_h as f64,
            canvas_w as f64 / src_w as f64,
        );
        let new_w = (round_half_even(src_w as f64 * r) as u32).clamp(1, canvas_w);
        let new_h = (round_half_even(src_h as f64 * r) as u32).clamp(1, canvas_h);
        let dw = (canvas_w - new_w) as f64 / 2.0;
        let dh = (canvas_h - new_h) as f64 / 2.0;
        let left = round_half_even(dw - 0.1).max(0.0) as u32;
        let top = round_half_even(dh - 0.1).max(0.0) as u32;
        Letterbox {
            src_w,
            src_h,
            canvas_w,
            canvas_h,
            new_w,
            new_h,
            left,
            top,
            right: canvas_w - new_w - left,
            bottom: canvas_h - new_h - top,
        }
    }

    /// Maps a box from canvas pixels back to source pixels (per-axis gains of the rounded
    /// resize, as Ultralytics does) and clips it to the image.
    pub fn box_to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let gx = self.new_w as f32 / self.src_w as f32;
        let gy = self.new_h as f32 / self.src_h as f32;
        let (w, h) = (self.src_w as f32, self.src_h as f32);
        [
            ((b[0] - self.left as f32) / gx).clamp(0.0, w),
            ((b[1] - self.top as f32) / gy).clamp(0.0, h),
            ((b[2] - self.left as f32) / gx).clamp(0.0, w),
            ((b[3] - self.top as f32) / gy).clamp(0.0, h),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(53.4), 53.0);
        assert_eq!(round_half_even(53.6), 54.0);
    }

    // The two worked examples of ../shared/golden/README.md.
    #[test]
    fn matches_ultralytics_examples() {
        let c = Letterbox::new(451, 300, 320, 320);
        assert_eq!(
            (c.new_w, c.new_h, c.top, c.bottom, c.left, c.right),
            (320, 213, 53, 54, 0, 0)
        );
        let b = Letterbox::new(810, 1080, 320, 320);
        assert_eq!(
            (b.new_w, b.new_h, b.left, b.right, b.top, b.bottom),
            (240, 320, 40, 40, 0, 0)
        );
    }

    #[test]
    fn tiny_and_extreme_images_stay_on_canvas() {
        let t = Letterbox::new(1, 1, 320, 320);
        assert_eq!((t.new_w, t.new_h), (320, 320));
        let s = Letterbox::new(10000, 3, 320, 320);
        assert_eq!((s.new_w, s.new_h), (320, 1));
        assert_eq!(s.top + s.bottom + s.new_h, 320);
    }

    #[test]
    fn box_round_trip_and_clip() {
        let b = Letterbox::new(810, 1080, 320, 320);
        let src = b.box_to_source([40.0, 0.0, 280.0, 320.0]);
        assert_eq!(src, [0.0, 0.0, 810.0, 1080.0]);
        let clipped = b.box_to_source([0.0, -5.0, 400.0, 330.0]);
        assert_eq!(clipped, [0.0, 0.0, 810.0, 1080.0]);
    }
}
