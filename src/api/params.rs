//! The query of the segmentation routes, as an extractor: [`Params`] splits the query into
//! pairs, picks the model, and parses the options with `crate::options`, before the body
//! is read (a bad parameter or an unknown model is refused without receiving the upload).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use crate::engine::Engine;
use crate::error::AppError;
use crate::options::{self, SegmentOptions};

/// Query keys a route takes besides the segmentation options.
pub trait Extra: Send + Sync + 'static {
    /// The route's own keys (taken out before the options are parsed).
    const KEYS: &'static [&'static str];
}

/// Only the segmentation options (`/v1/segment`).
pub struct NoExtra;
impl Extra for NoExtra {
    const KEYS: &'static [&'static str] = &[];
}

/// The options plus `format` (`/v1/render`).
pub struct RenderExtra;
impl Extra for RenderExtra {
    const KEYS: &'static [&'static str] = &["format"];
}

/// The chosen model and the parsed options.
pub struct Params<E = NoExtra> {
    /// The model the options name (or the default).
    pub engine: Engine,
    /// Parsed options.
    pub options: SegmentOptions,
    /// The route's own keys that were present (last value wins).
    pub extra: BTreeMap<&'static str, String>,
    _extra: PhantomData<E>,
}

impl<E: Extra> FromRequestParts<AppState> for Params<E> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, AppError> {
        let mut pairs = query_pairs(parts.uri.query())?;
        let mut extra = BTreeMap::new();
        pairs.retain(
            |(k, v)| match E::KEYS.iter().find(|key| **key == k.as_str()) {
                Some(key) => {
                    extra.insert(*key, v.clone());
                    false
                }
                None => true,
            },
        );
        let engine = s.engine(options::model_param(&pairs))?;
        let options = SegmentOptions::parse(&pairs, &engine.info().names)?;
        Ok(Params {
            engine,
            options,
            extra,
            _extra: PhantomData,
        })
    }
}

/// Splits a raw query string into pairs, refusing malformed encodings.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, AppError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| AppError::BadRequest(format!("malformed query string: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_percent_escapes() {
        assert_eq!(
            query_pairs(Some("conf=0.5&classes=person%2Ccar")).unwrap(),
            vec![
                ("conf".to_string(), "0.5".to_string()),
                ("classes".to_string(), "person,car".to_string())
            ]
        );
        assert_eq!(query_pairs(None).unwrap(), vec![]);
    }
}
