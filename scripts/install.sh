#!/usr/bin/env bash
# Create .venv (if missing) and install Seedbed with its dev and ray extras (tests/test_ray.py runs
# in CI); `--core`: Seedbed alone, without them (what scripts/demo.sh needs: ~45 s less on a fresh
# machine). Safe to re-run.
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
TARGET=".[dev,ray]"
case "${1:-}" in
  --core) TARGET="." ;;
  "") ;;
  *) echo "install.sh: unknown option '$1' (use --core for Seedbed without its dev and ray extras)" >&2; exit 2 ;;
esac
echo "==> installing torch==2.13.0 (CPU) and Seedbed ($TARGET)"
python -m pip install --quiet --upgrade pip
# torch from pip (which also finds a copy on this machine's disk), then the rest with uv: the same
# packages from the same registry, resolved and installed in 8 s where pip takes 62 (measured in a
# fresh venv, no cache). uv does not read pip's config: a PIP_INDEX_URL is passed on, and if uv fails
# (a mirror only pip knows, say) pip installs instead.
python -m pip install --quiet "torch==2.13.0" uv
if [ -n "${PIP_INDEX_URL:-}" ] && [ -z "${UV_INDEX_URL:-}" ]; then
  export UV_INDEX_URL="$PIP_INDEX_URL"
fi
if ! uv pip install --quiet --python .venv/bin/python -e "$TARGET"; then
  echo "==> uv could not install Seedbed (above); installing with pip instead"
  python -m pip install --quiet -e "$TARGET"
fi
echo "==> installed: $(seedbed --version)"
