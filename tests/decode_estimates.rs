//! The memory budget is only as honest as its estimates: here each kind of image is
//! decoded while the process's peak RSS is measured (the kernel's VmHWM, reset through
//! /proc/self/clear_refs), and the measured growth must stay within what
//! `Probe::peak_bytes` reserved, and not be far below it (a budget that over-reserves
//! many times over would turn away work it could do). Reading the header, before anything
//! is reserved, must take no more than a few MiB, whatever the file holds.

use crate::common;

use common::craft;
use common::craft::TiffLayout;
use image::{DynamicImage, ImageFormat, RgbImage};
use segserve::budget::MemoryBudget;
use segserve::imageio::{self, DecodeLimits};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak RSS growth, in bytes, while `f` runs.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("peak RSS reset (Linux >= 4.0)");
    let before = status_kib("VmRSS:");
    let out = f();
    let peak = status_kib("VmHWM:");
    (out, peak.saturating_sub(before) * 1024)
}

/// Probes and decodes `bytes`; returns (estimated peak, measured peak growth while
/// decoding, measured peak growth while probing) in bytes.
fn measure(bytes: &[u8]) -> (u64, u64, u64) {
    let limits = DecodeLimits::default();
    let (probe, probing) = peak_growth(|| imageio::probe(bytes, &limits).unwrap());
    let estimate = probe.peak_bytes();
    let mut r = MemoryBudget::unlimited().reservation();
    let (img, decoding) = peak_growth(|| probe.decode(&mut r).unwrap());
    drop(img);
    (estimate, decoding, probing)
}

