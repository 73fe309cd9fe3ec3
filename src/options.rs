//! What a caller may ask of one segmentation, whatever the front end: the HTTP query, the
//! KServe `parameters`, or the CLI's flags all become key/value pairs parsed here into one
//! [`SegmentOptions`]. Errors name the parameter; each front end words it its own way
//! (`query parameter `conf``, `--conf`, `parameter `conf``).

use crate::engine::FilterOptions;
use crate::imageio::DecodeMode;

/// Largest accepted `max_det`.
pub const MAX_DET_LIMIT: usize = 1000;

/// Default `tolerance` for polygon masks, in pixels: drops the pixel staircase and keeps
/// the shape (Roboflow's exports look like this).
pub const DEFAULT_POLYGON_TOLERANCE: f64 = 1.0;

/// A bad option: which one, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{param}` {problem}")]
pub struct OptionError {
    /// The parameter as the caller spelled it.
    pub param: String,
    /// What is wrong, e.g. "must be between 0 and 1, got 2".
    pub problem: String,
}

fn bad(param: &str, problem: impl Into<String>) -> OptionError {
    OptionError {
        param: param.to_string(),
        problem: problem.into(),
    }
}

/// How masks are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormat {
    /// COCO compressed RLE per detection.
    Rle,
    /// Outer contours as polygons in image pixels (`tolerance` simplifies them).
    Polygon,
    /// No masks (faster: skips mask computation).
    None,
    /// A single-channel PNG per detection (0 outside the mask, 255 inside), cropped to the
    /// mask's rectangle, base64 in `mask_png`.
    Png,
}

impl std::str::FromStr for MaskFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rle" => Ok(MaskFormat::Rle),
            "polygon" => Ok(MaskFormat::Polygon),
            "none" => Ok(MaskFormat::None),
            "png" => Ok(MaskFormat::Png),
            other => Err(format!("must be rle, polygon, png or none, got {other:?}")),
        }
    }
}

/// Everything one segmentation request can set.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// Score, IoU, count and class filters.
    pub filter: FilterOptions,
    /// Mask format.
    pub masks: MaskFormat,
    /// Model name, when not the default.
    pub model: Option<String>,
    /// Douglas-Peucker tolerance in pixels for polygon masks.
    pub tolerance: f64,
    /// How the photo is decoded (None: the server's `--decode`).
    pub decode: Option<DecodeMode>,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            filter: FilterOptions::default(),
            masks: MaskFormat::Rle,
            model: None,
            tolerance: DEFAULT_POLYGON_TOLERANCE,
            decode: None,
        }
    }
}

/// The `model` among the pairs (the last one wins), so the caller can pick the model whose
/// class names resolve `classes` before parsing the rest.
pub fn model_param(pairs: &[(String, String)]) -> Option<&str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "model")
        .map(|(_, v)| v.as_str())
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, OptionError> {
    v.trim()
        .parse()
        .map_err(|_| bad(key, format!("must be a number, got {v:?}")))
}

fn unit_interval(key: &str, v: &str) -> Result<f32, OptionError> {
    let x: f32 = number(key, v)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(bad(key, format!("must be between 0 and 1, got {v}")));
    }
    Ok(x)
}

/// Resolves `person,2,car` against the model's class names, into ids.
pub fn parse_classes(v: &str, names: &[String]) -> Result<Vec<usize>, OptionError> {
    let mut ids = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = match item.parse::<usize>() {
            Ok(id) if id < names.len() => id,
            Ok(id) => {
                return Err(bad(
                    "classes",
                    format!("has class id {id}, out of range (0..{})", names.len()),
                ))
            }
            Err(_) => names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(item))
                .ok_or_else(|| {
                    bad(
                        "classes",
                        format!("names unknown class {item:?}; the model's classes are listed by GET /v1/models and `segserve models`"),
                    )
                })?,
        };
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(bad("classes", "is empty"));
    }
    Ok(ids)
}

impl SegmentOptions {
    /// Parses `key=value` pairs (later pairs win); `names` are the chosen model's class
    /// names, for `classes`. Unknown keys are refused, so a typo does not go unnoticed.
    pub fn parse(pairs: &[(String, String)], names: &[String]) -> Result<Self, OptionError> {
        let mut o = SegmentOptions {
            model: model_param(pairs).map(str::to_string),
            ..Default::default()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "conf" => o.filter.conf = unit_interval(k, v)?,
                "iou" => o.filter.iou = unit_interval(k, v)?,
                "max_det" => {
                    let n: usize = number(k, v)?;
                    if n == 0 || n > MAX_DET_LIMIT {
                        return Err(bad(k, format!("must be 1..={MAX_DET_LIMIT}, got {v}")));
                    }
                    o.filter.max_det = n;
                }
                "classes" => o.filter.classes = Some(parse_classes(v, names)?),
                "masks" => o.masks = v.parse().map_err(|p: String| bad(k, p))?,
                "tolerance" => {
                    let t: f64 = number(k, v)?;
                    if !(0.0..=1000.0).contains(&t) {
                        return Err(bad(k, format!("must be 0..=1000 pixels, got {v}")));
                    }
                    o.tolerance = t;
                }
                "decode" => o.decode = Some(v.parse().map_err(|p: String| bad(k, p))?),
                "model" => {}
                other => return Err(bad(other, "is not a known option")),
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["person", "bicycle", "car"].map(String::from).to_vec()
    }

    fn parse(q: &str) -> Result<SegmentOptions, OptionError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
        SegmentOptions::parse(&pairs, &names())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("").unwrap(), SegmentOptions::default());
        let o = parse("masks=polygon&tolerance=2.5").unwrap();
        assert_eq!((o.masks, o.tolerance), (MaskFormat::Polygon, 2.5));
        let o = parse("conf=0.5&iou=0.3&max_det=5&classes=person,2&masks=none&model=m").unwrap();
        assert_eq!(
            (o.filter.conf, o.filter.iou, o.filter.max_det),
            (0.5, 0.3, 5)
        );
        assert_eq!(o.filter.classes, Some(vec![0, 2]));
        assert_eq!((o.masks, o.model.as_deref()), (MaskFormat::None, Some("m")));
        assert_eq!(parse("decode=fast").unwrap().decode, Some(DecodeMode::Fast));
    }

    #[test]
    fn errors_name_the_parameter() {
        for (q, param) in [
            ("conf=2", "conf"),
            ("iou=-1", "iou"),
            ("max_det=0", "max_det"),
            ("max_det=abc", "max_det"),
            ("classes=unicorn", "classes"),
            ("classes=7", "classes"),
            ("classes=", "classes"),
            ("masks=maybe", "masks"),
            ("bogus=1", "bogus"),
            ("tolerance=-1", "tolerance"),
            ("tolerance=x", "tolerance"),
            ("decode=quick", "decode"),
        ] {
            assert_eq!(parse(q).unwrap_err().param, param, "{q}");
        }
        assert_eq!(
            parse("conf=2").unwrap_err().to_string(),
            "`conf` must be between 0 and 1, got 2"
        );
    }
}
