//! `POST /segmentapi`, the drop-in for PixelLib's Flask API
//! (`ImageSegmentationAPI/segmentation.py` in PixelLibAPI): form field `image`, answered
//! with `{"outputs": {boxes, class_ids, class_names, mask_shape, object_counts, scores},
//! "mask_values": H x W x N booleans}` — `mask_values` beside `outputs`, as the original
//! sends it and as its README's second client reads it (`results["mask_values"]`).
//!
//! The dense masks are the heavy part (6 bytes of JSON per cell: a 12 MP photo with ten
//! objects is 700 MB), so they are streamed row by row as they are written, never built
//! as one buffer, and refused with 413 past `--max-dense-mask-cells`. When they are sent
//! is `--pixellib-masks` (`always`, like the original, or `on-request`), overridden per
//! request by `?mask_values=true|false`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::params::{Extra, RouteKeys};
use super::reply::Reserved;
use super::upload::{FormOnly, ImageUpload};
use super::AppState;
use crate::budget::Reservation;
use crate::config::PixelLibMasks;
use crate::engine::{Detection, ModelInfo};
use crate::error::{AppError, ErrorBody};
use crate::mask::BoxMask;
use crate::pipeline::{PipelineError, Segmentation, Wants};
use crate::schema::counts;

/// PixelLib's `outputs` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct PixelLibOutputs {
    /// [x1, y1, x2, y2] integers.
    pub boxes: Vec<[i64; 4]>,
    /// Class ids (0-based COCO ids, as PixelLib's own answers show).
    pub class_ids: Vec<usize>,
    /// Class names.
    pub class_names: Vec<String>,
    /// [H, W, N].
    pub mask_shape: [usize; 3],
    /// Detections per class.
    pub object_counts: BTreeMap<String, usize>,
    /// Integer percent scores.
    pub scores: Vec<i64>,
}

/// `/segmentapi` reply (documentation; the dense part is streamed).
#[derive(Debug, Serialize, ToSchema)]
pub struct PixelLibResponse {
    /// PixelLib nests the detections under `outputs`.
    pub outputs: PixelLibOutputs,
    /// H x W x N booleans, in the order of `outputs` (unless not asked for).
    #[schema(value_type = Option<Vec<Vec<Vec<bool>>>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_values: Option<()>,
}

impl PixelLibOutputs {
    /// Shapes an engine result like PixelLib's Flask API.
    pub fn new(info: &ModelInfo, seg: &Segmentation) -> Self {
        let dets = &seg.detections;
        PixelLibOutputs {
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
        }
    }
}

/// `/segmentapi`'s one key, `?mask_values=`, read before the upload.
pub struct PixelLibKeys;
impl Extra for PixelLibKeys {
    const KEYS: &'static [&'static str] = &["mask_values"];
}

/// Whether the query asks for the dense masks (`None`: the server's default).
fn mask_values(keys: &RouteKeys<PixelLibKeys>) -> Result<Option<bool>, AppError> {
    match keys.keys.get("mask_values").map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(AppError::BadRequest(format!(
            "query parameter `mask_values` must be true or false, got {other:?}"
        ))),
    }
}

/// `POST /segmentapi`: PixelLib-compatible (multipart field `image`).
#[utoipa::path(post, path = "/segmentapi", tag = "pixellib",
    params(("mask_values" = Option<bool>, Query, description = "Send the dense H x W x N mask booleans (`mask_values`, beside `outputs`); default from --pixellib-masks (always)")),
    request_body(content = super::handlers::ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "PixelLib's reply shape", body = PixelLibResponse),
        (status = 400, description = "No `image` field, or a bad parameter", body = ErrorBody),
        (status = 408, description = "Body not received in time", body = ErrorBody),
        (status = 413, description = "Body or image over a limit, or dense masks over --max-dense-mask-cells", body = ErrorBody),
        (status = 415, description = "Not multipart, or an unsupported image format", body = ErrorBody),
        (status = 422, description = "Corrupt image", body = ErrorBody),
        (status = 503, description = "Overloaded (queue or memory budget) or not ready; retry", body = ErrorBody)))]
