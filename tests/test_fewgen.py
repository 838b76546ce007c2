"""FewGen: k-shot plan -> messages -> (ScriptedLLM) -> parse, with no retrieval."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.testing import ScriptedLLM
from engine.prompts import load_template
from engine.strategies.base import Strategy, available_strategies, get_strategy
from engine.strategies.fewgen import DEFAULT_SHOTS, FewGen
from engine.strategies.synthesizrr import ANSWER_SCHEMA, SynthesizRR
from engine.types import Completion, Example, LabelSpec, OutputSpec, Rejection, SamplingParams, TaskSpec

REPO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
SPORTS_SEEDS = tuple(f"Sports seed {i}: Rovers edge Town in a tense derby number {i}" for i in range(1, 9))
BUSINESS_SEEDS = ("Apple shares climb after record quarterly revenue", "Oil prices slide as OPEC output rises")

TASK = TaskSpec(
    name="ag-news",
    labels=(
        LabelSpec("Sports", "sports", SPORTS_SEEDS),
        LabelSpec("Business", "business and finance", BUSINESS_SEEDS),
        LabelSpec("Sci/Tech", "science and technology"),
    ),
    output=OutputSpec(kind="news headline", min_words=4, max_words=14),
    examples_per_label=3,
    strategy="fewgen",
    sampling=SamplingParams(temperature=0.9, max_tokens=40),
    seed=13,
)


def plan(strategy: FewGen | None = None, task: TaskSpec = TASK):
    strategy = strategy or FewGen()
    return strategy, strategy.plan(task, {}, strategy.load_templates(task))


def prompt(request) -> str:
    return request.messages[-1][1]


def shown(request) -> list[str]:
    """The demonstrations a request shows, read back from its prompt."""
    _, _, block = prompt(request).partition("Examples:\n")
    return [line.split(". ", 1)[1] for line in block.splitlines() if line.strip()]


def answer(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, model="qwen", prompt_tokens=150, completion_tokens=9, finish_reason=finish)


def complete(llm: ScriptedLLM, request) -> Completion:
    return asyncio.run(llm.complete(request.chat_messages(), request.sampling, request.json_schema))


def test_registry_builds_fewgen_without_retrieval():
    assert {"fewgen", "synthesizrr"} <= set(available_strategies())
    strategy = get_strategy("fewgen", structured_output=True, shots=2)
    assert isinstance(strategy, FewGen) and strategy.structured_output and strategy.shots == 2
    assert FewGen.uses_retrieval is False and SynthesizRR.uses_retrieval is True and Strategy.uses_retrieval is True
    assert FewGen().shots == DEFAULT_SHOTS == 4


@pytest.mark.parametrize("shots", [-1, 33, 2.5, True, "4"])
def test_bad_shots_is_a_config_error_naming_value_and_range(shots):
    with pytest.raises(ConfigError, match=rf"shots={shots!r}.*from 0 \(zero-shot\) to 32"):
        FewGen(shots=shots)


def test_plan_makes_examples_per_label_requests_per_label_without_hits():
    _, requests = plan()
    assert [(r.label, r.sample_index) for r in requests] == [
        (label, i) for label in ("Sports", "Business", "Sci/Tech") for i in range(3)
    ]
    assert all(r.hit is None and r.json_schema is None for r in requests)
    first = requests[0]
    assert [role for role, _ in first.messages] == ["system", "user"]
    assert "one new news headline of 4 to 14 words that is about sports" in prompt(first)
    assert first.template_id == "system+fewgen/generate" and len(first.template_sha256) == 64


def test_plan_ignores_hits_it_is_given():
    strategy, requests = plan()
    again = strategy.plan(TASK, {"Sports": ["anything"]}, strategy.load_templates(TASK))
    assert [r.id for r in again] == [r.id for r in requests]


def test_task_default_refine_template_is_replaced_by_fewgen_generate():
    assert TASK.template == "synthesizrr/refine"
    assert FewGen().template_names(TASK) == ("system", "fewgen/generate")
    own = dataclasses.replace(TASK, template="fewgen/generate", system_template="")
    assert FewGen().template_names(own) == ("fewgen/generate",)
    custom = dataclasses.replace(TASK, template="my/prompt")
    assert FewGen().template_names(custom) == ("system", "my/prompt")


def test_k_shot_draw_honours_k_and_never_mixes_labels():
    _, requests = plan(FewGen(shots=3))
    for request in requests:
        demos = shown(request)
        seeds = TASK.label(request.label).seeds
        assert len(demos) == min(3, len(seeds))
        assert set(demos) <= set(seeds) and len(set(demos)) == len(demos)
    sports = [tuple(shown(r)) for r in requests if r.label == "Sports"]
    assert len(set(sports)) == 3  # each request draws its own demonstrations
    assert sorted(shown(requests[3])) == sorted(BUSINESS_SEEDS)  # fewer seeds than k: all of them


def test_demonstrations_are_a_numbered_list_at_the_end_of_the_prompt():
    _, requests = plan(FewGen(shots=2))
    text = prompt(requests[0])
    demos = FewGen(shots=2).demonstrations(TASK, TASK.label("Sports"), 0)
    assert text.endswith(f"Examples:\n1. {demos[0]}\n2. {demos[1]}")
    assert "different from every example" in text


def test_requests_of_one_label_share_everything_before_the_examples():
    _, requests = plan(FewGen(shots=2))
    heads = [prompt(r).partition("Examples:\n")[0] for r in requests[:3]]
    assert heads[0] == heads[1] == heads[2]
    assert heads[0] != prompt(requests[3]).partition("Examples:\n")[0]


def test_zero_shot_and_labels_without_seeds_show_no_examples():
    _, zero = plan(FewGen(shots=0))
    assert all("Examples:" not in prompt(r) and "Invent realistic details" in prompt(r) for r in zero)
    _, k_shot = plan(FewGen(shots=4))
    sci = [r for r in k_shot if r.label == "Sci/Tech"]
    assert all("Examples:" not in prompt(r) for r in sci)


def test_plans_ids_seeds_and_draws_are_deterministic_and_distinct():
    _, first = plan()
    _, again = plan()
    assert [r.id for r in first] == [r.id for r in again]
    assert [r.messages for r in first] == [r.messages for r in again]
    assert len({r.id for r in first}) == len(first)
    seeds = [r.sampling.seed for r in first]
    assert len(set(seeds)) == len(seeds) and seeds == [r.sampling.seed for r in again]
    assert all(r.sampling.temperature == 0.9 and r.sampling.max_tokens == 40 for r in first)
    _, reseeded = plan(task=dataclasses.replace(TASK, seed=14))
    assert {r.id for r in reseeded}.isdisjoint(r.id for r in first)


def test_zero_shot_requests_differ_only_by_sample_index_and_still_get_distinct_ids():
    _, requests = plan(FewGen(shots=0))
    sports = requests[:3]
    assert sports[0].messages == sports[1].messages
    assert len({r.id for r in sports}) == 3 and len({r.sampling.seed for r in sports}) == 3


def test_plan_counts_tops_up_with_new_requests_from_start():
    strategy = FewGen()
    templates = strategy.load_templates(TASK)
    first = strategy.plan(TASK, {}, templates)
    top_up = strategy.plan_counts(TASK, {"Business": 2, "Sports": 1}, templates, start={"Business": 3, "Sports": 3})
    assert [(r.label, r.sample_index) for r in top_up] == [("Sports", 3), ("Business", 3), ("Business", 4)]
    assert {r.id for r in top_up}.isdisjoint(r.id for r in first)
    # The same sample index always plans the same request, whichever call planned it.
    again = strategy.plan_counts(TASK, {"Sports": 3}, templates)
    assert [r.id for r in again] == [r.id for r in first[:3]]


def test_plan_counts_rejects_unknown_labels_and_negative_counts():
    strategy = FewGen()
    templates = strategy.load_templates(TASK)
    with pytest.raises(ConfigError, match=r"label 'Politics'.*labels: \['Sports', 'Business', 'Sci/Tech'\]"):
        strategy.plan_counts(TASK, {"Politics": 1}, templates)
    with pytest.raises(ConfigError, match=r"counts\['Sports'\] is -1"):
        strategy.plan_counts(TASK, {"Sports": -1}, templates)
    with pytest.raises(ConfigError, match=r"start\['Sports'\] is 'x'"):
        strategy.plan_counts(TASK, {"Sports": 1}, templates, start={"Sports": "x"})
    with pytest.raises(ConfigError, match=r"templates \['system'\] were not loaded"):
        strategy.plan(TASK, {}, {"fewgen/generate": templates["fewgen/generate"]})


def test_structured_output_sets_the_text_schema_and_a_different_id():
    _, plain = plan()
    _, structured = plan(FewGen(structured_output=True))
    assert structured[0].json_schema == ANSWER_SCHEMA
    assert 'JSON object with one key, "text"' in prompt(structured[0])
    assert structured[0].id != plain[0].id


def test_template_loads_and_its_sha_lands_in_provenance():
    generate = load_template("fewgen/generate")
    assert generate.id == "fewgen/generate"
    assert generate.sha256 == hashlib.sha256((REPO_PROMPTS / "fewgen/generate.md").read_bytes()).hexdigest()
    task = dataclasses.replace(TASK, system_template="")
    strategy, requests = plan(task=task)
    result = strategy.parse(requests[0], answer("Rovers stun City with late winner at the Vale"), task)
    assert isinstance(result, Example)
    assert (result.provenance.template_id, result.provenance.template_sha256) == ("fewgen/generate", generate.sha256)


def test_scripted_round_trip_keeps_good_answers_with_provenance():
    strategy, requests = plan()
    llm = ScriptedLLM(["Headline: Rovers stun City with late winner at the Vale"])
    completion = complete(llm, requests[0])
    result = strategy.parse(requests[0], completion, TASK)
    assert llm.calls[0].messages == requests[0].messages and llm.calls[0].params == requests[0].sampling
    assert isinstance(result, Example) and result.text == "Rovers stun City with late winner at the Vale"
    p = result.provenance
    assert (p.passage_id, p.retrieval_score, p.retrieval_rank, p.cosine, p.query) == (None,) * 5
    assert p.request_id == requests[0].id and p.seed == requests[0].sampling.seed and p.model == "scripted"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("I'm sorry, but I can't help with writing this headline.", "refusal"),
        ("Rovers win", "too_short"),
        ("Rovers beat Town in a thrilling match that the fans in the stands will talk about for years", "too_long"),
        ('{"text": "Win"', "too_short"),
        (SPORTS_SEEDS[4], "copy_of_seed"),
        (f'"{SPORTS_SEEDS[0].upper()}"', "copy_of_seed"),
    ],
)
def test_malformed_answers_become_rejections(raw, reason):
    strategy, requests = plan()
    result = strategy.parse(requests[0], complete(ScriptedLLM([raw]), requests[0]), TASK)
    assert isinstance(result, Rejection)
    assert (result.reason, result.raw, result.label) == (reason, raw, "Sports")
    assert result.detail and result.provenance.request_id == requests[0].id


def test_truncated_answer_is_rejected():
    strategy, requests = plan()
    result = strategy.parse(requests[0], answer("Rovers late goal gives them the derby", finish="length"), TASK)
    assert isinstance(result, Rejection) and result.reason == "truncated"


def test_structured_json_round_trip_and_broken_json():
    strategy, requests = plan(FewGen(structured_output=True))
    llm = ScriptedLLM([json.dumps({"text": "Rovers stun City with late winner"}), '{"text": "Rovers stun City late on"'])
    first, second = (complete(llm, r) for r in requests[:2])
    assert llm.calls[0].json_schema == ANSWER_SCHEMA
    assert strategy.parse(requests[0], first, TASK).text == "Rovers stun City with late winner"
    assert strategy.parse(requests[1], second, TASK).text == "Rovers stun City late on"


def test_a_copy_of_another_labels_seed_is_rejected_too():
    strategy, requests = plan()
    result = strategy.parse(requests[0], answer(BUSINESS_SEEDS[0]), TASK)
    assert isinstance(result, Rejection) and result.reason == "copy_of_seed"
    assert "seed 1 of 'Business'" in result.detail
