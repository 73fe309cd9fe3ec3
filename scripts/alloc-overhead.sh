#!/usr/bin/env bash
# The counting allocator's cost (src/meter.rs), measured side by side: the release server
# built with the default features and with `--no-default-features` (no meter), each started
# in turn on 127.0.0.1 and driven by examples/loadgen.rs with bus.jpg at concurrency 1 and 8,
# alternating A/B for ROUNDS rounds so drift between them cancels. Prints each run and the
# mean ratios (meter / no meter) of p50 at c=1 and req/s at c=8.
#
#   scripts/alloc-overhead.sh [ROUNDS] [SECONDS]     # default 3 rounds of 8 s a level
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-8}"
export ORT_DISABLE_TELEMETRY=1
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}"
target="${CARGO_TARGET_DIR:-target}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

cargo build --release --locked --no-default-features --bin segserve
cp "$target/release/segserve" "$dir/plain"
cargo build --release --locked --bin segserve --example loadgen
cp "$target/release/segserve" "$dir/meter"

run() { # binary -> one JSON line per level
  local bin="$1" port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RUST_LOG=warn "$dir/$bin" serve --host 127.0.0.1 --port "$port" --shutdown-drain-ms 0 >/dev/null 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
  for _ in 1 2 3 4 5; do
    curl -sf -o /dev/null --data-binary @../shared/testdata/bus.jpg -H 'content-type: image/jpeg' \
      "http://127.0.0.1:$port/v1/segment"
  done
  "$target/release/examples/loadgen" --url "http://127.0.0.1:$port/v1/segment?masks=rle" \
    --photo ../shared/testdata/bus.jpg --levels 1,8 --seconds "$seconds" | sed "s/^/$bin /"
  kill -TERM "$pid"
  wait "$pid" || true
}

for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="meter plain"; else order="plain meter"; fi
  for bin in $order; do run "$bin"; done
done | tee "$dir/runs"

python3 - "$dir/runs" <<'EOF'
import json, sys, statistics
runs = {}
for line in open(sys.argv[1]):
    bin, _, js = line.partition(" ")
    if not js.strip().startswith("{"):
        continue
    v = json.loads(js)
    runs.setdefault((bin, v["concurrency"]), []).append(v)
def mean(bin, c, key):
    return statistics.mean(r[key] for r in runs[(bin, c)])
p50 = mean("meter", 1, "p50_ms") / mean("plain", 1, "p50_ms")
rps = mean("meter", 8, "rps") / mean("plain", 8, "rps")
print(f"c=1 p50: meter {mean('meter', 1, 'p50_ms'):.2f} ms, plain {mean('plain', 1, 'p50_ms'):.2f} ms, ratio {p50:.3f} ({(p50 - 1) * 100:+.1f}%)")
print(f"c=8 req/s: meter {mean('meter', 8, 'rps'):.1f}, plain {mean('plain', 8, 'rps'):.1f}, ratio {rps:.3f} ({(1 - rps) * 100:+.1f}% fewer)")
EOF
