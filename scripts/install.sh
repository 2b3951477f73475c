#!/usr/bin/env bash
# Installs alignd into ./.venv. `bash scripts/install.sh dev` adds the test tools and, where this
# runs as root on Debian, the headless Chromium the dashboard tests drive.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: otherwise pip resolves a multi-GB CUDA build on a CPU-only machine.
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "$extra" = "dev" ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
  if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null
  fi
else
  .venv/bin/python -m pip install -q -e .
fi
echo "alignd installed in .venv ($(.venv/bin/alignd --version 2>/dev/null || echo ok))"
