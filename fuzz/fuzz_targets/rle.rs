//! COCO RLE both ways (`segserve::mask`): arbitrary strings through the decoder must give a
//! value or an error, never a panic; and masks built from the input must round-trip through
//! encode and decode exactly, box-limited or dense.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segserve::mask::{counts_to_string, decode_coco_rle, string_to_counts, BoxMask};

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (w, h) = (1 + (data[0] % 48) as u32, 1 + (data[1] % 48) as u32);
    // Decoder on arbitrary text.
    if let Ok(s) = std::str::from_utf8(&data[2..]) {
        if let Ok(counts) = string_to_counts(s) {
            assert_eq!(
                string_to_counts(&counts_to_string(&counts)).as_ref(),
                Ok(&counts)
            );
        }
        if let Ok(dense) = decode_coco_rle(s, h, w) {
            assert_eq!(dense.len(), (w * h) as usize);
        }
    }
    // A box-limited mask inside the image, bits from the input.
    let (x, y) = (data[2] as u32 % w, data[3] as u32 % h);
    let (bw, bh) = (1 + data[4] as u32 % (w - x), 1 + data[5] as u32 % (h - y));
    let bits: Vec<u8> = (0..(bw * bh) as usize)
        .map(|i| data.get(6 + i / 8).map_or(0, |b| (b >> (i % 8)) & 1))
        .collect();
    let m = BoxMask {
        image_w: w,
        image_h: h,
        x,
        y,
        w: bw,
        h: bh,
        bits,
    };
    let rle = m.to_coco_rle();
    let dense = decode_coco_rle(&rle, h, w).expect("our own encoding decodes");
    for row in 0..h {
        for col in 0..w {
            assert_eq!(dense[(row * w + col) as usize] != 0, m.get(col, row));
        }
    }
    assert_eq!(BoxMask::from_dense(w, h, &dense).to_coco_rle(), rle);
    let counts = m.rle_counts();
    assert_eq!(
        counts.iter().map(|c| *c as u64).sum::<u64>(),
        (w * h) as u64
    );
    assert_eq!(string_to_counts(&rle), Ok(counts));
});
