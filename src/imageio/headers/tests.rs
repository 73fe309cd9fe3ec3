use std::io::{Read, Seek, SeekFrom};

use image::metadata::Orientation;

use super::tiff::TiffHeader;
use super::webp::WebpHeader;
use super::*;

#[test]
fn gif_frame_bigger_than_its_screen() {
    // 10x10 screen, no colour table, a 300x200 frame at (5, 7).
    let mut gif = b"GIF89a".to_vec();
    gif.extend([10, 0, 10, 0, 0x00, 0, 0]);
    gif.extend([0x21, 0xF9, 4, 0, 0, 0, 0, 0]); // graphic control extension
    gif.extend([0x2C, 5, 0, 7, 0]);
    gif.extend(300u16.to_le_bytes());
    gif.extend(200u16.to_le_bytes());
    assert_eq!(gif_first_frame(&gif), Some((305, 207)));
    assert_eq!(gif_first_frame(b"GIF89a\x01"), None);
    assert_eq!(gif_first_frame(b"\x89PNG"), None);
}

pub(crate) fn mozjpeg(w: usize, h: usize, progressive: bool) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([x as u8, y as u8, (x ^ y) as u8])
    });
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    // MozJPEG's own defaults are progressive; its fastest ones are baseline.
    if !progressive {
        comp.set_fastest_defaults();
    }
    comp.set_size(w, h);
    let mut started = comp.start_compress(Vec::new()).unwrap();
    started.write_scanlines(img.as_raw()).unwrap();
    started.finish().unwrap()
}

fn sof(jpg: &[u8]) -> usize {
    jpg.windows(2)
        .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
        .unwrap()
}

#[test]
fn jpeg_buffers_only_when_multi_scan() {
    let base = jpeg_header(&mozjpeg(100, 60, false)).unwrap();
    assert_eq!((base.width, base.height, base.components), (100, 60, 3));
    assert_eq!(base.coefficient_bytes, 0);
    // 4:2:0 by default: MCUs of 16x16, 7x4 of them; Y has 4 blocks per MCU, Cb and Cr 1.
    let prog = jpeg_header(&mozjpeg(100, 60, true)).unwrap();
    assert_eq!(prog.coefficient_bytes, 7 * 4 * 6 * 128);
    // Rows: Y 112 wide x 2 rows x 10 groups, Cb and Cr 56 x 1 x 10, and the upsampler's
    // 112 x 2 for each of the three.
    assert_eq!(prog.row_bytes, 112 * 20 + 2 * 56 * 10 + 3 * 112 * 2);
    assert_eq!(jpeg_header(b"\xFF\xD8\xFF"), None);
    assert_eq!(jpeg_header(b"GIF89a"), None);
}

/// libjpeg skips bytes that are not a marker with a warning and decodes on; the walker
/// must find the same scan header, not give up (an estimate of 0 for a progressive
/// file that libjpeg then buffers whole).
#[test]
fn jpeg_walker_skips_garbage_between_markers_as_libjpeg_does() {
    let jpg = mozjpeg(100, 60, true);
    let at = sof(&jpg);
    let end = at + 2 + be16(&jpg, at + 2).unwrap();
    for junk in [&b"\x00"[..], b"\x12\x34", b"\xFF\x00\x55", b"\xFF\xFF\xFF"] {
        let mut bad = jpg[..end].to_vec();
        bad.extend_from_slice(junk);
        bad.extend_from_slice(&jpg[end..]);
        let h = jpeg_header(&bad).unwrap();
        assert_eq!(h.coefficient_bytes, 7 * 4 * 6 * 128, "junk {junk:?}");
    }
}

/// Without a readable scan header the estimate is the worst case, never 0.
#[test]
fn jpeg_without_a_scan_header_costs_every_component_at_full_resolution() {
    let jpg = mozjpeg(100, 60, false);
    let sos = jpg.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
    let h = jpeg_header(&jpg[..sos]).unwrap();
    assert_eq!(h.coefficient_bytes, 3 * (7 * 2) * (4 * 2) * 128);
}

#[test]
fn jpeg_restart_markers_have_no_length_and_exif_orientation_is_read() {
    let jpg = mozjpeg(100, 60, true);
    let mut odd = jpg[..2].to_vec();
    odd.extend([0xFF, 0xD3, 0xFF, 0x01]); // RST3 and TEM: no length
    odd.extend([0xFF, 0xE1, 0, 1]); // APP1 with a length under 2: skips nothing
                                    // APP1 Exif: big-endian TIFF, one Orientation entry (8).
    let mut app1 = b"Exif\0\0MM\0*\0\0\0\x08\0\x01".to_vec();
    app1.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0]);
    odd.extend([0xFF, 0xE1]);
    odd.extend(((app1.len() + 2) as u16).to_be_bytes());
    odd.extend(&app1);
    odd.extend(&jpg[2..]);
    let h = jpeg_header(&odd).unwrap();
    assert_eq!(h.coefficient_bytes, 7 * 4 * 6 * 128);
    assert_eq!(h.orientation, Some(Orientation::Rotate270));
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    out.extend([0; 4]); // CRC: not checked here
}

