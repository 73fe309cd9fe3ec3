"""segserve through the real Triton client (`tritonclient[http]` from PyPI), used as its
documentation shows: default settings first (the photo goes as raw bytes through the binary
tensor data extension, and outputs come back binary), then JSON, chosen outputs, several
photos in one request, parameters, metadata and health calls, and errors. What the session
prints is saved to target/tritonclient-session.txt."""

import base64
import gzip
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MODEL, Transcript, photo

OUTPUTS = ["boxes", "scores", "class_ids", "class_names", "masks", "image_index", "image_sizes"]


@pytest.fixture(scope="module")
def client(server):
    return httpclient.InferenceServerClient(url=server)


@pytest.fixture(scope="module")
def say():
    return Transcript("tritonclient-session.txt")


def image_input(*photos):
    """The `image` input holding these encoded photos, the client's default way (binary)."""
    image = httpclient.InferInput("image", [len(photos)], "BYTES")
    image.set_data_from_numpy(np.array(list(photos), dtype=np.object_))
    return image


def test_health_and_metadata(client, say):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    meta = client.get_server_metadata()
    assert meta["name"] == "segserve"
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in model["outputs"]] == OUTPUTS
    say(
        ">>> client = httpclient.InferenceServerClient(url=...)",
        ">>> client.is_server_live(), client.is_server_ready(), client.is_model_ready(MODEL)",
        str((client.is_server_live(), client.is_server_ready(), client.is_model_ready(MODEL))),
        ">>> client.get_server_metadata()",
        str(meta),
        ">>> client.get_model_metadata(MODEL)['inputs']",
        str(model["inputs"]),
    )


def test_default_settings_get_the_bus_and_the_people(client, say):
    bus = photo("bus.jpg")
    result = client.infer(MODEL, [image_input(bus)])
    # Binary all the way: the answer's tensors followed its JSON.
    for out in result.get_response()["outputs"]:
        assert "binary_data_size" in out["parameters"], out
    names = result.as_numpy("class_names")
    boxes = result.as_numpy("boxes")
    scores = result.as_numpy("scores")
    assert list(names).count(b"bus") == 1
    assert list(names).count(b"person") >= 3
    assert boxes.shape == (len(names), 4) and boxes.dtype == np.float32
    assert result.as_numpy("class_ids").dtype == np.int64
    assert (np.diff(scores) <= 0).all(), "sorted by score"
    assert result.as_numpy("image_sizes").tolist() == [[1080, 810]]
    masks = result.as_numpy("masks")
    assert len(masks) == len(names) and all(len(m) > 0 for m in masks)
    say(
        "",
        '>>> image = httpclient.InferInput("image", [1], "BYTES")',
        '>>> image.set_data_from_numpy(np.array([open("bus.jpg", "rb").read()], dtype=np.object_))',
        ">>> result = client.infer(MODEL, [image])",
        '>>> result.as_numpy("class_names")',
        repr(names),
        '>>> result.as_numpy("scores")',
        repr(scores),
        '>>> result.as_numpy("boxes").round()',
        repr(boxes.round()),
        '>>> result.as_numpy("masks")[0][:40]   # COCO RLE, decode with pycocotools',
        repr(masks[0][:40]),
    )


def test_json_input_and_outputs(client, say):
    bus = photo("bus.jpg")
    binary = client.infer(MODEL, [image_input(bus)])
    # binary_data=False: the client puts BYTES in the JSON as UTF-8 text, which a JPEG is not,
    # so it refuses before sending anything.
    image = httpclient.InferInput("image", [1], "BYTES")
    with pytest.raises(InferenceServerException, match="UTF-8"):
        image.set_data_from_numpy(np.array([bus], dtype=np.object_), binary_data=False)
    # Base64 text is UTF-8: that is the JSON way.
    image.set_data_from_numpy(np.array([base64.b64encode(bus)], dtype=np.object_), binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in OUTPUTS]
    result = client.infer(MODEL, [image], outputs=outputs)
    for out in result.get_response()["outputs"]:
        assert "data" in out and "binary_data_size" not in out.get("parameters", {}), out
    for name in OUTPUTS:
        got = result.as_numpy(name)
        if got.dtype == np.object_:
            # The client gives JSON BYTES as str and binary BYTES as bytes (so with Triton too).
            got = np.array([s.encode() for s in got.ravel()], dtype=np.object_).reshape(got.shape)
        np.testing.assert_array_equal(got, binary.as_numpy(name), err_msg=name)
    say(
        "",
        ">>> image.set_data_from_numpy(np.array([jpeg], dtype=np.object_), binary_data=False)",
        "InferenceServerException: " + _refusal(bus),
        ">>> image.set_data_from_numpy(np.array([base64.b64encode(jpeg)], dtype=np.object_), binary_data=False)",
        ">>> result = client.infer(MODEL, [image], outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in OUTPUTS])",
        '>>> result.get_response()["outputs"][3]   # class_names, as JSON',
        str(result.get_response()["outputs"][3]),
    )


def _refusal(jpeg):
    image = httpclient.InferInput("image", [1], "BYTES")
    try:
        image.set_data_from_numpy(np.array([jpeg], dtype=np.object_), binary_data=False)
    except InferenceServerException as e:
        return e.message()[:100] + "..."
    return "(accepted)"


