#!/usr/bin/env bash
# Download, on a machine with network, the wheels that `scripts/gpu_report.sh` installs on a GPU
# machine without one (its python3 has torch, numpy, opencv, pandas, pyyaml, tabulate, tqdm, pillow,
# ... but not pydantic, nor cityscapesscripts, with which the synthetic Cityscapes set is written).
# They land in .whl/ (git-ignored), for Python 3.12 on x86-64 Linux; pass another Python version
# as the first argument. The versions are those this checkout was tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-3.12}"
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 \
  cityscapesscripts==2.3.0 pyquaternion==0.9.9
ls -l .whl
