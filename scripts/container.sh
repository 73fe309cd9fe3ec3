#!/usr/bin/env bash
# `make container`: builds the Dockerfile's image here, where no registry of images can be
# reached, then starts it and checks that it answers.
#
#  1. Stand-in base images, tagged with the exact names the Dockerfile uses, made from Debian
#     packages (debootstrap) and this machine's Rust toolchain; kept in podman's storage, so
#     reruns skip this step (SEGSERVE_REBUILD_BASES=1 makes them again).
#  2. `podman build --isolation=chroot` of the unchanged Dockerfile.
#  3. `podman run` cannot work in this sandbox (it fails to set rlimits), so the image is
#     mounted and its entrypoint started in a chroot of it (read-only), with the image's
#     environment and user, on a free port of 127.0.0.1: /readyz, one /segmentapi request, the image's own
#     HEALTHCHECK command, JSON logs, and a clean exit on SIGTERM.
#  4. Prints the image size.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/segserve:latest}"
RUST_BASE="docker.io/library/rust:1.95-bookworm"
SLIM_BASE="docker.io/library/debian:bookworm-slim"
WORK="${SEGSERVE_CONTAINER_WORK:-/var/tmp/segserve-container}"
PHOTO="../shared/testdata/bus.jpg"

say() { printf '\033[1m[container]\033[0m %s\n' "$*"; }
t0=$SECONDS
since() { echo "$((SECONDS - t0)) s"; }

[ "$(id -u)" = 0 ] || { echo "make container needs root (debootstrap, podman, chroot)" >&2; exit 1; }
if ! grep -q "^FROM ${RUST_BASE} " Dockerfile || ! grep -q "^ARG RUNTIME_BASE=${SLIM_BASE}\$" Dockerfile; then
  echo "the Dockerfile's base images changed; update RUST_BASE/SLIM_BASE here" >&2
  exit 1
fi

need=()
for c in podman debootstrap curl python3; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
fi
[ -f models/yolov8n-seg-320.onnx ] || MODELS=yolov8n-seg-320 scripts/setup.sh

# --- 1. stand-in base images --------------------------------------------------------------
mkdir -p "$WORK"
# Debian minbase root filesystem; extra packages for the rust stand-in.
make_rootfs() { # dir, extra packages (comma-separated, may be empty)
  local dir=$1 include=$2
  rm -rf "$dir"
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$dir" http://deb.debian.org/debian >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log" >&2; exit 1; }
  # The sandbox reaches package registries through a proxy with its own CA: trust it inside
  # too, so pip and cargo in the build can reach PyPI and crates.io.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null && [ -x "$dir/usr/sbin/update-ca-certificates" ]; then
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    # (rehash warns that the bundle it made holds many certificates: expected, so hidden)
    chroot "$dir" update-ca-certificates 2>&1 >/dev/null | { grep -v '^rehash: warning: skipping ca-certificates.crt' || true; } >&2
  fi
  chroot "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/*
}

