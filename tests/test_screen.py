"""Retrieval screening: a yes/no LLM question per retrieved passage before it is rewritten.

Real text and real embeddings (the news-mix slice of test_coverage); the LLM is a scripted fake
that answers the screen question by rule, so the tests are about what a "no" does: the passage
never reaches a refine prompt, the next passage takes its place, the answers are counted in the
manifest, and a re-run asks nothing again.
"""

from __future__ import annotations

import json

import pytest

from engine.testing import ScriptedLLM, default_answer
from engine.pipeline import SynthOptions, synthesize
from engine.retrieval.screen import parse_answer
from engine.types import Completion, QualityParams, RetrievalParams

from test_coverage import LABELS, build_mix_index, make_task

SCREEN_QUESTION = 'Answer with only "yes" or "no".'


@pytest.fixture(scope="module")
def mix_index(tmp_path_factory):
    return build_mix_index(tmp_path_factory.mktemp("screen-mix"))


def passage_of(messages) -> str:
    return messages[-1]["content"].split("Passage:\n", 1)[1].split("\n\nQuestion:", 1)[0].strip()


class Screener:
    """Says no to the first `refuse` passages asked about for Business, "maybe" to the next one."""

    def __init__(self, refuse: int = 2):
        self.refuse, self.refused, self.maybe, self.asked = refuse, [], None, []

    def __call__(self, messages) -> str:
        user = messages[-1]["content"]
        if SCREEN_QUESTION not in user:
            return default_answer(messages)
        self.asked.append(user)
        if "is this passage business news" in user:
            if len(self.refused) < self.refuse:
                self.refused.append(passage_of(messages))
                return "No."
            if self.maybe is None:
                self.maybe = passage_of(messages)
                return "It depends"
        return "Yes"


def screened_task():
    two_labels = LABELS[:2]  # Business and Sports: both covered by the slice
    retrieval = RetrievalParams(min_similarity=0.2, max_similarity=0.9, mode="hybrid", label_margin=0.05, screen=True)
    return make_task(labels=two_labels, retrieval=retrieval, quality=QualityParams(near_duplicate=0.0))


def test_parse_answer_reads_yes_no_and_nothing_else():
    def done(text):
        return Completion(text=text, model="m", prompt_tokens=1, completion_tokens=1, finish_reason="stop")

    assert parse_answer(done("Yes")) is True and parse_answer(done(" no, it is about hockey")) is False
    assert parse_answer(done("**YES**")) is True
    assert parse_answer(done("Maybe")) is None and parse_answer(done("nobody knows")) is None
    assert parse_answer(None) is None


def test_a_passage_the_screen_refuses_never_reaches_a_prompt_and_the_next_one_takes_its_place(mix_index, tmp_path):
    screener = Screener(refuse=2)
    llm = ScriptedLLM(respond=screener)
    result = synthesize(screened_task(), mix_index, llm, SynthOptions(out=tmp_path / "run"))
    assert result.kept == {"Business": 4, "Sports": 4}
    refine_prompts = [call.messages[-1][1] for call in llm.calls if SCREEN_QUESTION not in call.messages[-1][1]]
    assert len(refine_prompts) == 8
    used = [prompt.split("Passage:\n", 1)[1] for prompt in refine_prompts]
    for refused in screener.refused:
        assert not any(refused in passage for passage in used), "a refused passage was rewritten"
    assert any(screener.maybe in passage for passage in used), "an unreadable answer keeps the passage"
    manifest = json.loads(result.files["manifest"].read_text(encoding="utf-8"))
    counts = manifest["stages"]["screen"]
    assert counts["Business"] == {"screened": 6, "yes": 3, "no": 2, "unreadable": 1}
    assert counts["Sports"] == {"screened": 4, "yes": 4, "no": 0, "unreadable": 0}
    # every screen answer is journalled: a re-run asks nothing, screens nothing anew, writes the same
    again = synthesize(screened_task(), mix_index, ScriptedLLM(respond=Screener(refuse=2)), SynthOptions(out=tmp_path / "run"))
    assert again.calls == 0 and again.kept == result.kept


