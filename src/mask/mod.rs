//! Binary instance masks and their wire encodings: [`BoxMask`] (a mask stored only inside
//! its box), COCO compressed RLE in `rle`, outline polygons in `polygon`. The dense
//! H x W x N booleans of the PixelLib API are written by `api::pixellib`. No model or
//! HTTP code here; masks are computed from the model's prototypes in
//! `engine::proto_masks`.

pub mod polygon;
pub mod rle;

pub use rle::{counts_to_string, decode_coco_rle, string_to_counts, RleError};

/// A binary mask that is zero outside a pixel rectangle (the detection box), stored only
/// inside it: most of a full-resolution mask is zeros, so we never materialise them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxMask {
    /// Full image width.
    pub image_w: u32,
    /// Full image height.
    pub image_h: u32,
    /// Left edge of the stored rectangle.
    pub x: u32,
    /// Top edge of the stored rectangle.
    pub y: u32,
    /// Rectangle width.
    pub w: u32,
    /// Rectangle height.
    pub h: u32,
    /// Row-major 0/1 bytes, `w * h` of them.
    pub bits: Vec<u8>,
}

/// The most bytes [`BoxMask::to_png`] can produce for `m` (incompressible rows, a filter
/// byte each, deflate's framing).
pub fn png_bound(m: &BoxMask) -> u64 {
    let raw = u64::from(m.w) * u64::from(m.h) + u64::from(m.h);
    raw + raw / 1000 + 1024
}

/// Scratch memory of [`BoxMask::to_png`]: the 0/255 bytes and the PNG.
pub fn png_scratch_bytes(m: &BoxMask) -> u64 {
    u64::from(m.w) * u64::from(m.h) + png_bound(m) + (64 << 10)
}

impl BoxMask {
    /// The rectangle as a single-channel PNG, 255 inside the mask and 0 outside.
    /// An empty rectangle (a degenerate box) is one black pixel: PNG has no empty images.
    pub fn to_png(&self) -> Vec<u8> {
        let (w, h) = (self.w.max(1), self.h.max(1));
        let mut gray: Vec<u8> = self
            .bits
            .iter()
            .map(|&b| if b != 0 { 255 } else { 0 })
            .collect();
        gray.resize((w * h) as usize, 0);
        let mut out = Vec::with_capacity(png_bound(self) as usize);
        crate::render::encode_png_into(&gray, w, h, png::ColorType::Grayscale, &mut out)
            .expect("a PNG of a valid rectangle encodes into memory");
        out
    }

    /// Whether pixel (x, y) of the full image is set.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x >= self.x
            && y >= self.y
            && x < self.x + self.w
            && y < self.y + self.h
            && self.bits[((y - self.y) * self.w + (x - self.x)) as usize] != 0
    }

    /// Number of set pixels.
    pub fn area(&self) -> usize {
        self.bits.iter().filter(|b| **b != 0).count()
    }

    /// Builds a mask from a dense row-major image-sized bitmap (tests, decoders).
    pub fn from_dense(image_w: u32, image_h: u32, dense: &[u8]) -> Self {
        BoxMask {
            image_w,
            image_h,
            x: 0,
            y: 0,
            w: image_w,
            h: image_h,
            bits: dense.iter().map(|v| (*v != 0) as u8).collect(),
        }
    }
}
