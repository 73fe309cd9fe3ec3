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

impl BoxMask {
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