#[test]
fn png_essentials_hide_ancillary_chunks_and_stop_at_iend() {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[1; 13]);
    chunk(&mut png, b"iCCP", &[2; 40]);
    chunk(&mut png, b"tRNS", &[3; 6]);
    chunk(&mut png, b"tEXt", &[4; 9]);
    chunk(&mut png, b"IDAT", &[5; 20]);
    chunk(&mut png, b"zTXt", &[6; 3]);
    chunk(&mut png, b"IDAT", &[7; 5]);
    chunk(&mut png, b"IEND", &[]);
    png.extend(b"trailing");
    let mut expected = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut expected, b"IHDR", &[1; 13]);
    chunk(&mut expected, b"tRNS", &[3; 6]);
    chunk(&mut expected, b"IDAT", &[5; 20]);
    chunk(&mut expected, b"IDAT", &[7; 5]);
    chunk(&mut expected, b"IEND", &[]);
    let mut got = Vec::new();
    PngEssentials::new(&png).read_to_end(&mut got).unwrap();
    assert_eq!(got, expected);
    // Seeking back and forth sees the same stream.
    let mut r = PngEssentials::new(&png);
    r.seek(SeekFrom::Start(40)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, expected[40..]);
    assert_eq!(
        r.seek(SeekFrom::Current(-5)).unwrap(),
        expected.len() as u64 - 5
    );
    // A chunk that runs past the end goes on as it is.
    let cut = &png[..png.len() - 40];
    let mut got = Vec::new();
    PngEssentials::new(cut).read_to_end(&mut got).unwrap();
    assert!(got.ends_with(&cut[cut.len() - 10..]));
}

#[test]
fn png_exif_before_the_image_data() {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[1; 13]);
    chunk(&mut png, b"eXIf", b"MM\0*");
    assert_eq!(png_exif(&png), Some(&b"MM\0*"[..]));
    let mut late = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut late, b"IHDR", &[1; 13]);
    chunk(&mut late, b"IDAT", &[1; 3]);
    chunk(&mut late, b"eXIf", b"MM\0*");
    assert_eq!(png_exif(&late), None);
}

fn webp(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WEBP".to_vec();
    for (kind, data) in chunks {
        body.extend(*kind);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn vp8x(flags: u8, w: u32, h: u32) -> Vec<u8> {
    let mut v = vec![flags, 0, 0, 0];
    v.extend(&(w - 1).to_le_bytes()[..3]);
    v.extend(&(h - 1).to_le_bytes()[..3]);
    v
}

fn vp8_frame(w: u16, h: u16) -> Vec<u8> {
    let mut v = vec![0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A];
    v.extend(w.to_le_bytes());
    v.extend(h.to_le_bytes());
    v.extend([0; 6]);
    v
}

#[test]
fn webp_animation_and_frame_size_are_refused_from_the_header() {
    let flag = webp(&[(b"VP8X", vp8x(0x02, 6000, 4000))]);
    assert_eq!(webp_header(&flag), Err(WebpRefusal::Animated));
    let anmf = webp(&[(b"VP8X", vp8x(0, 6000, 4000)), (b"ANMF", vec![0; 24])]);
    assert_eq!(webp_header(&anmf), Err(WebpRefusal::Animated));
    let liar = webp(&[
        (b"VP8X", vp8x(0, 100, 80)),
        (b"VP8 ", vp8_frame(16000, 16000)),
    ]);
    assert_eq!(
        webp_header(&liar),
        Err(WebpRefusal::FrameSize {
            frame: (16000, 16000),
            canvas: (100, 80)
        })
    );
    let still = webp(&[
        (b"VP8X", vp8x(0x08, 100, 80)),
        (b"VP8 ", vp8_frame(100, 80)),
        (b"EXIF", b"II*\0".to_vec()),
    ]);
    assert_eq!(
        webp_header(&still),
        Ok(WebpHeader {
            exif: Some(&b"II*\0"[..])
        })
    );
    assert_eq!(webp_header(b"RIFF"), Ok(WebpHeader::default()));
}

fn tiff(little: bool, entries: &[(u16, u16, u32, u32)]) -> Vec<u8> {
    let u16b = |v: u16| {
        if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let u32b = |v: u32| {
        if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let mut out = if little {
        b"II".to_vec()
    } else {
        b"MM".to_vec()
    };
    out.extend(u16b(42));
    out.extend(u32b(8));
    out.extend(u16b(entries.len() as u16));
    for &(tag, kind, count, value) in entries {
        out.extend(u16b(tag));
        out.extend(u16b(kind));
        out.extend(u32b(count));
        // SHORT values sit in the first two bytes of the field.
        if kind == 3 {
            out.extend(u16b(value as u16));
            out.extend([0, 0]);
        } else {
            out.extend(u32b(value));
        }
    }
    out.extend(u32b(0));
    out
}

#[test]
fn tiff_jpeg_compression_and_cmyk_in_either_byte_order() {
    for little in [true, false] {
        let jpeg = tiff(little, &[(256, 3, 1, 10), (259, 3, 1, 7), (262, 3, 1, 5)]);
        assert_eq!(
            tiff_header(&jpeg),
            TiffHeader {
                jpeg: true,
                cmyk: true
            }
        );
        let old = tiff(little, &[(259, 4, 1, 6)]);
        assert!(tiff_header(&old).jpeg);
        let lzw = tiff(little, &[(259, 3, 1, 5), (262, 3, 1, 2)]);
        assert_eq!(tiff_header(&lzw), TiffHeader::default());
    }
    assert_eq!(tiff_header(b"II*\0\xFF\xFF\xFF\xFF"), TiffHeader::default());
}
