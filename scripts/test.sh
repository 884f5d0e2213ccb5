#!/usr/bin/env bash
# Installs what the tests need (Python packages, Debian's chromium), then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-browser

echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
.venv/bin/python -m pytest -q --durations=25 "$@"  # the slowest tests, to keep the suite short
