//! Decoding, limits and estimates of every accepted format, and the streamed decode against
//! the whole one.

use std::io::Cursor;

use super::*;

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut Cursor::new(&mut v), ImageFormat::Png)
        .unwrap();
    v
}

#[test]
fn decodes_gray_alpha_and_16bit_to_rgb8() {
    let gray = DynamicImage::ImageLumaA8(image::ImageBuffer::from_pixel(
        3,
        2,
        image::LumaA([200u8, 10]),
    ));
    let rgb = decode(&png(&gray), &DecodeLimits::default()).unwrap();
    assert_eq!((rgb.width(), rgb.height()), (3, 2));
    assert_eq!(rgb.get_pixel(1, 1).0, [200, 200, 200]);
    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
        2,
        2,
        image::Rgb([65535u16, 0, 32896]),
    ));
    assert_eq!(
        decode(&png(&deep), &DecodeLimits::default())
            .unwrap()
            .get_pixel(0, 0)
            .0,
        [255, 0, 128]
    );
}

#[test]
fn refuses_empty_text_and_oversized() {
    assert!(matches!(
        decode(b"", &DecodeLimits::default()),
        Err(ImageError::Empty)
    ));
    assert!(matches!(
        decode(b"hello world", &DecodeLimits::default()),
        Err(ImageError::Unsupported(_))
    ));
    let img = DynamicImage::ImageRgb8(RgbImage::new(40, 30));
    let small = DecodeLimits {
        max_side: 32,
        max_pixels: 10_000,
    };
    assert!(matches!(
        decode(&png(&img), &small),
        Err(ImageError::TooLarge {
            width: 40,
            height: 30,
            ..
        })
    ));
}

/// libjpeg pads a truncated JPEG with grey and only warns; we refuse it.
#[test]
fn truncated_jpeg_is_refused_and_the_whole_one_decodes() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([x as u8 * 4, y as u8 * 5, 77])
    }));
    let mut jpg = Vec::new();
    img.write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
        .unwrap();
    let limits = DecodeLimits::default();
    assert_eq!(decode(&jpg, &limits).unwrap().dimensions(), (64, 48));
    let cut = &jpg[..jpg.len() * 2 / 3];
    let err = decode(cut, &limits).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// A header declaring 50000x50000 is refused from the header alone (decoding it would
/// need 7.5 GB).
#[test]
fn huge_declared_jpeg_is_refused_before_decoding() {
    let mut jpg = Vec::new();
    DynamicImage::ImageRgb8(RgbImage::new(16, 16))
        .write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
        .unwrap();
    let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    jpg[sof + 5..sof + 9].copy_from_slice(&[0xC3, 0x50, 0xC3, 0x50]);
    assert!(matches!(
        decode(&jpg, &DecodeLimits::default()),
        Err(ImageError::TooLarge {
            width: 50_000,
            height: 50_000,
            ..
        })
    ));
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

/// Inserts chunks right after IHDR (which ends 33 bytes in).
fn with_chunks(png: &[u8], chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = png[..33].to_vec();
    for (kind, data) in chunks {
        png_chunk(&mut out, kind, data);
    }
    out.extend_from_slice(&png[33..]);
    out
}

fn zlib_zeros(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        z.write_all(&block).unwrap();
    }
    z.finish().unwrap()
}

/// An iCCP profile that inflates to 256 MiB, and large text chunks: the png crate would
/// inflate or buffer them while reading the header; they are never shown to it, and
/// the header is read under a cap of a few MiB that they would break.
#[test]
fn png_ancillary_bombs_are_never_inflated() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([x as u8 * 6, y as u8 * 8, 99])
    }));
    let plain = png(&img);
    let mut iccp = b"bomb\0\0".to_vec();
    iccp.extend(zlib_zeros(256 << 20));
    let mut ztxt = b"Comment\0\0".to_vec();
    ztxt.extend(zlib_zeros(64 << 20));
    let bombed = with_chunks(
        &plain,
        &[
            (b"iCCP", iccp),
            (b"zTXt", ztxt),
            (b"tEXt", [&b"Comment\0"[..], &[b'a'; 8 << 20]].concat()),
        ],
    );
    let p = probe(&bombed, &DecodeLimits::default()).unwrap();
    assert_eq!(
        p.peak_bytes(),
        probe(&plain, &DecodeLimits::default())
            .unwrap()
            .peak_bytes()
    );
    let got = decode(&bombed, &DecodeLimits::default()).unwrap();
    assert_eq!(got, decode(&plain, &DecodeLimits::default()).unwrap());
}

