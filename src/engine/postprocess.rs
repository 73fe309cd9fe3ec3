//! Turns the raw-layout `output0` tensor into detections: confidence filter on the best class,
//! optional class filter, class-aware greedy NMS, `max_det`, boxes mapped back to the photo.
//! Mirrors Ultralytics' `non_max_suppression` (single label per box) and `scale_boxes`. The
//! in-graph layouts (NMS inside the graph, end-to-end heads) are decoded by `layout`, which
//! shares the filter options and the NMS here.

use crate::geometry::Letterbox;

/// Caller-chosen filtering parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOptions {
    /// Minimum best-class score (strictly greater, as Ultralytics).
    pub conf: f32,
    /// IoU above which a lower-scored box of the same class is suppressed.
    pub iou: f32,
    /// Keep at most this many detections.
    pub max_det: usize,
    /// Keep only these class ids, if set.
    pub classes: Option<Vec<usize>>,
}

impl FilterOptions {
    /// `classes` as a per-class lookup (`None` = every class), built once per request so
    /// the filter costs one index per candidate. Ids outside the model's classes match nothing.
    pub fn class_lookup(&self, num_classes: usize) -> Option<Vec<bool>> {
        self.classes.as_ref().map(|ids| {
            let mut allowed = vec![false; num_classes];
            for &id in ids {
                if let Some(a) = allowed.get_mut(id) {
                    *a = true;
                }
            }
            allowed
        })
    }
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            conf: 0.25,
            iou: 0.7,
            max_det: 300,
            classes: None,
        }
    }
}

/// A kept candidate, before masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Anchor index (raw layout) or row index (in-graph layouts) in `output0`, to fetch
    /// mask coefficients later.
    pub anchor: usize,
    /// Box in canvas (model input) pixels, x1 y1 x2 y2.
    pub canvas_box: [f32; 4],
    /// Box in source pixels, clipped.
    pub source_box: [f32; 4],
    /// Best class id.
    pub class_id: usize,
    /// Its score.
    pub score: f32,
}

/// Ultralytics caps the number of boxes fed to NMS at this.
const MAX_NMS: usize = 30_000;

