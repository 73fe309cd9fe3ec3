//! COCO run-length encoding of masks, both ways: what pycocotools writes (`rleToString`)
//! and reads (`rleFrString`), column-major, starting with a run of zeros.

use super::BoxMask;

impl BoxMask {
    /// Uncompressed COCO run lengths, column-major, starting with a run of zeros.
    pub fn rle_counts(&self) -> Vec<u32> {
        let mut counts = Vec::new();
        let mut current = 0u8;
        let mut run = 0u32;
        let mut push = |value: u8, len: u32, counts: &mut Vec<u32>| {
            if len == 0 {
                return;
            }
            if value == current {
                run += len;
            } else {
                counts.push(run);
                current = value;
                run = len;
            }
        };
        let (x_end, y_end) = (self.x + self.w, self.y + self.h);
        for col in 0..self.image_w {
            if col < self.x || col >= x_end {
                push(0, self.image_h, &mut counts);
                continue;
            }
            push(0, self.y, &mut counts);
            let cx = (col - self.x) as usize;
            for row in 0..self.h as usize {
                push(self.bits[row * self.w as usize + cx], 1, &mut counts);
            }
            push(0, self.image_h - y_end, &mut counts);
        }
        counts.push(run);
        counts
    }

    /// COCO compressed RLE string (pycocotools' `rleToString`).
    pub fn to_coco_rle(&self) -> String {
        counts_to_string(&self.rle_counts())
    }
}

/// pycocotools' LEB128-like text form of run lengths: 5 bits per char, offset by 48,
/// each count after the second stored as the difference to the one two before.
pub fn counts_to_string(counts: &[u32]) -> String {
    let mut out = String::with_capacity(counts.len() * 2);
    for (i, &c) in counts.iter().enumerate() {
        let mut x = c as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            out.push((ch + 48) as char);
            if !more {
                break;
            }
        }
    }
    out
}

/// Why an RLE string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RleError {
    /// A character outside the alphabet, or a count that does not fit.
    #[error("malformed RLE string")]
    Malformed,
    /// The runs do not add up to height x width.
    #[error("RLE covers {got} pixels, expected {expected}")]
    WrongLength {
        /// Pixels covered by the runs.
        got: u64,
        /// Pixels in the declared size.
        expected: u64,
    },
}

/// Inverse of [`counts_to_string`] (pycocotools' `rleFrString`).
pub fn string_to_counts(s: &str) -> Result<Vec<u32>, RleError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0;
        loop {
            let b = *bytes.get(p).ok_or(RleError::Malformed)?;
            if !(48..48 + 64).contains(&b) || k > 6 {
                return Err(RleError::Malformed);
            }
            let c = (b - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let i = counts.len();
        if i > 2 {
            x += counts[i - 2] as i64;
        }
        counts.push(u32::try_from(x).map_err(|_| RleError::Malformed)?);
    }
    Ok(counts)
}

/// Decodes a COCO compressed RLE into a dense row-major bitmap of `h` x `w`.
pub fn decode_coco_rle(s: &str, h: u32, w: u32) -> Result<Vec<u8>, RleError> {
    let counts = string_to_counts(s)?;
    let expected = h as u64 * w as u64;
    let got: u64 = counts.iter().map(|c| *c as u64).sum();
    if got != expected {
        return Err(RleError::WrongLength { got, expected });
    }
    let mut dense = vec![0u8; expected as usize];
    let mut idx = 0usize;
    for (i, &c) in counts.iter().enumerate() {
        if i % 2 == 1 {
            for j in idx..idx + c as usize {
                // Column-major index j -> row-major.
                let (col, row) = (j / h as usize, j % h as usize);
                dense[row * w as usize + col] = 1;
            }
        }
        idx += c as usize;
    }
    Ok(dense)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_strings_from_pycocotools() {
        // pycocotools.mask.encode(np.asfortranarray(m)) for these masks.
        // 2x2 all zeros -> counts [4] -> "4"
        let z = BoxMask::from_dense(2, 2, &[0, 0, 0, 0]);
        assert_eq!(z.rle_counts(), vec![4]);
        assert_eq!(z.to_coco_rle(), "4");
        // 2x2 all ones -> [0, 4] -> "04"
        let o = BoxMask::from_dense(2, 2, &[1, 1, 1, 1]);
        assert_eq!(o.to_coco_rle(), "04");
        // 3x3 centre pixel -> [4, 1, 4] -> "414"
        let c = BoxMask::from_dense(3, 3, &[0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(c.to_coco_rle(), "414");
        // Counts >= 16 need a continuation char, and diffs may go negative.
        assert_eq!(counts_to_string(&[100]), "T3");
        assert_eq!(counts_to_string(&[5, 100, 3, 1]), "5T33mL");
    }

    #[test]
    fn round_trip_random_masks() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let w = 1 + (seed % 37) as u32;
            let h = 1 + ((seed >> 8) % 29) as u32;
            let dense: Vec<u8> = (0..w * h)
                .map(|i| ((seed >> (i % 61)) & 1) as u8 & ((i % 5 != 0) as u8))
                .collect();
            let m = BoxMask::from_dense(w, h, &dense);
            let s = m.to_coco_rle();
            assert_eq!(decode_coco_rle(&s, h, w).unwrap(), dense);
        }
    }

    #[test]
    fn box_mask_matches_dense_encoding() {
        // A 2x2 block at (3, 1) in a 6x4 image, one pixel of it unset.
        let bm = BoxMask {
            image_w: 6,
            image_h: 4,
            x: 3,
            y: 1,
            w: 2,
            h: 2,
            bits: vec![1, 0, 1, 1],
        };
        let mut dense = vec![0u8; 24];
        for y in 0..4 {
            for x in 0..6 {
                dense[y * 6 + x] = bm.get(x as u32, y as u32) as u8;
            }
        }
        assert_eq!(
            bm.to_coco_rle(),
            BoxMask::from_dense(6, 4, &dense).to_coco_rle()
        );
        assert_eq!(bm.area(), 3);
    }

    #[test]
    fn malformed_strings_are_errors() {
        assert_eq!(
            decode_coco_rle("4", 3, 3),
            Err(RleError::WrongLength {
                got: 4,
                expected: 9
            })
        );
        assert_eq!(string_to_counts("\u{7f}"), Err(RleError::Malformed));
        assert_eq!(string_to_counts("P"), Err(RleError::Malformed));
    }
}
