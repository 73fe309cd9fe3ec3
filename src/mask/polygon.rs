//! Mask outlines as polygons: the outer border of each 8-connected blob of a [`BoxMask`]
//! (Suzuki & Abe's border following, the algorithm behind OpenCV's `findContours`), then
//! Douglas-Peucker simplification. Ultralytics' `masks.xy` and Roboflow's `points` are
//! built the same way (`cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_*)`), so their users
//! get the shapes they expect. Pure geometry: no model, HTTP or JSON here.
//!
//! Written by hand rather than taken from `imageproc` (whose `find_contours` is the same
//! algorithm): that crate pulls in nalgebra and friends for ~150 lines we need.

use super::BoxMask;

/// A closed polygon in image pixels: the centres of the border pixels, in tracing order.
/// The last point is not repeated.
pub type Polygon = Vec<[u32; 2]>;

/// The 8 neighbours, clockwise on screen (y grows downwards), starting east.
const DIRS: [(i32, i32); 8] = [
    (1, 0),
    (1, 1),
    (0, 1),
    (-1, 1),
    (-1, 0),
    (-1, -1),
    (0, -1),
    (1, -1),
];

/// Pixel states in the padded grid: one byte per pixel is all the tracing keeps, so its
/// scratch memory is known from the box alone (see [`scratch_bytes`]).
const BACKGROUND: u8 = 0;
const FOREGROUND: u8 = 1;
/// Foreground already reached by a flood fill (its blob is traced or being traced).
const SEEN: u8 = 2;

/// The mask with a one-pixel background border, so neighbour look-ups never leave it.
struct Padded {
    w: usize,
    cells: Vec<u8>,
}

impl Padded {
    fn new(m: &BoxMask) -> Self {
        let (w, h) = (m.w as usize + 2, m.h as usize + 2);
        let mut cells = vec![BACKGROUND; w * h];
        for y in 0..m.h as usize {
            let src = &m.bits[y * m.w as usize..(y + 1) * m.w as usize];
            let row = &mut cells[(y + 1) * w + 1..(y + 1) * w + 1 + m.w as usize];
            for (c, b) in row.iter_mut().zip(src) {
                *c = if *b != 0 { FOREGROUND } else { BACKGROUND };
            }
        }
        Padded { w, cells }
    }

    fn step(&self, idx: usize, dir: usize) -> usize {
        let (dx, dy) = DIRS[dir];
        (idx as isize + dy as isize * self.w as isize + dx as isize) as usize
    }

    fn on(&self, idx: usize) -> bool {
        self.cells[idx] != BACKGROUND
    }
}

/// The most scratch memory tracing `mask` takes beyond its result, for the memory budget
/// to hold before [`mask_polygons`] runs: the padded grid (a byte a pixel), a flood fill's
/// stack (a `u32` a pixel at worst) and one blob's raw border with its simplification's
/// copies (~40 bytes a point; a mask from the model's prototypes has a smooth outline of a
/// few times its box's width and height, and a rougher one ends the stage with an overrun,
/// which the budget stops).
pub fn scratch_bytes(mask: &BoxMask) -> u64 {
    let (w, h) = (u64::from(mask.w), u64::from(mask.h));
    (w + 2) * (h + 2) * (1 + 4) + 40 * 4 * (w + h)
}

/// Outer contours of every 8-connected blob of `mask`, largest blob first, in image pixels.
/// Blobs lying in a hole of another blob are returned too (OpenCV's RETR_EXTERNAL would
/// drop them; they are rare in instance masks and harmless to keep).
pub fn outer_contours(mask: &BoxMask) -> Vec<Polygon> {
    traced(mask, |c| Some(c.to_vec()))
}