/// tRNS changes the pixels (it becomes alpha, which is then dropped): it must reach the
/// decoder, while the eXIf orientation is read by us.
#[test]
fn png_keeps_trns_and_reads_exif_orientation_itself() {
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(4, 2, |x, _| {
        image::Luma([x as u8 * 50])
    }));
    let trns = with_chunks(&png(&grey), &[(b"tRNS", vec![0, 50])]);
    let p = probe(&trns, &DecodeLimits::default()).unwrap();
    assert_eq!(
        p.decoder.as_ref().unwrap().color_type(),
        image::ColorType::La8
    );
    // Orientation 6 (a quarter turn), big-endian TIFF.
    let mut exif = b"MM\0*\0\0\0\x08\0\x01".to_vec();
    exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    let turned = with_chunks(&png(&grey), &[(b"eXIf", exif)]);
    assert_eq!(
        decode(&turned, &DecodeLimits::default())
            .unwrap()
            .dimensions(),
        (2, 4)
    );
}

/// One stray byte after the frame header: libjpeg warns and decodes, buffering the
/// whole coefficient arrays of a progressive file; the estimate must include them.
#[test]
fn jpeg_with_a_stray_byte_after_its_frame_header_is_costed_and_decodes() {
    let jpg = headers::tests::mozjpeg(320, 240, true);
    let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC2]).unwrap();
    let end = sof + 2 + usize::from(u16::from_be_bytes([jpg[sof + 2], jpg[sof + 3]]));
    let stray = [&jpg[..end], &[0x42], &jpg[end..]].concat();
    let limits = DecodeLimits::default();
    let (clean, odd) = (
        probe(&jpg, &limits).unwrap(),
        probe(&stray, &limits).unwrap(),
    );
    assert_eq!(odd.peak_bytes(), clean.peak_bytes());
    assert!(odd.internal_bytes >= 320 * 240 * 2 * 3 / 2);
    assert_eq!(
        decode(&stray, &limits).unwrap(),
        decode(&jpg, &limits).unwrap()
    );
}

#[test]
fn jpeg_exif_orientation_is_read_from_app1() {
    let jpg = headers::tests::mozjpeg(64, 32, false);
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
    exif.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
    let mut turned = jpg[..2].to_vec();
    turned.extend([0xFF, 0xE1]);
    turned.extend(((exif.len() + 2) as u16).to_be_bytes());
    turned.extend(exif);
    turned.extend(&jpg[2..]);
    let p = probe(&turned, &DecodeLimits::default()).unwrap();
    assert_eq!((p.width(), p.height()), (32, 64));
    assert_eq!(
        decode(&turned, &DecodeLimits::default())
            .unwrap()
            .dimensions(),
        (32, 64)
    );
}

/// Decoding row by row into the letterbox must give the very tensor a whole decode and
/// `letterbox_into` give: shrinking and enlarging, square and rect canvases, baseline
/// and progressive, odd sizes, and the real photos.
#[test]
fn streaming_into_the_letterbox_matches_a_whole_decode() {
    use crate::geometry::Letterbox;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
    let mut files: Vec<Vec<u8>> = ["bus.jpg", "zidane.jpg"]
        .iter()
        .filter_map(|n| std::fs::read(dir.join(n)).ok())
        .collect();
    for (w, h, progressive) in [
        (333, 217, true),
        (333, 217, false),
        (97, 61, true),
        (1, 7, false),
    ] {
        files.push(headers::tests::mozjpeg(w, h, progressive));
    }
    let limits = DecodeLimits::default();
    for jpg in &files {
        let whole = decode(jpg, &limits).unwrap();
        let (w, h) = whole.dimensions();
        for lb in [
            Letterbox::new(w, h, 320, 320),
            Letterbox::new(w, h, 640, 640),
            Letterbox::new(w, h, 64, 48),
            Letterbox::rect(w, h, 640, 640, 32),
        ] {
            let mut want = vec![0.0; lb.tensor_len()];
            letterbox_into(&whole, &lb, &mut want);
            let p = probe(jpg, &limits).unwrap();
            assert!(p.streams());
            let mut got = vec![-1.0; lb.tensor_len()];
            let mut r = crate::budget::MemoryBudget::unlimited().reservation();
            p.stream_into(&lb, &mut got, &mut r, 1).unwrap();
            assert!(got == want, "{w}x{h} onto {}x{}", lb.canvas_w, lb.canvas_h);
        }
    }
}

