"""SynthesizRR's RetrICL variant: seed -> top-ranked passage pairs become demonstrations; the rest are rewritten."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import ConfigError
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.strategies.base import get_strategy
from engine.types import LabelSpec, OutputSpec, RetrievalParams, SamplingParams, TaskSpec

from conftest import REUTERS


def seeds_from_corpus(start: int, count: int) -> tuple[str, ...]:
    """Texts of passages in the index, so each seed's rank-1 hit is a near-copy of it."""
    import json

    lines = REUTERS.read_text(encoding="utf-8").splitlines()[start:start + count]
    return tuple(" ".join(json.loads(line)["text"].split()[:40]) for line in lines)


TASK = TaskSpec(
    name="retricl",
    labels=(LabelSpec("Markets", "financial markets and company news", seeds=seeds_from_corpus(0, 2)),
            LabelSpec("Other", "anything else")),
    output=OutputSpec("news headline", min_words=4, max_words=14),
    examples_per_label=3,
    sampling=SamplingParams(max_tokens=40),
    retrieval=RetrievalParams(min_similarity=0.05, max_similarity=0.99, assign_labels=False),  # hash-64: little meaning
    strategy_options={"variant": "retricl", "demo_min_similarity": 0.3, "demo_max_similarity": 1.0},
    seed=1,
)


def strategy():
    return get_strategy("synthesizrr", **TASK.strategy_options)


def test_demonstrations_pair_each_seed_with_its_closest_picks_and_are_not_rewritten(hash_index):
    chosen = strategy()
    picks, report = chosen.retrieve(hash_index.index, TASK, per_label=3)
    demos = chosen._demos["Markets"]
    assert 1 <= len(demos) <= 2 * 2 and {seed for _, seed in demos} == set(TASK.labels[0].seeds)  # both seeds show
    rewritten = {hit.passage.text.strip() for hits in picks.values() for hit in hits}
    assert not rewritten & {passage for passage, _ in demos}
    assert report.per_label["Markets"]["demonstrations"] == len(demos)
    assert chosen._demos["Other"] == []  # no seeds: zero-shot
    assert [hit.rank for hit in picks["Markets"]] == list(range(1, len(picks["Markets"]) + 1))


def test_demonstrations_are_capped_rank_one_pairs_first(hash_index):
    seeds = seeds_from_corpus(0, 4)
    task = dataclasses.replace(TASK, labels=(LabelSpec("Markets", "financial markets", seeds=seeds),))
    from engine.retrieval.retrieve import retrieve_for_task

    hits = retrieve_for_task(hash_index.index, task, 12)[0]["Markets"]
    capped = get_strategy("synthesizrr", **{**TASK.strategy_options, "max_demonstrations": 3})
    uncapped = get_strategy("synthesizrr", **{**TASK.strategy_options, "max_demonstrations": 99})
    few, few_ids = capped._demonstrations(hash_index.index, task, task.labels[0], hits)
    many, _ = uncapped._demonstrations(hash_index.index, task, task.labels[0], hits)
    assert len(many) > 3 and few == many[:3] and len(few_ids) == 3
    # each seed's own passage is its closest, so the first pairs come from different seeds
    assert len({seed for _, seed in few}) == 3
    with pytest.raises(ConfigError, match="max_demonstrations"):
        get_strategy("synthesizrr", variant="retricl", max_demonstrations=0)


def test_demonstration_passages_come_from_the_labels_own_picks(hash_index):
    chosen = strategy()
    picks, _ = chosen.retrieve(hash_index.index, TASK, per_label=3)
    from engine.retrieval.retrieve import retrieve_for_task
    from engine.strategies.answers import cut_passage

    pool = retrieve_for_task(hash_index.index, TASK, 3 + chosen.max_demonstrations)[0]["Markets"]
    texts = {cut_passage(h.passage.text, TASK.retrieval.passage_tokens) for h in pool}
    assert chosen._demos["Markets"] and {passage for passage, _ in chosen._demos["Markets"]} <= texts
    assert len(picks["Markets"]) == 3  # the demonstrations' passages are taken out, the rest still fill the label


def test_by_default_the_demonstration_band_is_the_tasks_retrieval_band(hash_index):
    default = get_strategy("synthesizrr", variant="retricl")
    default.retrieve(hash_index.index, TASK, per_label=3)
    explicit = get_strategy("synthesizrr", variant="retricl", demo_min_similarity=TASK.retrieval.min_similarity,
                            demo_max_similarity=TASK.retrieval.max_similarity)
    explicit.retrieve(hash_index.index, TASK, per_label=3)
    assert default._demos["Markets"] and default._demos == explicit._demos
    narrow = dataclasses.replace(TASK, retrieval=dataclasses.replace(TASK.retrieval, min_similarity=0.98))
    default.retrieve(hash_index.index, narrow, per_label=3)
    assert default._demos["Markets"] == []  # the band followed the task's


