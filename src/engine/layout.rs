//! What `output0` holds, decided once at load from the export metadata and the tensor shape,
//! and the decoding of the two layouts whose graph already picked the detections. The raw
//! layout's decoding (confidence, class-aware NMS) lives in `postprocess`; masks in `masks`.
//!
//! - **raw**: `[N, 4 + nc + nm, anchors]`, boxes as cx, cy, w, h; NMS is ours.
//! - **nms** (`yolo export ... nms=True`, metadata `args` has `'nms': True`): `[N, max_det,
//!   6 + nm]`, rows x1, y1, x2, y2, score, class id, mask coefficients, sorted by score, zero
//!   rows after the kept ones. The graph applied its own confidence threshold (the export's
//!   `conf`, 0.25 by default) and class-aware NMS (the export's `iou`, 0.7 by default).
//! - **end2end** (YOLOv10, YOLO26 NMS-free heads, metadata `end2end: True`): the same rows,
//!   the model's top `max_det` by score; there is no NMS stage at all.
//!
//! Ultralytics treats the last two alike (`non_max_suppression(..., end2end=True)` keeps rows
//! whose score beats `conf`, of the asked classes, the first `max_det`). We do the same, plus
//! one thing for **nms** graphs: a class-aware NMS pass at the request's `iou`, which leaves the
//! rows untouched when `iou` is at least the graph's and suppresses more when it is lower.
//! End-to-end heads were trained to need no NMS, and Ultralytics ignores `iou` for them, so we do too.

use super::postprocess::{self, Candidate, FilterOptions};
use crate::geometry::Letterbox;

/// How `output0` is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLayout {
    /// `[N, 4 + nc + nm, anchors]`: every anchor's box and class scores; NMS is ours.
    Raw,
    /// `[N, max_det, 6 + nm]` after NMS inside the graph (`nms=True` exports).
    Nms,
    /// `[N, max_det, 6 + nm]` from an NMS-free (end-to-end) head.
    End2end,
}

impl OutputLayout {
    /// The name `GET /v1/models` shows: `raw`, `nms` or `end2end`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputLayout::Raw => "raw",
            OutputLayout::Nms => "nms",
            OutputLayout::End2end => "end2end",
        }
    }

    /// Values per detection row of the in-graph layouts, or channels of the raw one.
    pub fn row_width(self, num_classes: usize, num_masks: usize) -> usize {
        match self {
            OutputLayout::Raw => 4 + num_classes + num_masks,
            OutputLayout::Nms | OutputLayout::End2end => 6 + num_masks,
        }
    }

    /// Checks one image's `output0` shape `[N, a, b]` at run time and returns the number of
    /// anchors (raw) or detection rows (in-graph), the `anchors` of a [`super::RawOutput`].
    pub fn rows_of(
        self,
        shape: &[i64],
        num_classes: usize,
        num_masks: usize,
    ) -> Result<usize, String> {
        let width = self.row_width(num_classes, num_masks) as i64;
        match (self, shape) {
            (OutputLayout::Raw, [_, c, a]) if *c == width && *a >= 0 => Ok(*a as usize),
            (OutputLayout::Nms | OutputLayout::End2end, [_, r, w]) if *w == width && *r >= 0 => {
                Ok(*r as usize)
            }
            _ => Err(format!(
                "unexpected output0 shape {shape:?} for the {} layout",
                self.as_str()
            )),
        }
    }

    /// Mask coefficient `k` of the candidate at `index` (anchor or row) in one image's `output0`.
    pub fn coefficient(
        self,
        preds: &[f32],
        rows: usize,
        num_classes: usize,
        num_masks: usize,
        index: usize,
        k: usize,
    ) -> f32 {
        match self {
            OutputLayout::Raw => preds[(4 + num_classes + k) * rows + index],
            OutputLayout::Nms | OutputLayout::End2end => preds[index * (6 + num_masks) + 6 + k],
        }
    }
}

/// What the export metadata says about NMS; `None` where a key is absent (older exports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    /// Metadata `end2end`.
    pub end2end: Option<bool>,
    /// `nms` inside metadata `args`.
    pub nms: Option<bool>,
}

