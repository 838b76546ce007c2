"""Label verification: judge requests, verdict parsing (with malformed answers), policies, agreement."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.testing import ScriptedLLM
from engine.prompts import load_template
from engine.types import Completion, Example, LabelSpec, OutputSpec, Provenance, Rejection, TaskSpec
from engine.verify import (
    JUDGE_SAMPLING,
    JUDGE_TEMPLATE,
    LabelCounts,
    VerdictRecord,
    apply_policy,
    parse_verdict,
    plan_verification,
    verdict_schema,
)

REPO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
TASK = TaskSpec(
    name="ag-news",
    labels=(
        LabelSpec("Sports", "sports"),
        LabelSpec("Business", "business and finance"),
        LabelSpec("Sci/Tech", "science and technology"),
    ),
    output=OutputSpec(kind="news headline", min_words=4, max_words=14),
    seed=7,
)
TEMPLATE = load_template(JUDGE_TEMPLATE)


def example(text: str, label: str, rid: str = "") -> Example:
    provenance = Provenance(
        passage_id=None, retrieval_score=None, retrieval_rank=None, cosine=None, query=None,
        template_id="fewgen/generate", template_sha256="f" * 64, model="qwen", sampling={}, seed=1,
        prompt_tokens=10, completion_tokens=5, request_id=rid or f"gen-{label}-{text[:8]}",
    )
    return Example(text=text, label=label, provenance=provenance)


EXAMPLES = [
    example("Rovers stun City with a late winner", "Sports"),
    example("Apple shares climb after record revenue", "Business"),
    example("NASA probe finds water ice on the Moon", "Sci/Tech"),
]


def plan(structured: bool = False, examples=EXAMPLES):
    return plan_verification(TASK, examples, TEMPLATE, structured_output=structured)


def verdict(raw: str, task: TaskSpec = TASK, structured: bool = False) -> str | None:
    request = plan(structured)[0]
    completion = asyncio.run(
        ScriptedLLM([raw]).complete(request.chat_messages(), request.sampling, request.json_schema)
    )
    return parse_verdict(request, completion, task)


def test_template_loads_and_its_identity_is_on_every_request():
    assert TEMPLATE.id == "verify/judge"
    assert TEMPLATE.sha256 == hashlib.sha256((REPO_PROMPTS / "verify/judge.md").read_bytes()).hexdigest()
    assert set(TEMPLATE.variables) == {"output_kind", "labels", "answer_format", "text"}
    assert all((r.template_id, r.template_sha256) == ("verify/judge", TEMPLATE.sha256) for r in plan())


def test_one_request_per_example_listing_all_labels_with_the_text_last():
    requests = plan()
    assert [r.label for r in requests] == ["Sports", "Business", "Sci/Tech"]
    system, user = requests[0].messages
    assert system[0] == "system" and "annotator" in system[1]
    assert "1. Sports\n2. Business: business and finance\n3. Sci/Tech: science and technology" in user[1]
    assert user[1].endswith("Text:\nRovers stun City with a late winner")
    assert "name of that label" in user[1]
    heads = [r.messages[-1][1].rpartition("Text:\n")[0] for r in requests]
    assert heads[0] == heads[1] == heads[2]  # one shared prefix: the prefix cache serves it once
    assert "Sports" not in user[1].rpartition("Text:\n")[2]  # the judge is blind to the generated label


def test_requests_are_greedy_deterministic_and_content_addressed():
    requests = plan()
    again = plan()
    assert [r.id for r in requests] == [r.id for r in again]
    assert len({r.id for r in requests}) == 3
    assert all(r.sampling.temperature == 0.0 and r.sampling.max_tokens == JUDGE_SAMPLING.max_tokens for r in requests)
    assert all(r.hit is None for r in requests)
    same_text_other_label = plan(examples=[example(EXAMPLES[0].text, "Business")])
    assert same_text_other_label[0].id == requests[0].id  # a verdict is about the text alone


def test_json_schema_only_when_structured_and_its_enum_is_the_label_names():
    assert all(r.json_schema is None for r in plan())
    structured = plan(structured=True)
    assert all(r.json_schema == verdict_schema(TASK) for r in structured)
    assert structured[0].json_schema["properties"]["label"]["enum"] == ["Sports", "Business", "Sci/Tech"]
    assert 'JSON object with one key, "label"' in structured[0].messages[-1][1]
    assert structured[0].id != plan()[0].id


def test_plan_rejects_unknown_example_labels_and_labels_that_read_the_same():
    with pytest.raises(ConfigError, match=r"label\(s\) \['Politics'\].*labels: \['Sports', 'Business', 'Sci/Tech'\]"):
        plan(examples=[example("x y z w", "Politics")])
    clash = dataclasses.replace(TASK, labels=(LabelSpec("Sci/Tech", "a"), LabelSpec("sci-tech", "b")))
    with pytest.raises(ConfigError, match=r"labels 'Sci/Tech' and 'sci-tech' read the same to the judge"):
        plan_verification(clash, [], TEMPLATE)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sports", "Sports"),
        ("  sports.\n", "Sports"),
        ('"Business"', "Business"),
        ("**Sci/Tech**", "Sci/Tech"),
        ("sci-tech", "Sci/Tech"),
        ("Label: Business", "Business"),
        ("The answer is Sports", "Sports"),
        ("2", "Business"),
        ("3.", "Sci/Tech"),
        ("2. Business", "Business"),
        ("business and finance", "Business"),
        ("Sports\nIt reports the result of a football match.", "Sports"),
        ("Sports - it is about a match, not business", "Sports"),
        ("This is not Sports; it is Business.", "Business"),
        ('{"label": "Sci/Tech"}', "Sci/Tech"),
        ('```json\n{"label": "Business"}\n```', "Business"),
        ('{"label": "Sports"', "Sports"),  # broken JSON: the label field is still read
    ],
)
def test_parse_verdict_reads_label_names_robustly(raw, expected):
    assert verdict(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   \n",
        "I'm sorry, but I cannot classify this text.",
        "Politics",  # names no label
        "Sports or Business",  # names two labels
        "It could be Sports, but also Business.",
        "7",  # no such number in the list
        '{"label": "Entertainment"}',
        '{"label": "Sp',  # broken JSON naming nothing
        '{"answer": 3, "confidence": "high"}',
    ],
)
def test_parse_verdict_returns_none_when_no_single_label_is_named(raw):
    assert verdict(raw) is None


def test_numeric_label_names_win_over_list_positions():
    stars = dataclasses.replace(TASK, labels=tuple(LabelSpec(str(n), f"{n} stars") for n in range(5, 0, -1)))
    request = plan_verification(stars, [example("Great phone", "5")], TEMPLATE)[0]
    assert parse_verdict(request, Completion("1", "m"), stars) == "1"  # the label "1", not list item 1 ("5")
    assert parse_verdict(request, Completion("4 stars", "m"), stars) == "4"


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=200))
def test_parse_verdict_never_raises_and_only_returns_task_labels(raw):
    result = parse_verdict(PLAIN_REQUEST, Completion(raw, "m"), TASK)
    assert result is None or result in {"Sports", "Business", "Sci/Tech"}


# --- policies and agreement --------------------------------------------------------------------

JUDGED = [
    example("a1", "Sports", "r1"),  # agrees
    example("a2", "Sports", "r2"),  # judge says Business
    example("a3", "Sports", "r3"),  # unreadable
    example("b1", "Business", "r4"),  # agrees
    example("b2", "Business", "r5"),  # agrees
    example("c1", "Sci/Tech", "r6"),  # unreadable only
]
VERDICTS = ["Sports", "Business", None, "Business", "Business", None]


def test_agreement_is_computed_over_readable_verdicts_with_counts_and_confusion():
    result = apply_policy(JUDGED, VERDICTS, "keep")
    assert result.agreement == {"Sports": 0.5, "Business": 1.0}  # Sci/Tech has no readable verdict
    assert result.counts == {
        "Sports": LabelCounts(examples=3, readable=2, agreed=1),
        "Business": LabelCounts(examples=2, readable=2, agreed=2),
        "Sci/Tech": LabelCounts(examples=1, readable=0, agreed=0),
    }
    assert result.counts["Sports"].unreadable == 1
    assert result.confusion == {"Sports": {"Sports": 1, "Business": 1}, "Business": {"Business": 2}, "Sci/Tech": {}}


def test_keep_policy_only_annotates():
    result = apply_policy(JUDGED, VERDICTS, "keep")
    assert result.kept == tuple(JUDGED) and result.rejections == ()
    assert [r.action for r in result.records] == ["kept"] * 6
    assert [r.verdict for r in result.records] == VERDICTS


def test_drop_policy_keeps_only_agreeing_examples():
    result = apply_policy(JUDGED, VERDICTS, "drop")
    assert [e.text for e in result.kept] == ["a1", "b1", "b2"]
    assert [(r.label, r.reason, r.raw) for r in result.rejections] == [
        ("Sports", "label_disagreement", "a2"),
        ("Sports", "unreadable_verdict", "a3"),
        ("Sci/Tech", "unreadable_verdict", "c1"),
    ]
    assert "judge labelled it 'Business'" in result.rejections[0].detail
    assert result.rejections[0].provenance.request_id == "r2"
    assert [r.action for r in result.records] == ["kept", "dropped", "dropped", "kept", "kept", "dropped"]


def test_relabel_policy_takes_the_judges_label_and_records_the_original():
    result = apply_policy(JUDGED, VERDICTS, "relabel")
    assert [(e.text, e.label) for e in result.kept] == [
        ("a1", "Sports"), ("a2", "Business"), ("b1", "Business"), ("b2", "Business")
    ]
    assert result.records[1] == VerdictRecord("r2", "Sports", "Business", "relabelled")
    assert result.kept[1].provenance.request_id == "r2"  # links the kept example to its record
    assert [r.reason for r in result.rejections] == ["unreadable_verdict", "unreadable_verdict"]
    assert result.agreement == apply_policy(JUDGED, VERDICTS, "drop").agreement  # measured on original labels


def test_summary_is_json_ready():
    summary = apply_policy(JUDGED, VERDICTS, "relabel").summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["actions"] == {"kept": 3, "relabelled": 1, "dropped": 2}
    assert summary["counts"]["Sports"] == {"examples": 3, "readable": 2, "agreed": 1, "unreadable": 1}


def test_bad_policy_or_misaligned_verdicts_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown verification policy 'fix'; choose one of \['drop', 'relabel', 'keep'\]"):
        apply_policy(JUDGED, VERDICTS, "fix")
    with pytest.raises(ConfigError, match="got 6 examples but 5 verdicts"):
        apply_policy(JUDGED, VERDICTS[:5], "drop")


def test_end_to_end_plan_scripted_judge_parse_and_drop():
    requests = plan(structured=True)
    llm = ScriptedLLM(['{"label": "Sports"}', "Sports", "I cannot decide."])
    completions = [asyncio.run(llm.complete(r.chat_messages(), r.sampling, r.json_schema)) for r in requests]
    assert llm.calls[0].json_schema == verdict_schema(TASK)
    verdicts = [parse_verdict(r, c, TASK) for r, c in zip(requests, completions)]
    assert verdicts == ["Sports", "Sports", None]
    result = apply_policy(EXAMPLES, verdicts, "drop")
    assert [e.label for e in result.kept] == ["Sports"]
    assert [r.reason for r in result.rejections] == ["label_disagreement", "unreadable_verdict"]
    assert all(isinstance(r, Rejection) for r in result.rejections)
    assert result.agreement == {"Sports": 1.0, "Business": 0.0}


PLAIN_REQUEST = plan()[0]
