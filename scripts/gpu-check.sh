#!/usr/bin/env bash
# The GPU check, for an NVIDIA machine with a CUDA 13 driver, Python 3 with numpy, and no
# internet. It reassembles the bundle made by scripts/gpu-bundle.sh, then:
#   1. finds the CUDA 13 / cuDNN 9 libraries (LD_LIBRARY_PATH, the system, or a Python
#      environment's site-packages/nvidia/*/lib, where PyTorch's wheels put them) and says
#      which are missing;
#   2. parity: `segserve predict --device cuda` on the test photos against Ultralytics'
#      reference outputs (tests/parity.rs thresholds; score tolerance 0.02);
#   3. the bare ONNX Runtime floor on the GPU (examples/ort_floor.rs), 1 and 2 sessions;
#   4. the server on 127.0.0.1, default GPU settings, under closed-loop load at concurrency
#      1 to 64 (examples/loadgen.rs), sampling GPU memory (nvidia-smi) and the server's RSS;
#   5. the dynamic-batch model with batching on (the GPU default), at three levels;
#   6. tables with the ratios to the floor.
# Every step is bounded in time; with the defaults the whole run takes 3 to 5 minutes.
#
# Usage: scripts/gpu-check.sh [--parts DIR] [--device cuda|tensorrt|cpu] [--device-id N]
#                             [--seconds S] [--levels 1,2,4,...] [--work DIR]
#   --parts   folder with segserve-gpu.tar.zst.NN and SHA256SUMS (default target/gpu-bundle)
#   --device  cuda (default); cpu is a dry run of every step on a machine without a GPU
#   --seconds per load level (default 8); the floor runs 5 s per shape
#   --work    results and logs (default /tmp/segserve-gpu-check); the bundle unpacks there
# Exit status: 0 when parity passes, the server reports the device asked for, and no request
# failed at the transport level; 1 otherwise; 2 when something needed is missing.
set -euo pipefail
export ORT_DISABLE_TELEMETRY=1
here="$(cd "$(dirname "$0")" && pwd)"

PARTS=""
DEVICE=cuda
DEVICE_ID=0
SECONDS_PER_LEVEL=8
FLOOR_SECONDS=5
LEVELS=1,2,4,8,16,32,64
WORK=/tmp/segserve-gpu-check
READY_TIMEOUT=300
# Past this many seconds the optional batching step is skipped, to stay within ~8 minutes.
BUDGET_S=330
while [ $# -gt 0 ]; do
  case "$1" in
    --parts) PARTS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --device-id) DEVICE_ID="$2"; shift 2 ;;
    --seconds) SECONDS_PER_LEVEL="$2"; shift 2 ;;
    --floor-seconds) FLOOR_SECONDS="$2"; shift 2 ;;
    --levels) LEVELS="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda|tensorrt) ;; *) echo "--device must be cpu, cuda or tensorrt" >&2; exit 2 ;; esac

say() { printf '\n\033[1m[gpu-check %3ds]\033[0m %s\n' "$SECONDS" "$*"; }
die() { printf '\033[1m[gpu-check]\033[0m FAILED: %s\n' "$*" >&2; exit 2; }
mkdir -p "$WORK"
rm -f "$WORK"/floor-*.json "$WORK"/load-*.jsonl "$WORK"/run-*.json "$WORK"/mem.csv "$WORK"/parity*
status=0

# ---- 0. the bundle --------------------------------------------------------------------
if [ -x "$here/../bin/segserve" ]; then
  B="$(cd "$here/.." && pwd)"   # running the copy inside an unpacked bundle
else
  [ -n "$PARTS" ] || PARTS="$here/../target/gpu-bundle"
  [ -f "$PARTS/SHA256SUMS" ] || die "no bundle in $PARTS (SHA256SUMS missing; make one with scripts/gpu-bundle.sh)"
  B="$WORK/bundle/segserve-gpu"
  if [ -x "$B/bin/segserve" ] && cmp -s "$PARTS/SHA256SUMS" "$WORK/bundle/SHA256SUMS"; then
    say "bundle already unpacked in $WORK/bundle"
  else
    say "checking and unpacking $(ls "$PARTS"/segserve-gpu.tar.zst.* | wc -l) parts from $PARTS"
    (cd "$PARTS" && sha256sum --quiet -c SHA256SUMS) || die "a bundle part is missing or damaged"
    rm -rf "$WORK/bundle" && mkdir -p "$WORK/bundle"
    if command -v zstd >/dev/null; then
      cat "$PARTS"/segserve-gpu.tar.zst.* | zstd -d -q --long=27 | tar -x -C "$WORK/bundle"
    else
      # No zstd tool: python-zstandard, from this Python or from the wheel in the bundle.
      pylib="$WORK/pylib"
      if ! python3 -c 'import zstandard' 2>/dev/null; then
        wheel=$(ls "$PARTS"/zstandard-*.whl 2>/dev/null | head -1)
        [ -n "$wheel" ] || die "neither zstd nor python zstandard here, and no zstandard wheel in $PARTS"
        rm -rf "$pylib" && python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$pylib"
      fi
      cat "$PARTS"/segserve-gpu.tar.zst.* | PYTHONPATH="$pylib${PYTHONPATH:+:$PYTHONPATH}" python3 -c '
