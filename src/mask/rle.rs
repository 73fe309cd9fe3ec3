//! COCO run-length encoding of masks, both ways: what pycocotools writes (`rleToString`)
//! and reads (`rleFrString`), column-major, starting with a run of zeros.

use super::BoxMask;

/// Run lengths being collected: adjacent runs of the same value merge.
struct Runs {
    counts: Vec<u32>,
    value: u8,
    run: u32,
}

impl Runs {
    fn push(&mut self, value: u8, len: u32) {
        if len == 0 {
            return;
        }
        if value == self.value {
            self.run += len;
        } else {
            self.counts.push(self.run);
            self.value = value;
            self.run = len;
        }
    }
}

/// Calls `f(i)` for every `i` where `a[i] != b[i]`, eight bytes at a time: masks change
/// only along object borders, so nearly every word compares equal.
fn for_each_change(a: &[u8], b: &[u8], mut f: impl FnMut(usize)) {
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (i, (x, y)) in wa.by_ref().zip(wb.by_ref()).enumerate() {
        let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
        let mut d = x ^ y;
        while d != 0 {
            let byte = d.trailing_zeros() as usize / 8;
            f(i * 8 + byte);
            d &= !(0xffu64 << (byte * 8));
        }
    }
    let tail = a.len() - wa.remainder().len();
    for (j, (x, y)) in wa.remainder().iter().zip(wb.remainder()).enumerate() {
        if x != y {
            f(tail + j);
        }
    }
}

impl BoxMask {
    /// Uncompressed COCO run lengths, column-major, starting with a run of zeros.
    ///
    /// The bits are row-major; walking each column touches one row per pixel and tests
    /// every pixel (25 ms for a 20 MP mask). Instead two passes over the rows, comparing
    /// each with the one above eight bytes at a time, find the rows where each column
    /// changes value (first counting them per column, then recording them), and the runs
    /// are the distances between those rows.
    pub fn rle_counts(&self) -> Vec<u32> {
        let mut runs = Runs {
            counts: Vec::new(),
            value: 0,
            run: 0,
        };
        let (w, h) = (self.w as usize, self.h as usize);
        if w == 0 || h == 0 {
            runs.push(0, self.image_w * self.image_h);
            runs.counts.push(runs.run);
            return runs.counts;
        }
        // Rows 0..=h, each compared with the one above; above the first and below the last
        // the mask is zero, so every column changes an even number of times.
        let zero = vec![0u8; w];
        let row = |r: usize| -> &[u8] {
            if r < h {
                &self.bits[r * w..(r + 1) * w]
            } else {
                &zero
            }
        };
        let above = |r: usize| -> &[u8] {
            if r == 0 {
                &zero
            } else {
                row(r - 1)
            }
        };
        let mut start = vec![0u32; w + 1];
        for r in 0..=h {
            for_each_change(above(r), row(r), |c| start[c + 1] += 1);
        }
        for c in 0..w {
            start[c + 1] += start[c];
        }
        let mut changes = vec![0u32; start[w] as usize];
        let mut next = start.clone();
        for r in 0..=h {
            for_each_change(above(r), row(r), |c| {
                changes[next[c] as usize] = r as u32;
                next[c] += 1;
            });
        }

        let below = self.image_h - (self.y + self.h);
        runs.push(0, self.image_h * self.x);
        for c in 0..w {
            runs.push(0, self.y);
            let (mut from, mut value) = (0u32, 0u8);
            for &r in &changes[start[c] as usize..start[c + 1] as usize] {
                runs.push(value, r - from);
                from = r;
                value ^= 1;
            }
            runs.push(0, self.h - from);
            runs.push(0, below);
        }
        runs.push(0, self.image_h * (self.image_w - self.x - self.w));
        runs.counts.push(runs.run);
        runs.counts
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

    /// The definition: walk each column of the full image, top to bottom.
    fn counts_by_walking_columns(m: &BoxMask) -> Vec<u32> {
        let mut runs = Runs {
            counts: Vec::new(),
            value: 0,
            run: 0,
        };
        for x in 0..m.image_w {
            for y in 0..m.image_h {
                runs.push(m.get(x, y) as u8, 1);
            }
        }
        runs.counts.push(runs.run);
        runs.counts
    }

    #[test]
    fn runs_from_row_changes_equal_the_column_walk() {
        let mut seed = 0x9E3779B97F4A7C15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..400 {
            let (image_w, image_h) = (1 + next(40) as u32, 1 + next(40) as u32);
            let (x, y) = (next(image_w as u64) as u32, next(image_h as u64) as u32);
            // Empty boxes too, and boxes touching the right and bottom edges.
            let w = next((image_w - x + 1) as u64) as u32;
            let h = next((image_h - y + 1) as u64) as u32;
            // Sparse, dense, and blobby masks (long runs, as real ones have).
            let density = next(4);
            let bits = (0..w * h)
                .map(|i| match density {
                    0 => (next(10) == 0) as u8,
                    1 => (next(10) != 0) as u8,
                    2 => (next(2) == 0) as u8,
                    _ => ((i % w.max(1)) * 3 < w && (i / w.max(1)) % 7 < 4) as u8,
                })
                .collect();
            let m = BoxMask {
                image_w,
                image_h,
                x,
                y,
                w,
                h,
                bits,
            };
            assert_eq!(
                m.rle_counts(),
                counts_by_walking_columns(&m),
                "case {case}: {m:?}"
            );
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