pub async fn segmentapi(
    State(s): State<AppState>,
    keys: RouteKeys<PixelLibKeys>,
    upload: ImageUpload<FormOnly>,
) -> Result<Response, AppError> {
    let dense = mask_values(&keys)?.unwrap_or(s.config.pixellib.masks == PixelLibMasks::Always);
    let engine = s.engine(None)?;
    let max_cells = s.config.pixellib.max_dense_cells;
    let req = upload.request(Wants::boxes_or_masks(dense));
    let e = engine.clone();
    let done = s.pipeline.segment(&engine, req, move |seg, res| {
        let outputs = PixelLibOutputs::new(e.info(), &seg);
        let cells = seg.width as u64 * seg.height as u64 * seg.detections.len() as u64;
        if dense && cells > max_cells {
            let never = crate::budget::BudgetError::NeverFits {
                needed: cells,
                limit: max_cells,
            };
            return Err(PipelineError::Budget(never.refusing(
                format!(
                    "dense mask_values for this photo are {} x {} x {} = {cells} cells, over this server's limit of {max_cells}:",
                    seg.height, seg.width, seg.detections.len()
                ),
                "ask POST /v1/segment for the masks as RLE or polygons, or send ?mask_values=false",
            )));
        }
        let head = serde_json::to_vec(&outputs).map_err(|e| PipelineError::Task(e.to_string()))?;
        // The chunk being written, beside the masks the pipeline already holds.
        if dense {
            res.grow(CHUNK_BYTES as u64 * 2).map_err(|error| {
                PipelineError::Budget(error.refusing("streaming the dense masks", "retry later"))
            })?;
        }
        Ok((head, dense.then_some(seg)))
    })
    .await?;
    let (head, seg) = done.value;
    let deadline = Instant::now() + s.config.request_timeout;
    let body = match seg {
        None => {
            let mut json = b"{\"outputs\":".to_vec();
            json.extend_from_slice(&head);
            json.push(b'}');
            Body::from(json)
        }
        Some(seg) => dense_body(head, seg, done.reservation, deadline),
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// About this much JSON is written per step of the stream.
const CHUNK_BYTES: usize = 1 << 20;

/// The streamed answer: `{"outputs":...,"mask_values":[` rows `]}`, each step writing whole
/// rows on the blocking pool. The stream holds the masks and their reservation until it
/// ends or the client goes away; past `deadline` it stops (the connection is then cut, as
/// for any answer that cannot finish in time).
fn dense_body(
    head: Vec<u8>,
    seg: Segmentation,
    reservation: Reservation,
    deadline: Instant,
) -> Body {
    let mut first = b"{\"outputs\":".to_vec();
    first.extend_from_slice(&head);
    first.extend_from_slice(b",\"mask_values\":[");
    let writer = Arc::new(DenseWriter::new(seg));
    let state = (Some(first), 0u32, writer);
    let stream = futures_util::stream::unfold(state, move |(first, row, w)| async move {
        if let Some(first) = first {
            return Some((Ok(Bytes::from(first)), (None, row, w)));
        }
        if row > w.height {
            return None;
        }
        if Instant::now() > deadline {
            let err = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "dense mask_values not sent within the request timeout",
            );
            return Some((Err(err), (None, w.height + 1, w)));
        }
        let w2 = w.clone();
        let step = crate::meter::spawn_blocking(move || w2.rows_from(row)).await;
        match step {
            Ok((chunk, next)) => Some((Ok(Bytes::from(chunk)), (None, next, w))),
            Err(e) => Some((Err(std::io::Error::other(e)), (None, w.height + 1, w))),
        }
    });
    Body::new(Reserved::new(Body::from_stream(stream), reservation))
}

/// Writes rows of the H x W x N boolean array as JSON text.
struct DenseWriter {
    width: u32,
    height: u32,
    masks: Vec<BoxMask>,
    n: usize,
    /// `[false,false,...]`: what nearly every pixel is.
    all_false: Vec<u8>,
}

impl DenseWriter {
    fn new(seg: Segmentation) -> Self {
        let n = seg.detections.len();
        // Detection models have no masks: every cell is false, the shape stays H x W x N.
        let masks: Vec<BoxMask> = seg
            .detections
            .into_iter()
            .map(|d: Detection| {
                d.mask.unwrap_or(BoxMask {
                    image_w: seg.width,
                    image_h: seg.height,
                    x: 0,
                    y: 0,
                    w: 0,
                    h: 0,
                    bits: Vec::new(),
                })
            })
            .collect();
        let mut all_false = b"[".to_vec();
        for i in 0..n {
            if i > 0 {
                all_false.push(b',');
            }
            all_false.extend_from_slice(b"false");
        }
        all_false.push(b']');
        DenseWriter {
            width: seg.width,
            height: seg.height,
            masks,
            n,
            all_false,
        }
    }

    /// Rows from `row` on, about [`CHUNK_BYTES`] of them, and the next row to write;
    /// `row == height` writes the closing brackets.
    fn rows_from(&self, mut row: u32) -> (Vec<u8>, u32) {
        let mut out = Vec::with_capacity(CHUNK_BYTES + self.row_bound());
        if row == self.height {
            out.extend_from_slice(b"]}");
            return (out, row + 1);
        }
        while row < self.height && out.len() < CHUNK_BYTES {
            if row > 0 {
                out.push(b',');
            }
            self.write_row(row, &mut out);
            row += 1;
        }
        (out, row)
    }

    fn row_bound(&self) -> usize {
        self.width as usize * (self.n * 6 + 2) + 2
    }

    fn write_row(&self, y: u32, out: &mut Vec<u8>) {
        let active: Vec<&BoxMask> = self
            .masks
            .iter()
            .filter(|m| y >= m.y && y < m.y + m.h)
            .collect();
        out.push(b'[');
        for x in 0..self.width {
            if x > 0 {
                out.push(b',');
            }
            if !active.iter().any(|m| x >= m.x && x < m.x + m.w) {
                out.extend_from_slice(&self.all_false);
                continue;
            }
            out.push(b'[');
            for (i, m) in self.masks.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(if m.get(x, y) { b"true" } else { b"false" });
            }
            out.push(b']');
        }
        out.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Timing;

    fn write_all(seg: Segmentation) -> Vec<u8> {
        let w = DenseWriter::new(seg);
        let mut out = Vec::new();
        let mut row = 0;
        while row <= w.height {
            let (chunk, next) = w.rows_from(row);
            out.extend_from_slice(&chunk);
            row = next;
        }
        out
    }

    fn seg(w: u32, h: u32, masks: Vec<Option<BoxMask>>) -> Segmentation {
        Segmentation {
            width: w,
            height: h,
            detections: masks
                .into_iter()
                .map(|m| Detection {
                    bbox: [0.0; 4],
                    class_id: 0,
                    score: 0.5,
                    mask: m,
                })
                .collect(),
            timing: Timing::default(),
            image: None,
        }
    }

    #[test]
    fn dense_rows_are_h_by_w_by_n_booleans() {
        let m = BoxMask {
            image_w: 3,
            image_h: 2,
            x: 1,
            y: 1,
            w: 2,
            h: 1,
            bits: vec![1, 0],
        };
        let text = write_all(seg(3, 2, vec![Some(m), None]));
        let mut json = b"[".to_vec();
        json.extend_from_slice(&text);
        let v: serde_json::Value = serde_json::from_slice(&json[..json.len() - 1]).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                [[false, false], [false, false], [false, false]],
                [[false, false], [true, false], [false, false]]
            ])
        );
    }

    #[test]
    fn no_detections_give_empty_cells() {
        let text = write_all(seg(2, 1, vec![]));
        assert_eq!(text, b"[[],[]]]}");
    }
}
