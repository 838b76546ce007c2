#!/usr/bin/env bash
# Create .venv (if missing) and install Seedbed with its dev and ray extras (tests/test_ray.py runs
# in CI). Safe to re-run.
# torch is pinned and installed first: sentence-transformers asks for an unpinned torch, which
# would otherwise pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
echo "==> installing torch==2.13.0 (CPU) and Seedbed"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev,ray]"
echo "==> installed: $(seedbed --version)"
