#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on an NVIDIA machine that has no internet and no
# Rust toolchain: the stripped release binary, the bare-ONNX-Runtime floor and the load
# generator (examples/ort_floor.rs, examples/loadgen.rs), the GPU build of ONNX Runtime
# 1.31.1 (onnxruntime-gpu wheel: the library and its CUDA/TensorRT provider libraries), the
# default model and the dynamic-batch one, the test photos and the default model's golden
# outputs, and the check scripts themselves.
#
# One tar stream, compressed with `zstd -19 --long=27` and cut into numbered parts of at
# most 60 MB, because each call to the GPU machine carries at most 64 MiB:
#   target/gpu-bundle/segserve-gpu.tar.zst.00, .01, ...
#   target/gpu-bundle/SHA256SUMS
#   target/gpu-bundle/zstandard-*.whl   (a decompressor, in case the machine has no zstd)
# The CUDA 13 / cuDNN 9 libraries are not packed: the GPU machine has them (PyTorch's
# nvidia-* wheels), and gpu-check.sh finds them there.
#
# Usage: scripts/gpu-bundle.sh   (PART_BYTES and ZSTD_LEVEL override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DISABLE_TELEMETRY=1

OUT=target/gpu-bundle
NAME=segserve-gpu
PART_BYTES="${PART_BYTES:-60000000}"
ZSTD_LEVEL="${ZSTD_LEVEL:-19}"
MODELS="yolov8n-seg-320 yolov8n-seg-dyn"
SHARED="${SEGSERVE_SHARED:-../shared}"

say() { printf '\033[1m[gpu-bundle]\033[0m %s\n' "$*"; }

command -v zstd >/dev/null || {
  say "installing zstd with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null
}

DEVICE=cuda MODELS="$MODELS" scripts/setup.sh
say "cargo build --release (segserve, examples ort_floor and loadgen)"
cargo build --release --locked --bin segserve --example ort_floor --example loadgen 2>&1 | tail -1

stage="$OUT/stage/$NAME"
rm -rf "$OUT"
mkdir -p "$stage"/{bin,ort,models,testdata,golden,check}
for b in target/release/segserve target/release/examples/ort_floor target/release/examples/loadgen; do
  strip -o "$stage/bin/$(basename "$b")" "$b"
done
cp .ort/gpu/libonnxruntime.so.1.31.1 .ort/gpu/libonnxruntime_providers_shared.so \
   .ort/gpu/libonnxruntime_providers_cuda.so .ort/gpu/libonnxruntime_providers_tensorrt.so "$stage/ort/"
for m in $MODELS; do cp "models/$m.onnx" "$stage/models/"; done
cp "$SHARED"/testdata/* "$stage/testdata/"
cp -r "$SHARED/golden/yolov8n-seg-320" "$stage/golden/"
cp "$SHARED/golden/README.md" "$stage/golden/"
cp scripts/gpu-check.sh scripts/gpu_check.py "$stage/check/"
{
  echo "segserve GPU bundle"
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  echo "onnxruntime-gpu: 1.31.1 (CUDA 13, cuDNN 9; TensorRT 10 for the tensorrt provider)"
  echo
  (cd "$stage" && find . -type f ! -name MANIFEST | sort | xargs sha256sum)
} > "$stage/MANIFEST"
chmod -R a+rX "$stage"

say "tar | zstd -$ZSTD_LEVEL --long=27 | split into ${PART_BYTES}-byte parts (minutes on 2 cores)"
started=$(date +%s)
tar -C "$OUT/stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' -cf - "$NAME" \
  | zstd -q -"$ZSTD_LEVEL" --long=27 -T"${ZSTD_THREADS:-2}" \
  | split -b "$PART_BYTES" -d -a 2 - "$OUT/$NAME.tar.zst."
rm -rf "$OUT/stage"

# A pure-wheel fallback decompressor (python-zstandard) for a machine without the zstd tool.
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --python-version 3.12 -d "$OUT" "zstandard==0.25.0"
(cd "$OUT" && sha256sum "$NAME".tar.zst.* zstandard-*.whl > SHA256SUMS)

say "done in $(( $(date +%s) - started )) s: $OUT"
ls -l "$OUT" | awk 'NR > 1 { printf "    %-70s %12d bytes (%.1f MB)\n", $9, $5, $5 / 1e6 }'
total=$(cat "$OUT"/"$NAME".tar.zst.* | wc -c)
say "compressed total $(( total / 1000000 )) MB in $(ls "$OUT"/"$NAME".tar.zst.* | wc -l) parts; each part is one call's carry (<= 64 MiB)"