import sys, zstandard
zstandard.ZstdDecompressor(max_window_size=1 << 27).copy_stream(sys.stdin.buffer, sys.stdout.buffer)' \
        | tar -x -C "$WORK/bundle"
    fi
    cp "$PARTS/SHA256SUMS" "$WORK/bundle/SHA256SUMS"
  fi
fi
(cd "$B" && sed -n '/^$/,$p' MANIFEST | sed '1d' | sha256sum --quiet -c -) || die "bundle contents do not match its MANIFEST"
head -4 "$B/MANIFEST"
export ORT_DYLIB_PATH="$B/ort/libonnxruntime.so.1.31.1"
MODEL="$B/models/yolov8n-seg-320.onnx"
DYN_MODEL="$B/models/yolov8n-seg-dyn.onnx"

# ---- 1. GPU, driver and CUDA libraries ------------------------------------------------
gpu_name="no GPU"; driver="n/a"; have_smi=0
if [ "$DEVICE" != cpu ] || command -v nvidia-smi >/dev/null; then
  if command -v nvidia-smi >/dev/null; then
    have_smi=1
    say "nvidia-smi"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv || true
    nvidia-smi | sed -n '1,4p' || true
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$DEVICE_ID" | head -1)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i "$DEVICE_ID" | head -1)
  elif [ "$DEVICE" != cpu ]; then
    say "nvidia-smi not found: the NVIDIA driver is probably missing (segserve will say)"
  fi
fi
gpu_mib() {
  [ "$have_smi" = 1 ] || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$DEVICE_ID" 2>/dev/null | head -1 | tr -d ' '
}

