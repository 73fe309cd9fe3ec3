//! Background edits and cutouts, PixelLib's `tune_bg` and `extract_segmented_objects`: the
//! detections' masks make one foreground matte, and what lies outside it is replaced
//! (transparency, a colour, the photo in grey or blurred, another picture); or each
//! detection is cut out of the photo with its mask as alpha. Pure functions over pixels, as
//! the rest of `render`; the memory each needs is stated by its `*_bytes` function, so the
//! caller can reserve it first.

use image::{GrayImage, RgbImage, RgbaImage};

use crate::engine::Detection;
use crate::mask::BoxMask;

/// PixelLib's blur strengths: `cv2.blur` kernel sizes of `blur_bg(low|moderate|extreme)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blur {
    /// 21 x 21.
    Low,
    /// 39 x 39.
    Moderate,
    /// 81 x 81.
    Extreme,
}

impl Blur {
    /// The box kernel's side.
    pub fn kernel(self) -> u32 {
        match self {
            Blur::Low => 21,
            Blur::Moderate => 39,
            Blur::Extreme => 81,
        }
    }
}

/// What replaces the background.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// Nothing: an RGBA picture, transparent outside the objects.
    Transparent,
    /// One colour (RGB).
    Colour([u8; 3]),
    /// The photo in greyscale (OpenCV's `COLOR_RGB2GRAY` weights).
    Gray,
    /// The photo blurred with a box filter (`cv2.blur`).
    Blur(Blur),
    /// Another picture, already scaled to the photo's size.
    Picture(RgbImage),
}

/// An edited photo: RGBA when the background is transparent, RGB otherwise.
pub enum Edited {
    /// With alpha.
    Rgba(RgbaImage),
    /// Opaque.
    Rgb(RgbImage),
}

/// The foreground matte of `detections` on a `w` x `h` photo: 255 inside any mask, 0
/// outside, then softened over `feather` pixels on each side of the edge (the masks come
/// from the model's quarter-resolution prototypes, so their edges are stair-stepped).
pub fn matte(detections: &[Detection], w: u32, h: u32, feather: u32) -> GrayImage {
    let mut alpha = GrayImage::new(w, h);
    for m in detections.iter().filter_map(|d| d.mask.as_ref()) {
        paint(&mut alpha, m);
    }
    if feather > 0 {
        alpha = GrayImage::from_raw(w, h, box_blur(alpha.as_raw(), w, h, 1, 2 * feather + 1))
            .expect("same size");
    }
    alpha
}

fn paint(alpha: &mut GrayImage, m: &BoxMask) {
    let w = alpha.width() as usize;
    let raw: &mut [u8] = alpha;
    for row in 0..m.h as usize {
        let bits = &m.bits[row * m.w as usize..(row + 1) * m.w as usize];
        let start = (m.y as usize + row) * w + m.x as usize;
        for (px, &b) in raw[start..start + m.w as usize].iter_mut().zip(bits) {
            if b != 0 {
                *px = 255;
            }
        }
    }
}

/// Bytes [`edit`] allocates beyond the photo and the matte for a `w` x `h` photo: a blurred
/// copy, or the RGBA picture.
pub fn edit_bytes(fill: &Fill, w: u32, h: u32) -> u64 {
    let px = u64::from(w) * u64::from(h);
    match fill {
        Fill::Transparent => 4 * px,
        Fill::Blur(_) => 3 * px + 16 * u64::from(w),
        Fill::Colour(_) | Fill::Gray | Fill::Picture(_) => 0,
    }
}

/// Replaces the photo's background (where `alpha` is below 255) by `fill`, blending along a
/// feathered edge.
pub fn edit(mut photo: RgbImage, alpha: &GrayImage, fill: Fill) -> Edited {
    let (w, h) = photo.dimensions();
    let a = alpha.as_raw();
    match fill {
        Fill::Transparent => {
            let mut out = RgbaImage::new(w, h);
            for ((o, p), &a) in out.chunks_exact_mut(4).zip(photo.chunks_exact(3)).zip(a) {
                o[..3].copy_from_slice(p);
                o[3] = a;
            }
            return Edited::Rgba(out);
        }
        Fill::Colour(c) => blend(&mut photo, a, |_| c),
        Fill::Gray => blend(&mut photo, a, |p| [gray(p); 3]),
        Fill::Blur(b) => {
            let blurred = box_blur(photo.as_raw(), w, h, 3, b.kernel());
            blend_with(&mut photo, a, &blurred);
        }
        Fill::Picture(bg) => blend_with(&mut photo, a, bg.as_raw()),
    }
    Edited::Rgb(photo)
}

/// OpenCV's fixed-point grey: (R * 4899 + G * 9617 + B * 1868 + 2^13) >> 14.
fn gray(p: &[u8]) -> u8 {
    ((u32::from(p[0]) * 4899 + u32::from(p[1]) * 9617 + u32::from(p[2]) * 1868 + (1 << 13)) >> 14)
        as u8
}