/// Decodes `preds` laid out as `[channels, anchors]` (batch dimension dropped).
pub fn decode(
    preds: &[f32],
    anchors: usize,
    num_classes: usize,
    lb: &Letterbox,
    opts: &FilterOptions,
) -> Vec<Candidate> {
    debug_assert!(preds.len() >= (4 + num_classes) * anchors);
    // Class-major walk keeps the reads sequential: row c holds class c for every anchor.
    let mut best = vec![f32::NEG_INFINITY; anchors];
    let mut arg = vec![0usize; anchors];
    for c in 0..num_classes {
        let row = &preds[(4 + c) * anchors..(5 + c) * anchors];
        for (a, &s) in row.iter().enumerate() {
            if s > best[a] {
                best[a] = s;
                arg[a] = c;
            }
        }
    }
    let allowed = opts.class_lookup(num_classes);
    let mut cands: Vec<Candidate> = (0..anchors)
        .filter(|&a| best[a] > opts.conf)
        .filter(|&a| allowed.as_ref().is_none_or(|ok| ok[arg[a]]))
        .map(|a| {
            let (cx, cy, w, h) = (
                preds[a],
                preds[anchors + a],
                preds[2 * anchors + a],
                preds[3 * anchors + a],
            );
            let canvas_box = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
            Candidate {
                anchor: a,
                canvas_box,
                source_box: [0.0; 4],
                class_id: arg[a],
                score: best[a],
            }
        })
        .collect();
    // Stable sort: equal scores keep anchor order, as torch's sort does in practice.
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(MAX_NMS);
    let mut kept = nms(cands, opts.iou, opts.max_det);
    for c in &mut kept {
        c.source_box = lb.box_to_source(c.canvas_box);
    }
    kept
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy NMS over score-sorted candidates; boxes of different classes never suppress
/// each other (what the class offset does in torchvision's batched NMS).
pub(crate) fn nms(sorted: Vec<Candidate>, iou_thr: f32, max_det: usize) -> Vec<Candidate> {
    let mut kept: Vec<Candidate> = Vec::new();
    for c in sorted {
        if kept.len() >= max_det {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == c.class_id && iou(&k.canvas_box, &c.canvas_box) > iou_thr);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a [channels, anchors] tensor from (cx, cy, w, h, class scores) per anchor.
    fn tensor(rows: &[([f32; 4], Vec<f32>)]) -> Vec<f32> {
        let a = rows.len();
        let nc = rows[0].1.len();
        let mut t = vec![0.0; (4 + nc) * a];
        for (i, (b, s)) in rows.iter().enumerate() {
            for k in 0..4 {
                t[k * a + i] = b[k];
            }
            for (c, v) in s.iter().enumerate() {
                t[(4 + c) * a + i] = *v;
            }
        }
        t
    }

    fn lb() -> Letterbox {
        Letterbox::new(320, 320, 320, 320)
    }

    #[test]
    fn overlapping_same_class_suppressed_other_class_kept() {
        let t = tensor(&[
            ([100.0, 100.0, 50.0, 50.0], vec![0.9, 0.0]),
            ([102.0, 100.0, 50.0, 50.0], vec![0.8, 0.0]),
            ([101.0, 100.0, 50.0, 50.0], vec![0.0, 0.7]),
            ([250.0, 250.0, 20.0, 20.0], vec![0.1, 0.2]),
        ]);
        let d = decode(&t, 4, 2, &lb(), &FilterOptions::default());
        let got: Vec<(usize, usize)> = d.iter().map(|c| (c.anchor, c.class_id)).collect();
        assert_eq!(got, vec![(0, 0), (2, 1)]);
        assert_eq!(d[0].source_box, [75.0, 75.0, 125.0, 125.0]);
    }

    #[test]
    fn conf_is_strict_and_classes_filter_after_argmax() {
        let t = tensor(&[
            ([10.0, 10.0, 4.0, 4.0], vec![0.25, 0.0]),
            ([50.0, 50.0, 4.0, 4.0], vec![0.6, 0.5]),
        ]);
        assert_eq!(decode(&t, 2, 2, &lb(), &FilterOptions::default()).len(), 1);
        let only1 = FilterOptions {
            classes: Some(vec![1]),
            ..Default::default()
        };
        // Anchor 1's best class is 0, so filtering to class 1 removes it.
        assert!(decode(&t, 2, 2, &lb(), &only1).is_empty());
        let only0 = FilterOptions {
            classes: Some(vec![0, 99]),
            ..Default::default()
        };
        assert_eq!(decode(&t, 2, 2, &lb(), &only0).len(), 1);
    }

    #[test]
    fn class_lookup_is_indexed_by_class_id() {
        assert_eq!(FilterOptions::default().class_lookup(3), None);
        let opts = FilterOptions {
            classes: Some(vec![2, 0, 2, 7]),
            ..Default::default()
        };
        assert_eq!(opts.class_lookup(3), Some(vec![true, false, true]));
    }

    #[test]
    fn max_det_and_iou_threshold() {
        let rows: Vec<_> = (0..10)
            .map(|i| {
                (
                    [20.0 + 30.0 * i as f32, 50.0, 20.0, 20.0],
                    vec![0.5 + i as f32 * 0.01],
                )
            })
            .collect();
        let t = tensor(&rows);
        let d = decode(
            &t,
            10,
            1,
            &lb(),
            &FilterOptions {
                max_det: 3,
                ..Default::default()
            },
        );
        assert_eq!(
            d.iter().map(|c| c.anchor).collect::<Vec<_>>(),
            vec![9, 8, 7]
        );
        // Identical boxes: IoU 1.0 is not > 1.0, so iou=1 keeps both.
        let same = tensor(&[
            ([50.0, 50.0, 20.0, 20.0], vec![0.9]),
            ([50.0, 50.0, 20.0, 20.0], vec![0.8]),
        ]);
        assert_eq!(
            decode(
                &same,
                2,
                1,
                &lb(),
                &FilterOptions {
                    iou: 1.0,
                    ..Default::default()
                }
            )
            .len(),
            2
        );
        assert_eq!(
            decode(&same, 2, 1, &lb(), &FilterOptions::default()).len(),
            1
        );
    }
}