/// Decides the layout from the metadata and `output0`'s declared shape (negative dimensions
/// are dynamic). Metadata and shape must agree; when the metadata is silent (exports older
/// than the `end2end` key), a `[N, max_det, 6 + nm]` shape is taken as end-to-end, as
/// Ultralytics does for a last dimension of 6.
pub fn decide(
    declared: Declared,
    output0: &[i64],
    num_classes: usize,
    num_masks: usize,
) -> Result<OutputLayout, String> {
    let [_, d1, d2] = output0 else {
        return Err(format!(
            "output0 shape {output0:?} has {} dimensions, expected 3",
            output0.len()
        ));
    };
    let channels = OutputLayout::Raw.row_width(num_classes, num_masks) as i64;
    let width = OutputLayout::Nms.row_width(num_classes, num_masks) as i64;
    let raw_shape = *d1 == channels;
    let rows_shape = *d2 == width && !raw_shape;
    let coeffs = if num_masks > 0 {
        format!(" + {num_masks} mask coefficients")
    } else {
        String::new()
    };
    let said = match (declared.end2end, declared.nms) {
        (Some(true), _) => Some(OutputLayout::End2end),
        (_, Some(true)) => Some(OutputLayout::Nms),
        (None, None) => None,
        _ => Some(OutputLayout::Raw),
    };
    match said {
        Some(OutputLayout::Raw) if raw_shape || (*d1 < 0 && !rows_shape) => Ok(OutputLayout::Raw),
        Some(OutputLayout::Raw) if rows_shape => Err(format!(
            "output0 {output0:?} is [N, max_det, 6{coeffs}], the layout of a graph with NMS inside, \
             but the metadata says the graph has none (end2end: {}, args nms: {}); \
             re-export, or fix the metadata",
            python(declared.end2end),
            python(declared.nms)
        )),
        Some(l @ (OutputLayout::Nms | OutputLayout::End2end)) => {
            if *d2 == width || (*d2 < 0 && !raw_shape) {
                Ok(l)
            } else {
                let key = if l == OutputLayout::End2end {
                    "end2end: True"
                } else {
                    "args nms: True"
                };
                Err(format!(
                    "the metadata says {key}, so output0 should be [N, max_det, 6{coeffs}] = \
                     [N, max_det, {width}], but it is {output0:?}"
                ))
            }
        }
        None if raw_shape || (*d1 < 0 && *d2 != width) => Ok(OutputLayout::Raw),
        None if rows_shape => Ok(OutputLayout::End2end),
        _ => Err(format!(
            "output0 {output0:?} is neither [N, 4 + {num_classes} classes{coeffs}, anchors] = \
             [N, {channels}, anchors] nor [N, max_det, 6{coeffs}] = [N, max_det, {width}]"
        )),
    }
}

/// A metadata flag as Ultralytics writes it, for error messages.
fn python(flag: Option<bool>) -> &'static str {
    match flag {
        Some(true) => "True",
        Some(false) => "False",
        None => "absent",
    }
}

/// Decodes one image's in-graph rows (`[rows, 6 + nm]`, batch dimension dropped) into
/// candidates in canvas and source pixels: score strictly above `opts.conf`, class in
/// `opts.classes`, then (NMS graphs only) class-aware NMS at `opts.iou`, then `opts.max_det`,
/// keeping the graph's row order. `Candidate::anchor` is the row index.
pub fn decode_rows(
    layout: OutputLayout,
    preds: &[f32],
    rows: usize,
    num_classes: usize,
    num_masks: usize,
    lb: &Letterbox,
    opts: &FilterOptions,
) -> Vec<Candidate> {
    let width = 6 + num_masks;
    debug_assert!(preds.len() >= rows * width);
    let allowed = opts.class_lookup(num_classes);
    let mut cands: Vec<Candidate> = preds
        .chunks_exact(width)
        .take(rows)
        .enumerate()
        // Padding rows are all zeros, so `> conf` (conf >= 0) also drops them.
        .filter(|(_, r)| r[4] > opts.conf)
        .filter_map(|(i, r)| {
            // The class id travels as a float; anything but a valid id is a broken row.
            let c = r[5];
            if !(c >= 0.0 && c < num_classes as f32 && c.fract() == 0.0) {
                return None;
            }
            let class_id = c as usize;
            if allowed.as_ref().is_some_and(|a| !a[class_id]) {
                return None;
            }
            Some(Candidate {
                anchor: i,
                canvas_box: [r[0], r[1], r[2], r[3]],
                source_box: [0.0; 4],
                class_id,
                score: r[4],
            })
        })
        .collect();
    cands = match layout {
        // Rows come sorted by score (torchvision's nms returns them so); the stable sort
        // only guards against a graph that does not, and keeps ties in row order.
        OutputLayout::Nms => {
            cands.sort_by(|a, b| b.score.total_cmp(&a.score));
            postprocess::nms(cands, opts.iou, opts.max_det)
        }
        OutputLayout::End2end | OutputLayout::Raw => {
            cands.truncate(opts.max_det);
            cands
        }
    };
    for c in &mut cands {
        c.source_box = lb.box_to_source(c.canvas_box);
    }
    cands
}

