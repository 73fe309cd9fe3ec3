//! Criterion benchmarks of each pipeline stage on real photos:
//! decode, letterbox, inference, output decoding + NMS, masks, RLE, JSON.
//! `cargo bench --bench stages` (or `make bench`).

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use segserve::engine::{session, FilterOptions};
use segserve::geometry::Letterbox;
use segserve::imageio::{self, DecodeLimits};
use segserve::pipeline::{Pipeline, SegmentRequest, Segmentation, Timing, Wants};

fn stages(c: &mut Criterion) {
    common::init_ort();
    let name = common::model_name();
    let engine = common::engine(&name);
    let (ih, iw) = engine.info().input_hw;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("decode");
    for photo in ["bus.jpg", "zidane.jpg", "astronaut.png"] {
        let bytes = common::photo(photo);
        g.bench_with_input(BenchmarkId::from_parameter(photo), &bytes, |b, bytes| {
            b.iter(|| imageio::decode(bytes, &DecodeLimits::default()).unwrap())
        });
    }
    g.finish();

    let bus = imageio::decode(&common::photo("bus.jpg"), &DecodeLimits::default()).unwrap();
    let lb = Letterbox::new(bus.width(), bus.height(), iw as u32, ih as u32);
    let mut input = vec![0f32; 3 * ih * iw];
    c.bench_function("letterbox/bus.jpg", |b| {
        b.iter(|| imageio::letterbox_into(&bus, &lb, &mut input))
    });

    let mut sess = session::build_session(&common::model(&name), 1).unwrap();
    let info = engine.info().clone();
    let mut g = c.benchmark_group("inference");
    g.sample_size(30);
    g.bench_function("session.run/1-thread", |b| {
        b.iter(|| segserve::engine::run_session(&mut sess, &info, &input).unwrap())
    });
    g.finish();

    let (raw, _) = rt.block_on(async {
        let ticket = segserve::pipeline::Ticket::take(&engine, None)
            .await
            .unwrap();
        engine.infer(input.clone(), (ih, iw), ticket).await.unwrap()
    });
    let budget = segserve::budget::MemoryBudget::unlimited();
    let filter = FilterOptions::default();
    c.bench_function("postprocess/outputs+nms", |b| {
        b.iter(|| {
            segserve::engine::postprocess::decode(
                &raw.preds,
                raw.anchors,
                info.names.len(),
                &lb,
                &filter,
            )
        })
    });
    c.bench_function("postprocess/outputs+nms+masks", |b| {
        b.iter(|| engine.detect(&raw, &lb, &filter, true))
    });

    let detections = engine.detect(&raw, &lb, &filter, true);
    c.bench_function("rle/bus.jpg-all-masks", |b| {
        b.iter(|| {
            detections
                .iter()
                .map(|d| d.mask.as_ref().unwrap().to_coco_rle().len())
                .sum::<usize>()
        })
    });
    // The 31 MP photo of the cost curve: one ellipse filling a 4000 x 5000 box.
    let big = {
        let (w, h) = (4000u32, 5000u32);
        let bits = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let (dx, dy) = (x as f64 / w as f64 - 0.5, y as f64 / h as f64 - 0.5);
                    (dx * dx + dy * dy < 0.25) as u8
                })
            })
            .collect();
        segserve::mask::BoxMask {
            image_w: 4822,
            image_h: 6429,
            x: 400,
            y: 700,
            w,
            h,
            bits,
        }
    };
    c.bench_function("rle/31MP-one-20MP-mask", |b| {
        b.iter(|| big.to_coco_rle().len())
    });
    let seg = Segmentation {
        width: bus.width(),
        height: bus.height(),
        detections,
        timing: Timing::default(),
        image: None,
    };
    c.bench_function("json/v1-segment", |b| {
        b.iter(|| serde_json::to_vec(&segserve::schema::SegmentResponse::new(&info, &seg)).unwrap())
    });
    c.bench_function("json/segmentapi", |b| {
        b.iter(|| {
            serde_json::to_vec(&segserve::api::pixellib::PixelLibOutputs::new(&info, &seg)).unwrap()
        })
    });

    let bytes = bytes::Bytes::from(common::photo("bus.jpg"));
    let pipeline = Pipeline::default();
    let mut g = c.benchmark_group("end-to-end");
    g.sample_size(30);
    g.bench_function("pipeline/bus.jpg", |b| {
        b.iter(|| {
            let req = SegmentRequest::new(bytes.clone(), budget.reservation(), Wants::Masks);
            rt.block_on(pipeline.segment(&engine, req, |seg, _| Ok(seg.detections.len())))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = stages
}
criterion_main!(benches);
