"""The examples of docs/protocols.md and docs/api.md, run as written against the release
server: every ```python block, and the curl blocks of the protocol, with only the server's
address and the photos' folder replaced (the docs use `make run`'s localhost:5000 and
examples/photos, relative to the repository's root)."""

import contextlib
import io
import re
import subprocess

import pytest

from conftest import REPO

DOC = REPO / "docs" / "protocols.md"
DOCS = [DOC, REPO / "docs" / "api.md"]


def blocks(lang, docs=(DOC,)):
    return [b for d in docs for b in re.findall(rf"```{lang}\n(.*?)```", d.read_text(), re.S)]


def localise(code, server):
    return code.replace("localhost:5000", server).replace(
        "examples/photos/", f"{REPO / 'examples' / 'photos'}/"
    )


PYTHON = blocks("python", DOCS)


def test_the_doc_has_examples():
    assert len(PYTHON) >= 6


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_example_runs(server, index, tmp_path, monkeypatch):
    # Examples that save pictures save them here, not in the repository.
    monkeypatch.chdir(tmp_path)
    code = localise(PYTHON[index], server)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"docs python block {index}", "exec"), {"__name__": "__main__"})
    assert printed.getvalue().strip(), "the example prints nothing"


def test_curl_examples_run(server, tmp_path):
    shell = [b for b in blocks("bash") if "$URL/v2/models" in b]
    assert len(shell) == 2
    script = localise("set -euo pipefail\n" + "\n".join(shell), server)
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # The raw binary request's JSON part, then the JSON request's whole answer.
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, out.stdout
    assert '"binary_data_size"' in lines[0] and '"class_names"' in lines[0]
    assert '"data":["bus","person","person","person"]' in lines[1]
