"""Fewer wasted calls and prompt tokens: answers fitted to whole sentences, passages cut to a token budget."""

from __future__ import annotations

import dataclasses

import pytest

from engine.config import parse_task
from engine.errors import ConfigError
from engine.strategies.answers import cut_passage, fit_sentences, sentences
from engine.strategies.synthesizrr import SynthesizRR
from engine.types import Completion, Hit, LabelSpec, OutputSpec, Passage, RetrievalParams, TaskSpec

SUMMARY = OutputSpec("news summary", min_words=8, max_words=20)


def test_sentences_keep_initials_and_abbreviations_inside():
    text = 'The U.S. envoy met Mr. Smith of Acme Inc. in Geneva. "Talks went well," he said! Next week? More talks.'
    assert sentences(text) == ["The U.S. envoy met Mr. Smith of Acme Inc. in Geneva.", '"Talks went well," he said!',
                               "Next week?", "More talks."]


def test_an_answer_over_the_length_keeps_its_whole_sentences_that_fit():
    text = ("Oil prices rose on Monday after OPEC ministers agreed to cut output in Vienna. "
            "Analysts in London said the cut would lift prices through the summer and beyond, and traders agreed.")
    fitted, trimmed = fit_sentences(text, SUMMARY, cut_off=False)
    assert trimmed and fitted == "Oil prices rose on Monday after OPEC ministers agreed to cut output in Vienna."


def test_a_cut_off_answer_drops_the_unfinished_sentence():
    text = "Oil prices rose on Monday after OPEC ministers agreed to cut output. Analysts said the cut would"
    assert fit_sentences(text, SUMMARY, cut_off=True) == ("Oil prices rose on Monday after OPEC ministers agreed to cut output.", True)


@pytest.mark.parametrize("text, cut_off", [
    ("Oil prices rose on Monday after OPEC agreed to cut output.", False),  # fits: unchanged
    ("Oil rose. " + "Analysts in London said the cut would lift prices through the summer and beyond today.", False),  # 2 words left
    ("One single sentence that runs on far past the allowed length of twenty words with no end in sight at all here", False),
    ("Prices rose. Then", True),  # what is left is below min_words
])
def test_nothing_is_shortened_when_no_whole_sentences_fit_within_the_bounds(text, cut_off):
    assert fit_sentences(text, SUMMARY, cut_off) == (text, False)


def test_parse_keeps_a_fitted_answer_and_marks_it_trimmed():
    task = TaskSpec(name="t", labels=(LabelSpec("Oil", "oil news"),), output=SUMMARY)
    hit = Hit(Passage("p1", "Crude oil stocks fell in Texas as refiners bought more."), score=1.0, rank=1, cosine=0.5)
    strategy = SynthesizRR()
    from engine.prompts import load_template

    templates = {name: load_template(name) for name in strategy.template_names(task)}
    request = strategy.plan(task, {"Oil": [hit]}, templates)[0]
    long = ("Oil prices rose on Monday after OPEC ministers agreed to cut output in Vienna. Analysts said the cut "
            "would lift prices through the summer and well beyond that, traders agreed")
    example = strategy.parse(request, Completion(text=long, model="m", finish_reason="length"), task)
    assert example.text.endswith("in Vienna.") and example.provenance.trimmed
    off = dataclasses.replace(task, output=dataclasses.replace(SUMMARY, fit_sentences=False))
    assert strategy.parse(request, Completion(text=long, model="m", finish_reason="length"), off).reason == "truncated"


def test_passages_are_cut_at_a_sentence_end_within_the_token_budget():
    text = " ".join(f"Sentence number {i} says something about crude oil output." for i in range(40))
    cut = cut_passage(text, 50)
    assert len(cut) <= 200 and cut.endswith("output.") and text.startswith(cut)
    assert cut_passage("short text.", 50) == "short text."
    assert cut_passage("word " * 200, 20).count("word") <= 20  # one sentence over budget: cut at a word


def test_the_prompt_carries_the_cut_passage():
    passage = " ".join(f"Sentence {i} is about wheat exports to Egypt." for i in range(60))
    task = TaskSpec(name="t", labels=(LabelSpec("Grain", "grain news"),), output=SUMMARY,
                    retrieval=RetrievalParams(passage_tokens=40))
    strategy = SynthesizRR()
    from engine.prompts import load_template

    templates = {name: load_template(name) for name in strategy.template_names(task)}
    request = strategy.plan(task, {"Grain": [Hit(Passage("p", passage), 1.0, 1, cosine=0.5)]}, templates)[0]
    prompt = request.messages[-1][1]
    assert "Sentence 0 is about" in prompt and "Sentence 59" not in prompt
    assert prompt.rstrip().endswith("Egypt.")


def test_task_spec_fields_are_checked():
    base = {"name": "t", "output": "headline", "labels": [{"name": "A", "verbalization": "a"}]}
    assert parse_task({**base, "retrieval": {"passage_tokens": 120}}).retrieval.passage_tokens == 120
    with pytest.raises(ConfigError, match="passage_tokens=4 must be at least 16"):
        parse_task({**base, "retrieval": {"passage_tokens": 4}})
    with pytest.raises(ConfigError, match="retrieval.assign_labels must be true or false, got 'yes'"):
        parse_task({**base, "retrieval": {"assign_labels": "yes"}})
    with pytest.raises(ConfigError, match="label_margin=2.0 must be between -1 and 1"):
        parse_task({**base, "retrieval": {"label_margin": 2.0}})
    with pytest.raises(ConfigError, match="fallback='targen'; use one of attrprompt, fewgen or none"):
        parse_task({**base, "fallback": "targen"})
    assert parse_task({**base, "fallback": "none"}).fallback == ""
    assert parse_task({**base, "fallback": "attrprompt", "fallback_options": {"filter_similar": False}}).fallback_options == {
        "filter_similar": False}
    with pytest.raises(ConfigError, match="output.fit_sentences must be true or false"):
        parse_task({**base, "output": {"kind": "headline", "fit_sentences": 1}})
