//! A mask as a PNG of its box, for `masks=png` answers: the encoding, and the bounds the
//! answer reserves before encoding.

use crate::mask::BoxMask;

/// The most bytes [`mask_png`] can produce for `m` (incompressible rows, a filter
/// byte each, deflate's framing).
pub fn png_bound(m: &BoxMask) -> u64 {
    let raw = u64::from(m.w) * u64::from(m.h) + u64::from(m.h);
    raw + raw / 1000 + 1024
}

/// Scratch memory of [`mask_png`]: the 0/255 bytes and the PNG.
pub fn png_scratch_bytes(m: &BoxMask) -> u64 {
    u64::from(m.w) * u64::from(m.h) + png_bound(m) + (64 << 10)
}

/// The rectangle of `m` as a single-channel PNG, 255 inside the mask and 0 outside.
/// An empty rectangle (a degenerate box) is one black pixel: PNG has no empty images.
pub fn mask_png(m: &BoxMask) -> Vec<u8> {
    let (w, h) = (m.w.max(1), m.h.max(1));
    let mut gray: Vec<u8> = m
        .bits
        .iter()
        .map(|&b| if b != 0 { 255 } else { 0 })
        .collect();
    gray.resize((w * h) as usize, 0);
    let mut out = Vec::with_capacity(png_bound(m) as usize);
    super::encode_png_into(&gray, w, h, png::ColorType::Grayscale, &mut out)
        .expect("a PNG of a valid rectangle encodes into memory");
    out
}
