//! The request body extractor, `api::upload::read_image`: the input's first line is the
//! Content-Type header, the rest the body (multipart or raw). Must never panic, and an
//! accepted image must be non-empty, within the body limit and held by its reservation, and
//! nothing may stay reserved afterwards.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use segserve::api::body::BodyLimits;
use segserve::api::upload::{read_image, Sender};
use segserve::budget::MemoryBudget;
use segserve::config::FormLimits;

const LIMIT: usize = 64 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (ctype, body) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(ctype) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let form = FormLimits {
        max_parts: 8,
        max_field_bytes: 1024,
    };
    let limits = BodyLimits {
        max_bytes: LIMIT,
        timeout: Duration::from_secs(10),
        min_rate: 0,
    };
    let budget = MemoryBudget::new(1 << 20);
    for raw in [false, true] {
        let body = Body::from(body.to_vec());
        let mut reservation = budget.reservation();
        let from = Sender {
            budget: &budget,
            client: None,
        };
        let got = runtime().block_on(read_image(
            &headers,
            body,
            limits,
            form,
            raw,
            &mut reservation,
            from,
        ));
        if let Ok(bytes) = got {
            assert!(!bytes.is_empty() && bytes.len() <= LIMIT);
            // The bytes are held by the reservation while they live.
            assert!(reservation.held() >= bytes.len() as u64);
        }
        drop(reservation);
        assert_eq!(budget.used(), 0, "a reservation outlived its request");
    }
});