#[cfg(test)]
mod tests {
    use super::*;

    const NMS: Declared = Declared {
        end2end: Some(false),
        nms: Some(true),
    };
    const E2E: Declared = Declared {
        end2end: Some(true),
        nms: Some(false),
    };
    const RAW: Declared = Declared {
        end2end: Some(false),
        nms: Some(false),
    };
    const SILENT: Declared = Declared {
        end2end: None,
        nms: None,
    };

    #[test]
    fn layout_from_metadata_and_shape() {
        // The shipped models: raw segment (static, dynamic), nms segment, raw detect (old
        // metadata without end2end or nms).
        assert_eq!(decide(RAW, &[1, 116, 2100], 80, 32), Ok(OutputLayout::Raw));
        assert_eq!(decide(RAW, &[-1, 116, -1], 80, 32), Ok(OutputLayout::Raw));
        assert_eq!(decide(NMS, &[1, 300, 38], 80, 32), Ok(OutputLayout::Nms));
        assert_eq!(decide(SILENT, &[1, 84, 8400], 80, 0), Ok(OutputLayout::Raw));
        // End-to-end detect and segment, static and dynamic batch.
        assert_eq!(decide(E2E, &[1, 300, 6], 80, 0), Ok(OutputLayout::End2end));
        assert_eq!(
            decide(E2E, &[-1, 300, 38], 80, 32),
            Ok(OutputLayout::End2end)
        );
        assert_eq!(decide(NMS, &[-1, 300, 6], 80, 0), Ok(OutputLayout::Nms));
        // No metadata: the shape decides, as Ultralytics' `shape[-1] == 6` check does.
        assert_eq!(
            decide(SILENT, &[1, 300, 6], 80, 0),
            Ok(OutputLayout::End2end)
        );
        assert_eq!(
            decide(SILENT, &[1, 300, 38], 80, 32),
            Ok(OutputLayout::End2end)
        );
    }

    #[test]
    fn contradictions_are_refused_with_the_reason() {
        let e = decide(RAW, &[1, 300, 38], 80, 32).unwrap_err();
        assert!(
            e.contains("NMS inside") && e.contains("metadata says"),
            "{e}"
        );
        let e = decide(NMS, &[1, 116, 2100], 80, 32).unwrap_err();
        assert!(e.contains("args nms: True") && e.contains("38"), "{e}");
        let e = decide(E2E, &[1, 84, 8400], 80, 0).unwrap_err();
        assert!(e.contains("end2end: True"), "{e}");
        let e = decide(SILENT, &[1, 90, 8400], 80, 32).unwrap_err();
        assert!(e.contains("neither") && e.contains("116"), "{e}");
        assert!(decide(RAW, &[1, 116], 80, 32).is_err());
    }

    #[test]
    fn run_time_shape_check() {
        assert_eq!(OutputLayout::Raw.rows_of(&[2, 116, 6300], 80, 32), Ok(6300));
        assert_eq!(OutputLayout::Nms.rows_of(&[1, 300, 38], 80, 32), Ok(300));
        assert!(OutputLayout::End2end.rows_of(&[1, 300, 38], 80, 0).is_err());
        assert!(OutputLayout::Raw.rows_of(&[1, 300, 38], 80, 32).is_err());
    }

    /// Rows of [x1, y1, x2, y2, score, class, coefficients...] followed by zero padding.
    fn rows(dets: &[([f32; 4], f32, f32)], nm: usize, total: usize) -> Vec<f32> {
        let mut t = vec![0.0; total * (6 + nm)];
        for (i, (b, s, c)) in dets.iter().enumerate() {
            let r = &mut t[i * (6 + nm)..(i + 1) * (6 + nm)];
            r[..4].copy_from_slice(b);
            r[4] = *s;
            r[5] = *c;
            for k in 0..nm {
                r[6 + k] = i as f32 * 10.0 + k as f32;
            }
        }
        t
    }

