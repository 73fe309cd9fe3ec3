//! An answer's side of the protocol: which outputs a request asks for (and whether as
//! binary data), and each photo's detections as the concatenated output tensors.

use super::binary;
use super::inputs::flag;
use super::wire::{InferRequest, OutputData, ParamValue, Parameters, ResponseOutput, OUTPUTS};
use crate::budget::Reservation;
use crate::engine::{ModelInfo, Task};
use crate::error::AppError;
use crate::options::MaskFormat;
use crate::pipeline::{PipelineError, Segmentation};
use crate::schema::SegmentResponse;

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// An output to send, and whether as binary data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// One of [`OUTPUTS`].
    pub name: &'static str,
    /// After the JSON, as binary tensor data.
    pub binary: bool,
}

/// The outputs a request asks for, checked against what the model produces; all of them
/// when it lists none. `binary_default` is the request's `binary_data_output`, which each
/// output's own `binary_data` overrides.
pub fn wanted_outputs(
    req: &InferRequest,
    info: &ModelInfo,
    binary_default: bool,
) -> Result<Vec<Wanted>, AppError> {
    let available: Vec<&'static str> = OUTPUTS
        .into_iter()
        .filter(|n| *n != "masks" || info.task == Task::Segment)
        .collect();
    let Some(asked) = &req.outputs else {
        return Ok(available
            .into_iter()
            .map(|name| Wanted {
                name,
                binary: binary_default,
            })
            .collect());
    };
    let mut out: Vec<Wanted> = Vec::new();
    for o in asked {
        let p = o.parameters.as_ref();
        for unsupported in ["classification", "shared_memory_region"] {
            if p.is_some_and(|p| p.contains_key(unsupported)) {
                return Err(bad(format!(
                    "output `{}`: parameter `{unsupported}` is not supported",
                    o.name
                )));
            }
        }
        let binary = flag(p, "binary_data")?.unwrap_or(binary_default);
        let name = available
            .iter()
            .copied()
            .find(|n| *n == o.name)
            .ok_or_else(|| {
                bad(format!(
                    "unknown output `{}`; this model has {}",
                    o.name,
                    available.join(", ")
                ))
            })?;
        if !out.iter().any(|w| w.name == name) {
            out.push(Wanted { name, binary });
        }
    }
    Ok(out)
}

/// One detection, as the outputs need it.
#[derive(Debug)]
struct Row {
    bbox: [f32; 4],
    score: f32,
    class_id: usize,
    /// COCO RLE counts, when masks were asked for.
    rle: Option<String>,
}

/// One photo's detections, kept compact (masks already run-length encoded) until every
/// photo of the request is done.
#[derive(Debug)]
pub struct ImageResult {
    /// Upright width.
    pub width: u32,
    /// Upright height.
    pub height: u32,
    rows: Vec<Row>,
}

impl ImageResult {
    /// Encodes the masks of `seg` as COCO RLE (on the blocking pool, in the pipeline's
    /// `finish`), with the reservation holding its estimated size from here on.
    pub fn new(seg: Segmentation, reservation: &mut Reservation) -> Result<Self, PipelineError> {
        let estimate = SegmentResponse::size_estimate(&seg, MaskFormat::Rle);
        reservation.grow(estimate).map_err(|error| {
            PipelineError::Budget(error.refusing(
                "the answer",
                "ask for fewer masks (a higher conf, a lower max_det, or no `masks` output)",
            ))
        })?;
        let rows = seg
            .detections
            .iter()
            .map(|d| Row {
                bbox: d.bbox,
                score: d.score,
                class_id: d.class_id,
                rle: d.mask.as_ref().map(|m| m.to_coco_rle()),
            })
            .collect();
        let result = ImageResult {
            width: seg.width,
            height: seg.height,
            rows,
        };
        // The decoded masks go with `seg`; only the estimate of this result stays held.
        drop(seg);
        reservation.shrink_to(estimate);
        Ok(result)
    }

    /// Detections found.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The `name` tensor over every photo, detections concatenated photo by photo.
fn tensor(
    name: &str,
    info: &ModelInfo,
    images: &[ImageResult],
) -> (Vec<usize>, OutputData, Option<Parameters>) {
    let rows = || images.iter().flat_map(|i| i.rows.iter());
    let n = rows().count();
    match name {
        "boxes" => (
            vec![n, 4],
            OutputData::Fp32(rows().flat_map(|r| r.bbox).collect()),
            None,
        ),
        "scores" => (
            vec![n],
            OutputData::Fp32(rows().map(|r| r.score).collect()),
            None,
        ),
        "class_ids" => (
            vec![n],
            OutputData::Int64(rows().map(|r| r.class_id as i64).collect()),
            None,
        ),
        "class_names" => (
            vec![n],
            OutputData::Bytes(rows().map(|r| info.names[r.class_id].clone()).collect()),
            None,
        ),
        "masks" => {
            let mut p = Parameters::from([("format".to_string(), ParamValue::from("coco_rle"))]);
            // One photo: its size says how to decode the masks. Several: see image_sizes.
            if let [one] = images {
                p.insert("height".into(), one.height.into());
                p.insert("width".into(), one.width.into());
            }
            let rles = rows().map(|r| r.rle.clone().unwrap_or_default()).collect();
            (vec![n], OutputData::Bytes(rles), Some(p))
        }
        "image_index" => (
            vec![n],
            OutputData::Int64(
                images
                    .iter()
                    .enumerate()
                    .flat_map(|(i, img)| std::iter::repeat_n(i as i64, img.len()))
                    .collect(),
            ),
            None,
        ),
        "image_sizes" => (
            vec![images.len(), 2],
            OutputData::Int64(
                images
                    .iter()
                    .flat_map(|i| [i64::from(i.height), i64::from(i.width)])
                    .collect(),
            ),
            None,
        ),
        other => unreachable!("output {other} was checked by wanted_outputs"),
    }
}

/// The output tensors, in the order asked for; a binary output's values are returned
/// beside it (to follow the JSON, in the same order) and its `data` left out.
pub fn outputs(
    info: &ModelInfo,
    images: &[ImageResult],
    wanted: &[Wanted],
) -> (Vec<ResponseOutput>, Vec<OutputData>) {
    let mut binary = Vec::new();
    let outputs = wanted
        .iter()
        .map(|w| {
            let (shape, data, mut parameters) = tensor(w.name, info, images);
            let datatype = data.datatype().to_string();
            let data = if w.binary {
                let size = binary::encoded_size(&data) as u64;
                parameters
                    .get_or_insert_with(Parameters::new)
                    .insert("binary_data_size".into(), size.into());
                binary.push(data);
                None
            } else {
                Some(data)
            };
            ResponseOutput {
                name: w.name.to_string(),
                shape,
                datatype,
                parameters,
                data,
            }
        })
        .collect();
    (outputs, binary)
}

/// The answer's own `parameters`: a one-photo request gets the upright photo's
/// `image_width` and `image_height` (several: see the `image_sizes` output).
pub fn answer_parameters(images: &[ImageResult]) -> Parameters {
    let mut parameters = Parameters::new();
    if let [one] = images {
        parameters.insert("image_width".into(), one.width.into());
        parameters.insert("image_height".into(), one.height.into());
    }
    parameters
}
