//! The JSON shape of results: what `POST /v1/segment` and `GET /v1/models` answer and what
//! `segserve predict` and `segserve models --json` write (the schema of ../shared/golden).
//! Serde and OpenAPI types only; request options live in `crate::options`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{Detection, ModelInfo};
use crate::mask::polygon;
use crate::options::{MaskFormat, DEFAULT_POLYGON_TOLERANCE};
use crate::pipeline::{Segmentation, Timing};

/// Image size in the reply.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageSize {
    /// Upright width.
    pub width: u32,
    /// Upright height.
    pub height: u32,
}

/// COCO RLE in the reply.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RleMask {
    /// [height, width].
    pub size: [u32; 2],
    /// Compressed counts string.
    pub counts: String,
}

/// A mask as a PNG (`masks=png`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PngMask {
    /// Where the PNG sits in the photo: x, y, width, height in pixels (outside it the mask
    /// is empty).
    pub rect: [u32; 4],
    /// Single-channel 8-bit PNG, 255 inside the mask and 0 outside, base64.
    pub png: String,
}

/// One detection in `/v1/segment`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DetectionBody {
    /// x1, y1, x2, y2 in photo pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Class id (0-based).
    pub class_id: usize,
    /// Class name.
    pub class_name: String,
    /// Score 0..1.
    pub score: f32,
    /// Mask, unless masks=none or the model only detects.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mask: Option<RleMask>,
    /// With `masks=polygon`: the outer contour of each blob of the mask, largest first,
    /// as `[[x, y], ...]` rings in image pixels (the first point is not repeated).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub polygons: Option<Vec<Vec<[u32; 2]>>>,
    /// With `masks=png`: the mask as a PNG of its rectangle.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mask_png: Option<PngMask>,
}

/// Stage timings in milliseconds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimingMs {
    /// Image decode.
    pub decode: f64,
    /// Letterbox.
    pub preprocess: f64,
    /// Waiting for a session.
    pub queue: f64,
    /// Model run.
    pub inference: f64,
    /// Outputs, NMS and masks.
    pub postprocess: f64,
    /// End to end.
    pub total: f64,
}

impl From<Timing> for TimingMs {
    fn from(t: Timing) -> Self {
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        TimingMs {
            decode: ms(t.decode),
            preprocess: ms(t.preprocess),
            queue: ms(t.queue),
            inference: ms(t.inference),
            postprocess: ms(t.postprocess),
            total: ms(t.total),
        }
    }
}

/// `/v1/segment` reply (the schema of ../shared/golden).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SegmentResponse {
    /// Model name.
    pub model: String,
    /// Upright image size.
    pub image: ImageSize,
    /// Detections by descending score.
    pub detections: Vec<DetectionBody>,
    /// Detections per class name.
    pub object_counts: BTreeMap<String, usize>,
    /// [H, W, N].
    pub mask_shape: [usize; 3],
    /// Stage timings.
    pub timing_ms: TimingMs,
}

/// Detections per class name.
pub fn counts(dets: &[Detection], names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in dets {
        *m.entry(names[d.class_id].clone()).or_insert(0) += 1;
    }
    m
}

impl SegmentResponse {
    /// A generous estimate of the serialised size, for the memory budget: the fixed fields
    /// of each detection, and its mask's RLE or polygon text, which grows with the box's
    /// outline (a mask crosses each column and row of its box a few times at most).
    pub fn size_estimate(seg: &Segmentation, format: MaskFormat) -> u64 {
        let per_mask = |d: &Detection| {
            let Some(m) = &d.mask else { return 0 };
            let outline = u64::from(m.w + m.h);
            match format {
                MaskFormat::Rle => 16 * outline + 64,
                MaskFormat::Polygon => 32 * outline + 64,
                // An incompressible PNG in base64 (a real mask compresses far better).
                MaskFormat::Png => crate::render::png_bound(m) * 4 / 3 + 128,
                MaskFormat::None => 0,
            }
        };
        1024 + seg
            .detections
            .iter()
            .map(|d| 256 + per_mask(d))
            .sum::<u64>()
    }

