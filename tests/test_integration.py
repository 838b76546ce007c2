"""End to end through the CLI: real MiniLM index on real Reuters text, real llama-server with SmolLM2.

These prove the plumbing (index -> retrieve -> llama.cpp -> parse -> dataset -> resume), not quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.runtime.catalog import TEST_MODEL

from conftest import require_small_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "corpora" / "reuters-sample" / "reuters_sample.jsonl"

TASK = """
name: itest
output: {kind: news headline, min_words: 3, max_words: 30}
examples_per_label: 3
labels:
  - name: Business
    verbalization: business news about companies, earnings and markets
  - name: World
    verbalization: world news about governments, diplomacy and conflicts
sampling: {temperature: 0.7, max_tokens: 64}
retrieval: {min_similarity: 0.2}
seed: 7
"""


@pytest.fixture(scope="module")
def runtime_ready():
    require_small_model()


def seedbed(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, runtime_ready):
    root = tmp_path_factory.mktemp("e2e")
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:150]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "task.yaml").write_text(TASK, encoding="utf-8")
    done = seedbed("index", "corpus.jsonl", "--name", "itest", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "passages" in done.stdout
    return root


def test_synth_with_real_llama_server_then_resume_costs_nothing(workspace):
    args = ("synth", "task.yaml", "--index", "itest", "--out", "run", "--model", TEST_MODEL, "--concurrency", "2")
    first = seedbed(*args, cwd=workspace)
    assert first.returncode == 0, first.stderr
    assert "kept" in first.stdout and "LLM calls" in first.stdout

    manifest = json.loads((workspace / "run" / "manifest.json").read_text())
    frame = pl.read_parquet(workspace / "run" / "dataset.parquet")
    counts = manifest["counts"]
    assert counts["llm_calls"] >= 6 and counts["kept"] == len(frame)
    assert counts["kept"] + counts["rejected"] + counts["failed"] == counts["requests"]
    assert manifest["model"] == TEST_MODEL and manifest["endpoint"].startswith("local:")
    if len(frame):
        assert set(frame["label"]) <= {"Business", "World"}
        assert (frame["model"] == TEST_MODEL).all()
        assert frame["passage_id"].null_count() == 0 and (frame["completion_tokens"] > 0).all()

    again = seedbed(*args, cwd=workspace)
    assert again.returncode == 0, again.stderr
    rerun = json.loads((workspace / "run" / "manifest.json").read_text())
    assert rerun["counts"]["llm_calls"] == 0
    assert rerun["counts"]["reused_from_journal"] == counts["requests"]
    assert pl.read_parquet(workspace / "run" / "dataset.parquet").equals(frame)


def test_no_llama_server_outlives_the_cli(workspace):
    done = seedbed("synth", "task.yaml", "--index", "itest", "--out", "run2", "--model", TEST_MODEL, "-n", "1", cwd=workspace)
    assert done.returncode == 0 and "LLM calls" in done.stdout, done.stderr  # a server really ran
    leftover = subprocess.run(["pgrep", "-f", f"llama-server.*-a {TEST_MODEL}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"llama-server still running: {leftover.stdout}"


def test_structured_output_json_schema_against_llama_server(workspace):
    done = seedbed("synth", "task.yaml", "--index", "itest", "--out", "run3", "--model", TEST_MODEL,
                   "--structured", "-n", "2", cwd=workspace)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (workspace / "run3" / "dataset.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (workspace / "run3" / "rejected.jsonl").read_text().splitlines()]
    assert len(rows) + len(rejected) >= 4
    assert all(not row["text"].lstrip().startswith("{") for row in rows)  # JSON answers were unwrapped
