#!/usr/bin/env bash
# One-time setup, safe to re-run: what building and running the server needs (`make run`):
# system packages for the build, the ONNX Runtime library (from the onnxruntime PyPI wheel)
# into .ort/, and the models into models/ with sha256 checks. Everything lands in git-ignored
# folders. What only the tests need is scripts/setup-test.sh (`make test`).
# DEVICE=cuda (`make setup DEVICE=cuda`; tensorrt and auto alike) also puts the GPU build of ONNX Runtime (the
# onnxruntime-gpu wheel: the library and its CUDA/TensorRT provider libraries) into
# .ort/gpu/ and says whether the CUDA 13 / cuDNN 9 libraries it needs can be found.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_LIB=".ort/libonnxruntime.so.${ORT_VERSION}"
MIRROR="${SEGSERVE_MODEL_MIRROR:-../shared/models}"
# Models to fetch; `make setup MODELS="a b"` narrows it. The default model comes first.
MODELS="${MODELS:-yolov8n-seg-320 yolov8n-seg-320-int8 yolov8n-seg-640 yolov8n-seg-dyn yolov8n-seg-320-nms yolov12n-det-640}"
DEVICE="${DEVICE:-cpu}"
case "$DEVICE" in
  cpu|cuda|tensorrt|auto) ;;
  *) echo "DEVICE must be cpu, cuda, tensorrt or auto, got '$DEVICE'" >&2; exit 1 ;;
esac

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

if [ "$DEVICE" != cpu ]; then
  # The GPU build of ONNX Runtime: libonnxruntime plus the provider libraries it loads from
  # its own folder. The wheel is the same for every Python version; 3.12 is what our GPU
  # machines run. Kept in the user's cache: it is 255 MB.
  gpu_dir=".ort/gpu"
  gpu_files="libonnxruntime.so.${ORT_VERSION} libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so libonnxruntime_providers_tensorrt.so"
  have_all=1
  for f in $gpu_files; do [ -f "$gpu_dir/$f" ] || have_all=0; done
  if [ "$have_all" = 1 ]; then
    say "ONNX Runtime ${ORT_VERSION} GPU build: already in $gpu_dir/"
  else
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/segserve/wheels"
    mkdir -p "$wheels" "$gpu_dir"
    say "downloading onnxruntime-gpu==${ORT_VERSION} wheel from PyPI (255 MB, cached in $wheels)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.12 -d "$wheels" "onnxruntime-gpu==${ORT_VERSION}"
    python3 - "$wheels" "$ORT_VERSION" "$gpu_dir" $gpu_files <<'PY'
import glob, os, sys, zipfile
wheels, version, dest, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
wheel = sorted(glob.glob(f"{wheels}/onnxruntime_gpu-{version}-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with open(f"{dest}/{n}.tmp", "wb") as out:
            out.write(z.read("onnxruntime/capi/" + n))
        os.chmod(f"{dest}/{n}.tmp", 0o755)
        os.replace(f"{dest}/{n}.tmp", f"{dest}/{n}")
PY
    say "ONNX Runtime GPU build: $gpu_dir/ (run with --device cuda; ORT_DYLIB_PATH stays unset)"
  fi
  # The CUDA 13 / cuDNN 9 libraries come from the system (CUDA toolkit, an nvidia/cuda
  # image) or from the nvidia-* pip wheels (PyTorch installs them). segserve finds them
  # through the dynamic loader, so report where they are and what is missing.
  cuda_libs="libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9"
  pip_dirs=$(python3 - <<'PY' 2>/dev/null || true
import glob, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
print(":".join(sorted({d for r in roots for d in glob.glob(f"{r}/nvidia/*/lib")})))
PY
)
  missing=()
  for lib in $cuda_libs; do
    found=""
    if ldconfig -p 2>/dev/null | grep -q " $lib "; then found=system; fi
    ld_path="${LD_LIBRARY_PATH:-}"
    for d in ${ld_path//:/ }; do [ -z "$found" ] && [ -e "$d/$lib" ] && found="$d"; done
    for d in ${pip_dirs//:/ }; do [ -z "$found" ] && [ -e "$d/$lib" ] && found="$d (pip)"; done
    [ -n "$found" ] || missing+=("$lib")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "CUDA 13 / cuDNN 9 libraries: found"
    if [ -n "$pip_dirs" ] && ! ldconfig -p 2>/dev/null | grep -q " libcudnn.so.9 "; then
      say "some are in pip's nvidia/ folders; before running segserve:"
      echo "    export LD_LIBRARY_PATH=$pip_dirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    fi
  else
    say "not found here: ${missing[*]}. --device cuda needs them at run time (install the CUDA 13"
    say "runtime + cuDNN 9, or the nvidia-cuda-runtime, nvidia-cublas, nvidia-curand and"
    say "nvidia-cudnn-cu13 wheels, and add their lib folders to LD_LIBRARY_PATH); see docs/gpu.md"
  fi
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
