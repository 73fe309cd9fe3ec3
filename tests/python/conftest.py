"""Shared fixtures of the Python tests: the release server, started as a user would start it
(default settings, on 127.0.0.1 and a free port), ready before the first test and stopped after
the last; where the photos are; and where the tests leave what they print (target/)."""

import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
TARGET = REPO / "target"
BINARY = TARGET / "release" / "segserve"
MODEL = "yolov8n-seg-320"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(name):
    """Bytes of a photo in ../shared/testdata."""
    return (SHARED / "testdata" / name).read_bytes()


@pytest.fixture(scope="session")
def server():
    """host:port of a running release server with default settings."""
    assert BINARY.is_file(), f"{BINARY} missing: run `cargo build --release` first"
    port = free_port()
    # Default settings: no SEGSERVE_* variable from the caller's environment, no PORT.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSERVE_") and k != "PORT"}
    env["ORT_DISABLE_TELEMETRY"] = "1"
    TARGET.mkdir(exist_ok=True)
    log = open(TARGET / "python-tests-server.log", "wb")
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}; see target/python-tests-server.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the server was not ready within 60 s")
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


class Transcript:
    """Lines for a human to read in the closing note, written to target/<name>."""

    def __init__(self, name):
        self.path = TARGET / name
        self.path.write_text("")

    def __call__(self, *lines):
        with self.path.open("a") as f:
            for line in lines:
                f.write(f"{line}\n")
