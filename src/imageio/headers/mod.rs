//! Reads the header fields the probe needs without handing the upload to a decoder: a
//! decoder may allocate (or inflate) before it reports anything, and the memory budget has
//! to know the cost first. Plain byte walking over the upload, no allocation.
//!
//! - JPEG: size, EXIF orientation, and what libjpeg will buffer (its whole-image coefficient
//!   arrays and its row buffers), walked the way libjpeg's own marker reader walks.
//! - PNG: the eXIf chunk, and a reader that hides the chunks we do not decode.
//! - WebP: animation (refused), the EXIF chunk, and a lossy frame that disagrees with its
//!   canvas.
//! - TIFF: JPEG compression in the first IFD (refused) and CMYK.
//! - GIF: the size of the first frame, which may exceed the logical screen.

mod jpeg;
mod png;
#[cfg(test)]
pub(super) mod tests;
mod tiff;
mod webp;

pub use jpeg::jpeg_header;
pub use png::{png_exif, PngEssentials};
pub use tiff::tiff_header;
pub use webp::{webp_header, WebpRefusal};

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

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
