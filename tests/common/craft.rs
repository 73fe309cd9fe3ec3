//! Image makers for the hostile-input and resource-attack tests: odd, broken, huge and
//! hostile files built in code, so the tests need no fixtures. Each returns the file's bytes.

use std::io::{Cursor, Write};

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, RgbImage};
use mozjpeg::ColorSpaceExt;

pub fn noise(w: u32, h: u32) -> RgbImage {
    // A deterministic pattern that does not compress to nothing.
    ImageBuffer::from_fn(w, h, |x, y| {
        let v = x
            .wrapping_mul(2_654_435_761)
            .wrapping_add(y.wrapping_mul(40_503));
        Rgb([(v >> 3) as u8, (v >> 11) as u8, (x + y) as u8])
    })
}

pub fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut Cursor::new(&mut v), fmt).unwrap();
    v
}

pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(noise(w, h)), ImageFormat::Jpeg)
}

pub fn png(img: DynamicImage) -> Vec<u8> {
    encode(&img, ImageFormat::Png)
}

/// `n` x `n` copies of the test photo `photo` on a `w` x `h` grey canvas (Ultralytics'
/// letterbox grey shows where the tiles leave a border): a real photo's content, many
/// smaller objects, as big as asked.
pub fn mosaic(photo: &str, n: u32, w: u32, h: u32) -> RgbImage {
    let src = image::load_from_memory(&super::photo(photo))
        .unwrap()
        .to_rgb8();
    let (tw, th) = (w / n, h / n);
    let tile = image::imageops::resize(&src, tw, th, image::imageops::FilterType::Triangle);
    let mut img = RgbImage::from_pixel(w, h, Rgb([114, 114, 114]));
    for ty in 0..n {
        for tx in 0..n {
            image::imageops::replace(&mut img, &tile, (tx * tw) as i64, (ty * th) as i64);
        }
    }
    img
}

/// A JPEG written by libjpeg (MozJPEG) in `space` (RGB or CMYK input), optionally progressive.
pub fn mozjpeg(w: usize, h: usize, space: mozjpeg::ColorSpace, progressive: bool) -> Vec<u8> {
    let channels = space.num_components();
    let pixels: Vec<u8> = (0..w * h * channels).map(|i| (i * 7 % 251) as u8).collect();
    let mut c = mozjpeg::Compress::new(space);
    c.set_size(w, h);
    if progressive {
        c.set_progressive_mode();
    }
    let mut c = c.start_compress(Vec::new()).unwrap();
    c.write_scanlines(&pixels).unwrap();
    c.finish().unwrap()
}

/// Rewrites the frame size in a JPEG's SOF0/SOF2 header.
pub fn jpeg_with_declared_size(mut bytes: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let sof = bytes
        .windows(2)
        .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
        .expect("a SOF marker");
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

/// Inserts an EXIF APP1 segment with only an Orientation tag right after SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes()); // IFD0 offset
    tiff.extend(1u16.to_le_bytes()); // one entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

/// A PNG declaring `w` x `h` (`color` type, `depth` bits) whose IDAT inflates to `rows`
/// rows of zeros: a decompression bomb when the size is large and `rows` is all of them.
pub fn png_crafted(w: u32, h: u32, depth: u8, color: u8, rows: u32, row_bytes: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; 1 + row_bytes];
    for _ in 0..rows {
        z.write_all(&row).unwrap();
    }
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A little-endian TIFF with `pages` pages of RGB 32-bit float pixels (values in 0..1).
pub fn float_tiff(pages: u32, w: u32, h: u32) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend(8u32.to_le_bytes());
    for page in 0..pages {
        let ifd = out.len() as u32;
        let entries = 11u32;
        let arrays = ifd + 2 + entries * 12 + 4;
        let data = arrays + 12;
        let data_len = w * h * 12;
        let next = if page + 1 < pages { data + data_len } else { 0 };
        let short = |tag: u16, v: u16| (tag, 3u16, 1u32, v as u32);
        let long = |tag: u16, v: u32| (tag, 4u16, 1u32, v);
        let list = [
            long(256, w),
            long(257, h),
            (258, 3, 3, arrays), // BitsPerSample 32,32,32
            short(259, 1),       // no compression
            short(262, 2),       // RGB
            long(273, data),
            short(277, 3),
            long(278, h),
            long(279, data_len),
            short(284, 1),           // chunky
            (339, 3, 3, arrays + 6), // SampleFormat: IEEE float
        ];
        out.extend((entries as u16).to_le_bytes());
        for (tag, kind, count, value) in list {
            out.extend(tag.to_le_bytes());
            out.extend(kind.to_le_bytes());
            out.extend(count.to_le_bytes());
            out.extend(value.to_le_bytes());
        }
        out.extend(next.to_le_bytes());
        for v in [32u16, 32, 32, 3, 3, 3] {
            out.extend(v.to_le_bytes());
        }
        for i in 0..w * h * 3 {
            out.extend(((i % 97) as f32 / 96.0).to_le_bytes());
        }
    }
    out
}

pub fn animated_gif() -> Vec<u8> {
    let mut v = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut v);
        let frames = (0..3).map(|i| {
            let rgba = ImageBuffer::from_fn(40, 30, |x, y| {
                image::Rgba([(x * 6) as u8, (y * 8) as u8, i * 80, 255])
            });
            image::Frame::new(rgba)
        });
        enc.encode_frames(frames).unwrap();
    }
    v
}

/// `png` with `chunks` inserted right after its IHDR (which ends 33 bytes in).
pub fn png_with_chunks(png: &[u8], chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = png[..33].to_vec();
    for (kind, data) in chunks {
        png_chunk(&mut out, kind, data);
    }
    out.extend_from_slice(&png[33..]);
    out
}