def test_requested_outputs_binary_and_json(client, say):
    outputs = [
        httpclient.InferRequestedOutput("boxes"),  # binary, the client's default
        httpclient.InferRequestedOutput("class_names", binary_data=False),
    ]
    result = client.infer(MODEL, [image_input(photo("bus.jpg"))], outputs=outputs)
    got = result.get_response()["outputs"]
    assert [o["name"] for o in got] == ["boxes", "class_names"]
    assert got[0]["parameters"]["binary_data_size"] == 16 * len(got[1]["data"])
    assert "data" not in got[0]
    assert result.as_numpy("boxes").shape == (len(got[1]["data"]), 4)
    say(
        "",
        '>>> outputs = [httpclient.InferRequestedOutput("boxes"), httpclient.InferRequestedOutput("class_names", binary_data=False)]',
        ">>> client.infer(MODEL, [image], outputs=outputs).get_response()",
        str(result.get_response()),
    )


def test_several_photos_in_one_request(client, say):
    photos = [photo("bus.jpg"), photo("zidane.jpg"), photo("bus.jpg")]
    alone = [client.infer(MODEL, [image_input(p)]) for p in photos]
    result = client.infer(MODEL, [image_input(*photos)])
    index = result.as_numpy("image_index")
    names = result.as_numpy("class_names")
    boxes = result.as_numpy("boxes")
    assert result.as_numpy("image_sizes").tolist() == [[1080, 810], [720, 1280], [1080, 810]]
    for i, single in enumerate(alone):
        mine = index == i
        np.testing.assert_array_equal(names[mine], single.as_numpy("class_names"))
        np.testing.assert_array_equal(boxes[mine], single.as_numpy("boxes"))
    say(
        "",
        '>>> image = httpclient.InferInput("image", [3], "BYTES")',
        ">>> image.set_data_from_numpy(np.array([bus, zidane, bus], dtype=np.object_))",
        ">>> result = client.infer(MODEL, [image])",
        '>>> result.as_numpy("image_index"), result.as_numpy("class_names")',
        repr(index),
        repr(names),
        '>>> result.as_numpy("image_sizes")',
        repr(result.as_numpy("image_sizes")),
    )


def test_parameters(client, say):
    result = client.infer(
        MODEL, [image_input(photo("bus.jpg"))], parameters={"conf": 0.8, "classes": "person"}
    )
    names = result.as_numpy("class_names")
    assert len(names) > 0 and set(names) == {b"person"}
    assert (result.as_numpy("scores") >= 0.8).all()
    say(
        "",
        '>>> client.infer(MODEL, [image], parameters={"conf": 0.8, "classes": "person"}).as_numpy("class_names")',
        repr(names),
    )


@pytest.mark.parametrize(
    "case, model, data, parameters, status, says",
    [
        ("unknown model", "yolov99", b"x", None, "404", "yolov99"),
        ("not an image", MODEL, b"hello, world", None, "415", "image"),
        ("corrupt PNG", MODEL, b"\x89PNG\r\n\x1a\n not really a png", None, "422", ""),
        ("bad parameter", MODEL, b"x", {"conf": 2}, "400", "conf"),
        ("unknown parameter", MODEL, b"x", {"confidence": 0.5}, "400", "confidence"),
    ],
)
def test_errors(client, say, case, model, data, parameters, status, says):
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, [image_input(data)], parameters=parameters)
    assert e.value.status() == status, e.value
    assert says in e.value.message()
    say(f">>> # {case}", f"InferenceServerException: [{e.value.status()}] {e.value.message()}")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compression_both_ways(client, say, algorithm):
    """The client's own compression options: the request body compressed, the answer asked
    compressed. What went over the wire is seen by wrapping the client's HTTP stub."""
    seen = []
    stub = client._client_stub
    post = stub.post

    def recording_post(*args, **kwargs):
        response = post(*args, **kwargs)
        seen.append((kwargs.get("headers") or {}, response.get("Content-Encoding"), kwargs["body"]))
        return response

    bus = photo("bus.jpg")
    plain = client.infer(MODEL, [image_input(bus)])
    stub.post = recording_post
    try:
        squeezed = client.infer(
            MODEL,
            [image_input(bus)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
    finally:
        stub.post = post
    [(headers, answered, sent)] = seen
    assert headers["Content-Encoding"] == algorithm and headers["Accept-Encoding"] == algorithm
    assert answered == algorithm, "the answer came back compressed"
    inflate = gzip.decompress if algorithm == "gzip" else zlib.decompress
    assert bus in inflate(sent), "the request went compressed, the photo inside"
    for name in OUTPUTS:
        assert (squeezed.as_numpy(name) == plain.as_numpy(name)).all(), name
    say(
        "",
        f'>>> client.infer(MODEL, [image], request_compression_algorithm="{algorithm}",',
        f'...              response_compression_algorithm="{algorithm}").as_numpy("class_names")',
        repr(squeezed.as_numpy("class_names")),
        f"# request Content-Encoding: {headers['Content-Encoding']}; answer Content-Encoding: {answered}",
    )
