"""segserve through the real Triton gRPC client (`tritonclient[grpc]` from PyPI), on the same
port as HTTP (HTTP/2 without TLS), used as its documentation shows: health and metadata, one
photo, several photos in one request, chosen outputs, parameters, and each class of error with
its gRPC status. The answers must be the HTTP client's, tensor for tensor. What the session
prints is saved to target/tritonclient-grpc-session.txt."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MODEL, Transcript, photo

OUTPUTS = ["boxes", "scores", "class_ids", "class_names", "masks", "image_index", "image_sizes"]


@pytest.fixture(scope="module")
def client(server):
    return grpcclient.InferenceServerClient(url=server)


@pytest.fixture(scope="module")
def http(server):
    return httpclient.InferenceServerClient(url=server)


@pytest.fixture(scope="module")
def say():
    return Transcript("tritonclient-grpc-session.txt")


def image_input(*photos):
    """The `image` input holding these encoded photos."""
    image = grpcclient.InferInput("image", [len(photos)], "BYTES")
    image.set_data_from_numpy(np.array(list(photos), dtype=np.object_))
    return image


def http_image_input(*photos):
    image = httpclient.InferInput("image", [len(photos)], "BYTES")
    image.set_data_from_numpy(np.array(list(photos), dtype=np.object_))
    return image


def test_health_and_metadata(client, http, say):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("yolov99")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "segserve"
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL, as_json=True)
    # Protobuf's JSON gives int64 as strings; the shapes are HTTP's.
    assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": ["-1"]}]
    assert [o["name"] for o in model["outputs"]] == OUTPUTS
    rest = http.get_model_metadata(MODEL)
    assert [[int(d) for d in o["shape"]] for o in model["outputs"]] == [o["shape"] for o in rest["outputs"]]
    say(
        ">>> import tritonclient.grpc as grpcclient",
        ">>> client = grpcclient.InferenceServerClient(url='127.0.0.1:5000')   # the HTTP port",
        ">>> client.is_server_live(), client.is_server_ready(), client.is_model_ready(MODEL)",
        str((client.is_server_live(), client.is_server_ready(), client.is_model_ready(MODEL))),
        ">>> client.get_server_metadata(as_json=True)",
        str(meta),
        ">>> client.get_model_metadata(MODEL, as_json=True)['inputs']",
        str(model["inputs"]),
    )


def test_one_photo_is_answered_as_over_http(client, http, say):
    bus = photo("bus.jpg")
    result = client.infer(MODEL, [image_input(bus)])
    over_http = http.infer(MODEL, [http_image_input(bus)])
    names = result.as_numpy("class_names")
    assert list(names).count(b"bus") == 1
    assert list(names).count(b"person") >= 3
    assert result.as_numpy("boxes").dtype == np.float32
    assert result.as_numpy("class_ids").dtype == np.int64
    for name in OUTPUTS:
        np.testing.assert_array_equal(result.as_numpy(name), over_http.as_numpy(name), err_msg=name)
    say(
        "",
        '>>> image = grpcclient.InferInput("image", [1], "BYTES")',
        '>>> image.set_data_from_numpy(np.array([open("bus.jpg", "rb").read()], dtype=np.object_))',
        ">>> result = client.infer(MODEL, [image])",
        '>>> result.as_numpy("class_names")',
        repr(names),
        '>>> result.as_numpy("scores")',
        repr(result.as_numpy("scores")),
        '>>> result.as_numpy("boxes").round()',
        repr(result.as_numpy("boxes").round()),
        '>>> result.as_numpy("masks")[0][:40]   # COCO RLE, decode with pycocotools',
        repr(result.as_numpy("masks")[0][:40]),
    )


def test_several_photos_and_chosen_outputs(client, say):
    photos = [photo("bus.jpg"), photo("zidane.jpg"), photo("bus.jpg")]
    alone = [client.infer(MODEL, [image_input(p)]) for p in photos]
    outputs = [grpcclient.InferRequestedOutput(n) for n in ["class_names", "boxes", "image_index", "image_sizes"]]
    result = client.infer(MODEL, [image_input(*photos)], outputs=outputs)
    got = result.get_response(as_json=True)["outputs"]
    assert [o["name"] for o in got] == ["class_names", "boxes", "image_index", "image_sizes"]
    index = result.as_numpy("image_index")
    assert result.as_numpy("image_sizes").tolist() == [[1080, 810], [720, 1280], [1080, 810]]
    for i, single in enumerate(alone):
        mine = index == i
        np.testing.assert_array_equal(result.as_numpy("class_names")[mine], single.as_numpy("class_names"))
        np.testing.assert_array_equal(result.as_numpy("boxes")[mine], single.as_numpy("boxes"))
    say(
        "",
        '>>> image = grpcclient.InferInput("image", [3], "BYTES")',
        ">>> image.set_data_from_numpy(np.array([bus, zidane, bus], dtype=np.object_))",
        '>>> outputs = [grpcclient.InferRequestedOutput(n) for n in ["class_names", "boxes", "image_index", "image_sizes"]]',
        ">>> result = client.infer(MODEL, [image], outputs=outputs)",
        '>>> result.as_numpy("image_index"), result.as_numpy("class_names")',
        repr(index),
        repr(result.as_numpy("class_names")),
    )


def test_parameters(client, say):
    result = client.infer(
        MODEL, [image_input(photo("bus.jpg"))], parameters={"conf": 0.5, "classes": "person", "max_det": 2}
    )
    names = result.as_numpy("class_names")
    assert list(names) == [b"person", b"person"]
    assert (result.as_numpy("scores") >= 0.5).all()
    say(
        "",
        '>>> client.infer(MODEL, [image], parameters={"conf": 0.5, "classes": "person", "max_det": 2}).as_numpy("class_names")',
        repr(names),
    )


@pytest.mark.parametrize(
    "case, model, data, parameters, status, says",
    [
        ("unknown model", "yolov99", b"x", None, "StatusCode.NOT_FOUND", "yolov99"),
        ("not an image", MODEL, b"hello, world", None, "StatusCode.INVALID_ARGUMENT", "image"),
        ("corrupt PNG", MODEL, b"\x89PNG\r\n\x1a\n not really a png", None, "StatusCode.INVALID_ARGUMENT", ""),
        ("bad parameter", MODEL, b"x", {"conf": 2}, "StatusCode.INVALID_ARGUMENT", "conf"),
        ("unknown parameter", MODEL, b"x", {"confidence": 0.5}, "StatusCode.INVALID_ARGUMENT", "confidence"),
        ("over the body limit", MODEL, b"x" * (21 << 20), None, "StatusCode.RESOURCE_EXHAUSTED", "limit"),
    ],
)
def test_errors(client, say, case, model, data, parameters, status, says):
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, [image_input(data)], parameters=parameters)
    assert e.value.status() == status, e.value
    assert says in e.value.message()
    say(f">>> # {case}", f"InferenceServerException: [{e.value.status()}] {e.value.message()[:160]}")
    # The server stays up and serves the next call.
    assert client.is_server_ready()