fn mix(fg: u8, bg: u8, a: u8) -> u8 {
    let (fg, bg, a) = (u32::from(fg), u32::from(bg), u32::from(a));
    ((fg * a + bg * (255 - a) + 127) / 255) as u8
}

fn blend(photo: &mut RgbImage, alpha: &[u8], background: impl Fn(&[u8]) -> [u8; 3]) {
    for (p, &a) in photo.chunks_exact_mut(3).zip(alpha) {
        if a == 255 {
            continue;
        }
        let b = background(p);
        for c in 0..3 {
            p[c] = mix(p[c], b[c], a);
        }
    }
}

fn blend_with(photo: &mut RgbImage, alpha: &[u8], background: &[u8]) {
    for ((p, b), &a) in photo
        .chunks_exact_mut(3)
        .zip(background.chunks_exact(3))
        .zip(alpha)
    {
        if a != 255 {
            for c in 0..3 {
                p[c] = mix(p[c], b[c], a);
            }
        }
    }
}

/// OpenCV's `BORDER_REFLECT_101` index: `dcb|abcdefgh|gfe`.
fn reflect101(mut i: isize, n: isize) -> usize {
    if n == 1 {
        return 0;
    }
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * n - 2 - i;
        } else {
            return i as usize;
        }
    }
}

/// `cv2.blur(img, (k, k))`: the mean of the k x k box around each pixel, borders reflected
/// (`BORDER_REFLECT_101`), rounded once from the box's integer sum. Rows are summed with a
/// running window of column sums, so the only buffer besides the output is one row of sums.
pub fn box_blur(src: &[u8], w: u32, h: u32, channels: usize, k: u32) -> Vec<u8> {
    let (w, h, r) = (w as usize, h as usize, (k / 2) as isize);
    let row = w * channels;
    let mut out = vec![0u8; row * h];
    let mut cols = vec![0u32; row];
    let src_row = |y: isize| {
        let y = reflect101(y, h as isize);
        &src[y * row..(y + 1) * row]
    };
    for dy in -r..=r {
        for (c, &v) in cols.iter_mut().zip(src_row(dy)) {
            *c += u32::from(v);
        }
    }
    let area = k * k;
    let padded = w + 2 * r as usize;
    let mut line = vec![0u32; padded * channels];
    for y in 0..h {
        // The column sums, padded by reflection for the horizontal window.
        for (px, chunk) in line.chunks_exact_mut(channels).enumerate() {
            let x = reflect101(px as isize - r, w as isize);
            chunk.copy_from_slice(&cols[x * channels..(x + 1) * channels]);
        }
        let out_row = &mut out[y * row..(y + 1) * row];
        for c in 0..channels {
            let mut sum: u32 = (0..k as usize).map(|i| line[i * channels + c]).sum();
            for x in 0..w {
                out_row[x * channels + c] = ((sum + area / 2) / area) as u8;
                if x + 1 < w {
                    sum += line[(x + k as usize) * channels + c];
                    sum -= line[x * channels + c];
                }
            }
        }
        if y + 1 < h {
            let (add, sub) = (src_row(y as isize + r + 1), src_row(y as isize - r));
            for ((c, &a), &s) in cols.iter_mut().zip(add).zip(sub) {
                *c = *c + u32::from(a) - u32::from(s);
            }
        }
    }
    out
}

/// One detection cut out of the photo: its mask's rectangle, with the mask (feathered by
/// `feather` pixels inside the rectangle) as alpha. `None` for a detection without a mask.
pub fn cutout(photo: &RgbImage, det: &Detection, feather: u32) -> Option<RgbaImage> {
    let m = det.mask.as_ref().filter(|m| m.w > 0 && m.h > 0)?;
    let mut alpha: Vec<u8> = m
        .bits
        .iter()
        .map(|&b| if b != 0 { 255 } else { 0 })
        .collect();
    if feather > 0 {
        alpha = box_blur(&alpha, m.w, m.h, 1, 2 * feather + 1);
    }
    let mut out = RgbaImage::new(m.w, m.h);
    for (row, out_row) in out.chunks_exact_mut(4 * m.w as usize).enumerate() {
        let y = m.y as usize + row;
        let start = (y * photo.width() as usize + m.x as usize) * 3;
        let src = &photo.as_raw()[start..start + 3 * m.w as usize];
        let a = &alpha[row * m.w as usize..(row + 1) * m.w as usize];
        for ((o, p), &a) in out_row.chunks_exact_mut(4).zip(src.chunks_exact(3)).zip(a) {
            o[..3].copy_from_slice(p);
            o[3] = a;
        }
    }
    Some(out)
}

