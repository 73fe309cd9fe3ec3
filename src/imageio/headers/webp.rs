//! WebP: animation (refused), the EXIF chunk, and a lossy frame that disagrees with its canvas.

use super::le32;

/// Why a WebP's header is refused before any decoder sees it.
#[derive(Debug, PartialEq)]
pub enum WebpRefusal {
    Animated,
    /// A lossy frame whose own size differs from the canvas: image-webp decodes the frame
    /// at its own size (up to 16383x16383) before it compares the two.
    FrameSize {
        frame: (u32, u32),
        canvas: (u32, u32),
    },
}

/// What the probe takes from a WebP's chunks.
#[derive(Debug, Default, PartialEq)]
pub struct WebpHeader<'a> {
    /// The EXIF chunk (an extended file's first), if it lies within the upload.
    pub exif: Option<&'a [u8]>,
}

/// Walks a WebP's RIFF chunks: an animated one is refused (the VP8X animation flag, or any
/// ANIM or ANMF chunk: image-webp would keep canvas-sized buffers per frame), as is an
/// extended one whose lossy frame differs in size from its canvas. Files too short to walk
/// are left to the decoder.
pub fn webp_header(bytes: &[u8]) -> Result<WebpHeader<'_>, WebpRefusal> {
    let mut out = WebpHeader::default();
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WEBP") {
        return Ok(out);
    }
    let riff_end = le32(bytes, 4).map_or(bytes.len(), |n| (n as usize).saturating_add(8));
    let end = riff_end.min(bytes.len());
    if bytes.get(12..16) != Some(b"VP8X") {
        return Ok(out);
    }
    let Some(x) = bytes.get(20..30) else {
        return Ok(out);
    };
    if x[0] & 0x02 != 0 {
        return Err(WebpRefusal::Animated);
    }
    let u24 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], 0]);
    let canvas = (1 + u24(&x[4..7]), 1 + u24(&x[7..10]));
    let mut at = 12;
    let mut seen_vp8 = false;
    while at + 8 <= end {
        let kind = &bytes[at..at + 4];
        let Some(len) = le32(bytes, at + 4) else {
            break;
        };
        let len = len as usize;
        let data = bytes.get(at + 8..(at + 8).saturating_add(len));
        match kind {
            b"ANIM" | b"ANMF" => return Err(WebpRefusal::Animated),
            b"EXIF" if out.exif.is_none() => out.exif = data,
            b"VP8 " if !seen_vp8 => {
                seen_vp8 = true;
                // Frame tag (3 bytes), start code 9D 01 2A, then 14-bit width and height.
                if let Some(f) = bytes.get(at + 8..at + 18) {
                    let w = u32::from(u16::from_le_bytes([f[6], f[7]]) & 0x3FFF);
                    let h = u32::from(u16::from_le_bytes([f[8], f[9]]) & 0x3FFF);
                    if f[3..6] == [0x9D, 0x01, 0x2A] && (w, h) != canvas {
                        return Err(WebpRefusal::FrameSize {
                            frame: (w, h),
                            canvas,
                        });
                    }
                }
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = at.saturating_add(8).saturating_add(len + (len & 1));
    }
    Ok(out)
}
