//! Decoding, limits and estimates of every accepted format, and the streamed decode against
//! the whole one (a PNG's: `png_tests`).

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