/// Traces every blob of `mask` and keeps what `keep(border)` makes of each (in image
/// pixels), largest blob first. Each raw border lives only until `keep` has seen it.
fn traced(mask: &BoxMask, mut keep: impl FnMut(&[[u32; 2]]) -> Option<Polygon>) -> Vec<Polygon> {
    let mut grid = Padded::new(mask);
    let n = grid.cells.len();
    let mut found: Vec<(usize, Polygon)> = Vec::new();
    // Flood-fill stack of grid indices (u32: a box never has 4 G pixels, see decode limits).
    let mut stack: Vec<u32> = Vec::new();
    let mut border: Vec<[u32; 2]> = Vec::new();
    for start in 0..n {
        if grid.cells[start] != FOREGROUND {
            continue;
        }
        // 8-connected flood fill marks the blob SEEN so it is traced exactly once, from
        // its first pixel in raster order.
        let mut area = 0usize;
        grid.cells[start] = SEEN;
        stack.push(start as u32);
        while let Some(p) = stack.pop() {
            area += 1;
            for d in 0..8 {
                let q = grid.step(p as usize, d);
                if grid.cells[q] == FOREGROUND {
                    grid.cells[q] = SEEN;
                    stack.push(q as u32);
                }
            }
        }
        // `start` is the blob's first pixel in raster order: its west neighbour is
        // background, which is where Suzuki & Abe start following an outer border.
        border.clear();
        follow_border(&grid, start, |idx| {
            let (px, py) = (idx % grid.w - 1, idx / grid.w - 1);
            border.push([mask.x + px as u32, mask.y + py as u32]);
        });
        if let Some(kept) = keep(&border) {
            found.push((area, kept));
        }
    }
    found.sort_by_key(|(area, _)| std::cmp::Reverse(*area));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Suzuki & Abe (1985), steps 3.1-3.5, for an outer border starting at `start`, whose
/// west neighbour is background: calls `visit` with each border pixel's grid index.
fn follow_border(g: &Padded, start: usize, mut visit: impl FnMut(usize)) {
    const WEST: usize = 4;
    // 3.1: clockwise from the west neighbour, the first foreground neighbour.
    let Some(first_dir) = (0..8)
        .map(|k| (WEST + k) % 8)
        .find(|&d| g.on(g.step(start, d)))
    else {
        visit(start); // an isolated pixel
        return;
    };
    let first = g.step(start, first_dir);
    let (mut prev, mut cur) = (first, start);
    loop {
        // 3.3: counter-clockwise around `cur`, starting just after `prev`.
        let back = (0..8)
            .find(|&d| g.step(cur, d) == prev)
            .expect("prev is a neighbour of cur");
        let next_dir = (1..=8)
            .map(|k| (back + 8 - k) % 8)
            .find(|&d| g.on(g.step(cur, d)))
            .expect("cur has at least the neighbour prev");
        let next = g.step(cur, next_dir);
        visit(cur);
        // 3.5: back at the start, about to repeat the first move.
        if next == start && cur == first {
            break;
        }
        prev = cur;
        cur = next;
    }
}

/// Douglas-Peucker simplification of a closed polygon: no point of the original lies
/// farther than `tolerance` pixels from the result. Like OpenCV's `approxPolyDP` for
/// closed curves, it splits the ring at its first point and the point farthest from it.
pub fn simplify_closed(poly: &[[u32; 2]], tolerance: f64) -> Polygon {
    if poly.len() < 4 || tolerance <= 0.0 {
        return poly.to_vec();
    }
    let pt = |i: usize| [poly[i][0] as f64, poly[i][1] as f64];
    let far = (1..poly.len())
        .max_by(|&a, &b| dist2(pt(0), pt(a)).total_cmp(&dist2(pt(0), pt(b))))
        .expect("at least 4 points");
    let mut keep = vec![false; poly.len()];
    keep[0] = true;
    keep[far] = true;
    // Closed: the second half ends back at the first point.
    let ring: Vec<[f64; 2]> = (0..=poly.len()).map(|i| pt(i % poly.len())).collect();
    dp(&ring, 0, far, tolerance, &mut keep);
    let mut keep_ring = vec![false; ring.len()];
    dp(&ring, far, poly.len(), tolerance, &mut keep_ring);
    for (i, k) in keep_ring.into_iter().enumerate().take(poly.len()) {
        keep[i] |= k;
    }
    poly.iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(*p))
        .collect()
}

fn dist2(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

/// Distance from `p` to the segment `a`-`b`.
fn seg_dist(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return dist2(p, a).sqrt();
    }
    let t = (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0);
    dist2(p, [a[0] + t * dx, a[1] + t * dy]).sqrt()
}

/// Marks the points of `pts[lo..=hi]` that Douglas-Peucker keeps (iterative: a long,
/// smooth border would otherwise recurse thousands deep).
fn dp(pts: &[[f64; 2]], lo: usize, hi: usize, tol: f64, keep: &mut [bool]) {
    let mut todo = vec![(lo, hi)];
    while let Some((a, b)) = todo.pop() {
        if b <= a + 1 {
            continue;
        }
        let (mut worst, mut worst_d) = (a, -1.0);
        for i in a + 1..b {
            let d = seg_dist(pts[i], pts[a], pts[b]);
            if d > worst_d {
                (worst, worst_d) = (i, d);
            }
        }
        if worst_d > tol {
            keep[worst] = true;
            todo.push((a, worst));
            todo.push((worst, b));
        }
    }
}

