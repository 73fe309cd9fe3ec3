//! Compressed request bodies (`Content-Encoding: gzip`, `deflate`, `zstd`), as
//! `tritonclient`'s `request_compression_algorithm` and some upload clients send them.
//!
//! The body is inflated as it arrives, a bounded piece at a time, and every route reads the
//! inflated bytes through the same reader as a plain body (`api::body`): the body limit,
//! the receive rate and the memory reservation apply to what the body *inflates to*. So a
//! decompression bomb meets the body limit (413) after at most that many bytes, and holds
//! no more memory on the way than a plain body of that size would. The decoder's own state
//! (for zstd, its window: at most 8 MiB, RFC 9659's limit for HTTP) is reserved first.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZlibDecoder, ZstdDecoder};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, TryStreamExt};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use super::body;
use super::AppState;
use crate::budget::Reservation;
use crate::error::AppError;

/// Inflated bytes per frame handed to the body's reader.
const PIECE: usize = 64 << 10;

/// A coding segserve inflates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Zstd,
}

impl Coding {
    fn parse(token: &str) -> Result<Option<Coding>, AppError> {
        match token.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "zstd" => Ok(Some(Coding::Zstd)),
            other => Err(AppError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported; send the body as gzip, deflate, zstd or uncompressed"
            ))),
        }
    }

    /// The decoder's state and the piece it fills, with margin: inflate keeps a 32 KiB
    /// window and ~11 KiB of tables; zstd its window (capped at 8 MiB) and ~200 KiB.
    fn reserve_bytes(self) -> u64 {
        let state: u64 = match self {
            Coding::Gzip | Coding::Deflate => 128 << 10,
            Coding::Zstd => (8 << 20) + (512 << 10),
        };
        state + 2 * PIECE as u64
    }
}

/// The middleware: a compressed body is replaced by its inflated stream (without the
/// `Content-Encoding` and `Content-Length` that described the compressed bytes); an
/// unknown coding is refused with 415.
pub async fn request(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(next.run(req).await);
    };
    let token = value.to_str().map_err(|_| {
        AppError::UnsupportedMediaType("the Content-Encoding header is not ASCII".into())
    })?;
    let Some(coding) = Coding::parse(token)? else {
        return Ok(next.run(req).await);
    };
    // Compressed bytes past the limit would inflate past it too.
    body::declared_length(req.headers(), s.config.max_body_bytes)?;
    let mut hold = s.budget.reservation();
    hold.grow(coding.reserve_bytes())
        .map_err(body::budget_refusal)?;
    let (mut parts, raw) = req.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = Body::from_stream(inflated(raw, coding, hold));
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// `raw` inflated in pieces of at most [`PIECE`] bytes, holding `hold` until dropped.
fn inflated(raw: Body, coding: Coding, hold: Reservation) -> Holding {
    let compressed = StreamReader::new(raw.into_data_stream().map_err(std::io::Error::other));
    let decoder: Pin<Box<dyn AsyncRead + Send>> = match coding {
        Coding::Gzip => {
            let mut d = GzipDecoder::new(compressed);
            // Concatenated members are one gzip stream (RFC 1952 section 2.2).
            d.multiple_members(true);
            Box::pin(d)
        }
        Coding::Deflate => Box::pin(ZlibDecoder::new(compressed)),
        Coding::Zstd => Box::pin(ZstdDecoder::new_for_http(compressed)),
    };
    Holding {
        out: ReaderStream::with_capacity(decoder, PIECE),
        _hold: hold,
    }
}

/// The inflated stream, with the decoder's reservation.
struct Holding {
    out: ReaderStream<Pin<Box<dyn AsyncRead + Send>>>,
    _hold: Reservation,
}

impl Stream for Holding {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.out).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    async fn inflate_all(coding: Coding, compressed: Vec<u8>) -> std::io::Result<Vec<Bytes>> {
        let budget = MemoryBudget::new(64 << 20);
        let mut frames = Vec::new();
        let mut s = inflated(Body::from(compressed), coding, budget.reservation());
        while let Some(f) = futures_util::StreamExt::next(&mut s).await {
            frames.push(f?);
        }
        Ok(frames)
    }

    #[tokio::test]
    async fn every_coding_inflates_in_bounded_pieces() {
        let data: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let cases = [
            (Coding::Gzip, gzip(&data)),
            (Coding::Deflate, zlib),
            (Coding::Zstd, zstd::encode_all(&data[..], 3).unwrap()),
        ];
        for (coding, compressed) in cases {
            let frames = inflate_all(coding, compressed).await.unwrap();
            assert!(frames.iter().all(|f| f.len() <= PIECE), "{coding:?}");
            assert_eq!(frames.concat(), data, "{coding:?}");
        }
    }

    #[tokio::test]
    async fn corrupt_streams_fail_and_unknown_codings_are_415() {
        let mut bad = gzip(b"hello world, hello world");
        let n = bad.len();
        bad[n / 2] ^= 0xff;
        bad.truncate(n - 3);
        assert!(inflate_all(Coding::Gzip, bad).await.is_err());
        assert!(inflate_all(Coding::Zstd, b"not zstd at all".to_vec())
            .await
            .is_err());
        let err = Coding::parse("br").unwrap_err();
        assert_eq!(err.status_and_type().0.as_u16(), 415);
        assert_eq!(
            Coding::parse("gzip, gzip")
                .unwrap_err()
                .status_and_type()
                .0
                .as_u16(),
            415
        );
        assert_eq!(Coding::parse(" GZIP ").unwrap(), Some(Coding::Gzip));
        assert_eq!(Coding::parse("identity").unwrap(), None);
    }

    /// A zstd frame that asks for a window past 8 MiB is refused, not allocated.
    #[tokio::test]
    async fn a_zstd_window_past_8_mib_is_refused() {
        let mut c = zstd::zstd_safe::CCtx::create();
        c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
            .unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(
            true,
        ))
        .unwrap();
        let src = vec![7u8; 64 << 20];
        let mut out = vec![0u8; 1 << 20];
        let n = c.compress2(&mut out[..], &src).unwrap();
        out.truncate(n);
        let frames = inflate_all(Coding::Zstd, out).await;
        assert!(frames.is_err(), "a 128 MiB window was accepted");
    }
}
