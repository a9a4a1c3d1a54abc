#!/usr/bin/env bash
# Set up a virtualenv, install Sensorium with its test extras, start local services, run all checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
# CI: the agent's embedding matcher is tested too (the CPU build of torch first, so that
# sentence-transformers does not pull a CUDA build; ~4 min on a fresh machine, seconds after)
if [ "${CI:-}" = true ]; then
  .venv/bin/python -m pip install -q torch==2.13.0 -e ".[agent]"
fi
# the dashboard's browser tests drive Debian's Chromium through Playwright (never a downloaded browser)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } ||
    echo "could not install chromium: the dashboard's browser tests will skip (fail under CI)" >&2
fi
bash scripts/services.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
