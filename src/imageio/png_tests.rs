//! PNGs streamed into the letterbox against the whole decode: every colour type and depth,
//! interlaced files (which do not stream), broken ones, and what streaming reserves.

use super::*;

/// A `w` x `h` PNG written by the png crate: colour type, depth, optional palette and tRNS,
/// samples from a hash of the position (every byte value turns up).
fn png_of(
    (w, h): (u32, u32),
    color: ::png::ColorType,
    depth: ::png::BitDepth,
    palette: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = ::png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some((plte, trns)) = palette {
        enc.set_palette(plte.to_vec());
        if !trns.is_empty() {
            enc.set_trns(trns.to_vec());
        }
    }
    let mut writer = enc.write_header().unwrap();
    let row = (w as usize * color.samples() * depth as usize).div_ceil(8);
    let data: Vec<u8> = (0..row * h as usize)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

/// The tensor a whole decode and `letterbox_into` give, and the streamed one, for `lb`.
fn whole_and_streamed(bytes: &[u8], lb: &crate::geometry::Letterbox) -> (Vec<f32>, Vec<f32>) {
    let limits = DecodeLimits::default();
    let mut want = vec![0.0; lb.tensor_len()];
    letterbox_into(&decode(bytes, &limits).unwrap(), lb, &mut want);
    let mut got = vec![-1.0; lb.tensor_len()];
    let mut r = crate::budget::MemoryBudget::unlimited().reservation();
    probe(bytes, &limits)
        .unwrap()
        .stream_into(lb, &mut got, &mut r, 1)
        .unwrap();
    (want, got)
}

/// PNG rows streamed into the letterbox give the very tensor of a whole decode for every
/// colour type and depth the `image` crate accepts (grey, grey + alpha, RGB, RGBA at 8 and
/// 16 bits; palettes with and without transparency, grey at 1, 2 and 4 bits, which EXPAND
/// widens), shrunk and enlarged, square and rect canvases, and the real photos.
#[test]
fn streaming_a_png_matches_a_whole_decode() {
    use crate::geometry::Letterbox;
    use ::png::{BitDepth as D, ColorType as C};
    let plte: Vec<u8> = (0..=255u8).flat_map(|i| [i, 255 - i, i / 2]).collect();
    let trns: Vec<u8> = (0..100u8).map(|i| i * 2).collect();
    let mut files = Vec::new();
    for size in [(333, 217), (37, 61), (1, 5)] {
        for (color, depth) in [
            (C::Grayscale, D::Eight),
            (C::Grayscale, D::Sixteen),
            (C::Grayscale, D::One),
            (C::Grayscale, D::Two),
            (C::Grayscale, D::Four),
            (C::GrayscaleAlpha, D::Eight),
            (C::GrayscaleAlpha, D::Sixteen),
            (C::Rgb, D::Eight),
            (C::Rgb, D::Sixteen),
            (C::Rgba, D::Eight),
            (C::Rgba, D::Sixteen),
        ] {
            files.push((
                format!("{color:?} {depth:?} {size:?}"),
                png_of(size, color, depth, None),
            ));
        }
        for (name, t) in [("palette", &[][..]), ("palette + tRNS", &trns[..])] {
            let png = png_of(size, C::Indexed, D::Eight, Some((&plte, t)));
            files.push((format!("{name} {size:?}"), png));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
    for name in ["astronaut.png", "chelsea.png", "coffee.png"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            files.push((name.to_string(), bytes));
        }
    }
    let limits = DecodeLimits::default();
    for (name, bytes) in &files {
        let p = probe(bytes, &limits).unwrap();
        assert!(p.streams(), "{name}");
        let (w, h) = (p.width(), p.height());
        for lb in [
            Letterbox::new(w, h, 320, 320),
            Letterbox::new(w, h, 64, 48),
            Letterbox::rect(w, h, 640, 640, 32),
        ] {
            let (want, got) = whole_and_streamed(bytes, &lb);
            assert!(got == want, "{name} onto {}x{}", lb.canvas_w, lb.canvas_h);
        }
    }
}

/// An Adam7-interlaced RGB8 PNG, written by hand (the png crate's encoder writes none).
fn interlaced_png(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    const PASSES: [(u32, u32, u32, u32); 7] = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    let px = |x: u32, y: u32| [(x * 7 + y) as u8, (x * y) as u8, (x ^ y) as u8];
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        if x0 >= w || y0 >= h {
            continue;
        }
        for y in (y0..h).step_by(dy as usize) {
            raw.push(0); // filter: none
            for x in (x0..w).step_by(dx as usize) {
                raw.extend(px(x, y));
            }
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 1]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    }
    out
}

/// An interlaced PNG does not stream, and still gets its exact tensor through the whole
/// decode; a truncated or corrupt PNG is refused on the streaming path with the words the
/// whole decode uses.
#[test]
fn interlaced_and_broken_pngs_on_the_streaming_path() {
    use crate::geometry::Letterbox;
    let limits = DecodeLimits::default();
    let adam7 = interlaced_png(45, 29);
    let img = decode(&adam7, &limits).unwrap();
    assert_eq!(
        img.get_pixel(44, 28).0,
        [(44 * 7 + 28) as u8, (44 * 28) as u8, 44 ^ 28]
    );
    assert!(!probe(&adam7, &limits).unwrap().streams());
    let lb = Letterbox::new(45, 29, 64, 64);
    let (want, got) = whole_and_streamed(&adam7, &lb);
    assert!(got == want);

    let whole = png_of(
        (300, 200),
        ::png::ColorType::Rgb,
        ::png::BitDepth::Eight,
        None,
    );
    let lb = Letterbox::new(300, 200, 320, 320);
    for broken in [whole[..whole.len() / 2].to_vec(), {
        let mut b = whole.clone();
        let at = b.len() - 40;
        b[at] ^= 0xFF; // inside the IDAT data: a zlib or checksum error
        b
    }] {
        let Err(want) = decode(&broken, &limits) else {
            panic!("the whole decode took a broken PNG")
        };
        let p = probe(&broken, &limits).unwrap();
        assert!(p.streams());
        let mut out = vec![0.0; lb.tensor_len()];
        let mut r = crate::budget::MemoryBudget::unlimited().reservation();
        let got = p.stream_into(&lb, &mut out, &mut r, 1).unwrap_err();
        assert_eq!(got.to_string(), want.to_string());
    }
}

/// The reservation for a streamed PNG covers what decoding it allocates, and is far below
/// the photo: the meter counts the decode's bytes.
#[test]
fn a_streamed_png_holds_rows_not_the_photo() {
    use crate::geometry::Letterbox;
    let bytes = png_of(
        (3000, 2000),
        ::png::ColorType::Rgba,
        ::png::BitDepth::Sixteen,
        None,
    );
    let p = probe(&bytes, &DecodeLimits::default()).unwrap();
    let lb = Letterbox::new(3000, 2000, 640, 640);
    let reserved = p.stream_peak_bytes(&lb, 1);
    assert!(
        reserved * 10 < p.peak_bytes(),
        "{reserved} vs {}",
        p.peak_bytes()
    );
}
