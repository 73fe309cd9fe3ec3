//! Answers that travel compressed: JSON and text answers are gzip-, zstd- or
//! deflate-encoded when the client's `Accept-Encoding` allows it (Python `requests`,
//! browsers and `tritonclient` all ask). The dense PixelLib answer shrinks by ~300x
//! (docs/performance.md, "Compressed answers").
//!
//! The encoder works on the answer as it streams: it takes the body's frames a piece at a
//! time and yields what the piece compressed to, so a streamed answer stays streamed and
//! what compression adds is bounded (the encoder's state and one piece of output), held
//! against the memory budget like any other buffer. When the budget cannot hold that, the
//! answer goes uncompressed: compression is an optimisation, never a reason to refuse.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;

use super::reply::Reserved;
use super::AppState;

/// Input fed to the encoder per step: what one step may emit is about this much.
const PIECE: usize = 64 << 10;

/// Answers shorter than this (when their length is known) go as they are: the encoding's
/// headers and the client's work would cost more than the bytes saved.
const MIN_BYTES: u64 = 1024;

/// A content coding segserve writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// RFC 1952 gzip.
    Gzip,
    /// RFC 8878 Zstandard.
    Zstd,
    /// HTTP's `deflate`: the zlib format (RFC 1950), as `tritonclient` and browsers read it.
    Deflate,
}

/// gzip and deflate level: 1 compresses the dense PixelLib answer within a few per cent of
/// level 6 at a fraction of the time (docs/performance.md).
const DEFLATE_LEVEL: u32 = 1;
/// zstd level: 1 for the same reason.
const ZSTD_LEVEL: i32 = 1;

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Zstd => "zstd",
            Coding::Deflate => "deflate",
        }
    }

    /// Bytes the encoder holds at most: its state (measured in the tests below: miniz_oxide's
    /// at level 1 about 370 KiB, zstd's at level 1 about 1.3 MiB) with margin, and the
    /// output of one piece in flight besides the one hyper still holds.
    pub fn reserve_bytes(self) -> u64 {
        let state: u64 = match self {
            Coding::Gzip | Coding::Deflate => 512 << 10,
            Coding::Zstd => 2 << 20,
        };
        state + 4 * PIECE as u64
    }

    /// The coding `accept` (an `Accept-Encoding` value) ranks highest; on equal rank
    /// zstd, then gzip, then deflate (zstd is as small and quicker). `None`: send as is.
    pub fn negotiate(accept: &str) -> Option<Coding> {
        let mut best: Option<(f32, u8, Coding)> = None;
        let mut star: Option<f32> = None;
        let mut named = [false; 3];
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let token = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            let coding = match token.as_str() {
                "zstd" => (Coding::Zstd, 0),
                "gzip" | "x-gzip" => (Coding::Gzip, 1),
                "deflate" => (Coding::Deflate, 2),
                "*" => {
                    star = Some(q);
                    continue;
                }
                _ => continue,
            };
            named[coding.1 as usize] = true;
            consider(&mut best, q, coding);
        }
        // `*` stands for every coding the header did not name.
        if let Some(q) = star {
            for (i, c) in [Coding::Zstd, Coding::Gzip, Coding::Deflate]
                .into_iter()
                .enumerate()
            {
                if !named[i] {
                    consider(&mut best, q, (c, i as u8));
                }
            }
        }
        best.map(|(_, _, c)| c)
    }
}

fn consider(best: &mut Option<(f32, u8, Coding)>, q: f32, (coding, rank): (Coding, u8)) {
    if q <= 0.0 {
        return;
    }
    let better = match best {
        None => true,
        Some((bq, br, _)) => q > *bq || (q == *bq && rank < *br),
    };
    if better {
        *best = Some((q, rank, coding));
    }
}

/// Whether an answer with these headers is worth compressing: JSON and text, and KServe's
/// binary answers (JSON and tensors, which Triton compresses too; never pictures, which are
/// compressed already), not encoded yet, and not known to be tiny.
fn compressible(status: StatusCode, headers: &HeaderMap, len: Option<u64>) -> bool {
    if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
        || headers.contains_key(header::CONTENT_ENCODING)
        || len.is_some_and(|n| n < MIN_BYTES)
    {
        return false;
    }
    let Some(ctype) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Ok(mime) = ctype.parse::<mime::Mime>() else {
        return false;
    };
    match (mime.type_().as_str(), mime.subtype().as_str()) {
        ("text", _) => true,
        ("application", "json" | "javascript" | "yaml") => true,
        ("application", "octet-stream") => headers.contains_key("inference-header-content-length"),
        ("application", _) => mime.suffix().is_some_and(|s| s == "json"),
        _ => false,
    }
}

