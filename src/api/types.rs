//! Request options and response bodies of the HTTP API (serde types only).

use std::collections::BTreeMap;

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{Detection, FilterOptions, ModelInfo};
use crate::error::AppError;
use crate::mask::BoxMask;
use crate::pipeline::{Segmentation, Timing};
use crate::polygon;

/// How masks are returned by `/v1/segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormat {
    /// COCO compressed RLE per detection.
    Rle,
    /// Outer contours as polygons in image pixels (`tolerance` simplifies them).
    Polygon,
    /// No masks (faster: skips mask computation).
    None,
}

/// Parsed `/v1/segment` query.
#[derive(Debug, Clone)]
pub struct SegmentQuery {
    /// Filter options.
    pub filter: FilterOptions,
    /// Mask format.
    pub masks: MaskFormat,
    /// Model name, when not the default.
    pub model: Option<String>,
    /// Douglas-Peucker tolerance in pixels for `masks=polygon`.
    pub tolerance: f64,
}

/// Default `tolerance` for `masks=polygon`, in pixels: drops the pixel staircase and
/// keeps the shape (Roboflow's exports look like this).
pub const DEFAULT_POLYGON_TOLERANCE: f64 = 1.0;

/// Largest accepted `max_det`.
pub const MAX_DET_LIMIT: usize = 1000;

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, AppError> {
    v.trim().parse().map_err(|_| {
        AppError::BadRequest(format!(
            "query parameter `{key}` must be a number, got {v:?}"
        ))
    })
}

fn unit_interval(key: &str, v: &str) -> Result<f32, AppError> {
    let x: f32 = parse_num(key, v)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(AppError::BadRequest(format!(
            "query parameter `{key}` must be between 0 and 1, got {v}"
        )));
    }
    Ok(x)
}

/// Resolves `classes=person,2,car` against the model's class names.
pub fn parse_classes(v: &str, names: &[String]) -> Result<Vec<usize>, AppError> {
    let mut ids = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = match item.parse::<usize>() {
            Ok(id) if id < names.len() => id,
            Ok(id) => {
                return Err(AppError::BadRequest(format!(
                    "class id {id} is out of range (0..{})",
                    names.len()
                )))
            }
            Err(_) => names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(item))
                .ok_or_else(|| {
                    AppError::BadRequest(format!(
                        "unknown class {item:?}; see GET /v1/models for the class names"
                    ))
                })?,
        };
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(AppError::BadRequest(
            "query parameter `classes` is empty".into(),
        ));
    }
    Ok(ids)
}

/// Splits a raw query string into pairs, refusing malformed encodings.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, AppError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| AppError::BadRequest(format!("malformed query string: {e}")))
}

impl SegmentQuery {
    /// Parses and validates the query; `class_names` resolves `classes` for the chosen model,
    /// which is why the model is picked first.
    pub fn parse(
        pairs: &[(String, String)],
        names_for: impl Fn(Option<&str>) -> Result<Vec<String>, AppError>,
    ) -> Result<Self, AppError> {
        let model = pairs
            .iter()
            .find(|(k, _)| k == "model")
            .map(|(_, v)| v.clone());
        let names = names_for(model.as_deref())?;
        let mut q = SegmentQuery {
            filter: FilterOptions::default(),
            masks: MaskFormat::Rle,
            model,
            tolerance: DEFAULT_POLYGON_TOLERANCE,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "conf" => q.filter.conf = unit_interval(k, v)?,
                "iou" => q.filter.iou = unit_interval(k, v)?,
                "max_det" => {
                    let n: usize = parse_num(k, v)?;
                    if n == 0 || n > MAX_DET_LIMIT {
                        return Err(AppError::BadRequest(format!(
                            "query parameter `max_det` must be 1..={MAX_DET_LIMIT}, got {v}"
                        )));
                    }
                    q.filter.max_det = n;
                }
                "classes" => q.filter.classes = Some(parse_classes(v, &names)?),
                "masks" => {
                    q.masks = match v.as_str() {
                        "rle" => MaskFormat::Rle,
                        "none" => MaskFormat::None,
                        "polygon" => MaskFormat::Polygon,
                        other => {
                            return Err(AppError::BadRequest(format!(
                            "query parameter `masks` must be rle, polygon or none, got {other:?}"
                        )))
                        }
                    }
                }
                "tolerance" => {
                    let t: f64 = parse_num(k, v)?;
                    if !(0.0..=1000.0).contains(&t) {
                        return Err(AppError::BadRequest(format!(
                            "query parameter `tolerance` must be 0..=1000 pixels, got {v}"
                        )));
                    }
                    q.tolerance = t;
                }
                "model" => {}
                other => {
                    return Err(AppError::BadRequest(format!(
                        "unknown query parameter `{other}`"
                    )))
                }
            }
        }
        Ok(q)
    }
}

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

fn counts(dets: &[Detection], names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in dets {
        *m.entry(names[d.class_id].clone()).or_insert(0) += 1;
    }
    m
}

