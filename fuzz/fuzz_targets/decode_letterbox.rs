//! Any bytes through `imageio::decode` (format sniffing, every accepted codec, libjpeg-turbo
//! with its unwinding error handler, EXIF orientation) and, when an image comes out, through
//! `letterbox_into`. Must never panic, abort or allocate past the limits, and the tensor must
//! hold values in 0..=1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segserve::geometry::Letterbox;
use segserve::imageio::{decode, letterbox_into, DecodeLimits};

// Smaller than the server's defaults so libFuzzer's RSS limit is never the finding.
const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 4096,
    max_pixels: 4_000_000,
};

fuzz_target!(|data: &[u8]| {
    let Ok(img) = decode(data, &LIMITS) else {
        return;
    };
    assert!(img.width() >= 1 && img.height() >= 1);
    assert!(img.width() <= LIMITS.max_side && img.height() <= LIMITS.max_side);
    // A non-square canvas, as dynamic-shape models use.
    let lb = Letterbox::new(img.width(), img.height(), 64, 48);
    let mut out = vec![-1.0f32; 3 * 64 * 48];
    letterbox_into(&img, &lb, &mut out);
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
});
