//! Instance masks at the photo's full resolution (Ultralytics' `retina_masks`), computed
//! only inside each box: logits = coefficients x prototypes at prototype resolution,
//! optionally upsampled x2/x4 so the letterbox padding falls on whole pixels, the content
//! region resized bilinearly (align_corners=False) to the photo, thresholded at logit > 0.

use ndarray::{ArrayView2, ArrayView3};

use crate::geometry::Letterbox;
use crate::mask::BoxMask;

/// Source index and weight for PyTorch's bilinear resize (align_corners=False):
/// `src = (dst + 0.5) * in/out - 0.5`, clamped at 0, neighbour clamped at the edge.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w1: f32,
}

fn tap(dst: usize, in_size: usize, out_size: usize) -> Tap {
    let scale = in_size as f32 / out_size as f32;
    let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src as usize).min(in_size - 1);
    let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
    Tap {
        i0,
        i1,
        w1: src - i0 as f32,
    }
}

/// Smallest upsampling factor u (dividing `ratio` = canvas/proto) at which every padding
/// edge lands on a whole pixel of the upsampled logits.
fn upsample_factor(lb: &Letterbox, ratio: usize) -> usize {
    (1..=ratio)
        .filter(|u| ratio % u == 0)
        .find(|u| {
            let step = ratio / u;
            [lb.left, lb.top, lb.right, lb.bottom]
                .iter()
                .all(|p| *p as usize % step == 0)
        })
        .unwrap_or(ratio)
}

/// Pixel span of a box on the photo: pixel x is kept iff x1 <= x < x2 (Ultralytics'
/// `crop_mask`), clamped to `0..n`.
fn span(lo: f32, hi: f32, n: usize) -> (usize, usize) {
    let a = (lo.ceil().max(0.0) as usize).min(n);
    let b = (hi.ceil().max(0.0) as usize).min(n);
    (a, b)
}

/// Bytes the masks of these boxes will take ([`mask_for_box`] stores a byte per pixel of
/// each box's span), so the memory can be reserved before any mask exists.
pub fn bytes_for_boxes(boxes: impl Iterator<Item = [f32; 4]>) -> u64 {
    boxes
        .map(|b| {
            let w = (b[2].ceil().max(0.0) - b[0].ceil().max(0.0)).max(0.0) as u64;
            let h = (b[3].ceil().max(0.0) - b[1].ceil().max(0.0)).max(0.0) as u64;
            w * h
        })
        .sum()
}

/// Computes one full-resolution mask, stored only inside the pixel span of `source_box`.
/// Returns `None` when that span is empty.
pub fn mask_for_box(
    logits: ArrayView2<f32>,
    lb: &Letterbox,
    source_box: [f32; 4],
) -> Option<BoxMask> {
    let (mh, mw) = logits.dim();
    let (img_w, img_h) = (lb.src_w as usize, lb.src_h as usize);
    let (x0, x1) = span(source_box[0], source_box[2], img_w);
    let (y0, y1) = span(source_box[1], source_box[3], img_h);
    if x0 >= x1 || y0 >= y1 {
        return None;
    }

    let ratio = (lb.canvas_w as usize / mw).max(1);
    let u = upsample_factor(lb, ratio);
    let step = ratio / u;
    let (uh, uw) = (mh * u, mw * u);
    let (top, left) = (lb.top as usize / step, lb.left as usize / step);
    let ch = uh - top - lb.bottom as usize / step;
    let cw = uw - left - lb.right as usize / step;

    // Taps from photo pixels into the cropped upsampled map, for the box span only.
    let xt: Vec<Tap> = (x0..x1).map(|x| tap(x, cw, img_w)).collect();
    let yt: Vec<Tap> = (y0..y1).map(|y| tap(y, ch, img_h)).collect();
    let (cx_lo, cx_hi) = (xt[0].i0, xt.last().expect("span is non-empty").i1);
    let (cy_lo, cy_hi) = (yt[0].i0, yt.last().expect("span is non-empty").i1);
    let (rw, rh) = (cx_hi - cx_lo + 1, cy_hi - cy_lo + 1);

    // The needed region of the (upsampled, cropped) logit map.
    let region: Vec<f32> = if u == 1 {
        let mut r = Vec::with_capacity(rw * rh);
        for cy in cy_lo..=cy_hi {
            let row = logits.row(cy + top);
            r.extend(row.iter().skip(cx_lo + left).take(rw));
        }
        r
    } else {
        let ux: Vec<Tap> = (cx_lo..=cx_hi).map(|cx| tap(cx + left, mw, uw)).collect();
        let mut r = Vec::with_capacity(rw * rh);
        for cy in cy_lo..=cy_hi {
            let ty = tap(cy + top, mh, uh);
            let (r0, r1) = (logits.row(ty.i0), logits.row(ty.i1));
            for t in &ux {
                let a = (1.0 - t.w1) * r0[t.i0] + t.w1 * r0[t.i1];
                let b = (1.0 - t.w1) * r1[t.i0] + t.w1 * r1[t.i1];
                r.push((1.0 - ty.w1) * a + ty.w1 * b);
            }
        }
        r
    };

    let (w, h) = (x1 - x0, y1 - y0);
    let mut bits = vec![0u8; w * h];
    // Horizontal pass cached per source row: rows repeat across many output rows when upscaling.
    let mut cache: [(usize, Vec<f32>); 2] =
        [(usize::MAX, vec![0.0; w]), (usize::MAX, vec![0.0; w])];
    let horizontal = |row: usize, out: &mut Vec<f32>| {
        let src = &region[(row - cy_lo) * rw..(row - cy_lo + 1) * rw];
        for (o, t) in out.iter_mut().zip(&xt) {
            *o = (1.0 - t.w1) * src[t.i0 - cx_lo] + t.w1 * src[t.i1 - cx_lo];
        }
    };
    for (oy, t) in yt.iter().enumerate() {
        for (slot, row) in [(0, t.i0), (1, t.i1)] {
            if cache[slot].0 != row {
                if let Some(other) = cache.iter().position(|c| c.0 == row) {
                    let v = cache[other].1.clone();
                    cache[slot] = (row, v);
                } else {
                    horizontal(row, &mut cache[slot].1);
                    cache[slot].0 = row;
                }
            }
        }
        let (a, b) = (&cache[0].1, &cache[1].1);
        let out = &mut bits[oy * w..(oy + 1) * w];
        for i in 0..w {
            let v = (1.0 - t.w1) * a[i] + t.w1 * b[i];
            out[i] = (v > 0.0) as u8;
        }
    }
    Some(BoxMask {
        image_w: lb.src_w,
        image_h: lb.src_h,
        x: x0 as u32,
        y: y0 as u32,
        w: w as u32,
        h: h as u32,
        bits,
    })
}

