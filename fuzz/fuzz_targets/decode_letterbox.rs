//! Any bytes through `imageio::decode` (format sniffing, every accepted codec, libjpeg-turbo
//! with its unwinding error handler, EXIF orientation) and, when an image comes out, through
//! `letterbox_into`. Must never panic, abort or allocate past the limits, and the tensor must
//! hold values in 0..=1.
//!
//! A JPEG or PNG whose probe `streams()` also goes through `Probe::stream_into`, which drives
//! libjpeg or the png crate row by row into a `LetterboxWriter` with no photo in between
//! (DCT scaling is JPEG only): exact streaming must
//! succeed or fail with the whole decode and then give the very same tensor, and the DCT-scaled
//! (fast) streaming must fill the tensor with values in 0..=1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segserve::budget::MemoryBudget;
use segserve::geometry::Letterbox;
use segserve::imageio::{decode, letterbox_into, probe, DecodeLimits};

// Smaller than the server's defaults so libFuzzer's RSS limit is never the finding.
const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 4096,
    max_pixels: 4_000_000,
};

// A non-square canvas, as dynamic-shape models use; small, so large inputs get a DCT scale.
const CANVAS: (u32, u32) = (64, 48);

fn tensor() -> Vec<f32> {
    // -1 is outside 0..=1, so any element left unwritten shows.
    vec![-1.0f32; 3 * CANVAS.0 as usize * CANVAS.1 as usize]
}

fn all_unit(t: &[f32]) -> bool {
    t.iter().all(|v| (0.0..=1.0).contains(v))
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data, &LIMITS).map(|img| {
        assert!(img.width() >= 1 && img.height() >= 1);
        assert!(img.width() <= LIMITS.max_side && img.height() <= LIMITS.max_side);
        let lb = Letterbox::new(img.width(), img.height(), CANVAS.0, CANVAS.1);
        let mut out = tensor();
        letterbox_into(&img, &lb, &mut out);
        assert!(all_unit(&out));
        out
    });

    // A JPEG's probe reads only our header walker's answer, so probing twice costs nothing.
    let Ok(p) = probe(data, &LIMITS) else {
        return;
    };
    if !p.streams() {
        return;
    }
    let lb = Letterbox::new(p.width(), p.height(), CANVAS.0, CANVAS.1);
    let denom = p.fast_denominator(&lb);
    let budget = MemoryBudget::unlimited();

    let mut exact = tensor();
    let streamed = p.stream_into(&lb, &mut exact, &mut budget.reservation(), 1);
    match (&whole, streamed) {
        (Ok(want), Ok(())) => assert!(
            want == &exact,
            "streamed tensor differs from decode + letterbox_into"
        ),
        (Err(_), Err(_)) => {}
        (w, s) => panic!(
            "whole decode and streaming disagree: {:?} vs {:?}",
            w.as_ref().map(|_| ()),
            s
        ),
    }

    if denom > 1 {
        let p = probe(data, &LIMITS).expect("probed once already");
        let mut fast = tensor();
        if p.stream_into(&lb, &mut fast, &mut budget.reservation(), denom)
            .is_ok()
        {
            assert!(all_unit(&fast));
        }
    }
});