/// Fast decoding scales by the largest power of two that keeps the photo at least the
/// resized size, and only for JPEGs that stream; its tensor is close to the exact one.
#[test]
fn fast_decoding_picks_its_scale_and_stays_close() {
    use crate::geometry::Letterbox;
    let limits = DecodeLimits::default();
    let jpg = headers::tests::mozjpeg(1280, 960, false);
    let p = probe(&jpg, &limits).unwrap();
    let lb = Letterbox::new(1280, 960, 320, 320);
    assert_eq!(p.fast_denominator(&lb), 4);
    assert_eq!(p.fast_denominator(&Letterbox::new(1280, 960, 640, 640)), 2);
    assert_eq!(
        p.fast_denominator(&Letterbox::new(1280, 960, 1024, 1024)),
        1
    );
    assert!(p.stream_peak_bytes(&lb, 4) < p.stream_peak_bytes(&lb, 1));
    let mut exact = vec![0.0; lb.tensor_len()];
    let mut fast = vec![0.0; lb.tensor_len()];
    let mut r = crate::budget::MemoryBudget::unlimited().reservation();
    probe(&jpg, &limits)
        .unwrap()
        .stream_into(&lb, &mut exact, &mut r, 1)
        .unwrap();
    p.stream_into(&lb, &mut fast, &mut r, 4).unwrap();
    let mean = exact
        .iter()
        .zip(&fast)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / exact.len() as f32;
    assert!(mean > 0.0 && mean < 0.02, "mean difference {mean}");
    let png = png(&DynamicImage::ImageRgb8(RgbImage::new(1280, 960)));
    assert_eq!(probe(&png, &limits).unwrap().fast_denominator(&lb), 1);
}

/// A truncated JPEG is refused on the streaming path too, however far it got.
#[test]
fn streaming_refuses_a_truncated_jpeg() {
    use crate::geometry::Letterbox;
    let jpg = headers::tests::mozjpeg(640, 480, false);
    let cut = &jpg[..jpg.len() / 2];
    let lb = Letterbox::new(640, 480, 320, 320);
    let mut out = vec![0.0; lb.tensor_len()];
    let mut r = crate::budget::MemoryBudget::unlimited().reservation();
    let err = probe(cut, &DecodeLimits::default())
        .unwrap()
        .stream_into(&lb, &mut out, &mut r, 1)
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// The 88-byte attack: an animated WebP with a 6000x4000 canvas.
#[test]
fn animated_webp_is_refused_from_its_header() {
    let mut body = b"WEBPVP8X".to_vec();
    body.extend(10u32.to_le_bytes());
    body.extend([0x02, 0, 0, 0]);
    body.extend(&5999u32.to_le_bytes()[..3]);
    body.extend(&3999u32.to_le_bytes()[..3]);
    body.extend(b"ANIM");
    body.extend(6u32.to_le_bytes());
    body.extend([0; 6]);
    body.extend(b"ANMF");
    body.extend(24u32.to_le_bytes());
    body.extend([0; 24]);
    let mut webp = b"RIFF".to_vec();
    webp.extend((body.len() as u32).to_le_bytes());
    webp.extend(body);
    let Err(ImageError::Unsupported(why)) = probe(&webp, &DecodeLimits::default()) else {
        panic!("an animated WebP was accepted")
    };
    assert!(
        why.contains("animated WebP is not supported; send a still image"),
        "{why}"
    );
}

/// Compression 7 (JPEG) in IFD0: the tiff crate would decode each strip at the size
/// its embedded JPEG declares.
#[test]
fn jpeg_compressed_tiff_is_refused() {
    let img = DynamicImage::ImageRgb8(RgbImage::new(8, 8));
    let mut tiff = Vec::new();
    img.write_to(&mut Cursor::new(&mut tiff), ImageFormat::Tiff)
        .unwrap();
    assert!(probe(&tiff, &DecodeLimits::default()).is_ok());
    // Compression (259 = 0x0103), SHORT, count 1, value 1: make it 7.
    let entry = [0x03, 0x01, 3, 0, 1, 0, 0, 0, 1, 0];
    let at = tiff.windows(10).position(|w| w == entry).unwrap();
    tiff[at + 8] = 7;
    let Err(ImageError::Unsupported(why)) = probe(&tiff, &DecodeLimits::default()) else {
        panic!("a JPEG-compressed TIFF was accepted")
    };
    assert!(why.contains("JPEG-compressed TIFF"), "{why}");
}

/// The hard cap: a budget reservation that libjpeg's arrays do not fit is refused by
/// libjpeg, then grown to the worst case this size allows (a budget question), and only
/// a budget that cannot hold that refuses the decode.
#[test]
fn libjpeg_over_the_estimate_grows_the_reservation_or_refuses() {
    // Coefficient arrays of 3 MiB, more than the flat allowance.
    let jpg = headers::tests::mozjpeg(1024, 1024, true);
    let mut p = probe(&jpg, &DecodeLimits::default()).unwrap();
    // As if the walker had missed the coefficient arrays.
    p.internal_bytes = 0;
    let budget = crate::budget::MemoryBudget::new(p.peak_bytes() + (1 << 20));
    let mut r = budget.reservation();
    r.grow(p.peak_bytes()).unwrap();
    assert!(matches!(p.decode(&mut r), Err(ImageError::Budget(_))));
    let mut p = probe(&jpg, &DecodeLimits::default()).unwrap();
    p.internal_bytes = 0;
    let mut r = crate::budget::MemoryBudget::unlimited().reservation();
    assert_eq!(p.decode(&mut r).unwrap().dimensions(), (1024, 1024));
    assert!(r.held() > 1024 * 1024 * 3 * 2);
}

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
