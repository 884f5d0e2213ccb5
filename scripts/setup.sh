#!/usr/bin/env bash
# Installs everything modelbuilder needs into ./.venv (idempotent; re-runs only when pyproject.toml changes).
# Usage: scripts/setup.sh [--with-browser]   (--with-browser also installs Debian's chromium for UI tests)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> Creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.modelbuilder-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "==> Installing Python packages (first time: a few minutes; torch is large)"
  .venv/bin/python -m pip install -q --upgrade pip
  # The torch build that this machine's pip serves from local disk; pinned so no newer build is fetched.
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[train,portal,ray,dev]"
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--with-browser" ] && [ ! -x /usr/bin/chromium ]; then
  echo "==> Installing Debian's chromium for the browser tests"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
