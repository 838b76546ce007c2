"""The pipeline driving a generation-only strategy (fewgen) and label verification, with a scripted LLM."""

from __future__ import annotations

import dataclasses
import json

import polars as pl

from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.types import LabelSpec, OutputSpec, SamplingParams, TaskSpec

TASK = TaskSpec(
    name="topics",
    labels=(
        LabelSpec("Oil", "crude oil prices and production", seeds=("OPEC agrees to cut crude output by a million barrels",
                                                                      "Oil prices climb as Gulf supply worries grow")),
        LabelSpec("Grain", "wheat and corn harvests", seeds=("Wheat exports rise after a record harvest in Kansas",)),
    ),
    output=OutputSpec("news headline", min_words=4, max_words=14),
    examples_per_label=3,
    strategy="fewgen",
    sampling=SamplingParams(max_tokens=40),
    seed=3,
    strategy_options={"shots": 2},
)


def headline_writer(refuse_first: int = 0):
    """Answers each fewgen prompt with a distinct headline; the first `refuse_first` calls refuse."""
    calls = {"n": 0}

    def respond(messages):
        calls["n"] += 1
        if calls["n"] <= refuse_first:
            return "I'm sorry, I cannot help with that."
        topic = "oil" if "crude oil" in messages[-1]["content"] else "grain"
        return f"Traders watch {topic} markets closely in week number {calls['n']}"

    return respond


def test_fewgen_runs_without_an_index_and_tops_up_rejections(tmp_path):
    llm = ScriptedLLM(respond=headline_writer(refuse_first=2))
    result = synthesize(TASK, None, llm, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert result.kept == {"Oil": 3, "Grain": 3}
    assert result.rejected == {"refusal": 2}
    assert len(llm.calls) == 8  # 6 planned + 2 top-ups with new sample indexes
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["index"] is None and manifest["retrieval"] == {} and manifest["counts"]["rounds"] == 2
    frame = pl.read_parquet(tmp_path / "run" / "dataset.parquet")
    assert frame["passage_id"].null_count() == len(frame)
    assert frame["request_id"].n_unique() == len(frame)
    again = ScriptedLLM(respond=headline_writer())
    synthesize(TASK, None, again, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert again.calls == []  # everything comes from the journal


def test_verification_drops_disagreements_and_reports_agreement(tmp_path):
    counter = {"n": 0}

    def respond(messages):
        prompt = messages[-1]["content"]
        if "Traders watch" in prompt:  # a judge request: the example text comes last
            return "Grain" if "week number 1" in prompt.splitlines()[-1] else ("Oil" if " oil " in prompt.splitlines()[-1] else "Grain")
        counter["n"] += 1
        topic = "oil" if "crude oil" in prompt else "grain"
        return f"Traders watch {topic} markets closely in week number {counter['n']}"

    task = dataclasses.replace(TASK, verify="drop")
    result = synthesize(task, None, ScriptedLLM(respond=respond), SynthOptions(out=tmp_path / "run", concurrency=1))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    verification = manifest["verification"]
    assert verification["policy"] == "drop"
    assert verification["agreement"]["Oil"] < 1.0 and verification["agreement"]["Grain"] == 1.0
    assert result.rejected.get("label_disagreement") == 1
    assert result.kept == {"Oil": 3, "Grain": 3}  # the dropped example was replaced in the next round
    assert manifest["counts"]["rounds"] == 2


def test_relabel_policy_moves_the_example(tmp_path):
    def respond(messages):
        prompt = messages[-1]["content"]
        if "Traders watch" in prompt:
            return "Grain"  # the judge calls everything Grain
        return f"Traders watch oil markets closely in week number {len(prompt) % 97} {prompt.count('-')}"

    task = dataclasses.replace(TASK, verify="relabel", examples_per_label=1)
    result = synthesize(task, None, ScriptedLLM(respond=respond), SynthOptions(out=tmp_path / "run", concurrency=1))
    frame = pl.read_parquet(tmp_path / "run" / "dataset.parquet")
    assert set(frame["label"]) == {"Grain"} and result.kept == {"Oil": 0, "Grain": len(frame)}


def test_a_call_budget_stops_cleanly_and_a_larger_one_continues(tmp_path):
    out = tmp_path / "run"
    first = ScriptedLLM(respond=headline_writer())
    result = synthesize(TASK, None, first, SynthOptions(out=out, concurrency=1, max_calls=4))
    assert len(first.calls) == 4 and result.calls == 4
    assert result.manifest["counts"]["unsent_over_budget"] == 2 and sum(result.kept.values()) == 4
    second = ScriptedLLM(respond=headline_writer())
    result = synthesize(TASK, None, second, SynthOptions(out=out, concurrency=1, max_calls=10))
    assert len(second.calls) == 2 and result.reused == 4  # only the requests the budget held back
    assert result.kept == {"Oil": 3, "Grain": 3} and result.manifest["counts"]["unsent_over_budget"] == 0


def test_a_token_cap_holds_back_unjudged_examples_instead_of_dropping_them(tmp_path):
    def agreeing_judge():
        written = {"n": 0}

        def respond(messages):
            prompt = messages[-1]["content"]
            if "Traders watch" in prompt:  # a judge request: agrees with the label written
                return "Oil" if " oil " in prompt.splitlines()[-1] else "Grain"
            written["n"] += 1
            topic = "oil" if "crude oil" in prompt else "grain"
            return f"Traders watch {topic} markets closely in week number {written['n']}"

        return respond

    task = dataclasses.replace(TASK, verify="drop")
    whole = ScriptedLLM(respond=agreeing_judge())
    synthesize(task, None, whole, SynthOptions(out=tmp_path / "whole", concurrency=1))
    capped_llm = ScriptedLLM(respond=agreeing_judge())
    # room for the 6 generation calls and a few judge calls, counted at their max_tokens
    capped = synthesize(task, None, capped_llm, SynthOptions(out=tmp_path / "run", concurrency=1, max_tokens_total=1800))
    judged = sum("Traders watch" in c.messages[-1][1] for c in capped_llm.calls)
    assert 0 < judged < 6 and capped.rejected == {}  # no unjudged example counted as an unreadable verdict
    assert sum(capped.kept.values()) == judged and capped.manifest["counts"]["unsent_over_token_or_cost_cap"] > 0
    resumed_llm = ScriptedLLM(respond=agreeing_judge())
    resumed = synthesize(task, None, resumed_llm, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert len(resumed_llm.calls) == len(whole.calls) - len(capped_llm.calls)  # only the judge calls held back
    assert resumed.kept == {"Oil": 3, "Grain": 3} and resumed.rejected == {}
    assert pl.read_parquet(tmp_path / "run" / "dataset.parquet").equals(pl.read_parquet(tmp_path / "whole" / "dataset.parquet"))
