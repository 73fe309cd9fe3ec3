"""The two client snippets of the original PixelLib API's README, run against segserve with its
default settings (`--pixellib-masks always`): a PixelLib user changes only the host name. The
snippets (pixellib_readme/, byte for byte as published) are loaded with their URL and photo
replaced, run as scripts, and what they print is saved, shortened, to
target/pixellib-readme-clients.txt."""

import contextlib
import io
import pathlib

import numpy as np
import pytest
import requests

from conftest import SHARED, Transcript

SNIPPETS = pathlib.Path(__file__).parent / "pixellib_readme"
ORIGINAL_URL = "http://localhost:85/segmentapi"
ORIGINAL_PHOTO = '"sample.jpeg"'
PHOTO = SHARED / "testdata" / "bus.jpg"


@pytest.fixture(scope="module")
def say():
    return Transcript("pixellib-readme-clients.txt")


def run_snippet(name, server):
    """Runs a snippet as a script; returns its globals and what it printed."""
    path = SNIPPETS / name
    code = path.read_text()
    # Exactly one URL and one photo to replace: nothing else of the snippet changes.
    assert code.count(ORIGINAL_URL) == 1 and code.count(ORIGINAL_PHOTO) == 1, code
    code = code.replace(ORIGINAL_URL, f"http://{server}/segmentapi")
    code = code.replace(ORIGINAL_PHOTO, repr(str(PHOTO)))
    scope = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(path), "exec"), scope)
    return scope, printed.getvalue()


def shorten(text, lines=12, width=400):
    out = [line if len(line) <= width else line[:width] + " ..." for line in text.splitlines()]
    if len(out) > lines:
        out = out[:lines] + [f"... ({len(out) - lines} more lines)"]
    return "\n".join(out)


def test_first_snippet_prints_the_outputs(server, say):
    scope, printed = run_snippet("snippet1.py", server)
    outputs = scope["results"]["outputs"]
    assert printed.strip() == str(outputs)
    assert set(outputs) == {"boxes", "class_ids", "class_names", "mask_shape", "object_counts", "scores"}
    assert outputs["object_counts"] == {"bus": 1, "person": 3}
    assert outputs["mask_shape"] == [1080, 810, 4]
    assert outputs["class_ids"] == [5, 0, 0, 0]
    say("$ python snippet1.py   # the README's 'Code For API Testing'", shorten(printed))


def test_second_snippet_gets_masks_of_mask_shape(server, say, monkeypatch):
    # The snippet's own `requests.post`, watched: requests asks for gzip by itself, so the
    # 22 MB of dense masks travel compressed and the snippet never knows.
    answers = []
    post = requests.post

    def watched_post(*args, **kwargs):
        answers.append(post(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(requests, "post", watched_post)
    scope, printed = run_snippet("snippet2.py", server)
    [answer] = answers
    assert answer.headers["Content-Encoding"] == "gzip", answer.headers
    masks = scope["masks_numpy_array"]
    shape = scope["results"]["outputs"]["mask_shape"]
    assert masks.shape == tuple(shape)
    assert masks.dtype == np.bool_
    # Every instance has pixels, and each lies inside its own box.
    for i, (x1, y1, x2, y2) in enumerate(scope["results"]["outputs"]["boxes"]):
        ys, xs = np.nonzero(masks[:, :, i])
        assert len(ys) > 0
        assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1
    say(
        "",
        "$ python snippet2.py   # the README's 'Obtain the segmentation masks'",
        shorten(printed),
        f"# masks_numpy_array.shape == {masks.shape}, results['outputs']['mask_shape'] == {shape}",
        f"# pixels per mask: {masks.sum(axis=(0, 1)).tolist()}",
        f"# the answer: Content-Encoding {answer.headers['Content-Encoding']}, {len(answer.content)} bytes of JSON",
    )
