"""OneShot: one formatting example -> several examples per call -> parse, with self-reference."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import polars as pl
import pytest

from engine.config import load_task
from engine.errors import ConfigError
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.strategies.base import get_strategy
from engine.strategies.oneshot import OneShot, example_text, read_objects
from engine.types import Completion, Example, LabelSpec, OutputSpec, Provenance, Rejection, SamplingParams, TaskSpec

REPO = Path(__file__).resolve().parent.parent
FORMAT = {
    "passage": "The Danube rises in the Black Forest and flows east through ten countries to the Black Sea.",
    "question": "does the danube reach the black sea",
    "answer": "yes",
}
OPTIONS = {"example": FORMAT, "label_field": "answer"}
TASK = TaskSpec(
    name="yesno",
    labels=(LabelSpec("yes", "yes"), LabelSpec("no", "no")),
    output=OutputSpec(kind="passage with a yes/no question", min_words=8, max_words=60),
    examples_per_label=7,
    strategy="oneshot",
    description="Is the answer to the question about the passage yes or no?",
    sampling=SamplingParams(temperature=0.9, max_tokens=600),
    seed=5,
    strategy_options=OPTIONS,
)


def item(n: int, answer="yes", topic="river") -> dict:
    return {"passage": f"The {topic} number {n} runs past the old mill town of Caldor{n} before reaching the lake.",
            "question": f"does {topic} {n} reach the lake", "answer": answer}


def strategy(**options) -> OneShot:
    return OneShot(**{**OPTIONS, **options})


def plan(s: OneShot | None = None, task: TaskSpec = TASK):
    s = s or strategy()
    return s, s.plan(task, {}, s.load_templates(task))


def prompt(request) -> str:
    return request.messages[-1][1]


def shown(request) -> list[dict]:
    """The JSON objects a request shows, read back from the end of its prompt."""
    return [json.loads(line) for line in prompt(request).splitlines() if line.startswith("{")]


def answer(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, model="qwen", prompt_tokens=300, completion_tokens=90, finish_reason=finish)


def parse_one(raw: str, finish: str = "stop", s: OneShot | None = None, task: TaskSpec = TASK):
    s, requests = plan(s, task)
    return s.parse(requests[0], answer(raw, finish), task)


def reasons(results) -> list[str]:
    return [r.reason if isinstance(r, Rejection) else "ok" for r in results]


def kept(text: str, label: str) -> Example:
    provenance = Provenance(None, None, None, None, None, "t", "0" * 64, "m", {}, 0, 0, 0)
    return Example(text=text, label=label, provenance=provenance)


# --- options ---------------------------------------------------------------------------------------


def test_registry_builds_oneshot_with_documented_defaults():
    s = get_strategy("oneshot", structured_output=True, **OPTIONS)
    assert isinstance(s, OneShot) and s.structured_output and OneShot.uses_retrieval is False
    assert (s.per_call, s.self_reference, s.references, s.embedder_name, s.rounds_of) == (
        5, "random", 3, "all-MiniLM-L6-v2", None)
    assert s.fields == ("passage", "question") and OneShot(example={"text": "a b", "label": "x"}).label_field == "label"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"example": None}, r"needs strategy_options\.example"),
        ({"example": ["a"]}, r"needs strategy_options\.example"),
        ({"example": {"passage": "x"}}, r"needs the label key 'answer'"),
        ({"example": {"answer": "yes"}}, r"at least one content key"),
        ({"example": {"passage": None, "answer": "yes"}}, r"\['passage'\] hold an unusable value"),
        ({"example": {"passage": "x", "answer": ["yes"]}}, r"\['answer'\] hold an unusable value"),
        ({"label_field": ""}, r"label_field=''"),
        ({"per_call": 0}, r"per_call=0 .*1 to 20"),
        ({"per_call": 21}, r"per_call=21"),
        ({"per_call": True}, r"per_call=True"),
        ({"per_call": "5"}, r"per_call='5'"),
        ({"references": 11}, r"references=11 .*1 to 10"),
        ({"rounds_of": 0}, r"rounds_of=0 .*1 or more"),
        ({"self_reference": "contrastive"}, r"self_reference='contrastive'; use one of \['random', 'diverse'"),
        ({"embedder": ""}, r"embedder=''"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        strategy(**options)


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'oneshot' does not accept options"):
        get_strategy("oneshot", shots=3, **OPTIONS)


def test_example_label_must_be_a_task_label_before_anything_is_planned():
    s = strategy(example={**FORMAT, "answer": "maybe"})
    with pytest.raises(ConfigError, match=r"answer='maybe', which task 'yesno' does not have; labels: \['yes', 'no'\]"):
        plan(s)
    with pytest.raises(ConfigError, match=r"answer='maybe'"):
        s.setup(TASK, {}, lambda requests: {}, Path("."))
    numeric = strategy(example={**FORMAT, "answer": 1})
    with pytest.raises(ConfigError, match=r"answer='?1'?, which task"):
        plan(numeric)


# --- planning --------------------------------------------------------------------------------------


def test_plan_asks_per_call_examples_per_request_and_the_remainder_last():
    _, requests = plan()
    assert [(r.label, r.sample_index) for r in requests] == [("yes", 0), ("yes", 1), ("no", 0), ("no", 1)]
    counts = [int(re.search(r"Write (\d+) new examples", prompt(r)).group(1)) for r in requests]
    assert counts == [5, 2, 5, 2]  # 7 examples per label
    assert all(r.hit is None and r.json_schema is None for r in requests)
    first = requests[0]
    assert [role for role, _ in first.messages] == ["system", "user"]
    assert first.template_id == "system+oneshot/generate"
    assert 'exactly these keys: "passage", "question", "answer"' in prompt(first)
    assert 'must have "answer": "yes"' in prompt(first) and 'must have "answer": "no"' in prompt(requests[2])
    assert "JSON array of 5 objects" in prompt(first)
    assert shown(first) == [FORMAT] and prompt(first).endswith(json.dumps(FORMAT))
    assert "Formatting example" in prompt(first)


def test_bare_labels_get_no_made_up_meaning_but_described_ones_do():
    _, requests = plan()
    assert "The task defines what this value means" in prompt(requests[0])
    described = dataclasses.replace(TASK, labels=(LabelSpec("yes", "the passage supports it"), LabelSpec("no", "no")))
    _, requests = plan(task=described)
    assert "This value means: the passage supports it." in prompt(requests[0])


def test_plans_are_deterministic_with_distinct_ids_and_seeds():
    _, first = plan()
    _, again = plan()
    assert [r.id for r in first] == [r.id for r in again] and len({r.id for r in first}) == 4
    assert len({r.sampling.seed for r in first}) == 4
    assert all(r.sampling.temperature == 0.9 and r.sampling.max_tokens == 600 for r in first)
    _, reseeded = plan(task=dataclasses.replace(TASK, seed=6))
    assert {r.id for r in reseeded}.isdisjoint(r.id for r in first)


def test_plan_counts_counts_examples_and_rounds_of_caps_requests_per_round():
    s = strategy(per_call=3, rounds_of=2)
    templates = s.load_templates(TASK)
    requests = s.plan_counts(TASK, {"no": 10, "yes": 1}, templates, start={"no": 7, "yes": 7})
    assert [(r.label, r.sample_index) for r in requests] == [("yes", 7), ("no", 7), ("no", 8)]
    assert [int(re.search(r"Write (\d+)", prompt(r)).group(1)) for r in requests] == [1, 3, 3]
    assert s.plan_counts(TASK, {"no": 0}, templates) == []
    with pytest.raises(ConfigError, match=r"label 'maybe'.*labels: \['yes', 'no'\]"):
        s.plan_counts(TASK, {"maybe": 1}, templates)
    with pytest.raises(ConfigError, match=r"start\['yes'\] is -1"):
        s.plan_counts(TASK, {"yes": 1}, templates, start={"yes": -1})


def test_structured_output_sends_an_examples_schema_with_the_label_enum():
    _, plain = plan()
    _, structured = plan(strategy(structured_output=True))
    schema = structured[1].json_schema
    examples = schema["properties"]["examples"]
    assert schema["type"] == "object" and schema["required"] == ["examples"]
    assert (examples["minItems"], examples["maxItems"]) == (2, 2)
    assert examples["items"]["properties"]["answer"] == {"type": "string", "enum": ["yes", "no"]}
    assert examples["items"]["required"] == ["passage", "question", "answer"]
    assert examples["items"]["additionalProperties"] is False
    assert 'one key, "examples"' in prompt(structured[0]) and structured[0].id != plain[0].id


def test_numeric_label_spaces_keep_the_examples_json_type():
    task = dataclasses.replace(TASK, labels=tuple(LabelSpec(str(n), str(n)) for n in range(1, 6)))
    s = strategy(example={"review": "The soup was cold and the waiter forgot us twice.", "stars": 2},
                 label_field="stars", structured_output=True)
    requests = s.plan(task, {}, s.load_templates(task))
    assert requests[0].json_schema["properties"]["examples"]["items"]["properties"]["stars"] == {
        "type": "integer", "enum": [1, 2, 3, 4, 5]}
    assert 'must have "stars": 1.' in prompt(requests[0])
    raw = json.dumps([{"review": "Lovely pasta and a kind, quick waiter tonight.", "stars": 5},
                      {"review": "Fine pizza but a long wait for the bill.", "stars": "3"},
                      {"review": "Nothing at all to complain about here really.", "stars": 9}])
    results = s.parse(requests[0], answer(raw), task)
    assert [(r.label, r.text) for r in results if isinstance(r, Example)] == [
        ("5", "Lovely pasta and a kind, quick waiter tonight."), ("3", "Fine pizza but a long wait for the bill.")]
    assert reasons(results)[2] == "unknown_label" and "stars=9" in results[2].detail


# --- parsing ---------------------------------------------------------------------------------------


def test_a_good_array_becomes_examples_whose_text_is_sorted_json_of_the_content():
    s, requests = plan()
    llm = ScriptedLLM([json.dumps([item(1), item(2)])])
    completion = asyncio.run(llm.complete(requests[1].chat_messages(), requests[1].sampling))
    results = s.parse(requests[1], completion, TASK)
    assert reasons(results) == ["ok", "ok"] and all(r.label == "yes" for r in results)
    assert json.loads(results[0].text) == {k: v for k, v in item(1).items() if k != "answer"}
    assert results[0].text.startswith('{"passage": ') and results[0].text == example_text(
        {"question": item(1)["question"], "passage": item(1)["passage"]})
    p = results[0].provenance
    assert p.request_id == requests[1].id and p.passage_id is None and p.template_id == "system+oneshot/generate"


def test_a_single_content_field_keeps_its_plain_string():
    s = strategy(example={"text": "The match ended level after a late header.", "label": "yes"}, label_field="label")
    results = parse_one(json.dumps([{"text": "  Rovers won the cup final with a late goal.  ", "label": "yes"}]), s=s)
    assert results[0].text == "Rovers won the cup final with a late goal."


@pytest.mark.parametrize(
    "raw",
    [
        "```json\n" + json.dumps([item(1), item(2)]) + "\n```\nI hope these help!",
        "Sure! Here are the examples:\n" + json.dumps([item(1), item(2)], indent=2),
        json.dumps(item(1)) + "\n" + json.dumps(item(2)),
        json.dumps({"examples": [item(1), item(2)]}),
    ],
    ids=["fenced-with-trailing-text", "preamble", "json-lines", "examples-wrapper"],
)
def test_the_array_is_found_around_fences_text_lines_and_wrappers(raw):
    results = parse_one(raw)
    assert reasons(results) == ["ok", "ok"]
    assert [json.loads(r.text)["question"] for r in results] == [item(1)["question"], item(2)["question"]]


def test_a_cut_off_answer_keeps_its_complete_objects_and_rejects_the_tail():
    raw = json.dumps([item(1), item(2), item(3)])[:-40]
    results = parse_one(raw, finish="length")
    assert reasons(results) == ["ok", "ok", "truncated"]
    assert results[2].raw.startswith('{"passage": "The river number 3') and "max_tokens" in results[2].detail
    wrapped = parse_one(json.dumps({"examples": [item(1), item(2)]})[:-30], finish="length")
    assert reasons(wrapped) == ["ok", "truncated"]


def test_a_broken_object_in_the_middle_is_bad_format_and_the_rest_is_kept():
    raw = "[" + json.dumps(item(1)) + ', {"passage": "oops", "question": }, ' + json.dumps(item(3)) + "]"
    results = parse_one(raw)
    assert reasons(results) == ["ok", "ok", "bad_format"]
    assert results[2].raw == '{"passage": "oops", "question": }' and results[2].label == "yes"


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        ({"passage": item(1)["passage"], "answer": "yes"}, "bad_format", "missing keys ['question']"),
        ({**item(1), "topic": "rivers"}, "bad_format", "unexpected keys ['topic']"),
        ({**item(1), "question": 3}, "bad_format", "field 'question' is a number; the formatting example has a string"),
        ({**item(1), "question": "  "}, "empty", "field 'question' is empty"),
        ({**item(1), "answer": "maybe"}, "unknown_label", "answer='maybe' is not one of the task's labels ['yes', 'no']"),
        ({**item(1), "answer": True}, "unknown_label", "answer=True"),
        ("does the river reach the lake", "bad_format", "a list item is a string, not a JSON object"),
        ({"passage": "Too short.", "question": "is it", "answer": "yes"}, "too_short", "4 words, need at least 8"),
        ({"passage": "I'm sorry, but I can't write this passage.", "question": "why not", "answer": "no"},
         "refusal", "refusal"),
        ({**FORMAT, "answer": "no"}, "copy_of_example", "copy rate 1.00"),
    ],
)
def test_malformed_objects_become_rejections_with_their_raw_object(bad, reason, detail):
    results = parse_one(json.dumps([item(1), bad]))
    assert reasons(results) == ["ok", reason]
    assert detail in results[1].detail and results[1].raw == json.dumps(bad)
    assert results[1].provenance.request_id == results[0].provenance.request_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("", "bad_format"), ("Here you go: passage, question, answer.", "bad_format"),
     ("I'm sorry, but I cannot help with that request.", "refusal"), ("[]", "empty")],
)
def test_answers_without_objects_are_one_rejection(raw, reason):
    results = parse_one(raw)
    assert len(results) == 1 and results[0].reason == reason and results[0].raw == raw and results[0].label == "yes"


def test_an_array_that_never_gets_an_object_is_bad_format_or_truncated():
    assert [(r.reason, r.raw) for r in parse_one("```json\n[\n```")] == [("bad_format", "[")]
    assert [(r.reason, r.raw) for r in parse_one('[{"passage": "The', finish="length")] == [
        ("truncated", '{"passage": "The')]


def test_labels_match_case_insensitively_and_off_target_examples_keep_their_own_label():
    results = parse_one(json.dumps([{**item(1), "answer": "YES"}, item(2, answer="no")]))
    assert [(r.label, reasons([r])[0]) for r in results] == [("yes", "ok"), ("no", "ok")]


def test_read_objects_reports_items_and_broken_fragments():
    assert read_objects('noise [1, {"a": 2}] tail {"b": 3}') == ([1, {"a": 2}], [])
    assert read_objects('[{"a": 1}, {"a": ') == ([{"a": 1}], ['{"a":'])
    assert read_objects("no json here") == ([], [])


# --- self-reference --------------------------------------------------------------------------------

HISTORY = [kept(example_text({k: v for k, v in item(n, a).items() if k != "answer"}), a)
           for n, a in [(1, "yes"), (2, "no"), (3, "yes"), (4, "yes"), (5, "no"), (6, "yes")]]


def test_later_requests_show_earlier_examples_of_their_own_label():
    s = strategy()
    requests = s.plan_counts(TASK, {"yes": 10, "no": 3}, s.load_templates(TASK), start={"yes": 7, "no": 7},
                             history=HISTORY)
    yes_items = [item(n) for n in (1, 3, 4, 6)]
    for request in requests:
        objects = shown(request)
        assert "Examples written earlier for this task, all with answer" in prompt(request)
        if request.label == "yes":
            assert len(objects) == 3 and all(obj in yes_items for obj in objects) and len(set(map(str, objects))) == 3
        else:
            assert sorted(o["question"] for o in objects) == [item(2)["question"], item(5)["question"]]
    assert shown(requests[0]) != shown(requests[1])  # each request draws its own references


def test_the_draw_is_deterministic_and_falls_back_to_the_format_example():
    s = strategy()
    first = s.references_for(TASK, "yes", 9, HISTORY)
    assert first == s.references_for(TASK, "yes", 9, HISTORY) == strategy().references_for(TASK, "yes", 9, HISTORY)
    draws = {json.dumps(s.references_for(TASK, "yes", i, HISTORY)) for i in range(8)}
    assert len(draws) > 1
    no_history = [h for h in HISTORY if h.label == "yes"]
    assert s.references_for(TASK, "no", 0, no_history) == (FORMAT,)
    assert strategy(self_reference="none").references_for(TASK, "yes", 9, HISTORY) == (FORMAT,)
    assert len(strategy(references=1).references_for(TASK, "yes", 9, HISTORY)) == 1
    unreadable = [kept("not a JSON object", "yes")]  # e.g. from another strategy: skipped
    assert s.references_for(TASK, "yes", 0, unreadable) == (FORMAT,)


def cluster_history() -> list[Example]:
    words = {"a": "alpha beta gamma delta epsilon", "b": "kiwi mango papaya lychee guava"}
    return [kept(json.dumps({"passage": f"{words[c]} {words[c]} {i}", "question": words[c]}, sort_keys=True), "yes")
            for i in range(3) for c in "ab"]


def test_similar_picks_one_cluster_and_diverse_spans_both():
    history = cluster_history()
    for index in range(6):
        similar = strategy(self_reference="similar", embedder="hash-64").references_for(TASK, "yes", index, history)
        diverse = strategy(self_reference="diverse", embedder="hash-64").references_for(TASK, "yes", index, history)
        assert len({obj["question"] for obj in similar}) == 1
        assert len({obj["question"] for obj in diverse}) == 2


def test_setup_loads_the_embedder_only_for_embedding_modes():
    assert strategy().setup(TASK, {}, lambda r: {}, Path(".")) == {"self_reference": "random", "embedder": None}
    report = strategy(self_reference="diverse", embedder="hash-64").setup(TASK, {}, lambda r: {}, Path("."))
    assert report == {"self_reference": "diverse", "embedder": "hash-64"}


def test_a_copy_of_a_shown_reference_is_rejected():
    s = strategy()
    requests = s.plan_counts(TASK, {"yes": 5}, s.load_templates(TASK), start={"yes": 7}, history=HISTORY)
    reference = shown(requests[0])[0]
    results = s.parse(requests[0], answer(json.dumps([{**reference, "question": reference["question"] + " today"}])),
                      TASK)
    assert reasons(results) == ["copy_of_reference"]


# --- the task spec and the pipeline ----------------------------------------------------------------


def test_the_yesno_spec_loads_and_plans():
    task = load_task(REPO / "benchmarks" / "tasks" / "yesno.yaml")
    assert [label.name for label in task.labels] == ["yes", "no"] and task.strategy == "oneshot"
    s = get_strategy(task.strategy, structured_output=False, **task.strategy_options)
    requests = s.plan(task, {}, s.load_templates(task))
    assert len(requests) == 4  # rounds_of: 2 requests of 5 per label in the first round
    assert shown(requests[0]) == [task.strategy_options["example"]]


def writer(broken_first: bool = True):
    """Answers each oneshot prompt with the asked number of distinct objects of the asked label."""
    calls = {"n": 0}

    def respond(messages):
        text = messages[-1]["content"]
        calls["n"] += 1
        if broken_first and calls["n"] == 1:
            return "Sorry, here is some prose instead of JSON."
        label = re.search(r'must have "answer": "(\w+)"', text).group(1)
        count = int(re.search(r"Write (\d+) new examples", text).group(1))
        rows = [item(calls["n"] * 10 + i, label, topic=f"canal {label}") for i in range(count)]
        return "```json\n" + json.dumps(rows) + "\n```"

    return respond


def test_pipeline_runs_oneshot_end_to_end_with_self_reference_and_resumes(tmp_path):
    task = dataclasses.replace(TASK, examples_per_label=6,
                               strategy_options={**OPTIONS, "per_call": 3, "rounds_of": 1})
    llm = ScriptedLLM(respond=writer())
    result = synthesize(task, None, llm, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert result.kept == {"yes": 6, "no": 6} and result.rejected == {"bad_format": 1}
    prompts = [call.messages[-1][1] for call in llm.calls]
    assert "Formatting example" in prompts[0] and "Examples written earlier" in prompts[-1]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["rounds"] == 3 and manifest["stages"]["setup"]["self_reference"] == "random"
    frame = pl.read_parquet(tmp_path / "run" / "dataset.parquet")
    assert set(json.loads(frame["text"][0])) == {"passage", "question"}
    assert frame.filter(pl.col("label") == "no")["text"].str.contains("canal no").all()
    again = ScriptedLLM(respond=writer())
    rerun = synthesize(task, None, again, SynthOptions(out=tmp_path / "run", concurrency=1))
    assert again.calls == [] and rerun.kept == result.kept


def test_setup_warns_when_max_tokens_cannot_hold_a_call_of_examples(caplog):
    # 5 examples of up to 60 words need about 5 * (90 + 20) = 550 tokens: 600 is enough, 128 is not
    strategy().setup(TASK, {}, lambda r: {}, Path("."))
    assert "max_tokens" not in caplog.text
    small = dataclasses.replace(TASK, sampling=SamplingParams(temperature=0.9, max_tokens=128))
    strategy().setup(small, {}, lambda r: {}, Path("."))
    assert "sampling.max_tokens=128" in caplog.text and "raise sampling.max_tokens to 550" in caplog.text


def test_rounds_of_spreads_the_plan_without_eating_the_top_up_rounds(tmp_path):
    # 9 per label at 3 per call and 1 request per round: 3 planned rounds; the broken first answer
    # needs one top-up. max_rounds=2 allows one top-up on top of the planned rounds.
    task = dataclasses.replace(TASK, examples_per_label=9,
                               strategy_options={**OPTIONS, "per_call": 3, "rounds_of": 1})
    assert get_strategy("oneshot", **task.strategy_options).planned_rounds(task) == 3
    result = synthesize(task, None, ScriptedLLM(respond=writer()), SynthOptions(out=tmp_path / "run", concurrency=1, max_rounds=2))
    assert result.kept == {"yes": 9, "no": 9}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["rounds"] == 4