def test_a_label_whose_seeds_find_no_demonstration_says_so_and_runs_zero_shot(hash_index, caplog):
    chosen = get_strategy("synthesizrr", variant="retricl", demo_min_similarity=-1.0, demo_max_similarity=-0.99)
    with caplog.at_level("WARNING", logger="engine.strategies.synthesizrr"):
        _, report = chosen.retrieve(hash_index.index, TASK, per_label=3)
    assert report.per_label["Markets"]["demonstrations"] == 0
    assert "label 'Markets' has no demonstration" in caplog.text and "-1.00--0.99" in caplog.text
    assert "'Other'" not in caplog.text  # no seeds: zero-shot by design, nothing to warn about
    requests = chosen.plan(TASK, *chosen.retrieve(hash_index.index, TASK, per_label=3)[:1], chosen.load_templates(TASK))
    assert all("Example 1" not in r.messages[-1][1] for r in requests)
    with pytest.raises(ConfigError, match="demo_min_similarity=2"):
        get_strategy("synthesizrr", variant="retricl", demo_min_similarity=2)


def test_prompts_carry_the_demonstrations_before_the_passage(hash_index):
    chosen = strategy()
    templates = chosen.load_templates(TASK)
    picks, _ = chosen.retrieve(hash_index.index, TASK, per_label=3)
    requests = chosen.plan(TASK, picks, templates)
    markets = [r for r in requests if r.label == "Markets"]
    other = [r for r in requests if r.label == "Other"]
    prompt = markets[0].messages[-1][1]
    passage, seed = chosen._demos["Markets"][0]
    assert "Example 1" in prompt and seed in prompt and passage in prompt
    assert prompt.index(seed) < prompt.rindex(markets[0].hit.passage.text.strip())  # passage last
    assert "Example 1" not in other[0].messages[-1][1]
    assert markets[0].template_id.endswith("synthesizrr/retricl")
    # all requests of a label share the prompt up to the passage (the server's prefix cache)
    heads = {r.messages[-1][1].split("Now the passage to rewrite:")[0] for r in markets}
    assert len(heads) == 1


def test_bad_variant_options_are_config_errors():
    with pytest.raises(ConfigError, match="variant"):
        get_strategy("synthesizrr", variant="nope")
    with pytest.raises(ConfigError, match="demo_ranks"):
        get_strategy("synthesizrr", variant="retricl", demo_ranks=0)


def test_retricl_end_to_end_and_resume(hash_index, tmp_path):
    result = synthesize(TASK, hash_index.index, ScriptedLLM(), SynthOptions(out=tmp_path / "run", concurrency=1))
    assert sum(result.kept.values()) == 6
    assert result.manifest["retrieval"]["Markets"]["demonstrations"] >= 1
    again = ScriptedLLM()
    synthesize(TASK, hash_index.index, again, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert again.calls == []


def test_the_leakage_guard_keeps_a_demonstration_near_a_reference_row_out_of_every_prompt(hash_index, tmp_path):
    chosen = strategy()
    chosen.retrieve(hash_index.index, TASK, per_label=3)
    leaked = chosen._demos["Markets"][0][0]
    llm = ScriptedLLM()
    result = synthesize(TASK, hash_index.index, llm, SynthOptions(out=tmp_path / "run", concurrency=1, reference=(leaked,)))
    counts = result.manifest["retrieval"]["Markets"]
    assert counts["near_reference_dropped"] >= 1 and counts["demonstrations"] == len(chosen._demos["Markets"]) - 1
    prompts = [call.messages[-1][1] for call in llm.calls]
    assert prompts and not any(leaked in prompt for prompt in prompts)
    assert any("Example 1" in prompt for prompt in prompts)  # the other demonstrations are still shown


def test_demonstrations_are_not_counted_as_passages_left_to_rewrite(hash_index):
    from engine.retrieval.retrieve import retrieve_for_task

    _, plain = retrieve_for_task(hash_index.index, TASK, 3 + strategy().max_demonstrations)
    chosen = strategy()
    _, report = chosen.retrieve(hash_index.index, TASK, per_label=3)
    shown = report.per_label["Markets"]["demonstrations"]
    assert shown >= 1 and report.per_label["Markets"]["assigned"] == plain.per_label["Markets"]["assigned"] - shown


def test_refine_variant_is_unchanged_by_the_option_plumbing(hash_index):
    plain = dataclasses.replace(TASK, strategy_options={})
    chosen = get_strategy("synthesizrr")
    picks, _ = chosen.retrieve(hash_index.index, plain, per_label=3)
    requests = chosen.plan(plain, picks, chosen.load_templates(plain))
    assert all(r.template_id == "system+synthesizrr/refine" for r in requests)
    assert all("Example 1" not in r.messages[-1][1] for r in requests)
