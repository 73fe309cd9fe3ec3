//! PNG: the eXIf chunk, and a reader that hides the chunks we do not decode.

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use super::be32;

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
