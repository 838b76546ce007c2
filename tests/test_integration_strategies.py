"""Every strategy once against a real llama-server with SmolLM2-135M on a tiny task.

This proves the plumbing (templates render, the server accepts the requests and JSON schemas,
answers parse into examples or counted rejections, stages and verification run, resume is free),
not the quality of the data: SmolLM2 is far too small for that.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from engine.config import load_task
from engine.runtime.catalog import TEST_MODEL
from engine.llm.client import OpenAIChat
from engine.runtime.server import LocalServer, ServerConfig
from engine.pipeline import SynthOptions, synthesize
from engine.types import OutputSpec, SamplingParams

from conftest import REPO, require_small_model

pytestmark = pytest.mark.integration

AG_NEWS = REPO / "benchmarks" / "tasks" / "ag_news.yaml"
RUNS = {
    "synthesizrr": ("ag_news.yaml", {}),
    "synthesizrr-retricl": ("ag_news.yaml", {"strategy": "synthesizrr", "strategy_options": {"variant": "retricl"}}),
    "fewgen": ("ag_news.yaml", {"strategy": "fewgen"}),
    "attrprompt": ("trec.yaml", {}),
    "targen": ("imdb.yaml", {}),
    "oneshot": ("yesno.yaml", {}),
}


def available(name: str) -> bool:
    spec_file, _ = RUNS[name]
    module = {"synthesizrr-retricl": "synthesizrr"}.get(name, name)
    return (REPO / "benchmarks" / "tasks" / spec_file).is_file() and importlib.util.find_spec(
        f"engine.strategies.{module}") is not None


@pytest.fixture(scope="module")
def server():
    require_small_model()
    with LocalServer.from_catalog(TEST_MODEL, ServerConfig(parallel=2), install=False, build=False) as running:
        yield running


@pytest.mark.parametrize("name", [n for n in RUNS if available(n)])
def test_strategy_against_llama_server(name, server, hash_index, tmp_path):
    spec_file, overrides = RUNS[name]
    task = load_task(REPO / "benchmarks" / "tasks" / spec_file)
    task = dataclasses.replace(task, examples_per_label=2, labels=task.labels[:2], verify="keep", **overrides)
    task = dataclasses.replace(task, sampling=dataclasses.replace(task.sampling, max_tokens=min(task.sampling.max_tokens, 200)))
    llm = OpenAIChat(server.base_url, server.model, api_key=server.api_key, timeout=120)
    options = SynthOptions(out=tmp_path / name, concurrency=2, structured_output=True, max_rounds=2, max_calls=40)
    result = synthesize(task, hash_index.index, llm, options)

    counts = result.manifest["counts"]
    assert counts["llm_calls"] > 0 and counts["failed"] == 0
    assert result.manifest["model"] == TEST_MODEL
    assert result.manifest["verification"] is None or result.manifest["verification"]["policy"] == "keep"
    rows = [json.loads(line) for line in (tmp_path / name / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == counts["kept"]
    for row in rows:
        assert row["label"] in {spec.name for spec in task.labels} and row["text"].strip()
        assert row["model"] == TEST_MODEL and row["template_sha256"] and row["request_id"]

    again = synthesize(task, hash_index.index, llm, options)  # resume: everything from the journal
    assert again.calls == 0 and again.manifest["counts"]["kept"] == counts["kept"]


def test_a_fallback_task_against_llama_server(server, tmp_path):
    """A label the corpus does not cover (Space) goes to fewgen; the covered ones are rewritten from passages."""
    from test_coverage import build_mix_index, make_task

    index = build_mix_index(tmp_path / "mix")
    # Room for the 135M model's headlines (at 14 words and 40 tokens, one full-suite run had all 21 answers
    # rejected as too long or cut off), and rounds enough to top up what it still gets wrong.
    task = make_task(fallback="fewgen", fallback_options={"shots": 2}, examples_per_label=3,
                     output=OutputSpec("news headline", min_words=4, max_words=30), sampling=SamplingParams(max_tokens=96))
    llm = OpenAIChat(server.base_url, server.model, api_key=server.api_key, timeout=120)
    result = synthesize(task, index, llm, SynthOptions(out=tmp_path / "run", concurrency=2, structured_output=True,
                                                        max_rounds=5, max_calls=60))
    manifest = result.manifest
    assert manifest["coverage"]["Space"]["verdict"] == "unsupported"
    assert manifest["routes"]["Space"]["strategy"] == "fewgen" and manifest["routes"]["Sports"]["strategy"] == "synthesizrr"
    assert manifest["counts"]["llm_calls"] > 0 and manifest["counts"]["failed"] == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()]
    assert rows and all(r["model"] == TEST_MODEL for r in rows)
    for row in rows:
        assert row["strategy"] == ("fewgen" if row["label"] == "Space" else "synthesizrr")
        assert (row["passage_id"] is None) == (row["label"] == "Space")
