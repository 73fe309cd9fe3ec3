#!/usr/bin/env bash
# The Python tests (tests/python): the real tritonclient[http,grpc] from PyPI, the original
# PixelLib README's two clients, and (when tests/python/requirements-ultralytics.txt is
# installed in the venv; skipped otherwise) Ultralytics' Triton client, against the release
# server, which the tests start on 127.0.0.1 and a free port with default settings. Needs `make setup` and
# scripts/setup-test.sh (the .venv/); `make test` runs all three. What the clients print is
# saved in target/tritonclient-session.txt, target/tritonclient-grpc-session.txt,
# target/ultralytics-triton-session.txt and target/pixellib-readme-clients.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DISABLE_TELEMETRY=1
# Auditor mode: a request whose measured memory passes its reservation answers 500, so an
# estimate miss fails these tests too.
export SEGSERVE_AUDIT_MEMORY=1
[ -x .venv/bin/python ] || { echo "no .venv/: run scripts/setup-test.sh (or make test)" >&2; exit 1; }
cargo build --release --locked
.venv/bin/python -m pytest -q -p no:cacheprovider tests/python "$@"
