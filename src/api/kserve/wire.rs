//! Wire types of the Open Inference Protocol (KServe v2 / Triton) REST API. Field names and
//! shapes follow the protocol's JSON schemas; conversions live in `inputs` and `outputs`,
//! handlers in the parent module.
//!
//! Requests are parsed without building values nobody asked for: unknown fields are skipped
//! (serde's `IgnoredAny`), parameters are scalars (an array there is refused at its first
//! byte), and every list is bounded, so a body of millions of numbers costs no more memory
//! than its own bytes.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{ModelInfo, Task};

/// The protocol's `platform` for a model served by ONNX Runtime (Triton's spelling).
pub const PLATFORM: &str = "onnxruntime_onnx";
/// We serve one version of each model; the protocol requires version strings.
pub const MODEL_VERSION: &str = "1";
/// Name of the one input tensor.
pub const INPUT_NAME: &str = "image";
/// Output tensors, in the order they are returned. Detections of every image of a request
/// are concatenated, image by image; `image_index` says which image each row belongs to, and
/// `image_sizes` gives each image's upright `[height, width]`.
pub const OUTPUTS: [&str; 7] = [
    "boxes",
    "scores",
    "class_ids",
    "class_names",
    "masks",
    "image_index",
    "image_sizes",
];
/// Most images one request may carry (the `image` input's shape `[N]`). Each image is its
/// own pipeline run, with its own place in the queue and its own memory reservation.
pub const MAX_IMAGES: usize = 16;
/// The protocol extensions we implement, as `GET /v2` lists them.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

/// `GET /v2`: server metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Protocol extensions supported (`binary_tensor_data`).
    pub extensions: Vec<String>,
}

/// One tensor's description in model metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// Protocol datatype (`BYTES`, `FP32`, `INT64`).
    pub datatype: String,
    /// Shape; -1 is a variable dimension.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`: model metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Available versions.
    pub versions: Vec<String>,
    /// Framework (`onnxruntime_onnx`).
    pub platform: String,
    /// Inputs: one BYTES tensor `image` holding up to 16 encoded photos.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs, one row per detection (`masks` only for segmentation models).
    pub outputs: Vec<TensorMetadata>,
    /// `{"device": "cpu" | "cuda" | "tensorrt"}`: where the model runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
}

impl ModelMetadata {
    /// Describes a loaded model.
    pub fn new(info: &ModelInfo) -> Self {
        let t = |name: &str, datatype: &str, shape: &[i64]| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        };
        let mut outputs = vec![
            t("boxes", "FP32", &[-1, 4]),
            t("scores", "FP32", &[-1]),
            t("class_ids", "INT64", &[-1]),
            t("class_names", "BYTES", &[-1]),
        ];
        if info.task == Task::Segment {
            outputs.push(t("masks", "BYTES", &[-1]));
        }
        outputs.push(t("image_index", "INT64", &[-1]));
        outputs.push(t("image_sizes", "INT64", &[-1, 2]));
        ModelMetadata {
            name: info.name.clone(),
            versions: vec![MODEL_VERSION.into()],
            platform: PLATFORM.into(),
            inputs: vec![t(INPUT_NAME, "BYTES", &[-1])],
            outputs,
            parameters: None,
        }
    }

    /// Adds where the model runs, as the `device` parameter.
    pub fn with_device(mut self, device: &str) -> Self {
        self.parameters
            .get_or_insert_with(Parameters::new)
            .insert("device".into(), ParamValue::from(device));
        self
    }
}

/// `GET /v2/models/{name}/ready` and the health routes: the status code carries the
/// answer; the body repeats it for humans.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyBody {
    /// Model name (model readiness only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Always true in a 200 reply.
    pub ready: bool,
}

/// Most entries a list in a request may have (inputs, outputs, parameters, image elements).
pub const MAX_LIST: usize = 64;

/// One `$parameter` value: the protocol allows a bool, a number or a string. Deserialised
/// by hand: serde's `untagged` would first buffer whatever comes (a list of millions of
/// numbers included) and only then find that it matches no variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `true` / `false`.
    Bool(bool),
    /// Any JSON number.
    Number(serde_json::Number),
    /// A string.
    String(String),
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a bool, a number or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ParamValue, E> {
                Ok(ParamValue::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamValue, E> {
                serde_json::Number::from_f64(v)
                    .map(ParamValue::Number)
                    .ok_or_else(|| E::custom("a parameter is not a finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue::String(v.to_string()))
            }
            // Lists and objects fall to the default visit_seq / visit_map, which refuse
            // them before reading their first element.
        }
        d.deserialize_any(V)
    }
}

impl From<u32> for ParamValue {
    fn from(v: u32) -> Self {
        ParamValue::Number(v.into())
    }
}

impl From<u64> for ParamValue {
    fn from(v: u64) -> Self {
        ParamValue::Number(v.into())
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::String(v.into())
    }
}

/// `$parameters`: name -> bool, number or string.
pub type Parameters = BTreeMap<String, ParamValue>;

/// A request's `$parameters`, at most [`MAX_LIST`] of them.
fn bounded_parameters<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Parameters>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Parameters>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an object of at most {MAX_LIST} parameters")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Parameters::new();
            while let Some((k, v)) = m.next_entry::<String, ParamValue>()? {
                if out.len() == MAX_LIST {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_LIST} parameters"
                    )));
                }
                out.insert(k, v);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(V)
}

