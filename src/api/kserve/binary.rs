//! Triton's binary tensor data extension, at the byte level: how an inference request's body
//! is framed (a JSON header of `Inference-Header-Content-Length` bytes, then the data of each
//! binary input in the order of `inputs`), BYTES elements (a 4-byte little-endian length,
//! then the bytes: what `tritonclient` sends by default), and binary output tensors. What
//! the tensors mean is left to the modules `inputs` and `outputs`; the handlers are in the
//! parent module.
//!
//! Every size a client declares is checked against the bytes really received before any
//! slice is taken, and slices share the received body (no copy).

use axum::http::{header, HeaderMap, HeaderName};
use bytes::Bytes;

use super::wire::OutputData;
use crate::error::AppError;

/// The header giving the length of the JSON part of a request or response body.
pub static HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// How an inference request's body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The whole body is the JSON request (no `Inference-Header-Content-Length`).
    Json,
    /// A JSON header of this many bytes, then binary tensor data.
    Binary {
        /// Length of the JSON header.
        header: usize,
    },
    /// `Inference-Header-Content-Length: 0`: no JSON at all, the body is the data of the
    /// model's one input (the extension's "raw binary request").
    Raw,
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::BadRequest(msg.into())
}

/// Reads the framing from the request headers, before the body: the content type must be
/// one we read, and a declared JSON header must fit the declared body. (A compressed body
/// arrives here inflated, its `Content-Encoding` gone: see `api::inflate`.)
pub fn framing(headers: &HeaderMap, max_body: usize) -> Result<Framing, AppError> {
    let declared_header = match headers.get(&HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "Inference-Header-Content-Length must be a number of bytes, got {v:?}"
                    ))
                })?,
        ),
    };
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    let kind = ctype.map(|c| match c.parse::<mime::Mime>() {
        Ok(m) if m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON) => "json",
        Ok(m) if m.essence_str() == "application/octet-stream" => "binary",
        _ => "other",
    });
    let Some(header_len) = declared_header else {
        return match kind {
            None | Some("json") => Ok(Framing::Json),
            Some("binary") => Err(bad(
                "an application/octet-stream inference request needs the Inference-Header-Content-Length header \
                 (the length of its JSON part; the binary tensor data extension)",
            )),
            _ => Err(unsupported(ctype.unwrap_or_default())),
        };
    };
    if kind == Some("other") {
        return Err(unsupported(ctype.unwrap_or_default()));
    }
    let body_len = super::super::body::declared_length(headers, max_body)?;
    if let Some(body_len) = body_len {
        if header_len > body_len {
            return Err(bad(format!(
                "Inference-Header-Content-Length ({header_len}) exceeds the body's Content-Length ({body_len})"
            )));
        }
    } else if header_len > max_body as u64 {
        return Err(bad(format!(
            "Inference-Header-Content-Length ({header_len}) exceeds the body limit of {max_body} bytes"
        )));
    }
    Ok(match header_len {
        0 => Framing::Raw,
        n => Framing::Binary { header: n as usize },
    })
}

fn unsupported(ctype: &str) -> AppError {
    AppError::UnsupportedMediaType(format!(
        "content type {ctype:?} is not supported; send application/json, or the binary tensor data \
         extension (a JSON header, then the data, with the Inference-Header-Content-Length header)"
    ))
}

/// Splits a received body into its JSON header and the binary data after it.
pub fn split(body: &Bytes, header: usize) -> Result<(Bytes, Bytes), AppError> {
    if header > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length is {header} but the body has only {} bytes",
            body.len()
        )));
    }
    Ok((body.slice(..header), body.slice(header..)))
}

/// Cuts `count` BYTES elements out of `data`, which must hold exactly them: each one a 4-byte
/// little-endian length, then that many bytes. The elements share `data`'s buffer.
pub fn bytes_elements(data: &Bytes, count: usize) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::with_capacity(count.min(data.len() / 4));
    let mut at = 0usize;
    while at < data.len() {
        let i = out.len();
        if i == count {
            return Err(format!(
                "{} bytes follow its {count} element(s); the shape and the binary data disagree",
                data.len() - at
            ));
        }
        let Some(prefix) = data.get(at..at + 4) else {
            return Err(format!(
                "element {i} is cut short: its 4-byte length prefix has only {} bytes",
                data.len() - at
            ));
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("a 4-byte slice")) as usize;
        let start = at + 4;
        let rest = data.len() - start;
        if len > rest {
            return Err(format!(
                "element {i} declares {len} bytes but only {rest} remain"
            ));
        }
        out.push(data.slice(start..start + len));
        at = start + len;
    }
    if out.len() != count {
        return Err(format!(
            "holds {} element(s) but its shape says {count}",
            out.len()
        ));
    }
    Ok(out)
}