/// A zlib stream of `mib` MiB of zeros (about 1 KiB per MiB): a decompression bomb.
pub fn zlib_zeros(mib: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        z.write_all(&block).unwrap();
    }
    z.finish().unwrap()
}

/// `jpeg` with one byte of garbage right after its frame header (libjpeg skips it with a
/// warning, JWRN_EXTRANEOUS_DATA).
pub fn jpeg_with_stray_byte_after_sof(jpeg: &[u8]) -> Vec<u8> {
    let sof = jpeg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
        .expect("a SOF marker");
    let end = sof + 2 + usize::from(u16::from_be_bytes([jpeg[sof + 2], jpeg[sof + 3]]));
    [&jpeg[..end], &[0x42], &jpeg[end..]].concat()
}

/// How a crafted TIFF's pixel data is cut up.
#[derive(Clone, Copy)]
pub enum TiffLayout {
    /// Strips of this many rows.
    Strips(u32),
    /// Square tiles of this side (a multiple of 16), padded at the right and bottom edges.
    Tiles(u32),
}

/// A little-endian TIFF of `w` x `h`, `samples` 8-bit samples a pixel (`photometric` 2:
/// RGB, 5: CMYK), chunky, compressed with `compression` (1: none, 5: LZW, 8: Deflate).
pub fn tiff(
    w: u32,
    h: u32,
    photometric: u16,
    samples: u16,
    compression: u16,
    layout: TiffLayout,
) -> Vec<u8> {
    let bpp = usize::from(samples);
    let (cw, ch, tiled) = match layout {
        TiffLayout::Strips(rows) => (w, rows, false),
        TiffLayout::Tiles(t) => (t, t, true),
    };
    let mut chunks = Vec::new();
    for ty in 0..h.div_ceil(ch) {
        for tx in 0..w.div_ceil(cw) {
            let rows = if tiled { ch } else { ch.min(h - ty * ch) };
            let mut raw = Vec::with_capacity(rows as usize * cw as usize * bpp);
            for y in ty * ch..ty * ch + rows {
                for x in tx * cw..tx * cw + cw {
                    let v = x
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(y.wrapping_mul(40_503));
                    for s in 0..bpp as u32 {
                        let inside = x < w && y < h;
                        raw.push(if inside { (v >> (3 + 5 * s)) as u8 } else { 0 });
                    }
                }
            }
            chunks.push(match compression {
                1 => raw,
                5 => lzw_literals(&raw),
                8 => {
                    let mut z =
                        flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                    z.write_all(&raw).unwrap();
                    z.finish().unwrap()
                }
                other => panic!("compression {other} not crafted"),
            });
        }
    }
    let n = chunks.len() as u32;
    // (tag, type, values); SHORT = 3, LONG = 4. Offsets are filled in below.
    let mut entries: Vec<(u16, u16, Vec<u32>)> = vec![
        (256, 4, vec![w]),
        (257, 4, vec![h]),
        (258, 3, vec![8; bpp]),
        (259, 3, vec![compression.into()]),
        (262, 3, vec![photometric.into()]),
        (277, 3, vec![samples.into()]),
        (284, 3, vec![1]),
    ];
    let counts: Vec<u32> = chunks.iter().map(|c| c.len() as u32).collect();
    let (offsets_tag, counts_tag) = if tiled {
        entries.extend([(322, 4, vec![cw]), (323, 4, vec![ch])]);
        (324, 325)
    } else {
        entries.push((278, 4, vec![ch]));
        (273, 279)
    };
    entries.push((offsets_tag, 4, vec![0; n as usize]));
    entries.push((counts_tag, 4, counts.clone()));
    entries.sort_by_key(|e| e.0);
    let size = |kind: u16| if kind == 3 { 2 } else { 4 };
    let ifd_len = 2 + 12 * entries.len() + 4;
    let extra: usize = entries
        .iter()
        .map(|(_, k, v)| v.len() * size(*k))
        .filter(|&b| b > 4)
        .sum();
    let mut at = (8 + ifd_len + extra) as u32;
    let offsets: Vec<u32> = counts
        .iter()
        .map(|len| {
            let o = at;
            at += len;
            o
        })
        .collect();
    entries.iter_mut().find(|e| e.0 == offsets_tag).unwrap().2 = offsets;
    let mut out = b"II*\0".to_vec();
    out.extend(8u32.to_le_bytes());
    let mut tail = Vec::new();
    let mut extra_at = (8 + ifd_len) as u32;
    out.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, values) in &entries {
        let mut bytes = Vec::new();
        for &v in values {
            if *kind == 3 {
                bytes.extend((v as u16).to_le_bytes());
            } else {
                bytes.extend(v.to_le_bytes());
            }
        }
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend((values.len() as u32).to_le_bytes());
        if bytes.len() <= 4 {
            bytes.resize(4, 0);
            out.extend(bytes);
        } else {
            out.extend(extra_at.to_le_bytes());
            extra_at += bytes.len() as u32;
            tail.extend(bytes);
        }
    }
    out.extend(0u32.to_le_bytes());
    out.extend(tail);
    for c in chunks {
        out.extend(c);
    }
    out
}

/// TIFF's LZW (MSB first) with every byte a literal code, and a clear code every 250 so the
/// codes stay 9 bits wide: no compression, but a stream any decoder must read as LZW.
fn lzw_literals(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 9 / 8 + 16);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut put = |code: u32, out: &mut Vec<u8>| {
        acc = (acc << 9) | code;
        bits += 9;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    };
    for run in data.chunks(250) {
        put(256, &mut out);
        for &b in run {
            put(u32::from(b), &mut out);
        }
    }
    put(257, &mut out);
    put(0, &mut out); // flushes the last code's bits (padding)
    out
}
