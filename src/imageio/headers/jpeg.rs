//! JPEG: size, EXIF orientation, and what libjpeg will buffer, walked as libjpeg walks its markers.

use image::metadata::Orientation;

use super::be16;

/// What a JPEG's headers say, as far as decoding it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// Components in the frame (3 for YCbCr, 1 grey, 4 CMYK/YCCK).
    pub components: u32,
    /// Bytes of the whole-image coefficient arrays libjpeg allocates when it cannot decode
    /// in one pass (progressive, or a first scan without every component); 0 when it
    /// streams. When the first scan header cannot be read, the worst case: every component
    /// at full resolution.
    pub coefficient_bytes: u64,
    /// The worst case: coefficient arrays for every component at full resolution.
    pub full_coefficient_bytes: u64,
    /// libjpeg's row buffers, allocated before the coefficient arrays and counted against
    /// the same `max_memory_to_use`: the main controller's row groups (up to 10 per
    /// component, `v_samp` rows each, jdmainct.c) and the upsampler's `max_v_samp` rows per
    /// component at full width (jdsample.c).
    pub row_bytes: u64,
    /// From the first APP1 "Exif" segment before the first scan.
    pub orientation: Option<Orientation>,
}

/// A frame header (SOFn).
struct Frame {
    progressive: bool,
    width: u32,
    height: u32,
    /// As declared.
    components: u32,
    /// (h, v) sampling factors of each component; None if the header is cut short.
    sampling: Option<Vec<(u32, u32)>>,
}

/// Reads a JPEG's headers up to its first scan the way libjpeg's marker reader does
/// (jdmarker.c): SOI first, then markers where any bytes that are not a marker are skipped
/// (libjpeg only warns, JWRN_EXTRANEOUS_DATA), RSTn and TEM without a length, and a length
/// under 2 skipping nothing. `None` without a frame header to size the image by.
pub fn jpeg_header(bytes: &[u8]) -> Option<JpegHeader> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut frame: Option<Frame> = None;
    let mut orientation = None;
    let mut multi_scan = None;
    let mut at = 2;
    while let Some((marker, next)) = next_marker(bytes, at) {
        at = next;
        match marker {
            // RSTn and TEM carry no length.
            0xD0..=0xD7 | 0x01 => continue,
            // A second SOI or an EOI before any scan: libjpeg stops with an error.
            0xD8 | 0xD9 => break,
            _ => {}
        }
        let Some(len) = be16(bytes, at) else { break };
        let body = bytes
            .get(at + 2..(at + len).min(bytes.len()))
            .unwrap_or(&[]);
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). libjpeg refuses a
            // second one (JERR_SOF_DUPLICATE).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if frame.is_some() {
                    break;
                }
                let Some(h) = be16(body, 1) else { break };
                let Some(w) = be16(body, 3) else { break };
                let Some(&n) = body.get(5) else { break };
                let comps = (0..usize::from(n))
                    .map(|i| {
                        let s = *body.get(6 + 3 * i + 1)?;
                        Some((u32::from(s >> 4).max(1), u32::from(s & 0x0F).max(1)))
                    })
                    .collect::<Option<Vec<_>>>();
                let progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                frame = Some(Frame {
                    progressive,
                    width: w as u32,
                    height: h as u32,
                    components: u32::from(n),
                    sampling: comps,
                });
            }
            // Start of scan: whether its components are all of the frame's decides whether
            // libjpeg buffers the whole image (jdinput.c, `has_multiple_scans`).
            0xDA => {
                if let (Some(f), Some(&in_scan)) = (&frame, body.first()) {
                    multi_scan = Some(f.progressive || u32::from(in_scan) < f.components);
                }
                break;
            }
            0xE1 if orientation.is_none() => {
                if let Some(tiff) = body.strip_prefix(b"Exif\0\0") {
                    orientation = Orientation::from_exif_chunk(tiff);
                }
            }
            _ => {}
        }
        // libjpeg's skip_variable: the length counts itself; less than 2 skips nothing.
        at += len.max(2);
    }
    let Frame {
        width,
        height,
        components: n,
        sampling: comps,
        ..
    } = frame?;
    // Sampling factors unread (a cut frame header, which libjpeg refuses): as if 1x1.
    let comps = comps.unwrap_or_else(|| vec![(1, 1); n as usize]);
    let hmax = comps.iter().map(|c| c.0).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.1).max().unwrap_or(1);
    let mcus_x = u64::from(width.div_ceil(8 * hmax));
    let mcus_y = u64::from(height.div_ceil(8 * vmax));
    let full_coefficient_bytes =
        u64::from(n) * mcus_x * u64::from(hmax) * mcus_y * u64::from(vmax) * 128;
    let coefficient_bytes = match multi_scan {
        Some(false) => 0,
        Some(true) => comps
            .iter()
            .map(|&(h, v)| mcus_x * u64::from(h) * mcus_y * u64::from(v) * 128)
            .sum(),
        // Unknown: never less than libjpeg can take.
        None => full_coefficient_bytes,
    };
    let full_width = mcus_x * u64::from(hmax) * 8;
    let row_bytes = comps
        .iter()
        .map(|&(h, v)| mcus_x * u64::from(h) * 8 * u64::from(v) * 10 + full_width * u64::from(vmax))
        .sum();
    Some(JpegHeader {
        width,
        height,
        components: n,
        coefficient_bytes,
        full_coefficient_bytes,
        row_bytes,
        orientation,
    })
}

/// The next marker at or after `at`, as libjpeg's `next_marker` finds it: skip bytes up to
/// an 0xFF, then any run of 0xFF (fill), and an 0xFF 0x00 pair (stuffed data) is skipped
/// too. Returns the marker code and the offset just past it.
fn next_marker(bytes: &[u8], mut at: usize) -> Option<(u8, usize)> {
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        while *bytes.get(at)? == 0xFF {
            at += 1;
        }
        let code = bytes[at];
        at += 1;
        if code != 0 {
            return Some((code, at));
        }
    }
}