/// The data of a raw binary request as one element: the body itself, or what follows a
/// 4-byte length prefix when the body is exactly one serialised BYTES element (clients
/// differ on whether a raw BYTES body carries the prefix).
pub fn raw_element(body: &Bytes) -> Bytes {
    if let Some(prefix) = body.get(..4) {
        let len = u32::from_le_bytes(prefix.try_into().expect("a 4-byte slice")) as usize;
        if len == body.len() - 4 {
            return body.slice(4..);
        }
    }
    body.clone()
}

/// Bytes `data` takes as binary tensor data.
pub fn encoded_size(data: &OutputData) -> usize {
    match data {
        OutputData::Fp32(v) => v.len() * 4,
        OutputData::Int64(v) => v.len() * 8,
        OutputData::Bytes(v) => v.iter().map(|s| 4 + s.len()).sum(),
    }
}

/// Appends `data` as binary tensor data: little-endian numbers, length-prefixed BYTES.
pub fn encode(data: &OutputData, out: &mut Vec<u8>) {
    match data {
        OutputData::Fp32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        OutputData::Int64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        OutputData::Bytes(v) => {
            for s in v {
                let len = u32::try_from(s.len()).expect("output strings are far below 4 GiB");
                out.extend(len.to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn element(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn elements_are_cut_exactly() {
        let mut data = element(b"abc");
        data.extend(element(b""));
        data.extend(element(b"xy"));
        let data = Bytes::from(data);
        let got = bytes_elements(&data, 3).unwrap();
        assert_eq!(got, vec![&b"abc"[..], b"", b"xy"]);
        // Too few or too many for the shape, a short prefix, a length past the end.
        assert!(bytes_elements(&data, 2).unwrap_err().contains("follow"));
        assert!(bytes_elements(&data, 4)
            .unwrap_err()
            .contains("shape says 4"));
        let short = Bytes::from(vec![5, 0, 0]);
        assert!(bytes_elements(&short, 1).unwrap_err().contains("cut short"));
        let past = Bytes::from(element(b"abc")[..5].to_vec());
        assert!(bytes_elements(&past, 1)
            .unwrap_err()
            .contains("declares 3 bytes but only 1 remain"));
        // A huge declared length is refused without allocating it.
        let huge = Bytes::from(vec![0xff, 0xff, 0xff, 0xff, 1]);
        assert!(bytes_elements(&huge, 1).is_err());
    }

    #[test]
    fn framing_follows_the_headers() {
        let max = 1 << 20;
        assert_eq!(framing(&headers(&[]), max).unwrap(), Framing::Json);
        assert_eq!(
            framing(&headers(&[("content-type", "application/json")]), max).unwrap(),
            Framing::Json
        );
        // What tritonclient sends: no content type, the header length.
        assert_eq!(
            framing(&headers(&[("inference-header-content-length", "120")]), max).unwrap(),
            Framing::Binary { header: 120 }
        );
        assert_eq!(
            framing(
                &headers(&[
                    ("content-type", "application/octet-stream"),
                    ("inference-header-content-length", "0")
                ]),
                max
            )
            .unwrap(),
            Framing::Raw
        );
        let status =
            |h: &[(&str, &str)]| framing(&headers(h), max).unwrap_err().status_and_type().0;
        assert_eq!(status(&[("content-type", "text/plain")]), 415);
        assert_eq!(
            status(&[
                ("content-type", "text/plain"),
                ("inference-header-content-length", "3")
            ]),
            415
        );
        assert_eq!(status(&[("content-type", "application/octet-stream")]), 400);
        assert_eq!(status(&[("inference-header-content-length", "-3")]), 400);
        assert_eq!(
            status(&[
                ("inference-header-content-length", "100"),
                ("content-length", "99")
            ]),
            400
        );
        assert_eq!(
            status(&[("inference-header-content-length", "2000000")]),
            400
        );
    }

    #[test]
    fn split_checks_the_header_length() {
        let body = Bytes::from_static(b"{}abc");
        let (h, rest) = split(&body, 2).unwrap();
        assert_eq!((&h[..], &rest[..]), (&b"{}"[..], &b"abc"[..]));
        assert!(split(&body, 6).is_err());
    }

    #[test]
    fn raw_bodies_may_carry_a_length_prefix() {
        let plain = Bytes::from_static(b"\xff\xd8jpeg");
        assert_eq!(raw_element(&plain), plain);
        let prefixed = Bytes::from(element(b"\xff\xd8jpeg"));
        assert_eq!(raw_element(&prefixed), plain);
    }

    #[test]
    fn outputs_encode_little_endian() {
        let mut out = Vec::new();
        let data = [
            OutputData::Fp32(vec![1.0, -2.5]),
            OutputData::Int64(vec![7]),
            OutputData::Bytes(vec!["bus".into(), "".into()]),
        ];
        for d in &data {
            encode(d, &mut out);
        }
        let want: Vec<u8> = [
            &1.0f32.to_le_bytes()[..],
            &(-2.5f32).to_le_bytes(),
            &7i64.to_le_bytes(),
            &element(b"bus"),
            &element(b""),
        ]
        .concat();
        assert_eq!(out, want);
        assert_eq!(data.iter().map(encoded_size).sum::<usize>(), want.len());
    }
}
