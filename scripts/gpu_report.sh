#!/usr/bin/env bash
# The GPU report in one command, on a machine whose python3 has a CUDA torch (and numpy, opencv,
# pandas, pyyaml, tabulate, tqdm) but perhaps no network and no pydantic:
#
#   bash scripts/gpu_report.sh [OUT_DIR] [gpu-report options, e.g. --dry-run]
#
# When pydantic or cityscapesscripts is missing it installs the wheels in .whl/ (made by
# scripts/gpu_wheels.sh on a machine with network, then copied along) into a private folder first.
# Writes OUT_DIR/gpu_report.md and OUT_DIR/gpu_report.json (default OUT_DIR: gpu-report).
set -euo pipefail
cd "$(dirname "$0")/.."
# The first argument is the output folder unless it is an option (`gpu_report.sh --dry-run`).
out=gpu-report
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
py="${PYTHON:-python3}"
if ! "$py" -c "import pydantic, cityscapesscripts.helpers.annotation" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_report.sh: $py lacks pydantic or cityscapesscripts and .whl/ holds no wheels; run scripts/gpu_wheels.sh first" >&2
    exit 2
  fi
  site="${TMPDIR:-/tmp}/nlbench-site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" -m benchmark gpu-report --out "$out" "$@"