/// The middleware: compresses the answer in the coding the request's `Accept-Encoding`
/// prefers, when compression is on and the answer is worth it.
pub async fn respond(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let coding = s
        .config
        .compression
        .then(|| {
            req.headers()
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .and_then(Coding::negotiate)
        })
        .flatten();
    let resp = next.run(req).await;
    let len = resp.body().size_hint().exact();
    if !compressible(resp.status(), resp.headers(), len) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The answer depends on the request's Accept-Encoding, for caches in between.
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let Some(coding) = coding else {
        return Response::from_parts(parts, body);
    };
    // Runs under the request's meter lease (inside `router::track`), so the reservation
    // mirrors into it and the encoder's allocations are the request's.
    let mut reservation = s.budget.reservation();
    if reservation.grow(coding.reserve_bytes()).is_err() {
        metrics::counter!("segserve_compression_skipped_total").increment(1);
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    let body = Compressing::new(body, coding);
    Response::from_parts(parts, Body::new(Reserved::new(body, reservation)))
}

/// An encoder writing into a `Vec` whose bytes are taken out after each piece.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding) -> std::io::Result<Self> {
        let level = flate2::Compression::new(DEFLATE_LEVEL);
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
            Coding::Deflate => Encoder::Deflate(flate2::write::ZlibEncoder::new(Vec::new(), level)),
            Coding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Deflate(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// The output so far, taken out.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Deflate(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Deflate(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// A body compressed as it is read: each poll feeds at most 64 KiB of the inner
/// body to the encoder and yields whatever came out.
pub struct Compressing<B> {
    inner: B,
    coding: Coding,
    encoder: Option<Encoder>,
    /// Input taken from the inner body and not yet fed.
    pending: Bytes,
    /// Whether the encoder was finished (the inner body ended).
    finished: bool,
}

impl<B> Compressing<B> {
    /// `inner`, to be compressed in `coding`.
    pub fn new(inner: B, coding: Coding) -> Self {
        Compressing {
            inner,
            coding,
            encoder: None,
            pending: Bytes::new(),
            finished: false,
        }
    }

    fn encoder(&mut self) -> std::io::Result<&mut Encoder> {
        if self.encoder.is_none() {
            self.encoder = Some(Encoder::new(self.coding)?);
        }
        Ok(self.encoder.as_mut().expect("just made"))
    }
}

fn failed(e: std::io::Error) -> axum::Error {
    axum::Error::new(e)
}

impl<B> HttpBody for Compressing<B>
where
    B: HttpBody<Data = Bytes, Error = axum::Error> + Unpin,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if !this.pending.is_empty() {
                let piece = this.pending.split_to(this.pending.len().min(PIECE));
                let encoder = this.encoder().map_err(failed)?;
                encoder.write(&piece).map_err(failed)?;
                let out = encoder.take();
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                continue;
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    // Trailers: none of segserve's answers has them; pass them on.
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.finished = true;
                    this.encoder().map_err(failed)?;
                    let tail = this
                        .encoder
                        .take()
                        .expect("made above")
                        .finish()
                        .map_err(failed)?;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    #[test]
    fn negotiation_follows_q_values_then_prefers_zstd() {
        let n = Coding::negotiate;
        assert_eq!(n("gzip, deflate"), Some(Coding::Gzip));
        assert_eq!(n("gzip, deflate, br, zstd"), Some(Coding::Zstd));
        assert_eq!(n("deflate"), Some(Coding::Deflate));
        assert_eq!(n("gzip;q=0.5, deflate"), Some(Coding::Deflate));
        assert_eq!(n("zstd;q=0, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(n("br"), None);
        assert_eq!(n("identity"), None);
        assert_eq!(n(""), None);
        assert_eq!(n("*"), Some(Coding::Zstd));
        assert_eq!(n("zstd;q=0, *;q=0.5"), Some(Coding::Gzip));
        assert_eq!(n("gzip;q=abc"), None);
    }

    #[test]
    fn only_json_and_text_of_some_size_are_compressed() {
        let with = |ctype: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ctype.parse().unwrap());
            h
        };
        let ok = StatusCode::OK;
        assert!(compressible(ok, &with("application/json"), None));
        assert!(compressible(
            ok,
            &with("application/problem+json"),
            Some(5000)
        ));
        assert!(compressible(
            ok,
            &with("text/html; charset=utf-8"),
            Some(5000)
        ));
        assert!(!compressible(ok, &with("application/json"), Some(100)));
        assert!(!compressible(ok, &with("image/png"), Some(1 << 20)));
        assert!(!compressible(ok, &with("application/octet-stream"), None));
        let mut kserve = with("application/octet-stream");
        kserve.insert("inference-header-content-length", "300".parse().unwrap());
        assert!(compressible(ok, &kserve, None));
        assert!(!compressible(
            StatusCode::NO_CONTENT,
            &with("application/json"),
            None
        ));
        let mut done = with("application/json");
        done.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(!compressible(ok, &done, None));
    }

    fn json_like(n: usize) -> Vec<u8> {
        let mut v = b"{\"mask_values\":[".to_vec();
        let mut i = 0u64;
        while v.len() < n {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.extend_from_slice(if i >> 62 == 0 { b"true," } else { b"false," });
        }
        v.extend_from_slice(b"true]}");
        v
    }

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
            Coding::Deflate => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
            Coding::Zstd => zstd::stream::read::Decoder::new(data)
                .unwrap()
                .read_to_end(&mut out),
        }
        .unwrap();
        out
    }

    /// Round trip through every coding, from a body of many frames, with each frame the
    /// encoder yields bounded.
    #[tokio::test]
    async fn a_streamed_body_round_trips_in_bounded_frames() {
        let data = json_like(3 << 20);
        for coding in [Coding::Gzip, Coding::Zstd, Coding::Deflate] {
            let frames: Vec<Result<Bytes, std::io::Error>> = data
                .chunks(700 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let body = Body::from_stream(futures_util::stream::iter(frames));
            let mut c = Compressing::new(body, coding);
            let mut out = Vec::new();
            while let Some(frame) = c.frame().await {
                let bytes = frame.unwrap().into_data().unwrap();
                assert!(
                    bytes.len() <= 3 * PIECE,
                    "{coding:?}: a frame of {}",
                    bytes.len()
                );
                out.extend_from_slice(&bytes);
            }
            assert!(
                out.len() * 4 < data.len(),
                "{coding:?}: {} bytes",
                out.len()
            );
            assert_eq!(decode(coding, &out), data, "{coding:?}");
        }
    }

    /// What an encoder holds, measured by the allocator's meter (zstd's C state by its own
    /// count), stays within what `reserve_bytes` reserves.
    #[test]
    fn the_reservation_covers_the_encoder() {
        let data = json_like(2 << 20);
        for coding in [Coding::Gzip, Coding::Deflate] {
            let lease = crate::meter::Lease::new().expect("a meter slot");
            let _in = lease.enter();
            let before = lease.live();
            let mut e = Encoder::new(coding).unwrap();
            let mut most = 0;
            for piece in data.chunks(PIECE) {
                e.write(piece).unwrap();
                most = most.max(lease.live() - before);
                drop(e.take());
            }
            drop(e.finish().unwrap());
            eprintln!("{coding:?}: encoder held at most {most} bytes");
            if crate::meter::ENABLED {
                assert!(
                    most > 0 && most <= coding.reserve_bytes(),
                    "{coding:?}: {most}"
                );
            }
        }
        // zstd's state is C memory the meter does not see: its own count, after streaming
        // the same answer in pieces as the encoder above does.
        let mut z = zstd::zstd_safe::CCtx::create();
        z.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(ZSTD_LEVEL))
            .unwrap();
        let mut out = vec![0u8; PIECE * 2];
        for piece in data.chunks(PIECE) {
            let mut inb = zstd::zstd_safe::InBuffer::around(piece);
            while inb.pos() < piece.len() {
                let mut outb = zstd::zstd_safe::OutBuffer::around(&mut out[..]);
                z.compress_stream2(
                    &mut outb,
                    &mut inb,
                    zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
                )
                .unwrap();
            }
        }
        let held = z.sizeof() as u64;
        eprintln!("Zstd: encoder state {held} bytes");
        assert!(held > 0 && held + 2 * PIECE as u64 <= Coding::Zstd.reserve_bytes());
    }
}
