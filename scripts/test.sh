#!/usr/bin/env bash
# Lints and runs every test except the GPU ones. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -m "not gpu" "$@"
status=$?
# pytest exits 5 when nothing was collected: that is a broken suite, say so plainly.
if [ $status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit $status
