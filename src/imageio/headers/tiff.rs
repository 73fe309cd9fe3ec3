//! TIFF: JPEG compression in the first IFD (refused) and CMYK.

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
