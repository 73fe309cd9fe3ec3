#!/usr/bin/env bash
# One-time setup, safe to re-run: what building and running the server needs (`make run`):
# system packages for the build, the ONNX Runtime library (from the onnxruntime PyPI wheel)
# into .ort/, and the models into models/ with sha256 checks. Everything lands in git-ignored
# folders. What only the tests need is scripts/setup-test.sh (`make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_LIB=".ort/libonnxruntime.so.${ORT_VERSION}"
MIRROR="${SEGSERVE_MODEL_MIRROR:-../shared/models}"
# Models to fetch; `make setup MODELS="a b"` narrows it. The default model comes first.
MODELS="${MODELS:-yolov8n-seg-320 yolov8n-seg-320-int8 yolov8n-seg-640 yolov8n-seg-dyn yolov8n-seg-320-nms yolov12n-det-640}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# nasm builds libjpeg-turbo's SIMD decoder (mozjpeg-sys); a C compiler builds the rest.
need_pkgs=()
command -v nasm >/dev/null || need_pkgs+=(nasm)
command -v cc >/dev/null || need_pkgs+=(gcc)
command -v unzip >/dev/null || command -v python3 >/dev/null || need_pkgs+=(unzip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]} with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [ -f "$ORT_LIB" ]; then
  say "ONNX Runtime ${ORT_VERSION}: already in .ort/"
else
  say "downloading onnxruntime==${ORT_VERSION} wheel from PyPI for libonnxruntime"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$tmp" "onnxruntime==${ORT_VERSION}"
  mkdir -p .ort
  python3 - "$tmp" "$ORT_LIB" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/onnxruntime-*.whl")[0]
name = "onnxruntime/capi/" + sys.argv[2].split("/")[-1]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read(name))
PY
  chmod 755 "$ORT_LIB"
  say "ONNX Runtime: $ORT_LIB"
fi

sha_of() { sed -n "s/^| \`$1.onnx\` |.*| \`\([0-9a-f]\{64\}\)\` |$/\1/p" models/README.md; }
mkdir -p models
for m in $MODELS; do
  want=$(sha_of "$m")
  [ -n "$want" ] || { echo "models/README.md has no sha256 for $m" >&2; exit 1; }
  dest="models/$m.onnx"
  if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
    continue
  fi
  if [ ! -f "$MIRROR/$m.onnx" ]; then
    cat >&2 <<MSG
No model mirror has $m.onnx (looked in: $MIRROR).
Point SEGSERVE_MODEL_MIRROR at a folder holding the models, or export one yourself with
Ultralytics where you have internet access:
    pip install ultralytics
    yolo export model=yolov8n-seg.pt format=onnx imgsz=320     # -> yolov8n-seg.onnx
    cp yolov8n-seg.onnx models/$m.onnx
then check it against models/README.md (a self-exported file will have another sha256:
start the server with --model path/to/your.onnx instead).
MSG
    exit 1
  fi
  cp "$MIRROR/$m.onnx" "$dest.tmp"
  got=$(sha256sum "$dest.tmp" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    rm -f "$dest.tmp"
    echo "sha256 mismatch for $m.onnx from $MIRROR: got $got, expected $want" >&2
    exit 1
  fi
  mv "$dest.tmp" "$dest"
  say "model $m: copied from $MIRROR, sha256 ok"
done
say "done"
