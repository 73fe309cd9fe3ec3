#!/usr/bin/env bash
# Overload and soak test: starts the release server on 127.0.0.1 (a free port) with the
# memory budget a 2 GiB pod gets by default (1 GiB), drives it with examples/soak.rs at
# concurrency 64 with a mix of good, bad and resource-hungry (attack) requests,
# and fails on any 5xx other than a shed 503 with Retry-After, any connection error or
# unanswered request, RSS growth of 10% or more between the start and end of the run, or
# a peak RSS above the idle RSS plus the memory budget (and 5% for connection buffers and
# allocator slack, which the budget does not count). First (--goodput SECONDS, 20 by
# default, 0 skips it) goodput under overload: photos at concurrency 8, then 64 retrying at
# once; the second must serve at least 85% of the first's photos a second.
#
#   scripts/soak.sh                  # 2 minutes
#   scripts/soak.sh --duration 600   # longer
#   scripts/soak.sh --duration 25    # what `make test` runs (CI budget)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=120
concurrency=64
budget_mib=1024
goodput=20
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --goodput) goodput="$2"; shift 2 ;;
    *) echo "usage: $0 [--duration SECONDS] [--concurrency N] [--goodput SECONDS (0: skip)]" >&2; exit 2 ;;
  esac
done

export ORT_DISABLE_TELEMETRY=1
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --bin segserve --example soak
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
# Warnings only: the soak sends thousands of requests, and per-request info lines would
# make the log itself the memory and disk hog.
RUST_LOG=warn SEGSERVE_AUDIT_MEMORY=1 "$target/release/segserve" serve --host 127.0.0.1 --port "$port" \
  --memory-budget "${budget_mib}MiB" --shutdown-drain-ms 0 >"$log" 2>&1 &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

photos=()
for p in ../shared/testdata/*.jpg ../shared/testdata/*.png; do photos+=(--photo "$p"); done
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
# Warm up once per photo, so the driver's first RSS sample is the idle server after real
# requests (ONNX Runtime's arenas, the allocator's first pages), what the budget adds to.
for p in ../shared/testdata/*.jpg ../shared/testdata/*.png; do
  curl -sf -o /dev/null -F "image=@$p" "http://127.0.0.1:$port/v1/segment"
done
status=0
goodput_args=()
[ "$goodput" -gt 0 ] && goodput_args=(--goodput "$goodput")
"$target/release/examples/soak" --url "http://127.0.0.1:$port" --pid "$server" "${goodput_args[@]}" \
  --duration "$duration" --concurrency "$concurrency" --budget-mib "$budget_mib" "${photos[@]}" || status=$?
if ! kill -0 "$server" 2>/dev/null; then
  echo "soak: the server died; its log:" >&2
  cat "$log" >&2
  status=1
elif [ "$status" -ne 0 ]; then
  echo "soak: server log tail:" >&2
  tail -n 30 "$log" >&2
fi
exit "$status"
