//! From a run's raw outputs to detections in photo pixels, in two phases so that the caller
//! can reserve the masks' memory once the boxes are known and before any mask exists:
//! [`Engine::candidates`] (the boxes after NMS, cheap), [`Candidates::mask_bytes`] (what the
//! masks will take), then [`Engine::masks`]. The engine itself holds no budget.

use ndarray::{ArrayView3, Axis};

use super::postprocess::{self, Candidate, FilterOptions};
use super::{layout, proto_masks, Detection, Engine, OutputLayout, RawOutput};
use crate::geometry::Letterbox;

/// The boxes kept after NMS, not yet with masks.
#[derive(Debug)]
pub struct Candidates {
    kept: Vec<Candidate>,
    /// The letterbox as Ultralytics maps back through it (see [`Letterbox::as_mapped_back`]).
    lb: Letterbox,
}

/// What [`Engine::masks`] allocates for a set of candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskBytes {
    /// The masks themselves (a byte per pixel of each box), kept with the detections.
    pub masks: u64,
    /// The prototype logits, freed before `masks` returns.
    pub logits: u64,
}

impl Candidates {
    /// How many boxes were kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// What the masks of these boxes will take; nothing when the model has no prototypes.
    pub fn mask_bytes(&self, raw: &RawOutput) -> MaskBytes {
        match &raw.protos {
            Some((_, dims)) if !self.kept.is_empty() => MaskBytes {
                masks: proto_masks::bytes_for_boxes(self.kept.iter().map(|c| c.source_box)),
                logits: (self.kept.len() * dims[1] * dims[2] * 4) as u64,
            },
            _ => MaskBytes::default(),
        }
    }

    /// The detections without masks.
    pub fn into_boxes(self) -> Vec<Detection> {
        self.kept
            .into_iter()
            .map(|c| Detection {
                bbox: c.source_box,
                class_id: c.class_id,
                score: c.score,
                mask: None,
            })
            .collect()
    }
}

impl Engine {
    /// The boxes the filters and NMS keep, in photo pixels, best first.
    pub fn candidates(&self, raw: &RawOutput, lb: &Letterbox, opts: &FilterOptions) -> Candidates {
        let info = self.info();
        let (nc, nm) = (info.names.len(), info.num_masks);
        // Boxes and masks are mapped back the way Ultralytics' scale_boxes/scale_masks do:
        // from the canvas size alone (a rect canvas can differ from the letterbox by a pixel).
        let lb = lb.as_mapped_back();
        let kept = match info.layout {
            OutputLayout::Raw => postprocess::decode(&raw.preds, raw.anchors, nc, &lb, opts),
            l => layout::decode_rows(l, &raw.preds, raw.anchors, nc, nm, &lb, opts),
        };
        Candidates { kept, lb }
    }

    /// The candidates with their full-resolution masks (boxes only when the model has no
    /// prototypes). Detections whose mask comes out empty are dropped, as Ultralytics does.
    /// Allocates what [`Candidates::mask_bytes`] says.
    pub fn masks(&self, raw: &RawOutput, cands: Candidates) -> Vec<Detection> {
        let Some((p, dims)) = raw.protos.as_ref().filter(|_| !cands.is_empty()) else {
            return cands.into_boxes();
        };
        let info = self.info();
        let (nc, nm) = (info.names.len(), info.num_masks);
        let Candidates { kept, lb } = cands;
        let protos = ArrayView3::from_shape((dims[0], dims[1], dims[2]), &p[..])
            .expect("prototype length checked by the worker");
        let coeffs = ndarray::Array2::from_shape_fn((kept.len(), dims[0]), |(i, k)| {
            info.layout
                .coefficient(&raw.preds, raw.anchors, nc, nm, kept[i].anchor, k)
        });
        let logits = proto_masks::logits(coeffs.view(), protos);
        kept.into_iter()
            .zip(logits.axis_iter(Axis(0)))
            .filter_map(|(c, l)| {
                let l = l
                    .into_shape_with_order((dims[1], dims[2]))
                    .expect("logit row has mh*mw values");
                let mask = proto_masks::mask_for_box(l, &lb, c.source_box)?;
                (mask.area() > 0).then_some(Detection {
                    bbox: c.source_box,
                    class_id: c.class_id,
                    score: c.score,
                    mask: Some(mask),
                })
            })
            .collect()
    }

    /// Both phases at once, for tools and benchmarks that hold no budget.
    pub fn detect(
        &self,
        raw: &RawOutput,
        lb: &Letterbox,
        opts: &FilterOptions,
        masks: bool,
    ) -> Vec<Detection> {
        let cands = self.candidates(raw, lb, opts);
        if masks {
            self.masks(raw, cands)
        } else {
            cands.into_boxes()
        }
    }
}
