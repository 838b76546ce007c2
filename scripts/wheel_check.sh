#!/usr/bin/env bash
# Install Seedbed from its wheel and run it from an empty folder, as a user of `pip install seedbed`
# would: the wheel must carry the prompt templates, the review page, the sample corpora and the
# task specs. Run by scripts/test.sh after the test suite (needs .venv and `seedbed setup --model
# smollm2-135m`). The fresh venv gets Seedbed from the wheel only; its dependencies come from .venv
# through a .pth file (installing torch and the rest twice would add minutes and test nothing new).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> wheel: building and installing it into a fresh venv"
"$REPO/.venv/bin/python" -m pip wheel . --no-deps --quiet -w "$WORK/dist"
python3 -m venv "$WORK/venv"
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$REPO/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/seedbed-deps.pth"
"$WORK/venv/bin/python" -m pip install --quiet --no-deps --no-index "$WORK"/dist/seedbed-*.whl
mkdir "$WORK/project"
cd "$WORK/project"
export PATH="$WORK/venv/bin:$PATH" HF_HUB_OFFLINE=1
unset SEEDBED_PROMPTS SEEDBED_INDEXES
python - "$WORK/venv" <<'EOF'
import sys
from pathlib import Path
import engine
from engine.resources import bundled
venv = Path(sys.argv[1]).resolve()
where = Path(engine.__file__).resolve()
assert venv in where.parents, f"engine was imported from {where}, not from the wheel in {venv}"
for kind in ("prompts", "tasks", "corpora"):
    assert venv in bundled(kind).resolve().parents, f"bundled {kind} come from {bundled(kind)}, not the wheel"
assert (where.parent / "api" / "review.html").is_file(), "the review page is not in the wheel"
print(f"engine {where.parent}, bundled data {bundled('prompts').parent}")
EOF

echo "==> wheel: seedbed init, index, search, plan, synth (--fake and the embedded server), bench, serve"
seedbed init . --prompts
CORPORA="$(python -c 'from engine.resources import bundled; print(bundled("corpora"))')"
head -n 60 "$CORPORA/reuters-sample/reuters_sample.jsonl" > small.jsonl
seedbed index small.jsonl --name small
seedbed search small "oil prices" -k 2 --json > /dev/null
seedbed plan task.yaml --index small
seedbed synth task.yaml --index small --out runs/fake --fake -n 2
seedbed synth task.yaml --index small --out runs/local --model smollm2-135m -n 1 --prompts prompts --no-cache
seedbed synth bundled:ag_news --strategy fewgen --out runs/fewgen --fake -n 1
seedbed bench runs/fake --reference runs/fake/dataset.jsonl --seeds 0 --no-entities --no-embed-cache --out bench > /dev/null
test -s bench/report.json && test -s bench/report.html
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
seedbed serve --index small --port "$PORT" --no-auth --fake --dataset runs/fake > serve.log 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null || { cat serve.log; echo "serve did not answer /healthz"; exit 1; }
# Saved to a file first: `curl | grep -q` under pipefail fails whenever grep exits on its first
# match before curl has written the whole page (curl: (23) Failed writing body).
curl -fsS "http://127.0.0.1:$PORT/review" -o review.html || { cat serve.log; echo "/review did not answer"; exit 1; }
grep -qi "<html" review.html || { echo "/review has no page"; exit 1; }
echo "==> wheel: every command ran from an empty folder on the installed wheel"
