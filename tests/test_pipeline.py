"""End-to-end synthesis on a real Reuters index with a scripted LLM: outputs and provenance, reuse
from the journal, resume after a crash, top-ups after rejections, run identity and the lock."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json

import polars as pl
import pytest

from engine.dataset import DATASET_FILES, read_dataset
from engine.errors import ConfigError, LLMFatalError
from engine.journal import JOURNAL_NAME
from engine.testing import ScriptedLLM, default_answer
from engine.pipeline import SynthOptions, synthesize, task_fingerprint
from engine.types import LabelSpec, OutputSpec, RetrievalParams, SamplingParams, TaskSpec

from conftest import REPO, CrashingLLM

TASK = TaskSpec(
    name="reuters-topics",
    labels=(
        LabelSpec("Oil", "crude oil prices, OPEC and oil production"),
        LabelSpec("Grain", "wheat, corn and grain harvests and exports"),
        LabelSpec("Earnings", "company quarterly earnings, profits and dividends"),
    ),
    output=OutputSpec("news headline", min_words=4, max_words=14),
    examples_per_label=3,
    sampling=SamplingParams(temperature=0.7, max_tokens=40),
    # hash-64 vectors carry little meaning, so label assignment is off: these tests are about the loop
    retrieval=RetrievalParams(min_similarity=0.1, max_similarity=0.9, mode="hybrid", assign_labels=False),
    seed=5,
)
PER_LABEL_PASSAGES = 6  # examples_per_label * the default overgenerate factor of 2


def run(hash_index, out, llm=None, task=TASK, **options):
    llm = llm if llm is not None else ScriptedLLM()
    result = synthesize(task, hash_index.index, llm, SynthOptions(out=out, concurrency=options.pop("concurrency", 2), **options))
    return result, llm


def jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def call_keys(llm):
    return [(call.messages, call.params) for call in llm.calls]


def expected_template_identity():
    system = hashlib.sha256((REPO / "prompts" / "system.md").read_bytes()).hexdigest()
    refine = hashlib.sha256((REPO / "prompts" / "synthesizrr" / "refine.md").read_bytes()).hexdigest()
    joined = f"system:{system}\nsynthesizrr/refine:{refine}"
    return "system+synthesizrr/refine", hashlib.sha256(joined.encode()).hexdigest()


@pytest.fixture
def first_run(hash_index, tmp_path):
    out = tmp_path / "run"
    result, llm = run(hash_index, out)
    return out, result, llm


def test_synthesize_writes_every_file_with_full_provenance(hash_index, first_run):
    out, result, llm = first_run
    assert {kind: path.name for kind, path in result.files.items()} == {**DATASET_FILES, "card": "README.md"}
    assert all(path.is_file() for path in result.files.values())
    frame = read_dataset(out)
    rows = jsonl(out / "dataset.jsonl")
    assert frame.to_dicts() == rows
    assert result.kept == {"Oil": 3, "Grain": 3, "Earnings": 3}
    assert frame.group_by("label").len().sort("label").rows() == [("Earnings", 3), ("Grain", 3), ("Oil", 3)]

    index_ids = set(hash_index.index.passages["id"].to_list())
    template_id, template_sha = expected_template_identity()
    for row in rows:
        assert row["passage_id"] in index_ids
        assert row["passage_text"] == hash_index.index.passage(hash_index.index.row_of(row["passage_id"])).text
        assert row["template_id"] == template_id and row["template_sha256"] == template_sha
        assert row["model"] == "scripted"
        assert isinstance(row["seed"], int) and json.loads(row["sampling"])["seed"] == row["seed"]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert len(row["request_id"]) == 64 and row["query"] == TASK.label(row["label"]).verbalization
        assert 0.0 <= row["copy_rate"] < 0.8
        assert 4 <= len(row["text"].split()) <= 14
    assert len({row["seed"] for row in rows}) == len(rows)  # a different sampling seed per request
    assert len({row["passage_id"] for row in rows}) == len(rows)  # max_reuse=1 across labels

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    rejected = jsonl(out / "rejected.jsonl")
    assert counts["kept"] == len(rows) == 9
    assert counts["kept_per_label"] == {"Oil": 3, "Grain": 3, "Earnings": 3}
    assert counts["rejected"] == len(rejected) == sum(counts["rejected_by_reason"].values())
    assert counts["llm_calls"] == len(llm.calls) == result.calls == counts["requests"]
    assert counts["reused_from_journal"] == 0 and counts["failed"] == 0
    assert manifest["task_fingerprint"] == task_fingerprint(TASK) and manifest["model"] == "scripted"
    assert manifest["index"]["name"] == "reuters" and manifest["index"]["embedder"] == "hash-64"
    assert manifest["index"]["dense_kind"] == "flat" and manifest["index"]["dense_search"]["hnsw_ef_search"] is None
    assert manifest["tokens"]["prompt_kept_examples"] == sum(row["prompt_tokens"] for row in rows)
    assert set(manifest["retrieval"]) == {"Oil", "Grain", "Earnings"}
    assert (out / JOURNAL_NAME).is_file()


def test_rerun_into_the_same_folder_makes_no_calls_and_gives_the_same_dataset(hash_index, first_run):
    out, result, _ = first_run
    before = {name: (out / name).read_bytes() for name in ("dataset.jsonl", "rejected.jsonl")}
    again, llm = run(hash_index, out)
    assert llm.calls == []
    assert again.calls == 0 and again.reused == result.calls
    assert {name: (out / name).read_bytes() for name in before} == before
    assert again.manifest["counts"]["reused_from_journal"] == result.calls
    tokens, first = again.manifest["tokens"], result.manifest["tokens"]
    assert tokens["prompt_this_run"] == tokens["completion_this_run"] == 0
    assert tokens["prompt_all_answers"] == first["prompt_all_answers"] == first["prompt_this_run"] > 0
    assert tokens["completion_all_answers"] == first["completion_this_run"] > 0


@pytest.mark.parametrize("concurrency", [1, 3])
def test_an_interrupted_run_resumes_with_exactly_the_remaining_calls(hash_index, tmp_path, concurrency):
    whole, whole_llm = run(hash_index, tmp_path / "whole", concurrency=concurrency)
    total = len(whole_llm.calls)
    assert total >= 9

    out = tmp_path / "crashed"
    crashing = CrashingLLM(survive=4)
    with pytest.raises(LLMFatalError, match="went away"):
        run(hash_index, out, llm=crashing, concurrency=concurrency)
    assert not (out / "dataset.parquet").exists()  # nothing half-written
    journalled = [e for e in jsonl(out / JOURNAL_NAME) if e["status"] == "ok"]
    assert len(journalled) == 4

    resumed, llm = run(hash_index, out, concurrency=concurrency)
    assert len(llm.calls) == total - 4
    first_calls = call_keys(crashing)[:4]
    assert not set(first_calls) & set(call_keys(llm))  # nothing paid for twice
    assert set(first_calls) | set(call_keys(llm)) == set(call_keys(whole_llm))
    assert resumed.reused == 4
    assert (out / "dataset.jsonl").read_bytes() == (tmp_path / "whole" / "dataset.jsonl").read_bytes()
    assert read_dataset(out).equals(read_dataset(tmp_path / "whole"))


def test_rejected_answers_are_topped_up_from_extra_passages(hash_index, tmp_path):
    bad_answers = iter(["I'm sorry, but I can't help with that request.", "   ...   "])
    grain_prompts = []

    def respond(messages):
        prompt = messages[-1]["content"]
        if "grain harvests" in prompt:
            grain_prompts.append(prompt)
            if len(grain_prompts) <= 2:
                return next(bad_answers)
        return default_answer(messages)

    result, llm = run(hash_index, tmp_path / "out", llm=ScriptedLLM(respond=respond), concurrency=1)
    assert result.kept == {"Oil": 3, "Grain": 3, "Earnings": 3}
    assert result.rejected == {"refusal": 1, "empty": 1}
    assert len(llm.calls) == 9 + 2 and result.manifest["counts"]["rounds"] == 2
    rejected = jsonl(tmp_path / "out" / "rejected.jsonl")
    assert [(r["label"], r["reason"]) for r in rejected] == [("Grain", "refusal"), ("Grain", "empty")]
    assert all(r["passage_id"] and r["request_id"] for r in rejected)
    kept_grain = set(read_dataset(tmp_path / "out").filter(pl.col("label") == "Grain")["passage_id"].to_list())
    assert not kept_grain & {r["passage_id"] for r in rejected}  # top-ups use other passages


def test_when_every_answer_is_rejected_the_run_stops_after_the_extra_passages(hash_index, tmp_path):
    result, llm = run(hash_index, tmp_path / "out", llm=ScriptedLLM(respond=lambda messages: ""))
    assert result.kept == {"Oil": 0, "Grain": 0, "Earnings": 0}
    assert len(llm.calls) == 3 * PER_LABEL_PASSAGES
    assert result.rejected == {"empty": 3 * PER_LABEL_PASSAGES}
    assert read_dataset(tmp_path / "out").height == 0
    assert len(jsonl(tmp_path / "out" / "rejected.jsonl")) == 3 * PER_LABEL_PASSAGES


def test_a_changed_task_or_model_needs_fresh(hash_index, first_run):
    out, result, _ = first_run
    changed = dataclasses.replace(TASK, examples_per_label=2)
    with pytest.raises(ConfigError, match="holds a run of another task spec or model .*--fresh"):
        run(hash_index, out, task=changed)
    with pytest.raises(ConfigError, match="--fresh"):
        run(hash_index, out, llm=ScriptedLLM(model="other-model"))
    assert json.loads((out / "manifest.json").read_text())["task"]["examples_per_label"] == 3  # untouched

    fresh, llm = run(hash_index, out, task=changed, fresh=True)
    assert fresh.kept == {"Oil": 2, "Grain": 2, "Earnings": 2}
    assert fresh.reused > 0 and len(llm.calls) < fresh.manifest["counts"]["requests"]  # matching answers reused
    assert json.loads((out / "run.json").read_text())["task_fingerprint"] == task_fingerprint(changed)


def test_a_second_run_into_a_locked_folder_is_refused(hash_index, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    llm = ScriptedLLM()
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match=f"another seedbed run is writing to {out}"):
            run(hash_index, out, llm=llm)
    assert llm.calls == []
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    result, _ = run(hash_index, out)  # once the lock is released the run goes ahead
    assert sum(result.kept.values()) == 9


def test_progress_is_reported(hash_index, tmp_path):
    seen = []
    llm = ScriptedLLM()
    synthesize(TASK, hash_index.index, llm, SynthOptions(out=tmp_path / "out"), on_progress=lambda p: seen.append(dataclasses.replace(p)))
    last = seen[-1]
    assert last.done == last.sent == len(llm.calls) and last.failed == 0
    assert last.completion_tokens > 0 and last.prompt_tokens > 0
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_a_prompt_too_long_for_the_context_is_rejected_and_topped_up_not_fatal(hash_index, tmp_path):
    from engine.errors import LLMPromptTooLongError

    too_long = []

    def respond(messages):
        prompt = messages[-1]["content"]
        if "grain harvests" in prompt and not too_long:
            too_long.append(prompt)
            raise LLMPromptTooLongError("the prompt does not fit the model's context window (2065 > 2048)")
        return default_answer(messages)

    result, llm = run(hash_index, tmp_path / "out", llm=ScriptedLLM(respond=respond), concurrency=1)
    assert result.kept == {"Oil": 3, "Grain": 3, "Earnings": 3}
    assert result.rejected.get("prompt_too_long") == 1 and result.failed == 0
    rejected = [r for r in jsonl(tmp_path / "out" / "rejected.jsonl") if r["reason"] == "prompt_too_long"]
    assert [r["label"] for r in rejected] == ["Grain"] and "context window" in rejected[0]["detail"]


def test_temp_files_of_a_killed_run_are_cleaned_up(hash_index, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".dataset.jsonl.tmp-999999", out / ".manifest.json.tmp-999998"]
    for path in stale:
        path.write_text("half-written")
    run(hash_index, out)
    assert not any(path.exists() for path in stale)
    assert not list(out.glob(".*.tmp-*"))
