//! Letterbox geometry shared by preprocessing (`imageio`) and postprocessing (`engine`):
//! which canvas a photo goes on (the full square, or the minimum rectangle for dynamic-shape
//! models), where the resized photo sits on it, and how to map boxes back. Pure arithmetic,
//! reproducing Ultralytics' `LetterBox` and `scale_boxes` to the rounding.

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

/// How a model's canvas is sized for a photo: the full `width` x `height` square for
/// static-shape models, the minimum rectangle (multiple of `stride`) for dynamic ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canvas {
    /// Model image size (metadata `imgsz`) width: the canvas of static models, the bound of rect ones.
    pub width: u32,
    /// Model image size height.
    pub height: u32,
    /// Model stride; rect canvases are padded to a multiple of it.
    pub stride: u32,
    /// Letterbox to the minimum rectangle (Ultralytics' `auto=True`), for dynamic-shape models.
    pub rect: bool,
}

impl Canvas {
    /// Where a `src_w` x `src_h` photo goes, and on which canvas.
    pub fn letterbox(&self, src_w: u32, src_h: u32) -> Letterbox {
        if self.rect {
            Letterbox::rect(src_w, src_h, self.width, self.height, self.stride)
        } else {
            Letterbox::new(src_w, src_h, self.width, self.height)
        }
    }
}

impl Letterbox {
    /// Computes the placement exactly as Ultralytics' `LetterBox(auto=False, scaleup=True)`:
    /// the smaller ratio, the rounded new size, and the padding split with -0.1/+0.1.
    pub fn new(src_w: u32, src_h: u32, canvas_w: u32, canvas_h: u32) -> Self {
        Self::place(src_w, src_h, canvas_w, canvas_h, None)
    }

    /// Ultralytics' `LetterBox(auto=True)` (minimum rectangle), used for dynamic-shape
    /// models: the photo is resized to fit `shape_w` x `shape_h` as in [`Letterbox::new`],
    /// but each side is padded only by `(shape - resized) % stride`, so the canvas is the
    /// resized photo rounded up to a multiple of the stride (when `shape` is one).
    pub fn rect(src_w: u32, src_h: u32, shape_w: u32, shape_h: u32, stride: u32) -> Self {
        Self::place(src_w, src_h, shape_w, shape_h, Some(stride.max(1)))
    }

    fn place(src_w: u32, src_h: u32, shape_w: u32, shape_h: u32, stride: Option<u32>) -> Self {
        let r = f64::min(shape_h as f64 / src_h as f64, shape_w as f64 / src_w as f64);
        let new_w = (round_half_even(src_w as f64 * r) as u32).clamp(1, shape_w);
        let new_h = (round_half_even(src_h as f64 * r) as u32).clamp(1, shape_h);
        // `np.mod(dw, stride)` in Ultralytics: the padding the minimum rectangle keeps.
        let (pad_w, pad_h) = match stride {
            None => (shape_w - new_w, shape_h - new_h),
            Some(s) => ((shape_w - new_w) % s, (shape_h - new_h) % s),
        };
        let (canvas_w, canvas_h) = (new_w + pad_w, new_h + pad_h);
        let left = round_half_even(pad_w as f64 / 2.0 - 0.1).max(0.0) as u32;
        let top = round_half_even(pad_h as f64 / 2.0 - 0.1).max(0.0) as u32;
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

    /// The placement Ultralytics' `scale_boxes` and `scale_masks` assume when they map
    /// results back: recomputed from the canvas size alone, as if the photo had been
    /// letterboxed onto the whole canvas. Equal to `self` for a full (square) letterbox; for
    /// a rect canvas it can differ by a pixel (499x100 on a 640x128 canvas is placed 640
    /// wide, but mapped back as 639 wide), and matching Ultralytics means mapping back the
    /// same way.
    pub fn as_mapped_back(&self) -> Letterbox {
        Letterbox::new(self.src_w, self.src_h, self.canvas_w, self.canvas_h)
    }

    /// Canvas (model input) size as (height, width).
    pub fn canvas_hw(&self) -> (usize, usize) {
        (self.canvas_h as usize, self.canvas_w as usize)
    }

    /// Number of values in the planar [3, H, W] input tensor for this canvas.
    pub fn tensor_len(&self) -> usize {
        3 * self.canvas_w as usize * self.canvas_h as usize
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

    // Ultralytics' LetterBox(auto=True) at imgsz 640, stride 32 (../shared/golden/README.md:
    // bus.jpg runs as 480x640).
    #[test]
    fn rect_canvas_is_the_smallest_stride_multiple() {
        let rect = |w, h| Letterbox::rect(w, h, 640, 640, 32);
        let bus = rect(810, 1080);
        assert_eq!(
            (
                bus.canvas_w,
                bus.canvas_h,
                bus.new_w,
                bus.new_h,
                bus.left,
                bus.top
            ),
            (480, 640, 480, 640, 0, 0)
        );
        let z = rect(1280, 720);
        assert_eq!(
            (z.canvas_w, z.canvas_h, z.new_h, z.top, z.bottom),
            (640, 384, 360, 12, 12)
        );
        // 213 rows of padding % 32 = 21: split 10 above, 11 below, as round(10.5 -/+ 0.1).
        let coffee = rect(600, 400);
        assert_eq!(
            (coffee.canvas_h, coffee.new_h, coffee.top, coffee.bottom),
            (448, 427, 10, 11)
        );
        assert_eq!(rect(512, 512).canvas_hw(), (640, 640));
        assert_eq!(rect(451, 300).tensor_len(), 3 * 640 * 448);
        // A photo narrower than one stride still gets a whole-stride canvas.
        let thin = rect(10, 3000);
        assert_eq!((thin.new_w, thin.canvas_w, thin.canvas_h), (2, 32, 640));
        assert_eq!(thin.left + thin.new_w + thin.right, 32);
    }

    #[test]
    fn canvas_policy_picks_square_or_rect() {
        let square = Canvas {
            width: 640,
            height: 640,
            stride: 32,
            rect: false,
        };
        assert_eq!(
            square.letterbox(810, 1080),
            Letterbox::new(810, 1080, 640, 640)
        );
        let rect = Canvas {
            rect: true,
            ..square
        };
        assert_eq!(rect.letterbox(810, 1080).canvas_hw(), (640, 480));
    }

    #[test]
    fn mapping_back_recomputes_from_the_canvas_like_scale_boxes() {
        // Square letterboxes map back through their own placement.
        let b = Letterbox::new(810, 1080, 320, 320);
        assert_eq!(b.as_mapped_back(), b);
        // 499x100 is resized to 640x128 on a 640x128 rect canvas, but scale_boxes sees a
        // 640x128 canvas and recomputes min(128/100, 640/499) -> 639 wide, pad 0.
        let r = Letterbox::rect(499, 100, 640, 640, 32);
        assert_eq!((r.new_w, r.canvas_w, r.canvas_h), (640, 640, 128));
        let m = r.as_mapped_back();
        assert_eq!((m.new_w, m.new_h, m.left, m.top), (639, 128, 0, 0));
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