if [ "$DEVICE" != cpu ]; then
  say "looking for the CUDA 13 / cuDNN 9 libraries"
  pip_dirs=$(python3 - <<'PY' || true
import glob, importlib.util, os, site
roots = set(site.getsitepackages() + [site.getusersitepackages()])
for mod in ("nvidia", "torch"):
    try:
        spec = importlib.util.find_spec(mod)
    except Exception:
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        roots.add(os.path.dirname(loc))
dirs = sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))})
print(":".join(dirs))
PY
)
  extra="${CUDA_LIB_DIRS:-}${CUDA_LIB_DIRS:+:}$pip_dirs"
  export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  libs="libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9 libcudnn_graph.so.9 libcudnn_ops.so.9 libcudnn_cnn.so.9 libcudnn_engines_precompiled.so.9 libcudnn_engines_runtime_compiled.so.9 libcudnn_heuristic.so.9"
  [ "$DEVICE" = tensorrt ] && libs="$libs libnvinfer.so.10 libnvonnxparser.so.10"
  missing=()
  for lib in $libs; do
    where=""
    for d in ${LD_LIBRARY_PATH//:/ }; do
      if [ -e "$d/$lib" ]; then where="$d"; break; fi
    done
    [ -n "$where" ] || { ldconfig -p 2>/dev/null | grep -q " $lib " && where="system (ldconfig)"; }
    printf '    %-42s %s\n' "$lib" "${where:-MISSING}"
    [ -n "$where" ] || missing+=("$lib")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing: ${missing[*]}. Install the CUDA 13 runtime, cuBLAS, cuRAND and cuDNN 9 (e.g. pip's nvidia-cuda-runtime, nvidia-cublas, nvidia-curand, nvidia-cudnn-cu13), or point CUDA_LIB_DIRS at folders holding them"
  fi
fi
gpu_before=$(gpu_mib)

# ---- 2. parity ------------------------------------------------------------------------
say "parity: segserve predict --device $DEVICE on $(ls "$B/testdata" | wc -l) photos vs $B/golden/yolov8n-seg-320"
if timeout 300 "$B/bin/segserve" predict --device "$DEVICE" --device-id "$DEVICE_ID" --model "$MODEL" \
     "$B/testdata" >"$WORK/parity.jsonl" 2>"$WORK/parity.log"; then
  tail -1 "$WORK/parity.log"
  python3 "$here/gpu_check.py" parity --golden "$B/golden/yolov8n-seg-320" --results "$WORK/parity.jsonl" \
    --score-tol 0.02 --summary "$WORK/parity-summary.json" || status=1
else
  echo "segserve predict failed:"; tail -20 "$WORK/parity.log"; status=1
  # Without a working device the rest would fail the same way.
  [ "$DEVICE" = cpu ] || exit 1
fi

# ---- 3. the bare floor ----------------------------------------------------------------
floor() { # model sessions seconds
  local m="$1" s="$2" t="$3" name
  name=$(basename "$m" .onnx)
  if timeout $((t + 240)) "$B/bin/ort_floor" --device "$DEVICE" --device-id "$DEVICE_ID" --model "$m" \
       --sessions "$s" --seconds "$t" >"$WORK/floor-$name-s$s.json" 2>"$WORK/floor-$name-s$s.log"; then
    cat "$WORK/floor-$name-s$s.json"
  else
    echo "ort_floor $name x$s failed:"; tail -5 "$WORK/floor-$name-s$s.log"; status=1
  fi
}
say "bare ONNX Runtime on $DEVICE: $(basename "$MODEL"), 1 and 2 sessions, ${FLOOR_SECONDS} s each"
floor "$MODEL" 1 "$FLOOR_SECONDS"
floor "$MODEL" 2 "$FLOOR_SECONDS"

# ---- 4./5. the server under load ------------------------------------------------------
sampler_pid=""; server_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# Samples "unix_ms,gpu_mib,server_rss_kib" twice a second for the whole run.
start_sampler() {
  ( while :; do
      rss=""
      [ -n "$server_pid" ] && rss=$(awk '/VmRSS/{print $2}' "/proc/$server_pid/status" 2>/dev/null || true)
      printf '%s,%s,%s\n' "$(date +%s%3N)" "$(gpu_mib)" "$rss"
      sleep 0.5
    done ) >>"$WORK/mem.csv" &
  sampler_pid=$!
}

http_get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }

serve_and_load() { # tag model levels seconds description [extra serve flags...]
  local tag="$1" model="$2" levels="$3" secs="$4" desc="$5"; shift 5
  local port started ready_s reported
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  say "server [$tag]: $desc"
  started=$(date +%s%3N)
  RUST_LOG=info,ort=warn "$B/bin/segserve" serve --device "$DEVICE" --device-id "$DEVICE_ID" --model "$model" \
    --host 127.0.0.1 --port "$port" --shutdown-drain-ms 0 "$@" >"$WORK/server-$tag.log" 2>&1 &
  server_pid=$!
  start_sampler
  local waited=0
  until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
          "http://127.0.0.1:$port/readyz" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "the server exited:"; tail -20 "$WORK/server-$tag.log"; server_pid=""; status=1; return 0
    fi
    waited=$((waited + 1))
    if [ "$waited" -gt $((READY_TIMEOUT * 5)) ]; then
      echo "not ready after ${READY_TIMEOUT} s:"; tail -20 "$WORK/server-$tag.log"; status=1; cleanup; server_pid=""; return 0
    fi
    sleep 0.2
  done
  ready_s=$(python3 -c "print(($(date +%s%3N) - $started) / 1000)")
  grep -h "model ready" "$WORK/server-$tag.log" | sed 's/^/    /' | cut -c1-220
  reported=$(http_get "http://127.0.0.1:$port/v1/models" | python3 -c 'import json, sys; print(json.load(sys.stdin)["models"][0].get("device"))')
  http_get "http://127.0.0.1:$port/metrics" | grep '^segserve_model_device' | sed 's/^/    /'
  if [ "$reported" != "$DEVICE" ]; then
    echo "    /v1/models says device $reported, expected $DEVICE"; status=1
  fi
  printf '{"model": "%s", "desc": "%s", "ready_s": %s, "gpu_mib_ready": %s, "reported_device": "%s"}\n' \
    "$(basename "$model" .onnx)" "$desc" "$ready_s" "$(gpu_mib | grep . || echo null)" "$reported" >"$WORK/run-$tag.json"
  local n_levels
  n_levels=$(echo "$levels" | tr ',' '\n' | wc -l)
  timeout $((n_levels * secs + 120)) "$B/bin/loadgen" --url "http://127.0.0.1:$port/v1/segment?masks=rle" --photo "$B/testdata/bus.jpg" \
    --levels "$levels" --seconds "$secs" | tee "$WORK/load-$tag.jsonl" | python3 "$here/gpu_check.py" follow
  if grep -q '"errors":[1-9]' "$WORK/load-$tag.jsonl"; then status=1; fi
  [ "$have_smi" = 1 ] && nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>/dev/null | sed 's/^/    process: /' || true
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
}

serve_and_load default "$MODEL" "$LEVELS" "$SECONDS_PER_LEVEL" \
  "$(basename "$MODEL" .onnx), the server's defaults for --device $DEVICE"

if [ "$SECONDS" -lt "$BUDGET_S" ] && [ -f "$DYN_MODEL" ]; then
  floor "$DYN_MODEL" 2 3
  serve_and_load batching "$DYN_MODEL" 1,16,64 5 \
    "$(basename "$DYN_MODEL" .onnx) at 640x640, dynamic batch dimension (on a GPU batching is on by default, up to 8 per run)"
else
  say "skipping the batching step (${SECONDS} s used of a ${BUDGET_S} s budget)"
fi

# ---- 6. report ------------------------------------------------------------------------
printf '{"device": "%s", "gpu": "%s", "driver": "%s", "gpu_mib_before": %s, "server": "%s"}\n' \
  "$DEVICE" "$gpu_name" "$driver" "${gpu_before:-null}" "$(head -2 "$B/MANIFEST" | tail -1)" >"$WORK/env.json"
python3 "$here/gpu_check.py" report --work "$WORK" | tee "$WORK/report.md"
say "done in ${SECONDS} s; results and logs in $WORK; exit status $status"
exit "$status"
