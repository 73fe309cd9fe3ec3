#!/usr/bin/env bash
# What only the tests need, on top of scripts/setup.sh (`make test` runs both; `make run` only
# the other): headless Chromium and its WebDriver for tests/browser.rs, kubectl for the
# manifest tests (they render the kustomize overlays with `kubectl kustomize`, no cluster
# needed; checked with kubectl 1.32, whose kustomize is 5.5), and a Python virtual
# environment in .venv/ (git-ignored) with the pinned packages of tests/python/requirements.txt
# from PyPI, for the tritonclient and PixelLib client tests. Safe to re-run: the venv is
# rebuilt only when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup-test]\033[0m %s\n' "$*"; }

need_pkgs=()
command -v chromedriver >/dev/null || need_pkgs+=(chromium chromium-driver)
command -v kubectl >/dev/null || need_pkgs+=(kubectl)
command -v python3 >/dev/null || need_pkgs+=(python3)
# Debian splits venv (and its bundled pip) out of python3.
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  need_pkgs+=(python3-venv)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]} with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

REQ=tests/python/requirements.txt
STAMP=.venv/.requirements.sha256
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  say "Python test environment: already in .venv/"
else
  say "creating .venv/ with $(python3 --version) and installing $REQ from PyPI"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"
fi
say "done"
