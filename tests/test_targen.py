"""TarGEN: contexts -> seeds (setup) -> label-constrained plan -> parse -> self-correction (review),
driven by a ScriptedLLM, plus one end-to-end run through the pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re

import polars as pl
import pytest

from engine.errors import ConfigError, LLMFatalError
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.strategies.base import get_strategy
from engine.strategies.synthesizrr import ANSWER_SCHEMA
from engine.strategies.targen import CORRECT, LIST_SCHEMA, SEEDS_FILE, SeedPool, TarGEN, list_items, parse_list
from engine.types import Completion, Example, LabelSpec, OutputSpec, Rejection, SamplingParams, TaskSpec

CONTEXTS = ("Gothic horror in a Victorian manor", "Space western on a mining moon", "Silent-era slapstick comedy")
TASK = TaskSpec(
    name="imdb-mini",
    labels=(
        LabelSpec("positive", "positive sentiment; the reviewer liked the movie"),
        LabelSpec("negative", "negative sentiment; the reviewer disliked the movie"),
    ),
    output=OutputSpec("movie review", min_words=10, max_words=60),
    examples_per_label=3,
    strategy="targen",
    template="targen/generate",
    sampling=SamplingParams(temperature=0.9, max_tokens=120),
    seed=5,
    description="Sentiment of movie reviews.",
)


def prompt(messages) -> str:
    return messages[-1]["content"] if isinstance(messages[-1], dict) else messages[-1][1]


def writer(contexts=CONTEXTS, corrector=None, seed_answer=None):
    """A fake model for every TarGEN step; `corrector(text, written_as) -> answer` scripts self-correction
    (self-correction is not told the label, so the fake reads it off the text it wrote)."""

    def respond(messages):
        text = prompt(messages)
        if "different contexts" in text:
            return "Here are the contexts:\n" + "\n".join(f"{i}. {c}" for i, c in enumerate(contexts, 1))
        if "instance seeds for this context" in text:
            context = re.search(r"^Context: (.*)$", text, re.M).group(1)
            if seed_answer:
                return seed_answer(context)
            n = int(re.search(r"List (\d+) instance seeds", text).group(1))
            return "\n".join(f"- A viewer watches the {context.lower()} film, seed {i}" for i in range(1, n + 1))
        if "against the definition of every label" in text:
            body = text.rsplit("Text:\n", 1)[1]
            written_as = "positive" if "wonderful" in body else "negative"
            return corrector(body, written_as) if corrector else written_as
        label = re.search(r'for the label "(\w+)"', text).group(1)
        seed = re.search(r"^Seed: (.*)$", text, re.M).group(1)
        word = "wonderful" if label == "positive" else "dreadful"
        return f"Review: {seed}. Honestly it was {word} from start to finish, and I told all my friends so."

    return respond


class Asker:
    """The `ask` a stage gets: answers through a ScriptedLLM; `fail` makes those request ids absent."""

    def __init__(self, llm: ScriptedLLM, fail=lambda request: False):
        self.llm, self.fail, self.batches = llm, fail, []

    def __call__(self, requests):
        self.batches.append(list(requests))
        return {r.id: asyncio.run(self.llm.complete(r.chat_messages(), r.sampling, r.json_schema))
                for r in requests if not self.fail(r)}


def ready(strategy=None, task=TASK, tmp_path=None, respond=None):
    """A strategy after setup, its templates and the asker used."""
    strategy = strategy or TarGEN(contexts=3, seeds_per_context=2)
    templates = strategy.load_templates(task)
    asker = Asker(ScriptedLLM(respond=respond or writer()))
    report = strategy.setup(task, templates, asker, tmp_path)
    return strategy, templates, asker, report


def answer(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, model="qwen", prompt_tokens=90, completion_tokens=30, finish_reason=finish)


GOOD = "A quiet film about a lighthouse keeper. Honestly it was wonderful from start to finish, truly."


# --- options and templates ------------------------------------------------------------------------


def test_registry_builds_targen_with_defaults():
    strategy = get_strategy("targen", structured_output=True, contexts=4)
    assert isinstance(strategy, TarGEN) and strategy.structured_output and strategy.contexts == 4
    default = TarGEN()
    assert (default.contexts, default.seeds_per_context, default.self_correct) == (6, 5, True)
    assert TarGEN.uses_retrieval is False and default.pool is None


@pytest.mark.parametrize(("option", "value"), [
    ("contexts", 0), ("contexts", 51), ("contexts", "6"), ("seeds_per_context", True), ("seeds_per_context", 2.5),
    ("self_correct", "yes"), ("context_hint", ""), ("context_hint", 3), ("seed_hint", " "), ("seed_hint", None),
])
def test_bad_options_are_config_errors_naming_option_and_value(option, value):
    with pytest.raises(ConfigError, match=rf"targen option {option}={re.escape(repr(value))}"):
        TarGEN(**{option: value})


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"strategy 'targen' does not accept options \['shots'\]"):
        get_strategy("targen", shots=3)


def test_template_names_cover_every_step_and_replace_other_strategies_templates():
    default = dataclasses.replace(TASK, template="synthesizrr/refine")
    assert TarGEN().template_names(default) == ("system", "targen/generate", "targen/contexts", "targen/seeds", CORRECT)
    assert CORRECT not in TarGEN(self_correct=False).template_names(TASK)
    assert TarGEN().template_names(dataclasses.replace(TASK, template="my/own"))[1] == "my/own"


def test_a_label_that_reads_as_none_is_refused_when_self_correcting():
    task = dataclasses.replace(TASK, labels=(LabelSpec("None", "no sentiment"), *TASK.labels))
    with pytest.raises(ConfigError, match=r"label 'None' reads as self-correction's 'none'.*self_correct: false"):
        TarGEN().load_templates(task)
    assert "targen/generate" in TarGEN(self_correct=False).load_templates(task)


# --- list answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "items"), [
    ("1. Horror\n2) **Western**: dusty towns\n3. \"Sci-fi\"", ["Horror", "Western: dusty towns", "Sci-fi"]),
    ("Sure! Here are 2:\n- 3:10 to Yuma style western\n* 1980s Italian horror\nLet me know if you want more!",
     ["3:10 to Yuma style western", "1980s Italian horror"]),
    ('```json\n["a noir", "b musical"]\n```', ["a noir", "b musical"]),
    ('Here are the contexts:\n{"items": ["x film", {"genre": "y", "era": "1950s"}]}', ["x film", "y: 1950s"]),
    ('["complete one", "cut off in the mid', ["complete one"]),
    ("I'm sorry, but I can't help with that.", []),
    ("", []),
    ("[]", []),
    ('{\n  "items": []\n}', []),
    ("(1: Horror\n(2: Western", ["Horror", "Western"]),
    ("1. " + "word " * 80, []),
])
def test_parse_list_reads_json_and_numbered_lists_and_drops_chatter(raw, items):
    assert parse_list(raw) == items


def test_a_cut_off_list_loses_its_partial_last_item():
    assert list_items(answer("1. One film\n2. Two film\n3. Thr", finish="length")) == ["One film", "Two film"]
    assert list_items(answer("1. One film\n2. Two film")) == ["One film", "Two film"]


# --- setup: contexts and instance seeds -----------------------------------------------------------


def test_setup_builds_the_pool_writes_it_and_reports(tmp_path):
    strategy, _, asker, report = ready(tmp_path=tmp_path)
    assert strategy.pool.contexts == CONTEXTS
    assert all(len(seeds) == 2 for seeds in strategy.pool.seeds)
    assert report["contexts"] == 3 and report["seeds"] == 6 and report["requests"] == {"targen/contexts": 1, "targen/seeds": 3}
    saved = json.loads((tmp_path / SEEDS_FILE).read_text())
    assert [c["context"] for c in saved["contexts"]] == list(CONTEXTS) and saved["report"]["seeds"] == 6
    first = asker.batches[0][0]
    assert first.label == "" and "List 3 different contexts" in prompt(first.messages)
    assert [role for role, _ in first.messages] == ["system", "user"]
    seeds_prompt = prompt(asker.batches[1][0].messages)
    assert "Context: Gothic horror in a Victorian manor" in seeds_prompt and "List 2 instance seeds" in seeds_prompt


def test_setup_requests_are_deterministic_so_a_rerun_sends_the_same_ids(tmp_path):
    _, _, first, _ = ready(tmp_path=tmp_path / "a")
    _, _, again, _ = ready(tmp_path=tmp_path / "b")
    assert [[r.id for r in batch] for batch in first.batches] == [[r.id for r in batch] for batch in again.batches]
    ids = [r.id for batch in first.batches for r in batch]
    assert len(set(ids)) == len(ids)


def test_duplicates_are_dropped_and_the_shortfall_is_asked_for_with_what_we_have(tmp_path):
    answers = iter(["1. Gothic horror\n2. gothic HORROR!\n3. Space western", "1. Space western\n2. Silent comedy"])

    def respond(messages):
        return next(answers) if "different contexts" in prompt(messages) else writer()(messages)

    strategy, _, asker, report = ready(tmp_path=tmp_path, respond=respond)
    assert strategy.pool.contexts == ("Gothic horror", "Space western", "Silent comedy")
    follow_up = prompt(asker.batches[1][0].messages)
    assert "List 1 different contexts" in follow_up and "We already have" in follow_up
    assert "- Gothic horror\n- Space western" in follow_up
    assert report["requests"]["targen/contexts"] == 2


def test_a_context_whose_seeds_never_parse_is_left_out(tmp_path):
    def seeds(context):
        return "I'm sorry, but I cannot write that." if context.startswith("Space") else f"1. {context} seed one\n2. {context} seed two"

    strategy, _, _, report = ready(tmp_path=tmp_path, respond=writer(seed_answer=seeds))
    assert "Space western on a mining moon" not in strategy.pool.contexts and len(strategy.pool.contexts) == 2
    assert report["contexts_without_seeds"] == ["Space western on a mining moon"]
    assert report["requests"]["targen/seeds"] == 3 + 2  # the failing context was asked 3 times in all


def test_setup_with_no_usable_contexts_stops_and_still_writes_the_file(tmp_path):
    with pytest.raises(LLMFatalError, match=r"no usable items from 3 targen/contexts request\(s\)"):
        ready(tmp_path=tmp_path, respond=lambda messages: "As an AI language model I cannot do lists.")
    assert json.loads((tmp_path / SEEDS_FILE).read_text())["contexts"] == []


def test_failed_setup_requests_count_as_no_answer(tmp_path):
    strategy = TarGEN(contexts=2, seeds_per_context=2)
    templates = strategy.load_templates(TASK)
    asker = Asker(ScriptedLLM(respond=writer()), fail=lambda request: "instance seeds" in prompt(request.messages))
    with pytest.raises(LLMFatalError, match="targen/seeds"):
        strategy.setup(TASK, templates, asker, tmp_path)


def test_structured_setup_asks_for_items_through_a_schema(tmp_path):
    def respond(messages):
        text = prompt(messages)
        assert '"items"' in text
        if "different contexts" in text:
            return json.dumps({"items": list(CONTEXTS[:2])})
        return json.dumps({"items": ["a seed about a ferry", "a seed about a lighthouse"]})

    strategy, _, asker, _ = ready(TarGEN(structured_output=True, contexts=2, seeds_per_context=2), tmp_path=tmp_path,
                                  respond=respond)
    assert asker.batches[0][0].json_schema == LIST_SCHEMA and strategy.pool.contexts == CONTEXTS[:2]


# --- plan and parse ---------------------------------------------------------------------------------


def test_plan_before_setup_is_a_config_error():
    strategy = TarGEN()
    with pytest.raises(ConfigError, match=r"call strategy.setup\(task, templates, ask, workdir\) first"):
        strategy.plan(TASK, {}, strategy.load_templates(TASK))


def test_rotation_covers_every_context_before_repeating_and_every_pair_once():
    pool = SeedPool(("a", "b", "c"), (("a1", "a2"), ("b1",), ("c1", "c2", "c3")))
    pairs = pool.pairs(5)
    assert sorted(pairs) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert {c for c, _ in pairs[:3]} == {0, 1, 2}
    assert pool.pairs(5) == pairs and pool.pairs(6) != pairs


def test_plan_grounds_each_request_in_a_pair_shared_across_labels(tmp_path):
    strategy, templates, _, _ = ready(tmp_path=tmp_path)
    requests = strategy.plan(TASK, {}, templates)
    assert [(r.label, r.sample_index) for r in requests] == [(label, i) for label in ("positive", "negative") for i in range(3)]
    seeds = [re.search(r"^Seed: (.*)$", prompt(r.messages), re.M).group(1) for r in requests]
    assert seeds[:3] == seeds[3:]  # the same seed serves every label at a sample index
    assert len({re.search(r"^Context: (.*)$", prompt(r.messages), re.M).group(1) for r in requests[:3]}) == 3
    text = prompt(requests[0].messages)
    assert 'for the label "positive", which means: positive sentiment; the reviewer liked the movie' in text
    assert "10 to 60 words" in text and requests[0].hit is None and requests[0].json_schema is None
    assert requests[0].template_id == "system+targen/generate"
    assert len({r.id for r in requests}) == 6 and len({r.sampling.seed for r in requests}) == 6
    assert all(r.sampling.temperature == 0.9 for r in requests)


def test_plan_counts_tops_up_from_start_with_new_requests(tmp_path):
    strategy, templates, _, _ = ready(tmp_path=tmp_path)
    first = strategy.plan(TASK, {}, templates)
    top_up = strategy.plan_counts(TASK, {"negative": 2}, templates, start={"negative": 3})
    assert [(r.label, r.sample_index) for r in top_up] == [("negative", 3), ("negative", 4)]
    assert {r.id for r in top_up}.isdisjoint(r.id for r in first)
    assert [r.id for r in strategy.plan_counts(TASK, {"positive": 3}, templates)] == [r.id for r in first[:3]]
    with pytest.raises(ConfigError, match=r"label 'neutral'.*labels: \['positive', 'negative'\]"):
        strategy.plan_counts(TASK, {"neutral": 1}, templates)
    with pytest.raises(ConfigError, match=r"start\['positive'\] is -1"):
        strategy.plan_counts(TASK, {"positive": 1}, templates, start={"positive": -1})


def test_scripted_round_trip_keeps_a_good_answer_with_provenance(tmp_path):
    strategy, templates, _, _ = ready(tmp_path=tmp_path)
    request = strategy.plan(TASK, {}, templates)[0]
    llm = ScriptedLLM(["Here's a movie review:\n" + GOOD])
    completion = asyncio.run(llm.complete(request.chat_messages(), request.sampling))
    result = strategy.parse(request, completion, TASK)
    assert isinstance(result, Example) and result.text == GOOD and result.label == "positive"
    assert result.provenance.request_id == request.id and result.provenance.passage_id is None


@pytest.mark.parametrize(("raw", "finish", "reason"), [
    ("", "stop", "empty"),
    ("I'm sorry, but I can't help with writing this review.", "stop", "refusal"),
    ("Great film, loved it.", "stop", "too_short"),
    ("word " * 70, "stop", "too_long"),
    (GOOD, "length", "truncated"),
    ('{"text": "Loved it"', "stop", "too_short"),
])
def test_malformed_answers_become_rejections(tmp_path, raw, finish, reason):
    strategy, templates, _, _ = ready(tmp_path=tmp_path)
    request = strategy.plan(TASK, {}, templates)[0]
    result = strategy.parse(request, answer(raw, finish), TASK)
    assert isinstance(result, Rejection) and (result.reason, result.raw, result.label) == (reason, raw, "positive")
    assert result.detail and result.provenance.request_id == request.id


def test_structured_generation_uses_the_text_schema(tmp_path):
    strategy, templates, _, _ = ready(TarGEN(structured_output=True, contexts=3, seeds_per_context=2), tmp_path=tmp_path,
                                      respond=lambda m: json.dumps({"items": list(CONTEXTS) if "contexts" in prompt(m) else ["s one", "s two"]}))
    request = strategy.plan(TASK, {}, templates)[0]
    assert request.json_schema == ANSWER_SCHEMA and 'JSON object with one key, "text"' in prompt(request.messages)
    assert strategy.parse(request, answer(json.dumps({"text": GOOD})), TASK).text == GOOD


# --- review: self-correction ----------------------------------------------------------------------


def generated(strategy, templates, texts):
    """(Example, Request) pairs for the first len(texts) positive requests, texts as answers."""
    requests = strategy.plan_counts(TASK, {"positive": len(texts)}, templates)
    return [(strategy.parse(r, answer(t), TASK), r) for r, t in zip(requests, texts)]


def test_review_keeps_relabels_drops_holds_and_reports_each_example(tmp_path):
    strategy, templates, _, _ = ready(tmp_path=tmp_path)
    texts = [f"{GOOD} Case {name}." for name in ("keep", "flip", "none", "mumble", "lost")]
    verdicts = {"keep": "positive", "flip": "Label: negative", "none": "None of the labels.", "mumble": "hmm, hard to say"}

    def corrector(text, label):
        return verdicts[re.search(r"Case (\w+)", text).group(1)]

    asker = Asker(ScriptedLLM(respond=writer(corrector=corrector)), fail=lambda r: "Case lost" in prompt(r.messages))
    pairs = generated(strategy, templates, texts)
    review = strategy.review(TASK, pairs, asker)
    assert [(e.text.split("Case ")[1], e.label) for e, _ in review.kept] == [("keep.", "positive"), ("flip.", "negative")]
    assert review.kept[1][0].provenance == pairs[1][0].provenance and review.kept[1][1] is pairs[1][1]
    assert [r.reason for r in review.rejections] == ["self_correction_dropped"] * 2
    assert ["none of the labels" in r.detail or "no single label" in r.detail for r in review.rejections] == [True] * 2
    # the check that got no answer neither keeps nor drops its example: a re-run checks it
    assert [(e.text.split("Case ")[1], request) for e, request, _ in review.held] == [("lost.", pairs[4][1])]
    report = review.report
    assert (report["checked"], report["kept"], report["relabelled"], report["dropped"], report["held_unchecked"]) == (4, 1, 1, 2, 1)
    assert report["relabelled_by_pair"] == {"positive->negative": 1}
    assert report["dropped_by_cause"] == {"none": 1, "unreadable": 1}
    assert [r["action"] for r in report["examples"]] == ["kept", "relabelled", "dropped", "dropped", "held"]
    assert report["examples"][1]["request_id"] == pairs[1][0].provenance.request_id


def test_self_correction_over_the_budget_holds_examples_back_instead_of_dropping_them(tmp_path):
    # 2 setup calls + 4 generations + 2 checks fit a budget of 8: two examples go unchecked
    task = dataclasses.replace(TASK, examples_per_label=2, strategy_options={"contexts": 1, "seeds_per_context": 2})
    run = tmp_path / "run"
    result = synthesize(task, None, ScriptedLLM(respond=writer()), SynthOptions(out=run, concurrency=1, max_calls=8))
    manifest = json.loads((run / "manifest.json").read_text())
    assert result.rejected == {} and sum(result.kept.values()) == 2
    assert manifest["counts"]["unsent_over_budget"] == 2 and manifest["stages"]["review"]["held_unchecked"] == 2
    again = synthesize(task, None, ScriptedLLM(respond=writer()), SynthOptions(out=run, concurrency=1, max_calls=20))
    assert again.kept == {"positive": 2, "negative": 2} and again.rejected == {}


def test_correction_requests_are_greedy_show_every_label_but_not_the_assigned_one(tmp_path):
    strategy, templates, _, _ = ready(tmp_path=tmp_path)
    asker = Asker(ScriptedLLM(respond=writer()))
    strategy.review(TASK, generated(strategy, templates, [GOOD]), asker)
    check = asker.batches[0][0]
    text = prompt(check.messages)
    assert check.sampling.temperature == 0.0 and check.template_id == CORRECT
    assert "1. positive: positive sentiment" in text and "2. negative: negative sentiment" in text
    assert "positive" not in text.split("Labels:")[0] and text.endswith(GOOD)  # blind: no label to agree with
    assert [role for role, _ in check.messages] == ["system", "user"]
    again = Asker(ScriptedLLM(respond=writer()))
    strategy.review(TASK, generated(strategy, templates, [GOOD]), again)
    assert again.batches[0][0].id == check.id


def test_structured_review_reads_json_verdicts_and_offers_none(tmp_path):
    strategy = TarGEN(structured_output=True)
    templates = strategy.load_templates(TASK)
    strategy.pool = SeedPool(("a drama",), (("a seed",),))
    answers = iter([json.dumps({"label": "negative"}), json.dumps({"label": "none"})])
    asker = Asker(ScriptedLLM(respond=lambda m: next(answers)))
    review = strategy.review(TASK, generated(strategy, templates, [GOOD, GOOD + " Again."]), asker)
    assert asker.batches[0][0].json_schema["properties"]["label"]["enum"] == ["positive", "negative", "none"]
    assert [e.label for e, _ in review.kept] == ["negative"] and review.report["dropped_by_cause"] == {"none": 1}


def test_review_off_keeps_everything_without_asking(tmp_path):
    strategy = TarGEN(self_correct=False)
    strategy.pool = SeedPool(("a drama",), (("a seed",),))
    pairs = generated(strategy, strategy.load_templates(TASK), [GOOD])
    asker = Asker(ScriptedLLM([]))
    review = strategy.review(TASK, pairs, asker)
    assert review.kept == pairs and review.rejections == [] and review.report == {"self_correction": "off"}
    assert asker.batches == []


# --- end to end -------------------------------------------------------------------------------------


def test_targen_runs_through_the_pipeline_and_a_rerun_costs_nothing(tmp_path):
    def corrector(text, label):  # seed 1 reads as the other label, seed 2 fits none
        if "seed 1" in text:
            return "negative" if label == "positive" else "positive"
        return "none" if "seed 2" in text else label

    task = dataclasses.replace(TASK, examples_per_label=5, strategy_options={"contexts": 3, "seeds_per_context": 3})
    llm = ScriptedLLM(respond=writer(corrector=corrector))
    result = synthesize(task, None, llm, SynthOptions(out=tmp_path / "run", concurrency=1))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    setup, review = manifest["stages"]["setup"], manifest["stages"]["review"]
    assert setup["contexts"] == 3 and setup["seeds"] == 9 and (tmp_path / "run" / SEEDS_FILE).is_file()
    generations = [c for c in llm.calls if "for the label" in c.messages[-1][1]]
    reports = review if isinstance(review, list) else [review]  # one self-correction report per round
    assert len(reports) >= 2  # what self-correction dropped was replaced in a later round
    assert sum(r["checked"] for r in reports) == len(generations) > 10
    flipped = sum("seed 1" in c.messages[-1][1] for c in generations)
    dropped = sum("seed 2" in c.messages[-1][1] for c in generations)
    assert flipped and dropped  # the rotation reaches all three verdicts
    assert (sum(r["relabelled"] for r in reports), sum(r["dropped"] for r in reports)) == (flipped, dropped)
    assert result.rejected == {"self_correction_dropped": dropped}
    frame = pl.read_parquet(tmp_path / "run" / "dataset.parquet")
    assert len(frame) == len(generations) - dropped and not any("seed 2" in t for t in frame["text"])
    pool = json.loads((tmp_path / "run" / SEEDS_FILE).read_text())["contexts"]
    pairs = {(c["context"], seed) for c in pool for seed in c["seeds"]}
    grounding = [json.loads(g) for g in frame["grounding"]]
    assert all((g["context"], g["seed"]) in pairs for g in grounding) and len({g["seed"] for g in grounding}) > 1
    assert min(result.kept.values()) >= 5 or manifest["counts"]["rounds"] == 5
    for text, label in zip(frame["text"], frame["label"]):
        written_as = "positive" if "wonderful" in text else "negative"
        assert label == (written_as if "seed 1" not in text else {"positive": "negative", "negative": "positive"}[written_as])
    again = ScriptedLLM(respond=writer(corrector=corrector))
    rerun = synthesize(task, None, again, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert again.calls == [] and rerun.kept == result.kept


def test_relabelled_examples_never_push_a_label_past_its_target(tmp_path):
    # self-correction moves every example written from seed 1 into "positive": "positive" keeps its
    # target and no more, the rest are surplus rejections, and "negative" is topped up to its target
    def corrector(text, written_as):
        return "positive" if "seed 1" in text else written_as

    task = dataclasses.replace(TASK, examples_per_label=4, strategy_options={"contexts": 3, "seeds_per_context": 3})
    result = synthesize(task, None, ScriptedLLM(respond=writer(corrector=corrector)), SynthOptions(out=tmp_path / "run", concurrency=1))
    assert result.kept == {"positive": 4, "negative": 4}
    assert result.rejected.get("surplus", 0) >= 1
    surplus = [json.loads(line) for line in (tmp_path / "run" / "rejected.jsonl").read_text().splitlines()]
    assert all(r["label"] == "positive" for r in surplus if r["reason"] == "surplus")


def test_the_hints_say_what_a_context_and_a_seed_are(tmp_path):
    strategy = TarGEN(contexts=1, seeds_per_context=1, context_hint="a news outlet and a region",
                      seed_hint="a town, a day and named people, with no event")
    asker = Asker(ScriptedLLM(respond=writer(contexts=("A daily in Ohio",))))
    strategy.setup(TASK, strategy.load_templates(TASK), asker, tmp_path)
    contexts_prompt, seeds_prompt = (prompt(batch[0].messages) for batch in asker.batches[:2])
    assert "By a context we mean a news outlet and a region." in contexts_prompt
    assert "describes a town, a day and named people, with no event:" in seeds_prompt