    /// Scratch memory building the answer takes beyond [`Self::size_estimate`]: tracing
    /// polygons, one mask at a time.
    pub fn scratch_estimate(seg: &Segmentation, format: MaskFormat) -> u64 {
        let scratch = match format {
            MaskFormat::Polygon => polygon::scratch_bytes,
            MaskFormat::Png => crate::render::png_scratch_bytes,
            MaskFormat::Rle | MaskFormat::None => return 0,
        };
        seg.detections
            .iter()
            .filter_map(|d| d.mask.as_ref())
            .map(scratch)
            .max()
            .unwrap_or(0)
    }

    /// Shapes an engine result for the wire, masks as COCO RLE.
    pub fn new(info: &ModelInfo, seg: &Segmentation) -> Self {
        Self::with_masks(info, seg, MaskFormat::Rle, DEFAULT_POLYGON_TOLERANCE)
    }

    /// Shapes an engine result for the wire with masks in `format` (`tolerance` is the
    /// polygon simplification in pixels).
    pub fn with_masks(
        info: &ModelInfo,
        seg: &Segmentation,
        format: MaskFormat,
        tolerance: f64,
    ) -> Self {
        SegmentResponse {
            model: info.name.clone(),
            image: ImageSize {
                width: seg.width,
                height: seg.height,
            },
            detections: seg
                .detections
                .iter()
                .map(|d| DetectionBody {
                    bbox: d.bbox,
                    class_id: d.class_id,
                    class_name: info.names[d.class_id].clone(),
                    score: d.score,
                    mask: d
                        .mask
                        .as_ref()
                        .filter(|_| format == MaskFormat::Rle)
                        .map(|m| RleMask {
                            size: [seg.height, seg.width],
                            counts: m.to_coco_rle(),
                        }),
                    polygons: d
                        .mask
                        .as_ref()
                        .filter(|_| format == MaskFormat::Polygon)
                        .map(|m| polygon::mask_polygons(m, tolerance)),
                    mask_png: d
                        .mask
                        .as_ref()
                        .filter(|_| format == MaskFormat::Png)
                        .map(|m| PngMask {
                            rect: [m.x, m.y, m.w, m.h],
                            png: base64::engine::general_purpose::STANDARD
                                .encode(crate::render::mask_png(m)),
                        }),
                })
                .collect(),
            object_counts: counts(&seg.detections, &info.names),
            mask_shape: [
                seg.height as usize,
                seg.width as usize,
                seg.detections.len(),
            ],
            timing_ms: seg.timing.into(),
        }
    }
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// Served name.
    pub name: String,
    /// segment or detect.
    pub task: String,
    /// [height, width] of the model input.
    pub input_size: [usize; 2],
    /// Stride.
    pub stride: usize,
    /// Class names by id.
    pub class_names: Vec<String>,
    /// Whether this is the default model.
    pub default: bool,
    /// What the model outputs: `raw` (NMS done here), `nms` (NMS inside the graph) or
    /// `end2end` (an NMS-free head); see docs/models.md.
    pub layout: String,
    /// Where it runs: cpu, cuda or tensorrt (absent when describing a file, not a server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl ModelCard {
    /// The card of a loaded model.
    pub fn new(info: &ModelInfo, default: bool) -> Self {
        ModelCard {
            name: info.name.clone(),
            task: info.task.as_str().to_string(),
            input_size: [info.input_hw.0, info.input_hw.1],
            stride: info.stride,
            class_names: info.names.clone(),
            default,
            layout: info.layout.as_str().to_string(),
            device: None,
        }
    }
}

/// `GET /v1/models` reply.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelsResponse {
    /// Loaded models, default first.
    pub models: Vec<ModelCard>,
}
