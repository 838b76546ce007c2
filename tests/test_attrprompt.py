"""AttrPrompt: setup (values -> similar labels -> filter) -> plan -> messages -> parse, with scripted answers."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from engine.config import load_task
from engine.errors import ConfigError
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, prepare, synthesize
from engine.strategies.attrprompt import (
    ATTRIBUTES_FILE, FILTER_SCHEMA, FORMAT, LIST_SCHEMA, AttributeSet, AttrPrompt, parse_similar, parse_values,
    parse_yes_no,
)
from engine.strategies.base import get_strategy
from engine.strategies.synthesizrr import ANSWER_SCHEMA
from engine.types import Completion, Example, LabelSpec, OutputSpec, Rejection, SamplingParams, TaskSpec

REPO = Path(__file__).resolve().parent.parent
TASK = TaskSpec(
    name="trec-mini",
    description="Classify a question by the type of its answer.",
    labels=(
        LabelSpec("LOC", "locations such as cities, countries and mountains"),
        LabelSpec("HUM", "humans such as people, groups and organisations"),
        LabelSpec("NUM", "numeric values such as dates, counts and sizes"),
    ),
    output=OutputSpec(kind="question", min_words=4, max_words=20),
    examples_per_label=3,
    strategy="attrprompt",
    template="attrprompt/generate",
    sampling=SamplingParams(temperature=0.9, max_tokens=40),
    seed=5,
)
OPTIONS = {"attributes": {"subtopic": [], "style": ["trivia quiz", "curious child"], "domain": []},
           "values_per_dimension": 3}
SUBTOPICS = {"LOC": ["rivers", "capital cities", "famous birthplaces"],
             "HUM": ["inventors", "famous birthplaces", "bands"],
             "NUM": ["dates of wars", "population counts", "heights of towers"]}
SIMILAR = {"LOC": "HUM", "HUM": "LOC, NUM", "NUM": "1. LOC"}


def user(messages) -> str:
    """The last user message of chat dicts or (role, content) pairs."""
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else m for m in messages]
    return [content for role, content in pairs if role == "user"][-1]


def responder(filter_answer=lambda value: "yes" if value == "famous birthplaces" else "no"):
    """Answers every attrprompt step by its prompt; generation answers are distinct questions."""
    count = {"n": 0}

    def respond(messages) -> str:
        prompt = user(messages)
        if "different values of the attribute" in prompt:
            label = re.search(r'of the class "(\w+)"', prompt)
            if label:
                values = SUBTOPICS[label.group(1)]
                return "Here are the values:\n" + "\n".join(f"{i}. {v}" for i, v in enumerate(values, 1))
            return '```json\n{"items": ["history", "sports", "science", "history"]}\n```'
        if "most similar to" in prompt:
            return SIMILAR[re.search(r'most similar to "(\w+)"', prompt).group(1)]
        if "just as well belong" in prompt:
            return filter_answer(re.search(r'whose \w+ is "([^"]+)"', prompt).group(1))
        count["n"] += 1
        first_requirement = prompt.split("requirements:")[1].splitlines()[1][3:]
        return f"Which question number {count['n']} about {first_requirement} is asked?"

    return respond


def scripted_ask(respond, drop=()):
    """An `ask` that answers through `respond` and records every request; ids in `drop` fail."""
    calls = []

    def ask(requests):
        calls.extend(requests)
        return {r.id: Completion(respond(r.chat_messages()), "scripted") for r in requests if r.id not in drop}

    return ask, calls


def set_up(tmp_path, task=TASK, respond=None, **options):
    strategy = AttrPrompt(**{**OPTIONS, **options})
    templates = strategy.load_templates(task)
    ask, calls = scripted_ask(respond or responder())
    report = strategy.setup(task, templates, ask, tmp_path)
    return strategy, templates, report, calls


def steps(calls) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in calls:
        step = request.template_id.split("+")[-1]
        counts[step] = counts.get(step, 0) + 1
    return counts


# --- options ---------------------------------------------------------------------------------------


def test_registry_and_defaults():
    strategy = get_strategy("attrprompt")
    assert isinstance(strategy, AttrPrompt) and AttrPrompt.uses_retrieval is False
    assert strategy.class_specific == ("subtopic",) and strategy.dimensions == ("subtopic",)
    assert (strategy.values_per_dimension, strategy.filter_similar, strategy.similar_labels) == (8, True, 2)
    assert AttrPrompt(**OPTIONS).dimensions == ("subtopic", "style", "domain")


@pytest.mark.parametrize(("options", "message"), [
    ({"values_per_dimension": 0}, r"values_per_dimension=0 .* from 1 to 50"),
    ({"values_per_dimension": True}, r"values_per_dimension=True"),
    ({"similar_labels": 11}, r"similar_labels=11 .* from 1 to 10"),
    ({"filter_similar": "yes"}, r"filter_similar='yes' .* true or false"),
    ({"attributes": ["style"]}, r"attributes=\['style'\] must map dimension names"),
    ({"attributes": {"style": "formal"}}, r"attributes.style must be a list of non-empty strings"),
    ({"attributes": {"style": ["", "x"]}}, r"attributes.style must be a list"),
    ({"attributes": {"subtopic": ["rivers"]}}, r"attributes.subtopic lists values, but 'subtopic' is class-specific"),
    ({"class_specific": ["a", "a"]}, r"class_specific=\['a', 'a'\]: names must be distinct"),
    ({"class_specific": []}, r"at least one attribute dimension"),
    ({"attributes_file": "x.json", "class_specific": ["subtopic"]}, r"attributes_file supplies every dimension"),
    ({"attributes_file": "/nonexistent/a.json"}, r"attributes_file='/nonexistent/a.json': no such file"),
])
def test_bad_options_are_config_errors_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        AttrPrompt(**options)


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"strategy 'attrprompt' does not accept options \['shots'\]"):
        get_strategy("attrprompt", shots=2)


def test_template_names_replace_other_strategies_templates():
    task = dataclasses.replace(TASK, template="synthesizrr/refine")
    assert AttrPrompt().template_names(task) == ("system", "attrprompt/generate", "attrprompt/class_values",
                                                "attrprompt/shared_values", "attrprompt/similar", "attrprompt/filter")
    bare = dataclasses.replace(task, system_template="")
    assert AttrPrompt(filter_similar=False).template_names(bare) == (
        "attrprompt/generate", "attrprompt/class_values", "attrprompt/shared_values")


# --- setup ---------------------------------------------------------------------------------------


def test_setup_generates_filters_and_saves_attributes(tmp_path):
    strategy, _, report, calls = set_up(tmp_path)
    # one values request per (label, class-specific dimension) and per empty shared dimension,
    # one similar-labels request per label, one filter request per value with similar labels
    assert steps(calls) == {"attrprompt/class_values": 3, "attrprompt/shared_values": 1, "attrprompt/similar": 3,
                            "attrprompt/filter": 9}
    assert report["requests"] == {"attrprompt/class_values": 3, "attrprompt/shared_values": 1,
                                  "attrprompt/similar": 3, "attrprompt/filter": 9}
    assert report["similar_labels"] == {"LOC": ["HUM"], "HUM": ["LOC", "NUM"], "NUM": ["LOC"]}
    values = report["values"]
    assert values["subtopic"] == {"LOC": ["rivers", "capital cities"], "HUM": ["inventors", "bands"],
                                  "NUM": SUBTOPICS["NUM"]}
    assert values["style"] == ["trivia quiz", "curious child"] and values["domain"] == ["history", "sports", "science"]
    removed = report["removed"]["subtopic"]
    assert [r["value"] for r in removed["LOC"]] == ["famous birthplaces"] and "NUM" not in removed
    assert removed["HUM"][0]["similar_labels"] == ["LOC", "NUM"] and "LOC or NUM" in removed["HUM"][0]["reason"]
    saved = json.loads((tmp_path / ATTRIBUTES_FILE).read_text())
    assert saved["format"] == FORMAT and saved["removed"] == report["removed"] and saved["task"] == "trec-mini"
    assert saved["class_specific"]["subtopic"] == values["subtopic"]
    assert [p.name for p in tmp_path.iterdir()] == [ATTRIBUTES_FILE]  # atomic write: no temp file left
    assert strategy.attributes.values("subtopic", "LOC") == ("rivers", "capital cities")


def test_setup_requests_are_deterministic_and_the_prompts_say_what_they_ask(tmp_path):
    _, _, _, calls = set_up(tmp_path / "a")
    _, _, _, again = set_up(tmp_path / "b")
    assert [r.id for r in calls] == [r.id for r in again] and len({r.id for r in calls}) == len(calls)
    values = next(r for r in calls if r.template_id == "system+attrprompt/class_values")
    wanted = 'List 3 different values of the attribute "subtopic" for a question of the class "LOC"'
    assert wanted in user(values.messages)
    similar = next(r for r in calls if r.template_id == "attrprompt/similar" and r.label == "LOC")
    assert "- HUM: humans" in user(similar.messages) and "- LOC:" not in user(similar.messages)
    assert similar.sampling.temperature == 0.0
    check = next(r for r in calls if r.template_id == "attrprompt/filter")
    assert [role for role, _ in check.messages] == ["system", "user"] and check.label == "LOC"


def test_loading_a_saved_file_makes_zero_setup_calls_and_plans_the_same(tmp_path):
    strategy, templates, _, _ = set_up(tmp_path / "first")
    loaded = AttrPrompt(attributes_file=str(tmp_path / "first" / ATTRIBUTES_FILE))
    ask, calls = scripted_ask(responder())
    report = loaded.setup(TASK, loaded.load_templates(TASK), ask, tmp_path / "second")
    assert calls == [] and report["requests"] == {} and report["source"].endswith(ATTRIBUTES_FILE)
    assert report["removed"]["subtopic"]["LOC"][0]["value"] == "famous birthplaces"  # the audit travels along
    assert json.loads((tmp_path / "second" / ATTRIBUTES_FILE).read_text())["class_specific"] == \
        json.loads((tmp_path / "first" / ATTRIBUTES_FILE).read_text())["class_specific"]
    planned = [r.messages for r in strategy.plan(TASK, {}, templates)]
    assert [r.messages for r in loaded.plan(TASK, {}, loaded.load_templates(TASK))] == planned


def test_an_attributes_file_must_cover_the_tasks_labels(tmp_path):
    set_up(tmp_path)
    task = dataclasses.replace(TASK, labels=(*TASK.labels, LabelSpec("ABBR", "abbreviations")))
    with pytest.raises(ConfigError, match=r"no 'subtopic' values for label\(s\) \['ABBR'\]"):
        AttrPrompt(attributes_file=str(tmp_path / ATTRIBUTES_FILE)).load_templates(task)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match=r"bad.json is not an attributes file"):
        AttrPrompt(attributes_file=str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match=r"broken.json is not valid JSON"):
        AttrPrompt(attributes_file=str(tmp_path / "broken.json"))


def test_failed_or_unreadable_filter_answers_keep_the_value_and_say_so(tmp_path):
    _, _, report, calls = set_up(tmp_path, respond=responder(lambda value: "Maybe, it depends."))
    assert report["removed"] == {} and report["values"]["subtopic"]["LOC"] == SUBTOPICS["LOC"]
    unchecked = "'rivers' of 'LOC' kept unchecked: the filter request got neither yes nor no"
    assert any(unchecked in note for note in report["notes"])
    strategy = AttrPrompt(**OPTIONS)
    templates = strategy.load_templates(TASK)
    ask, _ = scripted_ask(responder(), drop={r.id for r in calls if r.template_id == "attrprompt/filter"})
    report = strategy.setup(TASK, templates, ask, tmp_path / "failed")
    assert report["removed"] == {} and any("the filter request failed" in n for n in report["notes"])


def test_a_filter_that_removes_every_value_keeps_them_all(tmp_path):
    _, _, report, _ = set_up(tmp_path, respond=responder(lambda value: '{"answer": "yes"}'))
    assert report["values"]["subtopic"] == SUBTOPICS and report["removed"] == {}
    assert "the filter found every 'subtopic' value of 'HUM' ambiguous; all were kept instead" in report["notes"]


def test_unusable_lists_and_unnamed_similar_labels_are_reported_not_raised(tmp_path):
    def respond(messages):
        prompt = user(messages)
        if 'class "NUM"' in prompt:
            return "I'm sorry, but I can't help with that."
        if "most similar to" in prompt:
            return "None of them."
        return responder()(messages)

    strategy, templates, report, calls = set_up(tmp_path, respond=respond)
    assert report["values"]["subtopic"]["NUM"] == [] and steps(calls).get("attrprompt/filter") is None
    assert "no 'subtopic' values for NUM: the request failed or its answer held no list" in report["notes"]
    assert "label 'LOC': no similar labels were named, so its values were not filtered" in report["notes"]
    num = strategy.plan_counts(TASK, {"NUM": 1}, templates)[0]
    assert "1. Style:" in user(num.messages) and "Subtopic" not in user(num.messages)


def test_filter_off_and_a_single_label_skip_the_similar_steps(tmp_path):
    _, _, report, calls = set_up(tmp_path / "off", filter_similar=False)
    assert set(steps(calls)) == {"attrprompt/class_values", "attrprompt/shared_values"} and report["removed"] == {}
    single = dataclasses.replace(TASK, labels=TASK.labels[:1])
    _, _, _, calls = set_up(tmp_path / "one", task=single)
    assert "attrprompt/similar" not in steps(calls)


# --- generation ------------------------------------------------------------------------------------


def test_plan_before_setup_is_a_config_error():
    strategy = AttrPrompt(**OPTIONS)
    with pytest.raises(ConfigError, match=r"call strategy.setup\(task, templates, ask, workdir\) first"):
        strategy.plan(TASK, {}, strategy.load_templates(TASK))


def test_each_request_states_its_drawn_attributes_as_numbered_requirements(tmp_path):
    strategy, templates, _, _ = set_up(tmp_path)
    requests = strategy.plan(TASK, {}, templates)
    assert [(r.label, r.sample_index) for r in requests] == [(s.name, i) for s in TASK.labels for i in range(3)]
    for request in requests:
        draw = strategy.drawn(TASK, request.label, request.sample_index)
        assert [d for d, _ in draw] == ["subtopic", "style", "domain"]
        lines = "\n".join(f"{i}. {d.capitalize()}: {v}" for i, (d, v) in enumerate(draw, 1))
        assert f"requirements:\n{lines}\n" in user(request.messages)
        assert dict(draw)["subtopic"] in strategy.attributes.values("subtopic", request.label)
    assert "famous birthplaces" not in "".join(user(r.messages) for r in requests)  # filtered out
    assert requests[0].template_id == "system+attrprompt/generate" and requests[0].hit is None


def test_draws_are_seeded_by_task_seed_label_and_index(tmp_path):
    strategy, templates, _, _ = set_up(tmp_path)
    first = strategy.plan_counts(TASK, {"LOC": 30}, templates)
    assert [r.id for r in first] == [r.id for r in strategy.plan_counts(TASK, {"LOC": 30}, templates)]
    assert len({r.id for r in first}) == 30 and len({r.sampling.seed for r in first}) == 30
    draws = {strategy.drawn(TASK, "LOC", i) for i in range(30)}
    assert len(draws) > 5  # 2 subtopics x 2 styles x 3 domains: the draw varies
    assert {dict(d)["style"] for d in draws} == {"trivia quiz", "curious child"}
    top_up = strategy.plan_counts(TASK, {"LOC": 2}, templates, start={"LOC": 30})
    assert [r.sample_index for r in top_up] == [30, 31] and {r.id for r in top_up}.isdisjoint(r.id for r in first)
    reseeded = dataclasses.replace(TASK, seed=6)
    assert [strategy.drawn(reseeded, "LOC", i) for i in range(30)] != [strategy.drawn(TASK, "LOC", i)
                                                                       for i in range(30)]


def test_plan_counts_rejects_unknown_labels_and_negative_counts(tmp_path):
    strategy, templates, _, _ = set_up(tmp_path)
    with pytest.raises(ConfigError, match=r"label 'ABBR'.*labels: \['LOC', 'HUM', 'NUM'\]"):
        strategy.plan_counts(TASK, {"ABBR": 1}, templates)
    with pytest.raises(ConfigError, match=r"counts\['LOC'\] is -1"):
        strategy.plan_counts(TASK, {"LOC": -1}, templates)
    with pytest.raises(ConfigError, match=r"templates \['system'\] were not loaded"):
        strategy.plan_counts(TASK, {"LOC": 1}, {k: v for k, v in templates.items() if k != "system"})


def test_parse_keeps_a_clean_question(tmp_path):
    strategy, templates, _, _ = set_up(tmp_path)
    request = strategy.plan(TASK, {}, templates)[0]
    result = strategy.parse(request, Completion('Question: "Which river flows through the capital of Hungary?"',
                                                "qwen", 90, 12), TASK)
    assert isinstance(result, Example) and result.text == "Which river flows through the capital of Hungary?"
    assert result.label == "LOC" and result.provenance.request_id == request.id and result.provenance.passage_id is None


@pytest.mark.parametrize(("raw", "finish", "reason"), [
    ("", "stop", "empty"),
    ("I'm sorry, but I can't help with writing this question.", "stop", "refusal"),
    ("Which river?", "stop", "too_short"),
    (" ".join(["Which"] + ["very"] * 25 + ["long", "river", "is", "it?"]), "stop", "too_long"),
    ("Which river flows through the capital of", "length", "truncated"),
    ('{"text": "Where?"', "stop", "too_short"),
])
def test_malformed_answers_become_rejections_naming_the_drawn_attributes(tmp_path, raw, finish, reason):
    strategy, templates, _, _ = set_up(tmp_path)
    request = strategy.plan(TASK, {}, templates)[1]
    result = strategy.parse(request, Completion(raw, "qwen", 90, 12, finish), TASK)
    assert isinstance(result, Rejection) and (result.reason, result.raw, result.label) == (reason, raw, "LOC")
    draw = strategy.drawn(TASK, "LOC", 1)
    assert "attributes: " + "; ".join(f"{d}={v}" for d, v in draw) in result.detail


def test_structured_output_sends_a_schema_at_every_step(tmp_path):
    strategy, templates, _, calls = set_up(tmp_path, structured_output=True)
    schemas = {r.template_id.split("+")[-1]: r.json_schema for r in calls}
    assert schemas["attrprompt/class_values"] == LIST_SCHEMA and schemas["attrprompt/filter"] == FILTER_SCHEMA
    assert schemas["attrprompt/similar"]["properties"]["labels"]["items"]["enum"] in (["HUM", "NUM"], ["LOC", "NUM"],
                                                                                   ["LOC", "HUM"])
    request = strategy.plan(TASK, {}, templates)[0]
    assert request.json_schema == ANSWER_SCHEMA and '"text"' in user(request.messages)
    answer = Completion('{"text": "Which river flows through Vienna and Budapest?"}', "q")
    result = strategy.parse(request, answer, TASK)
    assert isinstance(result, Example) and result.text == "Which river flows through Vienna and Budapest?"


def test_review_keeps_everything_and_reports_each_draw(tmp_path):
    strategy, templates, _, _ = set_up(tmp_path)
    requests = strategy.plan(TASK, {}, templates)[:2]
    pairs = [(strategy.parse(r, Completion(f"Which city is number {i} on the river list?", "q"), TASK), r)
             for i, r in enumerate(requests)]
    review = strategy.review(TASK, pairs, lambda _: pytest.fail("review must not call the LLM"))
    assert review.kept == pairs and review.rejections == []
    assert review.report["attributes_by_request"][requests[1].id] == dict(strategy.drawn(TASK, "LOC", 1))
    assert set(review.report["distinct_values_used"]) == {"subtopic", "style", "domain"}


# --- answer parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "items"), [
    ('["rivers", "lakes", "Rivers"]', ["rivers", "lakes"]),
    ('Sure! Here are the values:\n{"items": ["rivers", "lakes"]}', ["rivers", "lakes"]),
    ('{"items": ["rivers", "lakes", "mount', ["rivers", "lakes"]),
    ("Here are 3 values:\n1. **Rivers**\n2) \"lakes\"\n- mountain ranges.\n\nLet me know if you need more!",
     ["Rivers", "lakes", "mountain ranges"]),
    ("1. rivers [and streams]\n2. 1990s bands", ["rivers [and streams]", "1990s bands"]),
    ("I'm sorry, but I cannot help with that.", []),
    ("", []),
    ("1. " + "word " * 30, []),
])
def test_parse_values_reads_json_and_lists_robustly(raw, items):
    assert parse_values(raw) == items


@pytest.mark.parametrize(("raw", "found"), [
    ("HUM\nNUM", ["HUM", "NUM"]),
    ('{"labels": ["NUM"]}', ["NUM"]),
    ("1. **HUM**: humans\n2. NUM", ["HUM", "NUM"]),
    ("hum, num, loc", ["HUM", "NUM"]),
    ("numeric values such as dates, counts and sizes", ["NUM"]),
    ("The most similar is HUM.", ["HUM"]),
    ("None of them.", []),
    ("HUMAN", []),
])
def test_parse_similar_names_other_labels_only(raw, found):
    assert parse_similar(raw, TASK, "LOC", 2) == found


@pytest.mark.parametrize(("raw", "verdict"), [
    ("yes", True), ("No.", False), ("**Yes**, it could.", True), ('{"answer": "no"}', False),
    ("Answer: yes", True), ("maybe", None), ("", None), ('{"answer": 3}', None),
])
def test_parse_yes_no(raw, verdict):
    assert parse_yes_no(raw) is verdict


def test_attribute_set_round_trips():
    attrs = AttributeSet(("subtopic", "style"), {"subtopic": {"LOC": ("rivers",)}}, {"style": ("quiz",)})
    assert AttributeSet.from_dict(json.loads(json.dumps(attrs.as_dict())), "mem") == attrs
    with pytest.raises(ConfigError, match=r"mem: dimensions \['subtopic'\] must be the keys"):
        AttributeSet.from_dict({**attrs.as_dict(), "dimensions": ["subtopic"]}, "mem")


# --- the task spec and the pipeline ------------------------------------------------------------------


def test_trec_spec_loads_prepares_and_plans_its_setup(tmp_path):
    task = load_task(REPO / "benchmarks" / "tasks" / "trec.yaml")
    assert [s.name for s in task.labels] == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    assert task.strategy == "attrprompt" and task.output.kind == "question"
    strategy, templates = prepare(task, None, SynthOptions(out=tmp_path / "unused"))
    assert isinstance(strategy, AttrPrompt) and strategy.class_specific == ("subtopic",)
    assert strategy.dimensions == ("subtopic", "domain", "asker", "length")
    answers = {"most similar": "ENTY\nDESC", "just as well": "no", "": "1. alpha\n2. beta"}
    ask, _ = scripted_ask(lambda messages: next(a for key, a in answers.items() if key in user(messages)))
    report = strategy.setup(task, templates, ask, tmp_path)
    # subtopic per label (6), domain once (1: subtopic is class-specific though listed as []), similar per
    # label (6), one check per subtopic (6 x 2)
    assert report["requests"] == {"attrprompt/class_values": 6, "attrprompt/shared_values": 1, "attrprompt/similar": 6,
                                  "attrprompt/filter": 12}
    assert report["values"]["asker"][0] == "a trivia quiz writer"
    assert report["values"]["subtopic"]["NUM"] == ["alpha", "beta"]
    assert report["similar_labels"]["ENTY"] == ["DESC"] and report["values"]["domain"] == ["alpha", "beta"]


def test_pipeline_end_to_end_resumes_for_free_and_reuses_the_attributes(tmp_path):
    task = dataclasses.replace(TASK, strategy_options=OPTIONS)
    llm = ScriptedLLM(respond=responder())
    result = synthesize(task, None, llm, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert result.kept == {"LOC": 3, "HUM": 3, "NUM": 3} and result.rejected == {}
    assert len(llm.calls) == 16 + 9  # setup (3 + 1 + 3 + 9) then generation
    setup = result.manifest["stages"]["setup"]
    assert setup["removed"]["subtopic"]["HUM"][0]["value"] == "famous birthplaces"
    assert len(result.manifest["stages"]["review"]["attributes_by_request"]) == 9
    assert (tmp_path / "run" / ATTRIBUTES_FILE).is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()]
    drawn = result.manifest["stages"]["review"]["attributes_by_request"]
    assert all(json.loads(row["grounding"]) == dict(drawn[row["request_id"]]) for row in rows)  # per-row provenance
    again = ScriptedLLM(respond=responder())
    synthesize(task, None, again, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert again.calls == []  # setup and generation come from the journal
    reuse = dataclasses.replace(task, strategy_options={"attributes_file": str(tmp_path / "run" / ATTRIBUTES_FILE)})
    third = ScriptedLLM(respond=responder())
    result = synthesize(reuse, None, third, SynthOptions(out=tmp_path / "reuse", concurrency=1))
    assert len(third.calls) == 9 and all("Write one new question" in user(c.messages) for c in third.calls)
    assert result.manifest["stages"]["setup"]["requests"] == {} and sum(result.kept.values()) == 9
