//! Renderer unit tests: what changes, what must not, and labels at the photo's borders.

use image::Rgb;

use super::*;
use crate::mask::BoxMask;

const GREY: Rgb<u8> = Rgb([90, 100, 110]);

fn names() -> Vec<String> {
    ["person", "bicycle", "car", "motorcycle", "airplane", "bus"]
        .map(String::from)
        .to_vec()
}

/// A detection whose mask is the filled rectangle `m` (x, y, w, h) inside box `bbox`.
fn det(
    class_id: usize,
    score: f32,
    bbox: [f32; 4],
    m: (u32, u32, u32, u32),
    img: (u32, u32),
) -> Detection {
    Detection {
        bbox,
        class_id,
        score,
        mask: Some(BoxMask {
            image_w: img.0,
            image_h: img.1,
            x: m.0,
            y: m.1,
            w: m.2,
            h: m.3,
            bits: vec![1; (m.2 * m.3) as usize],
        }),
    }
}

#[test]
fn pixels_under_a_mask_change_and_pixels_outside_everything_do_not() {
    let (w, h) = (320, 240);
    let photo = RgbImage::from_pixel(w, h, GREY);
    let dets = vec![
        det(
            0,
            0.87,
            [100.0, 80.0, 200.0, 200.0],
            (110, 90, 80, 100),
            (w, h),
        ),
        det(
            5,
            0.55,
            [10.0, 150.0, 60.0, 230.0],
            (15, 160, 40, 60),
            (w, h),
        ),
    ];
    let out = render(photo.clone(), &dets, &names());
    assert_eq!(out.dimensions(), (w, h));

    // Under each mask (away from the label): a 50/50 blend with the class colour.
    for (d, (x, y)) in dets.iter().zip([(150, 180), (35, 215)]) {
        let c = class_colour(d.class_id);
        let want: Vec<u8> = GREY
            .0
            .iter()
            .zip(c)
            .map(|(g, c)| (*g as u16 + c as u16).div_ceil(2) as u8)
            .collect();
        assert_eq!(
            out.get_pixel(x, y).0.to_vec(),
            want,
            "pixel ({x},{y}) of class {}",
            d.class_id
        );
    }
    // Everything outside every box and label is untouched.
    let boxes: Vec<Rect> = dets.iter().filter_map(|d| box_rect(w, h, d.bbox)).collect();
    let labels: Vec<Rect> = dets
        .iter()
        .map(|d| label_rect(w, h, d.bbox, &label_text(d, &names())))
        .collect();
    let mut untouched = 0;
    for (x, y, p) in out.enumerate_pixels() {
        if boxes.iter().chain(&labels).any(|r| r.contains(x, y)) {
            continue;
        }
        assert_eq!(
            *p, GREY,
            "pixel ({x},{y}) outside every box and label changed"
        );
        untouched += 1;
    }
    assert!(untouched > (w * h / 2) as usize);
    // The box outline itself is drawn in the class colour.
    assert_eq!(out.get_pixel(100, 150).0, class_colour(0));
    assert_eq!(out.get_pixel(199, 150).0, class_colour(0));
}

#[test]
fn detections_without_masks_get_boxes_only() {
    let photo = RgbImage::from_pixel(200, 200, GREY);
    let mut d = det(2, 0.5, [50.0, 50.0, 150.0, 150.0], (0, 0, 1, 1), (200, 200));
    d.mask = None;
    let out = render(photo.clone(), &[d], &names());
    assert_eq!(
        *out.get_pixel(100, 100),
        GREY,
        "inside the box, no mask: unchanged"
    );
    assert_eq!(out.get_pixel(50, 100).0, class_colour(2));
}

#[test]
fn labels_stay_inside_the_image_at_the_borders() {
    let (w, h) = (300, 200);
    let corners = [
        [0.0, 0.0, 40.0, 30.0],       // top-left: no room above
        [280.0, 0.0, 300.0, 15.0],    // top-right: label wider than the box
        [0.0, 190.0, 20.0, 200.0],    // bottom-left
        [290.0, 195.0, 300.0, 200.0], // bottom-right, tiny box
        [-15.0, -10.0, 310.0, 205.0], // larger than the photo
    ];
    for bbox in corners {
        let d = det(3, 0.99, bbox, (0, 0, 1, 1), (w, h));
        let text = label_text(&d, &names());
        assert_eq!(text, "motorcycle 0.99");
        let r = label_rect(w, h, bbox, &text);
        assert!(r.x + r.w <= w && r.y + r.h <= h, "{bbox:?} -> {r:?}");
        assert!(r.w > 60 && r.h > 10, "label too small to read: {r:?}");
        // Rendering draws it there without panicking, and ink lands inside the label.
        let out = render(RgbImage::from_pixel(w, h, GREY), &[d], &names());
        let bg = class_colour(3);
        let ink = (r.y..r.y + r.h)
            .flat_map(|y| (r.x..r.x + r.w).map(move |x| (x, y)))
            .filter(|&(x, y)| out.get_pixel(x, y).0 != bg)
            .count();
        assert!(ink > 50, "no text visible in the label at {bbox:?}");
    }
}

#[test]
fn label_sits_above_the_box_when_there_is_room() {
    let text = "person 0.87";
    let r = label_rect(640, 480, [100.0, 200.0, 300.0, 400.0], text);
    assert_eq!((r.x, r.y + r.h), (100, 200));
}

#[test]
fn colours_are_stable_per_class_and_distinct_between_neighbours() {
    assert_eq!(class_colour(0), class_colour(0));
    assert_eq!(class_colour(0), class_colour(20));
    for i in 0..19 {
        assert_ne!(class_colour(i), class_colour(i + 1));
    }
}

#[test]
fn boxes_outside_the_photo_are_skipped() {
    assert_eq!(box_rect(100, 100, [120.0, 10.0, 150.0, 50.0]), None);
    let out = render(
        RgbImage::from_pixel(100, 100, GREY),
        &[det(
            0,
            0.9,
            [120.0, 10.0, 150.0, 50.0],
            (0, 0, 1, 1),
            (100, 100),
        )],
        &names(),
    );
    // The 1x1 mask at (0, 0) is blended, nothing else.
    assert!(
        out.enumerate_pixels()
            .filter(|(_, _, p)| **p != GREY)
            .count()
            <= 1
    );
}

#[test]
fn encodings_round_trip_at_full_size() {
    let img = RgbImage::from_fn(81, 108, |x, y| Rgb([x as u8, y as u8, 7]));
    let png = encode(&img, Encoding::Png).unwrap();
    let back = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(back, img, "PNG is lossless");
    let jpg = encode(&img, Encoding::Jpeg).unwrap();
    assert_eq!(&jpg[..2], &[0xFF, 0xD8]);
    let back = image::load_from_memory(&jpg).unwrap();
    assert_eq!((back.width(), back.height()), (81, 108));
}