def test_a_screen_reaches_past_the_wanted_passages_and_a_label_it_empties_is_reported_with_the_fix(mix_index, tmp_path, capsys):
    """A screen that turns most passages away must not end a label at the first `wanted` passages: it
    reaches further into the label's pool; when even that runs out, the summary says so and how to fix it."""
    from engine.cli_synth import print_summary
    from engine.pipeline import plan

    task = screened_task()
    wanted = plan(make_task(labels=LABELS[:2]), mix_index, SynthOptions(out=tmp_path / "x")).parts[0].picks
    reach = plan(task, mix_index, SynthOptions(out=tmp_path / "x")).parts[0].picks
    assert all(len(reach[name]) > len(wanted[name]) for name in ("Business", "Sports"))

    screener = Screener(refuse=len(wanted["Business"]) + 2)  # more than the wanted passages: the reach fills Business
    result = synthesize(task, mix_index, ScriptedLLM(respond=screener), SynthOptions(out=tmp_path / "reach"))
    assert result.kept == {"Business": 4, "Sports": 4}

    refuse_all = Screener(refuse=10_000)
    result = synthesize(task, mix_index, ScriptedLLM(respond=refuse_all), SynthOptions(out=tmp_path / "none"))
    assert result.kept["Business"] == 0 and result.kept["Sports"] == 4
    manifest = json.loads(result.files["manifest"].read_text(encoding="utf-8"))
    assert manifest["stages"]["passages_ran_out"] == {"Business": len(reach["Business"])}
    print_summary(result)
    out = capsys.readouterr().out
    assert (f"Business: 0 of 4: its {len(reach['Business'])} retrieved passages ran out, "
            f"{len(reach['Business'])} of them turned away by the retrieval screen") in out
    assert "or turn retrieval.screen off" in out and "labels short of the target" not in out


def test_the_screen_is_off_by_default_and_asks_nothing(mix_index, tmp_path):
    llm = ScriptedLLM(respond=Screener())
    task = make_task(labels=LABELS[:2], quality=QualityParams(near_duplicate=0.0))
    synthesize(task, mix_index, llm, SynthOptions(out=tmp_path / "run"))
    assert not any(SCREEN_QUESTION in call.messages[-1][1] for call in llm.calls)


def test_plan_counts_the_screening_questions_without_asking_them(mix_index, tmp_path):
    from engine.pipeline import plan

    synth_plan = plan(screened_task(), mix_index, SynthOptions(out=tmp_path / "x"))
    estimate = synth_plan.estimate(screened_task())
    assert estimate["screen_requests"] == 8 and estimate["requests"] == 16
    unscreened = plan(make_task(labels=LABELS[:2]), mix_index, SynthOptions(out=tmp_path / "x")).estimate(make_task(labels=LABELS[:2]))
    assert unscreened["screen_requests"] == 0 and unscreened["requests"] == 8
    assert estimate["prompt_tokens"] > unscreened["prompt_tokens"]


def test_a_run_with_the_confidence_filter_gathers_more_then_keeps_the_most_confident_up_to_the_target(mix_index, tmp_path):
    task = make_task(labels=LABELS[:2], quality=QualityParams(near_duplicate=0.0, confidence_keep=0.75))
    assert task.examples_per_label == 4 and task.gathered_per_label == 6  # ceil(4 / 0.75)
    result = synthesize(task, mix_index, ScriptedLLM(), SynthOptions(out=tmp_path / "run"))
    assert result.calls == 12 and result.kept == {"Business": 4, "Sports": 4}
    manifest = json.loads(result.files["manifest"].read_text(encoding="utf-8"))
    confidence = manifest["stages"]["confidence"]
    assert confidence["keep"] == 0.75 and confidence["dropped"] == 4
    assert {label: (c["kept"], c["dropped"]) for label, c in confidence["per_label"].items()} == {"Business": (4, 2), "Sports": (4, 2)}
    rejected = [json.loads(line) for line in result.files["rejected"].read_text(encoding="utf-8").splitlines()]
    assert sum(r["reason"] == "low_confidence" for r in rejected) == 4
    again = synthesize(task, mix_index, ScriptedLLM(), SynthOptions(out=tmp_path / "run"))
    assert again.calls == 0 and again.kept == result.kept
