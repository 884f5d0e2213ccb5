#!/usr/bin/env bash
# Installs everything modelbuilder needs into ./.venv (idempotent; re-runs only when pyproject.toml or this
# script changes).
# Usage: scripts/setup.sh [--with-browser]   (--with-browser also installs Debian's chromium for the UI tests
# and PostgreSQL for the store tests, where missing)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> Creating .venv"
  "$PYTHON" -m venv .venv
fi

# pip, quiet: errors and real warnings only. This machine's pip configuration lists package folders that
# may not exist; pip then prints "WARNING: Location 'file:///...' is ignored" once per package looked up
# (pages of it on a fresh machine). Those lines, and only those, are dropped; pip's exit status is kept.
pip_install() {
  local status
  set +e
  .venv/bin/python -m pip install -q --progress-bar on --disable-pip-version-check "$@" 2>&1 \
    | { grep -v -E "^WARNING: Location 'file://[^']*' is ignored" || true; }
  status=${PIPESTATUS[0]}
  set -e
  return "$status"
}

stamp=.venv/.modelbuilder-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "==> Installing Python packages (first time: a few minutes; torch is large)"
  echo "    pip"
  pip_install --upgrade pip
  # The torch build that this machine's pip serves from local disk; pinned so no newer build is fetched.
  echo "    torch, torchvision"
  pip_install "torch==2.14.1" "torchvision==0.29.1"
  echo "    modelbuilder[train,portal,postgres,ray,dev]"
  pip_install -e ".[train,portal,postgres,ray,dev]"
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--with-browser" ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # The store tests start a throwaway PostgreSQL server (tests/pg_server.py) from Debian's binaries.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> Installing Debian's ${missing[*]} for the browser and store tests"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" > /dev/null
  fi
fi