/// A list of at most [`MAX_LIST`] items.
fn bounded_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX_LIST} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_LIST {
                    return Err(de::Error::custom(format!("more than {MAX_LIST} items")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(std::marker::PhantomData))
}

fn bounded_outputs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<RequestOutput>>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "bounded_list")] Vec<RequestOutput>);
    Option::<W>::deserialize(d).map(|o| o.map(|w| w.0))
}

/// An input's `data`: strings (base64 images), possibly nested as the protocol allows, at
/// most [`MAX_LIST`] of them; anything else is refused where it starts. Inputs sent through
/// the binary tensor data extension have none.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TensorData(pub Vec<String>);

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(&'a mut Vec<String>, usize);
        impl<'de> de::DeserializeSeed<'de> for V<'_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de> Visitor<'de> for V<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "base64 strings (the encoded images), nested at most 4 deep"
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
                if self.0.len() == MAX_LIST {
                    return Err(E::custom(format!("more than {MAX_LIST} images")));
                }
                self.0.push(v.to_string());
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                if self.1 >= 4 {
                    return Err(de::Error::custom("data nested more than 4 deep"));
                }
                let depth = self.1 + 1;
                while seq.next_element_seed(V(self.0, depth))?.is_some() {}
                Ok(())
            }
        }
        let mut out = Vec::new();
        d.deserialize_any(V(&mut out, 0))?;
        Ok(TensorData(out))
    }
}

/// One input tensor of an inference request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestInput {
    /// Must be `image`.
    pub name: String,
    /// `[N]`: N images (1 to 16).
    #[serde(deserialize_with = "bounded_list")]
    pub shape: Vec<i64>,
    /// Must be `BYTES`.
    pub datatype: String,
    /// Per-input options (conf, iou, max_det, classes), which override the request's;
    /// `binary_data_size` when the images follow the JSON as binary data.
    #[serde(default, deserialize_with = "bounded_parameters")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// `["<base64 of the encoded image>", ...]` (nested arrays are flattened, as the protocol
    /// allows); absent when the images are sent as binary data.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub data: Option<TensorData>,
}

/// A requested output.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RequestOutput {
    /// One of boxes, scores, class_ids, class_names, masks.
    pub name: String,
    /// `binary_data`: true to get this output as binary data after the JSON.
    #[serde(default, deserialize_with = "bounded_parameters")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
}

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Options: conf (0.25), iou (0.7), max_det (300), classes ("person,car" or an id);
    /// `binary_data_output`: true to get every output as binary data.
    #[serde(default, deserialize_with = "bounded_parameters")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// Exactly one input, `image`, of shape `[N]`.
    #[serde(deserialize_with = "bounded_list")]
    pub inputs: Vec<RequestInput>,
    /// Outputs wanted; all when absent.
    #[serde(default, deserialize_with = "bounded_outputs")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// An output tensor's values, row-major. Serialised as a plain JSON array (FP32 with f32's
/// shortest digits, `0.88074893`, not the f64 widening's `0.8807489275932312`); `binary`
/// encodes them for the binary tensor data extension.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OutputData {
    /// FP32 values.
    Fp32(Vec<f32>),
    /// INT64 values.
    Int64(Vec<i64>),
    /// BYTES values (all of ours are UTF-8 text).
    Bytes(Vec<String>),
}

impl OutputData {
    /// The protocol's datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            OutputData::Fp32(_) => "FP32",
            OutputData::Int64(_) => "INT64",
            OutputData::Bytes(_) => "BYTES",
        }
    }
}

/// One output tensor of an inference response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseOutput {
    /// Tensor name.
    pub name: String,
    /// Shape, e.g. `[N, 4]`.
    pub shape: Vec<usize>,
    /// FP32, INT64 or BYTES.
    pub datatype: String,
    /// For `masks`: `format` = coco_rle (and `height`, `width` for a one-image request);
    /// `binary_data_size` when the data follows the JSON as binary data.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Parameters>,
    /// Row-major flattened values; absent for a binary output.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub data: Option<OutputData>,
}

/// `POST /v2/models/{name}/infer` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// `image_width`, `image_height` of the upright photo (one-image requests; see the
    /// `image_sizes` output for several).
    #[schema(value_type = Object)]
    pub parameters: Parameters,
    /// The requested outputs.
    pub outputs: Vec<ResponseOutput>,
}