/// Mask logits for each coefficient row: `coeffs` [n, m] x `protos` [m, mh, mw] -> [n, mh*mw].
pub fn logits(coeffs: ArrayView2<f32>, protos: ArrayView3<f32>) -> ndarray::Array2<f32> {
    let (m, mh, mw) = protos.dim();
    let flat = protos
        .into_shape_with_order((m, mh * mw))
        .expect("prototype view is contiguous");
    coeffs.dot(&flat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn bilinear_taps_match_pytorch() {
        // torch: 2 -> 4 upsample, align_corners=False: src = [-0.25->0, 0.25, 0.75, 1.25]
        let t: Vec<_> = (0..4).map(|d| tap(d, 2, 4)).collect();
        assert_eq!((t[0].i0, t[0].i1, t[0].w1), (0, 1, 0.0));
        assert_eq!((t[1].i0, t[1].w1), (0, 0.25));
        assert_eq!((t[3].i0, t[3].i1, t[3].w1), (1, 1, 0.25));
    }

    #[test]
    fn upsample_only_when_padding_is_fractional() {
        assert_eq!(upsample_factor(&Letterbox::new(810, 1080, 320, 320), 4), 1); // pads 40
        assert_eq!(upsample_factor(&Letterbox::new(451, 300, 320, 320), 4), 4); // pads 53/54
        assert_eq!(upsample_factor(&Letterbox::new(640, 312, 320, 320), 4), 2); // pads 82
        assert_eq!(upsample_factor(&Letterbox::new(640, 316, 320, 320), 4), 4); // pads 81
    }

    #[test]
    fn mask_is_cropped_to_the_box_and_thresholded() {
        // Positive logits everywhere: the mask is exactly the box's pixel span.
        let lb = Letterbox::new(80, 80, 320, 320);
        let logits = Array2::from_elem((80, 80), 1.0f32);
        let m = mask_for_box(logits.view(), &lb, [10.2, 5.0, 20.0, 7.5]).unwrap();
        assert_eq!((m.x, m.y, m.w, m.h), (11, 5, 9, 3));
        assert_eq!(m.area(), 27);
        let neg = Array2::from_elem((80, 80), -1.0f32);
        assert_eq!(
            mask_for_box(neg.view(), &lb, [10.0, 5.0, 20.0, 8.0])
                .unwrap()
                .area(),
            0
        );
        assert!(mask_for_box(logits.view(), &lb, [10.0, 5.0, 10.0, 8.0]).is_none());
    }

    #[test]
    fn half_plane_logits_split_the_image() {
        // Logit positive on the left half of the proto map: the left half of the photo is set.
        let lb = Letterbox::new(160, 160, 320, 320);
        let logits = Array2::from_shape_fn((80, 80), |(_, x)| if x < 40 { 1.0 } else { -1.0 });
        let m = mask_for_box(logits.view(), &lb, [0.0, 0.0, 160.0, 160.0]).unwrap();
        assert!(m.get(10, 10) && m.get(78, 100));
        assert!(!m.get(82, 100) && !m.get(150, 3));
    }
}
