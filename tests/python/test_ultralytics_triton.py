"""Ultralytics' own remote-model client against the release server, unchanged:
`YOLO("http://HOST:PORT/<model>-raw", task="segment")` and the `grpc://` form. Ultralytics reads
the model configuration (the metadata dict in `parameters.metadata`), letterboxes the photo
itself, sends the FP32 [1, 3, 320, 320] tensor, and post-processes the raw outputs itself; its
boxes, classes, scores and masks must equal what Ultralytics outputs running the ONNX file
locally (../shared/golden). Skipped when ultralytics is not installed: it needs torch, which is
heavy (`.venv/bin/pip install -r tests/python/requirements-ultralytics.txt`)."""

import json

import numpy as np
import pytest

from conftest import MODEL, SHARED, Transcript

# Any ImportError (not installed, or torch without its libraries) skips, with how to install.
ultralytics = pytest.importorskip(
    "ultralytics",
    exc_type=ImportError,
    reason="ultralytics is not installed (heavy: torch); "
    ".venv/bin/pip install -r tests/python/requirements-ultralytics.txt to run this test",
)

PHOTOS = ["bus.jpg", "zidane.jpg", "chelsea.png"]


def rle_decode(counts, height, width):
    """COCO's compressed RLE string (column-major) as a boolean H x W mask."""
    runs, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for r in runs:
        flat[pos : pos + r] = value
        pos += r
        value = not value
    return flat.reshape(width, height).T


@pytest.fixture(scope="module")
def say():
    return Transcript("ultralytics-triton-session.txt")


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_yolo_remote_model_equals_the_goldens(server, scheme, say):
    from ultralytics import YOLO

    url = f"{scheme}://{server}/{MODEL}-raw"
    model = YOLO(url, task="segment")
    say(f'>>> model = YOLO("{url}", task="segment")')
    for name in PHOTOS:
        golden = json.loads((SHARED / "golden" / MODEL / f"{name}.json").read_text())
        r = model.predict(str(SHARED / "testdata" / name), retina_masks=True, verbose=False)[0]
        dets = golden["detections"]
        assert len(r.boxes) == len(dets), (name, len(r.boxes), len(dets))
        boxes = r.boxes.xyxy.numpy()
        ious = []
        for i, d in enumerate(dets):
            np.testing.assert_allclose(boxes[i], d["box"], atol=0.05, err_msg=f"{name} box {i}")
            assert int(r.boxes.cls[i]) == d["class_id"], (name, i)
            assert abs(float(r.boxes.conf[i]) - d["score"]) < 1e-4, (name, i)
            want = rle_decode(d["mask"]["counts"], *d["mask"]["size"])
            got = r.masks.data[i].numpy() > 0.5
            assert got.shape == want.shape
            iou = (got & want).sum() / max((got | want).sum(), 1)
            ious.append(iou)
            assert iou >= 0.999, f"{name} mask {i}: IoU {iou}"
        say(
            f'>>> r = model.predict("{name}", retina_masks=True)[0]',
            f"{len(dets)} detections, as the golden: classes {[r.names[int(c)] for c in r.boxes.cls]}, "
            f"largest box difference {np.abs(boxes - np.array([d['box'] for d in dets])).max():.4f} px, "
            f"smallest mask IoU {min(ious):.5f}",
        )
