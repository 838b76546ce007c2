#!/usr/bin/env bash
# Install, prepare the test model (SmolLM2-135M) and llama-server, then run the whole test suite,
# integration tests against a real llama.cpp server included. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
seedbed setup --model smollm2-135m
# The review page is tested in a real headless browser: Debian's chromium and chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "==> installing Debian chromium and chromium-driver (review-page browser test)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || echo "warning: could not install chromium; the browser test will fail" >&2
fi
export SEEDBED_REQUIRE_INTEGRATION=1   # integration tests fail instead of skipping if the server is missing
python -m pytest -q -p no:cacheprovider "$@"
