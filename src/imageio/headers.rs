//! Reads the few header fields the decoders do not report but the memory estimate needs:
//! the size of a GIF's first frame (which may exceed its logical screen) and the layout of a
//! JPEG that libjpeg will buffer whole (progressive or multi-scan). Plain byte walking, no
//! allocation; anything malformed yields `None` and is left to the decoder to refuse.

/// Width and height of the first image in a GIF (its image descriptor, not the screen).
pub fn gif_first_frame(bytes: &[u8]) -> Option<(u32, u32)> {
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return None;
    }
    let flags = *bytes.get(10)?;
    let mut at = 13;
    if flags & 0x80 != 0 {
        at += 3 << ((flags & 0x07) + 1);
    }
    loop {
        match *bytes.get(at)? {
            // Image descriptor: left, top, width, height (little-endian u16 each).
            0x2C => {
                let d = bytes.get(at + 1..at + 9)?;
                let le = |i: usize| u32::from(u16::from_le_bytes([d[i], d[i + 1]]));
                return Some((le(0) + le(4), le(2) + le(6)));
            }
            // Extension: label, then data sub-blocks up to a zero-length one.
            0x21 => {
                at += 2;
                loop {
                    let len = *bytes.get(at)? as usize;
                    at += 1 + len;
                    if len == 0 {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
}

/// Bytes of the whole-image coefficient arrays libjpeg allocates for a JPEG it cannot decode
/// in one pass (progressive, or sequential with more than one scan): 64 two-byte
/// coefficients per 8x8 block of every component, blocks counted in whole MCUs. `Some(0)`
/// for a single-scan baseline JPEG, which libjpeg streams through a few rows.
pub fn jpeg_coefficient_bytes(bytes: &[u8]) -> Option<u64> {
    /// Progressive?, width, height, (h, v) sampling factors of each component.
    type Frame = (bool, u32, u32, Vec<(u32, u32)>);
    let mut at = 2;
    let mut frame: Option<Frame> = None;
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    loop {
        // Markers may be padded with any number of 0xFF bytes.
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let body = bytes.get(at + 4..at + 2 + len)?;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                let h = u32::from(u16::from_be_bytes([*body.get(1)?, *body.get(2)?]));
                let w = u32::from(u16::from_be_bytes([*body.get(3)?, *body.get(4)?]));
                let n = usize::from(*body.get(5)?);
                let comps = (0..n)
                    .map(|i| {
                        let s = *body.get(6 + 3 * i + 1)?;
                        Some((u32::from(s >> 4).max(1), u32::from(s & 0x0F).max(1)))
                    })
                    .collect::<Option<Vec<_>>>()?;
                frame = Some((progressive, w, h, comps));
            }
            // Start of scan: its component count says whether the frame is interleaved.
            0xDA => {
                let (progressive, w, h, comps) = frame?;
                let in_scan = usize::from(*body.first()?);
                if !progressive && in_scan >= comps.len() {
                    return Some(0);
                }
                let hmax = comps.iter().map(|c| c.0).max()?;
                let vmax = comps.iter().map(|c| c.1).max()?;
                let mcus_x = u64::from(w.div_ceil(8 * hmax));
                let mcus_y = u64::from(h.div_ceil(8 * vmax));
                let blocks: u64 = comps
                    .iter()
                    .map(|(hs, vs)| mcus_x * u64::from(*hs) * mcus_y * u64::from(*vs))
                    .sum();
                return Some(blocks * 64 * 2);
            }
            _ => {}
        }
        at += 2 + len;
    }
}

#[cfg(test)]
mod tests {
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

    fn jpeg(progressive: bool) -> Vec<u8> {
        let img = image::RgbImage::from_fn(100, 60, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        // MozJPEG's own defaults are progressive; its fastest ones are baseline.
        if !progressive {
            comp.set_fastest_defaults();
        }
        comp.set_size(100, 60);
        let mut started = comp.start_compress(Vec::new()).unwrap();
        started.write_scanlines(img.as_raw()).unwrap();
        started.finish().unwrap()
    }

    #[test]
    fn jpeg_buffers_only_when_multi_scan() {
        assert_eq!(jpeg_coefficient_bytes(&jpeg(false)), Some(0));
        // 4:2:0 by default: MCUs of 16x16, 7x4 of them; Y has 4 blocks per MCU, Cb and Cr 1.
        assert_eq!(jpeg_coefficient_bytes(&jpeg(true)), Some(7 * 4 * 6 * 128));
        assert_eq!(jpeg_coefficient_bytes(b"\xFF\xD8\xFF"), None);
    }
}