impl SegmentResponse {
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

/// PixelLib's `outputs` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct PixelLibOutputs<'a> {
    /// [x1, y1, x2, y2] integers.
    pub boxes: Vec<[i64; 4]>,
    /// Class ids.
    pub class_ids: Vec<usize>,
    /// Class names.
    pub class_names: Vec<String>,
    /// [H, W, N].
    pub mask_shape: [usize; 3],
    /// Detections per class.
    pub object_counts: BTreeMap<String, usize>,
    /// Integer percent scores.
    pub scores: Vec<i64>,
    /// H x W x N booleans, only with `?mask_values=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<Vec<bool>>>>)]
    pub mask_values: Option<MaskValues<'a>>,
}

/// `/segmentapi` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct PixelLibResponse<'a> {
    /// PixelLib nests everything under `outputs`.
    pub outputs: PixelLibOutputs<'a>,
}

impl<'a> PixelLibResponse<'a> {
    /// Shapes an engine result like PixelLib's Flask API.
    pub fn new(info: &ModelInfo, seg: &'a Segmentation, with_masks: bool) -> Self {
        let dets = &seg.detections;
        PixelLibResponse {
            outputs: PixelLibOutputs {
                boxes: dets
                    .iter()
                    .map(|d| d.bbox.map(|v| v.round() as i64))
                    .collect(),
                class_ids: dets.iter().map(|d| d.class_id).collect(),
                class_names: dets
                    .iter()
                    .map(|d| info.names[d.class_id].clone())
                    .collect(),
                mask_shape: [seg.height as usize, seg.width as usize, dets.len()],
                object_counts: counts(dets, &info.names),
                scores: dets
                    .iter()
                    .map(|d| (d.score * 100.0).round() as i64)
                    .collect(),
                mask_values: with_masks.then_some(MaskValues { seg }),
            },
        }
    }
}

/// Dense H x W x N booleans, serialised on the fly rather than materialised.
#[derive(Debug)]
pub struct MaskValues<'a> {
    seg: &'a Segmentation,
}

impl Serialize for MaskValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Row<'b>(&'b [Option<&'b BoxMask>], u32);
        struct Pixel<'b>(&'b [Option<&'b BoxMask>], u32, u32);
        impl Serialize for Pixel<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for m in self.0 {
                    seq.serialize_element(&m.is_some_and(|m| m.get(self.1, self.2)))?;
                }
                seq.end()
            }
        }
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let w = self
                    .0
                    .iter()
                    .flatten()
                    .next()
                    .map(|m| m.image_w)
                    .unwrap_or(0);
                let mut seq = s.serialize_seq(Some(w as usize))?;
                for x in 0..w {
                    seq.serialize_element(&Pixel(self.0, x, self.1))?;
                }
                seq.end()
            }
        }
        let masks: Vec<Option<&BoxMask>> = self
            .seg
            .detections
            .iter()
            .map(|d| d.mask.as_ref())
            .collect();
        // Detection models have no masks: the shape is still H x W x N, all false.
        let mut seq = s.serialize_seq(Some(self.seg.height as usize))?;
        if masks.iter().all(Option::is_none) {
            let row = vec![vec![false; masks.len()]; self.seg.width as usize];
            for _ in 0..self.seg.height {
                seq.serialize_element(&row)?;
            }
        } else {
            for y in 0..self.seg.height {
                seq.serialize_element(&Row(&masks, y))?;
            }
        }
        seq.end()
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
    /// Where it runs: cpu, cuda or tensorrt (absent when describing a file, not a server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// `GET /v1/models` reply.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelsResponse {
    /// Loaded models, default first.
    pub models: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["person", "bicycle", "car"].map(String::from).to_vec()
    }

    fn parse(q: &str) -> Result<SegmentQuery, AppError> {
        SegmentQuery::parse(&query_pairs(Some(q))?, |_| Ok(names()))
    }

    #[test]
    fn query_defaults_and_values() {
        let q = parse("").unwrap();
        assert_eq!(q.filter, FilterOptions::default());
        assert_eq!((q.masks, q.tolerance), (MaskFormat::Rle, 1.0));
        let q = parse("masks=polygon&tolerance=2.5").unwrap();
        assert_eq!((q.masks, q.tolerance), (MaskFormat::Polygon, 2.5));
        let q = parse("conf=0.5&iou=0.3&max_det=5&classes=person,2&masks=none").unwrap();
        assert_eq!(
            (q.filter.conf, q.filter.iou, q.filter.max_det),
            (0.5, 0.3, 5)
        );
        assert_eq!(q.filter.classes, Some(vec![0, 2]));
        assert_eq!(q.masks, MaskFormat::None);
    }

    #[test]
    fn bad_query_values_are_400() {
        for q in [
            "conf=2",
            "iou=-1",
            "max_det=0",
            "max_det=abc",
            "classes=unicorn",
            "classes=7",
            "masks=maybe",
            "bogus=1",
            "classes=",
            "tolerance=-1",
            "tolerance=x",
        ] {
            let err = parse(q).unwrap_err();
            assert_eq!(err.status_and_type().0.as_u16(), 400, "{q}");
        }
    }
}
