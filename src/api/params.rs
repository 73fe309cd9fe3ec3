//! The query of the segmentation routes, as extractors: [`Params`] splits the query into
//! pairs, takes out the route's own keys ([`Extra`]), picks the model, and parses the
//! options with `crate::options`, before the body is read (a bad parameter or an unknown
//! model is refused without receiving the upload). [`RouteKeys`] takes only a route's own
//! keys and ignores the rest, for PixelLib's clients. Both take route keys the one way,
//! [`take_keys`].

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

/// Takes `E`'s keys out of `pairs` (the last value of a repeated key wins).
pub fn take_keys<E: Extra>(pairs: &mut Vec<(String, String)>) -> BTreeMap<&'static str, String> {
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
    extra
}

/// Only a route's own keys: every other key is ignored (PixelLib's clients send none, and
/// its route was never strict about them).
pub struct RouteKeys<E> {
    /// The route's keys that were present.
    pub keys: BTreeMap<&'static str, String>,
    _route: PhantomData<E>,
}

impl<E: Extra> FromRequestParts<AppState> for RouteKeys<E> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, AppError> {
        let mut pairs = query_pairs(parts.uri.query())?;
        Ok(RouteKeys {
            keys: take_keys::<E>(&mut pairs),
            _route: PhantomData,
        })
    }
}

impl<E: Extra> FromRequestParts<AppState> for Params<E> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, AppError> {
        let mut pairs = query_pairs(parts.uri.query())?;
        let extra = take_keys::<E>(&mut pairs);
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
