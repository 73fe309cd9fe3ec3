# segserve container image: `docker build -t segserve .` then
# `docker run --rm -p 5000:5000 segserve` (see docs/deployment.md, "Container image").
# For NVIDIA GPUs (docs/gpu.md):
#   docker build --build-arg DEVICE=cuda \
#     --build-arg RUNTIME_BASE=docker.io/nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 \
#     -t segserve:0.1.0-cuda .
# then `docker run --gpus all ...`. Same stages; the GPU build of ONNX Runtime and NVIDIA's
# CUDA 13 + cuDNN 9 runtime image replace the CPU library and Debian slim.
#
# Needs models/yolov8n-seg-320.onnx in the build context: `make setup` puts it there.
# `make container` builds this same file on a machine that cannot pull images.

# cpu (default) or cuda: picks the ONNX Runtime build and the device the server asks for.
ARG DEVICE=cpu
# The runtime's base image. For DEVICE=cuda, NVIDIA's runtime image with cuDNN: the CUDA 13
# runtime, cuBLAS, cuRAND and cuDNN 9 that the CUDA provider needs (Ubuntu 24.04: glibc 2.39,
# newer than the builder's, as it must be). An argument rather than a stage chosen by name,
# which not every builder resolves (buildah/podman does not).
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim

# ---- build: the release binary -----------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS builder
# nasm assembles libjpeg-turbo's SIMD decoder (mozjpeg-sys); gcc builds its C. Versions are
# left to the pinned Debian release rather than pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nasm gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# Cargo.toml declares the benches (so they must exist to parse it); static/ is compiled in,
# and build.rs compiles the vendored gRPC protos (proto/) without protoc.
COPY benches ./benches
COPY static ./static
COPY proto ./proto
COPY src ./src
# Cache mounts keep the crate downloads and compiled dependencies between builds; the
# binary is copied out because the target mount does not end up in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/segserve /usr/local/bin/segserve

# ---- ONNX Runtime: libonnxruntime from the PyPI wheel --------------------------------------
# The `ort` crate loads it at run time (load-dynamic); the wheel is the one official build
# that a package registry serves. Debian's pip refuses to install into the system Python
# (PEP 668) but downloads fine, and a download is all we need.
FROM docker.io/library/rust:1.95-bookworm AS ort
ARG ORT_VERSION=1.31.1
ARG DEVICE
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip unzip \
 && rm -rf /var/lib/apt/lists/*
# The GPU build is the onnxruntime-gpu wheel (CUDA 13): the library plus the provider
# libraries it loads from its own folder (CUDA; TensorRT, used only with TensorRT present).
# $libs is a word list on purpose.
# hadolint ignore=SC2086
RUN if [ "$DEVICE" = cuda ]; then \
      wheel=onnxruntime-gpu; \
      libs="libonnxruntime.so.${ORT_VERSION} libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so libonnxruntime_providers_tensorrt.so"; \
    else \
      wheel=onnxruntime; libs="libonnxruntime.so.${ORT_VERSION}"; \
    fi \
 && python3 -m pip download --no-cache-dir --no-deps --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --python-version 3.11 -d /tmp/wheel "${wheel}==${ORT_VERSION}" \
 && mkdir -p /opt/onnxruntime \
 && for f in $libs; do unzip -j /tmp/wheel/*.whl "onnxruntime/capi/$f" -d /opt/onnxruntime; done \
 && rm -rf /tmp/wheel

# ---- runtime -----------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM ${RUNTIME_BASE}
ARG DEVICE
# A GPU image that quietly ran on the CPU would surprise: it asks for its device and fails
# if it is absent (the GPU reaches the container through NVIDIA's container toolkit).
ENV SEGSERVE_DEVICE=${DEVICE}
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 segserve \
 && useradd --system --uid 10001 --gid segserve --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin segserve
# The whole folder: one library for the CPU, plus the provider libraries for CUDA.
COPY --from=ort /opt/onnxruntime/ /opt/onnxruntime/
COPY --from=builder /usr/local/bin/segserve /usr/local/bin/segserve
COPY models/yolov8n-seg-320.onnx /models/yolov8n-seg-320.onnx
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    ORT_DISABLE_TELEMETRY=1 \
    SEGSERVE_MODEL=/models/yolov8n-seg-320.onnx \
    SEGSERVE_HOST=0.0.0.0 \
    SEGSERVE_PORT=5000 \
    RUST_LOG=info,ort=warn
# Nothing is written at run time, so the root filesystem can be mounted read-only.
WORKDIR /
USER 10001:10001
EXPOSE 5000
# Liveness for plain Docker (Kubernetes uses the httpGet probes in k8s/ instead). bash is
# already in the slim image and its /dev/tcp speaks enough HTTP for one GET, so the image
# needs neither curl nor a health-check binary.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SEGSERVE_PORT:-5000} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 2 _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/segserve"]
CMD ["serve"]