/// Bytes [`cutout`] allocates for `m`: the RGBA rectangle and its alpha.
pub fn cutout_bytes(m: &BoxMask) -> u64 {
    5 * u64::from(m.w) * u64::from(m.h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: u32, y: u32, w: u32, h: u32, iw: u32, ih: u32) -> Detection {
        Detection {
            bbox: [x as f32, y as f32, (x + w) as f32, (y + h) as f32],
            class_id: 0,
            score: 0.9,
            mask: Some(BoxMask {
                image_w: iw,
                image_h: ih,
                x,
                y,
                w,
                h,
                bits: vec![1; (w * h) as usize],
            }),
        }
    }

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 200]))
    }

    #[test]
    fn box_blur_is_the_reflected_box_mean() {
        // A reference: the direct k x k mean with reflect-101 borders.
        let (w, h, k) = (9u32, 7u32, 5u32);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let got = box_blur(&src, w, h, 3, k);
        let r = (k / 2) as isize;
        for y in 0..h as isize {
            for x in 0..w as isize {
                for c in 0..3 {
                    let mut s = 0u32;
                    for dy in -r..=r {
                        for dx in -r..=r {
                            let (sx, sy) = (
                                reflect101(x + dx, w as isize),
                                reflect101(y + dy, h as isize),
                            );
                            s += u32::from(src[(sy * w as usize + sx) * 3 + c]);
                        }
                    }
                    let want = ((s + k * k / 2) / (k * k)) as u8;
                    assert_eq!(got[(y as usize * w as usize + x as usize) * 3 + c], want);
                }
            }
        }
        // Kernels wider than the picture reflect more than once, as OpenCV does.
        assert_eq!(box_blur(&[10, 20, 30], 3, 1, 1, 21).len(), 3);
        assert_eq!(reflect101(-1, 4), 1);
        assert_eq!(reflect101(4, 4), 2);
        assert_eq!(reflect101(9, 4), 3);
    }

    #[test]
    fn each_fill_keeps_the_objects_and_replaces_the_rest() {
        let (w, h) = (40, 30);
        let p = photo(w, h);
        let dets = [det(10, 5, 12, 10, w, h)];
        let alpha = matte(&dets, w, h, 0);
        assert_eq!(alpha.get_pixel(12, 7)[0], 255);
        assert_eq!(alpha.get_pixel(0, 0)[0], 0);
        let inside = *p.get_pixel(15, 10);
        let Edited::Rgba(t) = edit(p.clone(), &alpha, Fill::Transparent) else {
            panic!("transparent is RGBA")
        };
        assert_eq!(
            t.get_pixel(15, 10).0,
            [inside[0], inside[1], inside[2], 255]
        );
        assert_eq!(t.get_pixel(0, 0)[3], 0);
        let Edited::Rgb(c) = edit(p.clone(), &alpha, Fill::Colour([0, 255, 0])) else {
            panic!("opaque")
        };
        assert_eq!(
            (*c.get_pixel(15, 10), c.get_pixel(1, 1).0),
            (inside, [0, 255, 0])
        );
        let Edited::Rgb(g) = edit(p.clone(), &alpha, Fill::Gray) else {
            panic!("opaque")
        };
        let px = p.get_pixel(30, 25).0;
        assert_eq!(g.get_pixel(30, 25).0, [gray(&px); 3]);
        assert_eq!(*g.get_pixel(15, 10), inside);
        let Edited::Rgb(b) = edit(p.clone(), &alpha, Fill::Blur(Blur::Low)) else {
            panic!("opaque")
        };
        assert_eq!(*b.get_pixel(15, 10), inside);
        assert_ne!(*b.get_pixel(0, 29), *p.get_pixel(0, 29));
        let bg = RgbImage::from_pixel(w, h, image::Rgb([1, 2, 3]));
        let Edited::Rgb(i) = edit(p.clone(), &alpha, Fill::Picture(bg)) else {
            panic!("opaque")
        };
        assert_eq!(
            (*i.get_pixel(15, 10), i.get_pixel(39, 0).0),
            (inside, [1, 2, 3])
        );
    }

    #[test]
    fn feathering_softens_the_edge_only() {
        let (w, h) = (40, 30);
        let alpha = matte(&[det(10, 5, 12, 10, w, h)], w, h, 2);
        // Deep inside and far outside are unchanged; the edge ramps.
        assert_eq!(alpha.get_pixel(16, 10)[0], 255);
        assert_eq!(alpha.get_pixel(0, 0)[0], 0);
        let ramp: Vec<u8> = (7..=13).map(|x| alpha.get_pixel(x, 10)[0]).collect();
        assert!(ramp.windows(2).all(|p| p[0] <= p[1]), "{ramp:?}");
        assert!(ramp.iter().any(|&a| a > 0 && a < 255), "{ramp:?}");
    }

    #[test]
    fn a_cutout_is_the_mask_rectangle_with_alpha() {
        let p = photo(40, 30);
        let mut d = det(10, 5, 4, 3, 40, 30);
        d.mask.as_mut().unwrap().bits = vec![0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0];
        let c = cutout(&p, &d, 0).unwrap();
        assert_eq!(c.dimensions(), (4, 3));
        let alphas: Vec<u8> = c.pixels().map(|px| px[3]).collect();
        assert_eq!(alphas, [0, 255, 255, 0, 255, 255, 255, 255, 0, 0, 255, 0]);
        let px = p.get_pixel(11, 5);
        assert_eq!(c.get_pixel(1, 0).0, [px[0], px[1], px[2], 255]);
        d.mask = None;
        assert!(cutout(&p, &d, 0).is_none());
    }
}
