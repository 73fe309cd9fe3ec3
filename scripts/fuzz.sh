#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: image decoding + letterbox, the
# upload body extractor, and the COCO RLE codec. Needs the nightly toolchain; installs
# cargo-fuzz if it is missing. Crashes land in fuzz/artifacts/<target>/ and fail the run.
#
#   scripts/fuzz.sh          # 60 s per target
#   scripts/fuzz.sh 600      # 10 minutes per target
#   scripts/fuzz.sh 60 rle   # one target
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_letterbox upload rle)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export ORT_DISABLE_TELEMETRY=1

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "[fuzz] $t for ${seconds}s"
  # -rss_limit_mb: the decode limits in the target keep honest inputs far below this; an
  # input that gets near it is a finding. -max_len: uploads are small at the fuzzer's scale.
  cargo +nightly fuzz run --fuzz-dir . -O "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=20 \
    -print_final_stats=1 2>&1 | grep -E "^(#|==|INFO: Running|Done|stat::|SUMMARY|thread|Failing)" | tail -n 12
done