/// The polygons `masks=polygon` returns for one mask: outer contours simplified with
/// `tolerance`, dropping those left with fewer than 3 points (no area to draw).
pub fn mask_polygons(mask: &BoxMask, tolerance: f64) -> Vec<Polygon> {
    traced(mask, |c| {
        Some(simplify_closed(c, tolerance)).filter(|p| p.len() >= 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: u32, h: u32, rows: &[&str]) -> BoxMask {
        let dense: Vec<u8> = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| (b == b'#') as u8))
            .collect();
        assert_eq!(dense.len(), (w * h) as usize);
        BoxMask::from_dense(w, h, &dense)
    }

    /// Shoelace area, to check orientation-independent size.
    fn area(p: &[[u32; 2]]) -> f64 {
        let mut s = 0.0;
        for i in 0..p.len() {
            let (a, b) = (p[i], p[(i + 1) % p.len()]);
            s += a[0] as f64 * b[1] as f64 - b[0] as f64 * a[1] as f64;
        }
        s.abs() / 2.0
    }

    #[test]
    fn rectangle_traces_its_border_and_simplifies_to_corners() {
        let m = mask(6, 5, &["......", ".####.", ".####.", ".####.", "......"]);
        let c = outer_contours(&m);
        assert_eq!(c.len(), 1);
        // Every border pixel of the 4 x 3 block once: 12 - 2 interior = 10.
        assert_eq!(c[0].len(), 10);
        assert_eq!(c[0][0], [1, 1]);
        let s = simplify_closed(&c[0], 0.5);
        let mut corners = s.clone();
        corners.sort();
        assert_eq!(corners, vec![[1, 1], [1, 3], [4, 1], [4, 3]]);
        assert_eq!(area(&s), 6.0);
    }

    #[test]
    fn two_blobs_come_out_largest_first_with_box_offset() {
        let mut m = mask(7, 4, &["##.....", "##..###", "....###", "....###"]);
        // Move the stored rectangle inside a bigger image: points must shift with it.
        m.image_w = 100;
        m.image_h = 100;
        m.x = 10;
        m.y = 20;
        let c = outer_contours(&m);
        assert_eq!(c.len(), 2);
        assert!(c[0].contains(&[14, 21]) && c[0].contains(&[16, 23]));
        assert!(c[1].contains(&[10, 20]) && c[1].contains(&[11, 21]));
    }

    #[test]
    fn diagonal_pixels_are_one_blob_and_isolated_pixel_is_a_point() {
        let m = mask(3, 3, &["#..", ".#.", "..#"]);
        let c = outer_contours(&m);
        assert_eq!(c.len(), 1);
        // A one-pixel-wide line is traced there and back.
        assert_eq!(c[0], vec![[0, 0], [1, 1], [2, 2], [1, 1]]);
        let one = mask(3, 3, &["...", ".#.", "..."]);
        assert_eq!(outer_contours(&one), vec![vec![[1, 1]]]);
        assert!(mask_polygons(&one, 1.0).is_empty());
    }

    #[test]
    fn holes_are_not_traced() {
        let m = mask(5, 5, &["#####", "#...#", "#...#", "#...#", "#####"]);
        let c = outer_contours(&m);
        assert_eq!(c.len(), 1);
        let mut s = simplify_closed(&c[0], 0.1);
        s.sort();
        assert_eq!(s, vec![[0, 0], [0, 4], [4, 0], [4, 4]]);
    }

    #[test]
    fn disc_simplification_respects_tolerance() {
        let (w, h) = (61u32, 61u32);
        let dense: Vec<u8> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64 - 30.0, (i / w) as f64 - 30.0);
                (x * x + y * y <= 27.0 * 27.0) as u8
            })
            .collect();
        let m = BoxMask::from_dense(w, h, &dense);
        let full = &outer_contours(&m)[0];
        for tol in [0.5, 1.0, 2.0, 4.0] {
            let s = simplify_closed(full, tol);
            assert!(s.len() < full.len() && s.len() >= 4, "{tol}: {}", s.len());
            // Every original point is within tol of the simplified ring.
            for p in full {
                let p = [p[0] as f64, p[1] as f64];
                let d = (0..s.len())
                    .map(|i| {
                        let a = [s[i][0] as f64, s[i][1] as f64];
                        let j = (i + 1) % s.len();
                        seg_dist(p, a, [s[j][0] as f64, s[j][1] as f64])
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!(d <= tol + 1e-9, "tol {tol}: point {p:?} is {d} away");
            }
        }
        // Coarser tolerance, fewer points.
        assert!(simplify_closed(full, 4.0).len() < simplify_closed(full, 0.5).len());
        // At 1 px the outline's area stays within 10% of the traced one (a 27 px disc).
        let (a, full_a) = (area(&simplify_closed(full, 1.0)), area(full));
        assert!((a / full_a - 1.0).abs() < 0.1, "{a} vs {full_a}");
    }
}
