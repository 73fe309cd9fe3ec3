//! Label text: the embedded font, measuring a string, and drawing it with anti-aliasing.
//! Placement (where a label goes) is decided in `render`; this module only draws.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::RgbImage;

/// DejaVu Sans Bold, compiled into the binary by the `dejavu` crate: bold stays legible
/// over busy photos at small sizes.
fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(dejavu::sans::bold())
            .expect("the embedded DejaVu Sans Bold is a valid TrueType font")
    })
}

/// Size of a string set in the label font at `px` pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextMetrics {
    /// Advance width in pixels.
    pub width: f32,
    /// Ascent (baseline to top), pixels.
    pub ascent: f32,
    /// Ascent minus descent: the line height without gap.
    pub height: f32,
}

/// Measures `text` at `px` pixels (kerning included).
pub fn measure(text: &str, px: f32) -> TextMetrics {
    let f = font().as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            width += f.kern(p, id);
        }
        width += f.h_advance(id);
        prev = Some(id);
    }
    TextMetrics {
        width,
        ascent: f.ascent(),
        height: f.ascent() - f.descent(),
    }
}

/// Draws `text` with its top-left corner at (`x`, `y`), blending `colour` by glyph coverage.
/// Pixels that would fall outside the image are skipped.
pub fn draw(img: &mut RgbImage, text: &str, x: f32, y: f32, px: f32, colour: [u8; 3]) {
    let f = font().as_scaled(PxScale::from(px));
    let baseline = y + f.ascent();
    let mut pen = x;
    let mut prev = None;
    let (w, h) = img.dimensions();
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            pen += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, ab_glyph::point(pen, baseline));
        pen += f.h_advance(id);
        prev = Some(id);
        let Some(outline) = font().outline_glyph(glyph) else {
            continue; // whitespace has no outline
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px_x = bounds.min.x as i64 + gx as i64;
            let px_y = bounds.min.y as i64 + gy as i64;
            if px_x < 0 || px_y < 0 || px_x >= w as i64 || px_y >= h as i64 {
                return;
            }
            let a = coverage.clamp(0.0, 1.0);
            let p = img.get_pixel_mut(px_x as u32, px_y as u32);
            for (dst, src) in p.0.iter_mut().zip(colour) {
                *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_draws_inside_the_given_box() {
        let m = measure("person 0.87", 20.0);
        assert!(m.width > 60.0 && m.width < 160.0, "{m:?}");
        assert!(m.height > 15.0 && m.height < 30.0, "{m:?}");
        let mut img = RgbImage::new(200, 40);
        draw(&mut img, "person 0.87", 5.0, 5.0, 20.0, [255, 255, 255]);
        let lit: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] > 0)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(lit.len() > 100, "text left almost no ink: {}", lit.len());
        for (x, y) in lit {
            assert!(x >= 5 && (x as f32) <= 5.0 + m.width + 1.0, "x {x}");
            assert!(y >= 5 && (y as f32) <= 5.0 + m.height + 1.0, "y {y}");
        }
    }

    #[test]
    fn drawing_off_the_edge_does_not_panic() {
        let mut img = RgbImage::new(10, 10);
        draw(&mut img, "bus 0.99", -30.0, -5.0, 24.0, [255, 0, 0]);
        draw(&mut img, "bus 0.99", 8.0, 8.0, 24.0, [255, 0, 0]);
    }
}