#[test]
fn decode_estimates_cover_what_decoding_takes() {
    let _turn = common::heavy();
    // The process's peak RSS is one number, which any other test's allocations would
    // raise, and mallopt below is process-wide: measured in a process of its own.
    if common::in_own_process(module_path!(), "decode_estimates_cover_what_decoding_takes") {
        return;
    }
    // Photo-sized buffers mapped and unmapped, so RSS follows each decode exactly.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let photo = |w, h| craft::noise(w, h);
    let rotated_png16 = {
        let img = image::ImageBuffer::from_fn(3000, 2000, |x, y| {
            image::Rgba([(x * 13) as u16, (y * 7) as u16, 30_000u16, 65_535u16])
        });
        craft::png(DynamicImage::ImageRgba16(img))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "baseline JPEG 12 MP",
            craft::encode(
                &DynamicImage::ImageRgb8(photo(4000, 3000)),
                ImageFormat::Jpeg,
            ),
        ),
        (
            "progressive JPEG 12 MP",
            craft::mozjpeg(4000, 3000, mozjpeg::ColorSpace::JCS_RGB, true),
        ),
        (
            "JPEG 12 MP, EXIF quarter turn",
            craft::with_exif_orientation(
                &craft::mozjpeg(4000, 3000, mozjpeg::ColorSpace::JCS_RGB, false),
                6,
            ),
        ),
        (
            "RGB PNG 12 MP",
            craft::png(DynamicImage::ImageRgb8(photo(4000, 3000))),
        ),
        ("RGBA 16-bit PNG 6 MP", rotated_png16),
        (
            "grey PNG 24 MP",
            craft::png(DynamicImage::ImageLuma8(image::GrayImage::from_pixel(
                6000,
                4000,
                image::Luma([77]),
            ))),
        ),
        (
            "WebP lossless 6 MP",
            craft::encode(
                &DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(photo(3000, 2000)).to_rgba8()),
                ImageFormat::WebP,
            ),
        ),
        (
            "GIF 6 MP",
            craft::encode(
                &DynamicImage::ImageRgba8(
                    DynamicImage::ImageRgb8(RgbImage::from_pixel(
                        3000,
                        2000,
                        image::Rgb([1, 2, 3]),
                    ))
                    .to_rgba8(),
                ),
                ImageFormat::Gif,
            ),
        ),
        (
            "TIFF 12 MP",
            craft::encode(
                &DynamicImage::ImageRgb8(photo(4000, 3000)),
                ImageFormat::Tiff,
            ),
        ),
        (
            "BMP 12 MP",
            craft::encode(
                &DynamicImage::ImageRgb8(photo(4000, 3000)),
                ImageFormat::Bmp,
            ),
        ),
        // Ancillary chunks the png crate would inflate (iCCP, up to its allocation cap,
        // while reading the header) or buffer (text): never shown to it.
        (
            "RGB PNG 12 MP, 256 MiB iCCP bomb",
            craft::png_with_chunks(
                &craft::png(DynamicImage::ImageRgb8(photo(4000, 3000))),
                &[
                    (
                        b"iCCP",
                        [&b"bomb\0\0"[..], &craft::zlib_zeros(256)].concat(),
                    ),
                    (
                        b"zTXt",
                        [&b"Comment\0\0"[..], &craft::zlib_zeros(64)].concat(),
                    ),
                    (b"tEXt", [&b"Comment\0"[..], &[b'a'; 8 << 20]].concat()),
                ],
            ),
        ),
        // libjpeg skips the byte with a warning and buffers the whole coefficient arrays.
        (
            "progressive JPEG 12 MP, stray byte",
            craft::jpeg_with_stray_byte_after_sof(&craft::mozjpeg(
                4000,
                3000,
                mozjpeg::ColorSpace::JCS_RGB,
                true,
            )),
        ),
        // libjpeg reads CMYK through, then the image crate decodes it. (MozJPEG's defaults
        // are progressive.)
        (
            "progressive CMYK JPEG 6 MP",
            craft::mozjpeg(3000, 2000, mozjpeg::ColorSpace::JCS_CMYK, false),
        ),
        // The tiff crate's own buffer is 4 samples a pixel for CMYK.
        (
            "TIFF CMYK 6 MP",
            craft::tiff(3000, 2000, 5, 4, 1, TiffLayout::Strips(64)),
        ),
        (
            "TIFF RGB 16-bit 6 MP",
            craft::encode(
                &DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(3000, 2000, |x, y| {
                    image::Rgb([(x * 13) as u16, (y * 7) as u16, 30_000u16])
                })),
                ImageFormat::Tiff,
            ),
        ),
        (
            "TIFF LZW 6 MP",
            craft::tiff(3000, 2000, 2, 3, 5, TiffLayout::Strips(16)),
        ),
        (
            "TIFF Deflate 6 MP, one strip",
            craft::tiff(3000, 2000, 2, 3, 8, TiffLayout::Strips(2000)),
        ),
        (
            "TIFF tiled 6 MP",
            craft::tiff(3000, 2000, 2, 3, 1, TiffLayout::Tiles(256)),
        ),
        (
            "TIFF CMYK Deflate tiled 6 MP",
            craft::tiff(3000, 2000, 5, 4, 8, TiffLayout::Tiles(512)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let (estimate, measured, probing) = measure(bytes);
        println!(
            "{name:<36} estimate {:>6.1} MiB  measured {:>6.1} MiB  ({:.2}x)  probe {:>4.1} MiB",
            estimate as f64 / 1048576.0,
            measured as f64 / 1048576.0,
            estimate as f64 / measured.max(1) as f64,
            probing as f64 / 1048576.0,
        );
        if probing > 4 << 20 {
            failures.push(format!("{name}: reading the header took {probing} bytes"));
        }
        // A page-rounding and allocator allowance below, a 1.5x ceiling above.
        if measured > estimate + (4 << 20) {
            failures.push(format!(
                "{name}: measured {measured} over the estimate {estimate}"
            ));
        }
        if 2 * estimate > 3 * measured + (8 << 20) {
            failures.push(format!(
                "{name}: estimate {estimate} is over 1.5x the measured {measured}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Decoding a JPEG or PNG straight into the model's input holds the decoder's buffers and a
/// few rows, never the photo: the measured peak stays within `Probe::stream_peak_bytes`,
/// which is a whole photo less than what a whole decode reserves.
#[test]
fn streaming_estimates_cover_what_streaming_takes() {
    let _turn = common::heavy();
    // The process's peak RSS is one number, which any other test's allocations would
    // raise, and mallopt below is process-wide: measured in a process of its own.
    if common::in_own_process(
        module_path!(),
        "streaming_estimates_cover_what_streaming_takes",
    ) {
        return;
    }
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let limits = DecodeLimits::default();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "baseline JPEG 12 MP",
            craft::encode(
                &DynamicImage::ImageRgb8(craft::noise(4000, 3000)),
                ImageFormat::Jpeg,
            ),
        ),
        (
            "progressive JPEG 12 MP",
            craft::mozjpeg(4000, 3000, mozjpeg::ColorSpace::JCS_RGB, true),
        ),
        (
            "progressive JPEG 12 MP, stray byte",
            craft::jpeg_with_stray_byte_after_sof(&craft::mozjpeg(
                4000,
                3000,
                mozjpeg::ColorSpace::JCS_RGB,
                true,
            )),
        ),
        (
            "PNG RGB8 12 MP, noise",
            craft::encode(
                &DynamicImage::ImageRgb8(craft::noise(4000, 3000)),
                ImageFormat::Png,
            ),
        ),
        (
            "PNG RGBA16 12 MP",
            craft::encode(
                &DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(4000, 3000, |x, y| {
                    image::Rgba([(x * 16) as u16, (y * 21) as u16, (x ^ y) as u16, 40000])
                })),
                ImageFormat::Png,
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let denoms: &[u32] = if name.starts_with("PNG") {
            &[1]
        } else {
            &[1, 4]
        };
        for &denom in denoms {
            let probe = imageio::probe(bytes, &limits).unwrap();
            assert!(probe.streams(), "{name}");
            let lb = segserve::geometry::Letterbox::new(4000, 3000, 640, 640);
            let (whole, estimate) = (probe.peak_bytes(), probe.stream_peak_bytes(&lb, denom));
            // The tensor is the caller's, and already in use: its pages are not the decode's.
            let mut out = vec![1f32; lb.tensor_len()];
            let mut r = MemoryBudget::unlimited().reservation();
            let (res, measured) = peak_growth(|| probe.stream_into(&lb, &mut out, &mut r, denom));
            res.unwrap();
            println!(
                "{name:<36} 1/{denom}: estimate {:>5.1} MiB  measured {:>5.1} MiB  (whole decode reserves {:>5.1} MiB)",
                estimate as f64 / 1048576.0,
                measured as f64 / 1048576.0,
                whole as f64 / 1048576.0,
            );
            if measured > estimate + (4 << 20) {
                failures.push(format!(
                    "{name} 1/{denom}: measured {measured} over the estimate {estimate}"
                ));
            }
            // What streaming saves is the photo itself (libjpeg's buffers are the same).
            let photo = 4000 * 3000 * 3;
            if estimate + photo > whole + (1 << 20) {
                failures.push(format!(
                    "{name} 1/{denom}: streaming reserves {estimate}, not a photo less than a whole decode's {whole}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