if [ "${SEGSERVE_REBUILD_BASES:-0}" = 1 ] || ! podman image exists "$SLIM_BASE"; then
  say "making stand-in $SLIM_BASE (debootstrap minbase)"
  make_rootfs "$WORK/slim" ""
  # The real slim image has no docs or man pages either.
  rm -rf "$WORK"/slim/usr/share/{doc,man,info}/*
  tar -C "$WORK/slim" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$SLIM_BASE" >/dev/null
  rm -rf "$WORK/slim"
  say "  done ($(since))"
else
  say "stand-in $SLIM_BASE: cached"
fi

if [ "${SEGSERVE_REBUILD_BASES:-0}" = 1 ] || ! podman image exists "$RUST_BASE"; then
  say "making stand-in $RUST_BASE (debootstrap minbase + gcc + this machine's Rust)"
  # The 1.95.0 toolchain if rustup has it by that name, else whatever rustc is (checked below).
  rustc_path=$(rustup which --toolchain 1.95.0 rustc 2>/dev/null || rustup which rustc 2>/dev/null || command -v rustc)
  toolchain=$(dirname "$(dirname "$(readlink -f "$rustc_path")")")
  "$toolchain/bin/rustc" --version | grep -q '^rustc 1\.95\.' \
    || { echo "the rust stand-in needs rustc 1.95 (found: $("$toolchain/bin/rustc" --version))" >&2; exit 1; }
  make_rootfs "$WORK/rust" "ca-certificates,gcc,libc6-dev,make,pkg-config,curl,git"
  # The official image's layout: toolchain under RUSTUP_HOME, commands in CARGO_HOME/bin.
  dest="$WORK/rust/usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu"
  mkdir -p "$dest" "$WORK/rust/usr/local/cargo/bin"
  tar -C "$toolchain" --exclude=./share/doc -c . | tar -C "$dest" -x
  for b in "$dest"/bin/*; do ln -s "../../rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/bin/$(basename "$b")" \
    "$WORK/rust/usr/local/cargo/bin/$(basename "$b")"; done
  tar -C "$WORK/rust" -c . | podman import -q \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV RUST_VERSION=1.95.0' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$RUST_BASE" >/dev/null
  rm -rf "$WORK/rust"
  say "  done ($(since))"
else
  say "stand-in $RUST_BASE: cached"
fi

# --- 2. build -------------------------------------------------------------------------------
say "podman build --isolation=chroot -t $IMAGE ."
tb=$SECONDS
# docker format: OCI image configs have no HEALTHCHECK. --pull=never: the bases are local.
# The full log goes to $WORK/build.log; the steps and cargo's summary are shown.
set +e
podman build --isolation=chroot --format docker --pull=never -t "$IMAGE" . 2>&1 | tee "$WORK/build.log" \
  | grep -E --line-buffered '^(\[[0-9/]+\] )?STEP|^(Successfully|Error|error)|Finished|Saved'
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { echo "podman build failed ($status); see $WORK/build.log" >&2; tail -30 "$WORK/build.log" >&2; exit 1; }
say "  built in $((SECONDS - tb)) s"

# --- 3. run the image in a chroot -------------------------------------------------------------
fmt() { podman image inspect --format "$1" "$IMAGE"; }
mapfile -t image_env < <(fmt '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
user=$(fmt '{{.Config.User}}')
mapfile -t entry < <(fmt '{{range .Config.Entrypoint}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t cmd < <(fmt '{{range .Config.Cmd}}{{println .}}{{end}}' | sed '/^$/d')
health=$(fmt '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}')
say "image user ${user:-root}, entrypoint ${entry[*]} ${cmd[*]}"

ctr=$(podman create --name "segserve-check-$$" "$IMAGE")
mnt=$(podman mount "$ctr")
# The root the server sees: the container's filesystem, read-only as in k8s/base/deployment.yaml
# (readOnlyRootFilesystem), with /proc, /dev and a scratch /tmp (the pod's emptyDir).
root="$WORK/root"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  umount -R "$root" 2>/dev/null || true
  podman umount "$ctr" >/dev/null 2>&1 || true
  podman rm -f "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mkdir -p "$root" "$mnt/proc" "$mnt/dev" "$mnt/tmp"
mount --bind "$mnt" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount -t tmpfs -o size=64m tmpfs "$root/tmp"
mnt="$root"
if chroot "$mnt" /bin/sh -c ': > /.rw-check' 2>/dev/null; then echo "the chroot is writable; the read-only check is void" >&2; exit 1; fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$WORK/run.log"
# The image's environment only (env -i), plus the port, loopback, JSON logs and a short drain.
env -i "${image_env[@]}" SEGSERVE_HOST=127.0.0.1 SEGSERVE_PORT="$port" SEGSERVE_LOG_FORMAT=json \
  SEGSERVE_SHUTDOWN_DRAIN_MS=300 \
  chroot ${user:+--userspec="$user"} "$mnt" "${entry[@]}" "${cmd[@]}" >"$log" 2>&1 &
pid=$!
say "started in a read-only chroot of the image as pid $pid on 127.0.0.1:$port"

ready=0
for _ in $(seq 1 240); do # model load + warm-up; 120 s at most
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
[ "$ready" = 1 ] || { echo "server did not become ready; its log:" >&2; cat "$log" >&2; exit 1; }
say "GET /readyz: 200"

# The PixelLib route with its default dense masks (tens of MB: through a file, not argv).
curl -fsS -o "$WORK/reply.json" -F "image=@$PHOTO" "http://127.0.0.1:$port/segmentapi"
python3 - "$WORK/reply.json" <<'PY'
import json, sys
reply = json.load(open(sys.argv[1]))
out = reply["outputs"]
assert "bus" in out["class_names"] and out["object_counts"].get("person", 0) >= 3, out
h, w, n = out["mask_shape"]
assert len(reply["mask_values"]) == h and len(reply["mask_values"][0]) == w, "mask_values shape"
print("[container] POST /segmentapi bus.jpg:", json.dumps(out["object_counts"]), "boxes", len(out["boxes"]),
      f"mask_values {h}x{w}x{n}")
PY
rm -f "$WORK/reply.json"

if [ -n "$health" ]; then
  mapfile -t hc < <(python3 -c 'import json,sys; t=json.loads(sys.argv[1]); print("\n".join(t[1:] if t[0]=="CMD" else ["sh","-c",t[1]]))' "$health")
  env -i "${image_env[@]}" SEGSERVE_PORT="$port" chroot ${user:+--userspec="$user"} "$mnt" "${hc[@]}" \
    || { echo "the image's HEALTHCHECK command failed" >&2; exit 1; }
  say "HEALTHCHECK command (${hc[0]} ...): exit 0"
fi

say "server peak memory after warm-up and one request: $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' "/proc/$pid/status")"
kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
pid=""
[ "$code" = 0 ] || { echo "server exited $code after SIGTERM; its log:" >&2; cat "$log" >&2; exit 1; }
python3 - "$log" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
for l in lines:
    json.loads(l)  # every log line is one JSON object
msgs = [json.loads(l).get("message") for l in lines]
assert "shutdown complete" in msgs, msgs
print(f"[container] SIGTERM: exit 0; {len(lines)} log lines, each one JSON object")
PY

# --- 4. report ------------------------------------------------------------------------------
size=$(fmt '{{.Size}}')
say "image $IMAGE: $(python3 -c "print(f'{$size/1e6:.1f} MB')") ($size bytes); layers:"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-110 | sed 's/^/    /'
say "all checks passed in $(since)"
