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

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use image::metadata::Orientation;

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

/// The data of a PNG's eXIf chunk, if one comes before the image data (where the png crate
/// reads it; a second one it ignores).
pub fn png_exif(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 8;
    loop {
        let len = be32(bytes, at)? as usize;
        let kind = bytes.get(at + 4..at + 8)?;
        match kind {
            b"IDAT" | b"IEND" => return None,
            b"eXIf" => return bytes.get(at + 8..(at + 8).checked_add(len)?),
            _ => at = at.checked_add(12)?.checked_add(len)?,
        }
    }
}

/// A PNG as the decoder should see it: the signature, the critical chunks (IHDR, PLTE,
/// IDAT, IEND and any unknown critical one, which the png crate refuses) and tRNS, read
/// straight from the upload. Every other chunk is skipped unread, so the png crate never
/// buffers or inflates one: image 0.25's `PngDecoder` turns the png crate's
/// `ignore_text_chunk` off and offers no way to set `ignore_iccp_chunk`, and the png crate
/// inflates iCCP while reading the header, up to its allocation limit. No copy is made,
/// so the estimate has nothing to add for it. A chunk that runs past the end of the upload,
/// and everything after it, is passed on as it is, for the decoder to judge; nothing is
/// passed after IEND.
pub struct PngEssentials<'a> {
    bytes: &'a [u8],
    /// Next byte of `bytes` to hand out.
    at: usize,
    /// End of the run of bytes being handed out.
    kept_end: usize,
    /// Where the stream ends: the end of IEND once it is seen.
    end: usize,
    /// Bytes handed out so far: the position the decoder sees.
    pos: u64,
}

impl<'a> PngEssentials<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        PngEssentials {
            bytes,
            at: 0,
            kept_end: 0,
            end: bytes.len(),
            pos: 0,
        }
    }

    fn rewind(&mut self) {
        *self = PngEssentials::new(self.bytes);
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let avail = self.fill_buf()?.len();
            if avail == 0 {
                break;
            }
            let step = avail.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.consume(step);
            n -= step as u64;
        }
        Ok(())
    }
}

/// Chunks the decoder needs: critical ones (first letter upper case) and tRNS, which
/// changes the pixels (transparency expands to an alpha channel).
fn png_chunk_needed(kind: &[u8]) -> bool {
    kind[0] & 0x20 == 0 || kind == b"tRNS"
}

impl BufRead for PngEssentials<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at == self.kept_end && self.at < self.end {
            if self.at == 0 {
                self.kept_end = 8.min(self.end);
                continue;
            }
            let chunk = be32(self.bytes, self.at)
                .zip(self.bytes.get(self.at + 4..self.at + 8))
                .and_then(|(len, kind)| {
                    let end = (len as usize).checked_add(12)?.checked_add(self.at)?;
                    (end <= self.end).then_some((kind, end))
                });
            match chunk {
                Some((kind, end)) if png_chunk_needed(kind) => {
                    self.kept_end = end;
                    if kind == b"IEND" {
                        self.end = end;
                    }
                }
                Some((_, end)) => {
                    self.at = end;
                    self.kept_end = end;
                }
                None => self.kept_end = self.end,
            }
        }
        Ok(&self.bytes[self.at..self.kept_end])
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.kept_end - self.at);
        self.at += amt;
        self.pos += amt as u64;
    }
}

impl Read for PngEssentials<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The image crate requires `Seek`; the png crate never seeks. Going back rewalks the
/// chunk list from the start (no index is kept, so nothing is allocated).
impl Seek for PngEssentials<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?,
            SeekFrom::End(_) => return Err(io::ErrorKind::Unsupported.into()),
        };
        if target < self.pos {
            self.rewind();
        }
        self.skip(target - self.pos)?;
        Ok(self.pos)
    }
}

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

/// What a TIFF's first IFD (the image the decoder reads) says about its cost.
#[derive(Debug, Default, PartialEq)]
pub struct TiffHeader {
    /// A Compression entry (tag 259) says JPEG (6, old-style, or 7): the tiff crate hands
    /// each strip to zune-jpeg, which decodes it at the size its own header declares.
    pub jpeg: bool,
    /// PhotometricInterpretation (262) is 5 (separated, CMYK): the tiff crate decodes 4
    /// samples a pixel into its own buffer before the conversion to RGB.
    pub cmyk: bool,
}

/// Walks the entries of IFD0, in either byte order, classic or BigTIFF, reading only
/// values stored inline. Every Compression entry counts (the tiff crate keeps the last of
/// duplicates; refusing on any is the safe side). A file too short to walk yields the
/// default, for the decoder to refuse.
pub fn tiff_header(bytes: &[u8]) -> TiffHeader {
    let mut out = TiffHeader::default();
    let little = match bytes.get(..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return out,
    };
    let uint = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        let fold = |acc: u64, &x: &u8| (acc << 8) | u64::from(x);
        Some(if little {
            b.iter().rev().fold(0, fold)
        } else {
            b.iter().fold(0, fold)
        })
    };
    let mut walk = || -> Option<()> {
        let big = match uint(2, 2)? {
            42 => false,
            43 => true,
            _ => return None,
        };
        let (count_len, entry_len, field_len) = if big { (8, 20, 8) } else { (2, 12, 4) };
        let ifd = usize::try_from(if big { uint(8, 8)? } else { uint(4, 4)? }).ok()?;
        let entries = usize::try_from(uint(ifd, count_len)?).ok()?;
        // Entries past the end of the file are not there to read; this bounds the loop.
        let entries = entries.min(bytes.len() / entry_len);
        for i in 0..entries {
            let e = ifd + count_len + i * entry_len;
            let tag = uint(e, 2)?;
            let kind = uint(e + 2, 2)?;
            let count = uint(e + 4, field_len)?;
            let field = e + 4 + field_len;
            // One BYTE, SHORT, LONG or LONG8, left-justified in the field: the only forms
            // the tiff crate turns into a number for these tags.
            let value = match (kind, count) {
                (1, 1) => uint(field, 1),
                (3, 1) => uint(field, 2),
                (4, 1) => uint(field, 4),
                (16, 1) if big => uint(field, 8),
                _ => None,
            };
            match (tag, value) {
                (259, Some(6 | 7)) => out.jpeg = true,
                (262, Some(5)) => out.cmyk = true,
                _ => {}
            }
        }
        Some(())
    };
    walk();
    out
}

#[cfg(test)]
pub(super) mod tests {
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
}
