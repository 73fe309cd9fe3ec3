# The two commands of the README: `make run` and `make test`. Everything else supports them.
SHELL := /bin/bash
export ORT_DISABLE_TELEMETRY := 1
export RUST_LOG ?= info,ort=warn
# DEVICE=cuda (`make setup DEVICE=cuda`, `make run DEVICE=cuda`): the GPU build of ONNX
# Runtime in .ort/gpu/ and `--device cuda`; see docs/gpu.md.
DEVICE ?= cpu
export ORT_DYLIB_PATH ?= $(CURDIR)/.ort/$(if $(filter cpu,$(DEVICE)),,gpu/)libonnxruntime.so.1.31.1

.PHONY: setup setup-test build run test soak fuzz lint clean bench container

# What running needs (ONNX Runtime, the models, the build's system packages).
setup:
	@scripts/setup.sh

# What only the tests add: Chromium + chromedriver, kubectl, and the Python venv (.venv/).
setup-test: setup
	@scripts/setup-test.sh

build: setup
	cargo build --release --locked

run: build
	./target/release/segserve serve --host 0.0.0.0 --port 5000 $(if $(filter cpu,$(DEVICE)),,--device $(DEVICE))

# Release mode: the parity and load-bearing tests run real inference, which debug builds
# make ~20x slower.
# Then the Python clients (tritonclient, the PixelLib README's) against the release server,
# then the overload/soak run, 60 s: shorter windows measure allocator warm-up, not growth
# (25 s runs gave +3.5..7.9% against +4.7% over 60 s). `make soak` runs 2 minutes.
test: setup-test
	cargo test --release --locked -- --test-threads=2
	scripts/python-tests.sh
	scripts/soak.sh --duration 60

soak: setup
	scripts/soak.sh $(if $(DURATION),--duration $(DURATION))

# cargo-fuzz targets under fuzz/ (nightly); FUZZ_SECONDS per target, default 60.
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# rustdoc with warnings as errors, so a renamed item breaks the intra-doc links that name it
# (--release: most dependencies are then those clippy has already checked). The fuzz targets
# are their own workspace, which nothing else builds: type-checked here, on stable and without
# libFuzzer, so an API change that breaks them fails here rather than in `make fuzz`.
lint:
	cargo fmt --check
	cargo clippy --release --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --locked
	cd fuzz && cargo check --bins --locked --no-default-features
	scripts/lint-dockerfile.sh

# Builds the Dockerfile with podman (stand-in base images, as this machine cannot pull any),
# then runs the image in a chroot and checks it answers. Needs root.
container: setup
	scripts/container.sh

clean:
	cargo clean

# Criterion stage benchmarks, then the end-to-end load test against the release server.
bench: setup
	cargo bench --locked --bench stages
	scripts/bench.sh
