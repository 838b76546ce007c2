#!/usr/bin/env bash
# Install (the prebuilt llama.cpp runtime comes with it), prepare the test model (SmolLM2-135M), then
# run the whole test suite, integration tests against a real llama.cpp server included, then the
# wheel from an empty folder.
# CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# shellcheck source=/dev/null
. .venv/bin/activate
export HF_HUB_OFFLINE=1

# Debian tools the suite needs: chromium + chromedriver (the review page is tested in a real
# headless browser) and shellcheck (the scripts themselves are linted below).
bash scripts/apt_install.sh chromium chromium-driver shellcheck

echo "==> linting the shell scripts (bash -n, shellcheck)"
scripts=(scripts/*.sh .ci/run)
for script in "${scripts[@]}"; do bash -n "$script"; done
shellcheck --severity=warning "${scripts[@]}"

seedbed setup --model smollm2-135m
export SEEDBED_REQUIRE_INTEGRATION=1   # integration tests fail instead of skipping if the server is missing
python -m pytest -q -p no:cacheprovider "$@"
bash scripts/wheel_check.sh   # the wheel, installed in a fresh venv, run from an empty folder