    fn lb() -> Letterbox {
        Letterbox::new(640, 640, 320, 320)
    }

    #[test]
    fn in_graph_rows_filter_by_conf_classes_and_max_det() {
        let t = rows(
            &[
                ([10.0, 10.0, 50.0, 50.0], 0.9, 0.0),
                ([60.0, 60.0, 90.0, 90.0], 0.5, 2.0),
                ([100.0, 10.0, 150.0, 50.0], 0.3, 0.0),
            ],
            2,
            300,
        );
        let d = decode_rows(
            OutputLayout::End2end,
            &t,
            300,
            3,
            2,
            &lb(),
            &FilterOptions::default(),
        );
        let got: Vec<_> = d.iter().map(|c| (c.anchor, c.class_id)).collect();
        assert_eq!(
            got,
            [(0, 0), (1, 2), (2, 0)],
            "padding rows are never returned"
        );
        // Boxes map back through the letterbox (x2 here).
        assert_eq!(d[0].source_box, [20.0, 20.0, 100.0, 100.0]);
        // conf is strict, as on raw outputs.
        let conf = FilterOptions {
            conf: 0.5,
            ..Default::default()
        };
        assert_eq!(
            decode_rows(OutputLayout::Nms, &t, 300, 3, 2, &lb(), &conf).len(),
            1
        );
        let classes = FilterOptions {
            classes: Some(vec![2, 7]),
            ..Default::default()
        };
        let d = decode_rows(OutputLayout::Nms, &t, 300, 3, 2, &lb(), &classes);
        assert_eq!(d.iter().map(|c| c.anchor).collect::<Vec<_>>(), [1]);
        let two = FilterOptions {
            max_det: 2,
            ..Default::default()
        };
        let d = decode_rows(OutputLayout::End2end, &t, 300, 3, 2, &lb(), &two);
        assert_eq!(d.iter().map(|c| c.anchor).collect::<Vec<_>>(), [0, 1]);
        // Coefficients are read from the candidate's row.
        let c = |k| OutputLayout::Nms.coefficient(&t, 300, 3, 2, d[1].anchor, k);
        assert_eq!((c(0), c(1)), (10.0, 11.0));
    }

    #[test]
    fn request_iou_tightens_nms_graphs_only() {
        // Two same-class boxes overlapping at IoU 0.6 (the graph kept both at its 0.7).
        let t = rows(
            &[
                ([0.0, 0.0, 100.0, 100.0], 0.9, 1.0),
                ([0.0, 25.0, 100.0, 125.0], 0.8, 1.0),
                ([0.0, 25.0, 100.0, 125.0], 0.7, 0.0),
            ],
            0,
            3,
        );
        let at = |iou| FilterOptions {
            iou,
            ..Default::default()
        };
        let n = |layout, iou| decode_rows(layout, &t, 3, 2, 0, &lb(), &at(iou)).len();
        assert_eq!(
            n(OutputLayout::Nms, 0.7),
            3,
            "default iou: the graph's rows as they are"
        );
        assert_eq!(
            n(OutputLayout::Nms, 0.5),
            2,
            "lower iou suppresses within a class only"
        );
        assert_eq!(
            n(OutputLayout::End2end, 0.5),
            3,
            "end-to-end heads get no NMS"
        );
    }

    #[test]
    fn broken_class_ids_are_skipped() {
        let t = rows(
            &[
                ([0.0, 0.0, 1.0, 1.0], 0.9, 80.0),
                ([0.0, 0.0, 1.0, 1.0], 0.9, -1.0),
                ([0.0, 0.0, 1.0, 1.0], 0.9, f32::NAN),
                ([0.0, 0.0, 1.0, 1.0], 0.9, 1.5),
                ([0.0, 0.0, 1.0, 1.0], f32::NAN, 1.0),
            ],
            0,
            5,
        );
        let d = decode_rows(
            OutputLayout::End2end,
            &t,
            5,
            80,
            0,
            &lb(),
            &FilterOptions::default(),
        );
        assert!(d.is_empty());
    }
}
