"""SynthesizRR: plan -> messages -> (ScriptedLLM) -> parse, including malformed model output."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.testing import ScriptedLLM
from engine.llm.runner import run_requests_sync
from engine.strategies.base import available_strategies, clean_text, extract_text, get_strategy
from engine.strategies.synthesizrr import ANSWER_SCHEMA, SynthesizRR
from engine.types import Completion, Example, Hit, LabelSpec, OutputSpec, Passage, Rejection, SamplingParams, TaskSpec

SPORTS_TEXT = (
    "Manchester United beat Chelsea 2-1 at Old Trafford on Saturday, with a late goal from Marcus "
    "Rashford sealing the win in front of 74,000 fans."
)
TRAFFIC_TEXT = "Heavy snow closed the M6 motorway near Preston for six hours, stranding hundreds of drivers."
BUSINESS_TEXT = "Shares of Apple rose 3 percent on Tuesday after it reported record revenue of $90 billion {sic}."

TASK = TaskSpec(
    name="ag-news",
    labels=(LabelSpec("Sports", "sports"), LabelSpec("Business", "business and finance")),
    output=OutputSpec(kind="news headline", min_words=4, max_words=14),
    sampling=SamplingParams(temperature=0.7, max_tokens=40),
    seed=13,
)


def hit(pid: str, text: str, rank: int = 1) -> Hit:
    return Hit(Passage(pid, text, source="reuters"), score=1.0 / rank, rank=rank, query=f"q-{pid}", cosine=0.55)


HITS = {
    "Sports": [hit("s1", SPORTS_TEXT), hit("s2", TRAFFIC_TEXT, rank=2)],
    "Business": [hit("b1", BUSINESS_TEXT)],
}


def plan(strategy: SynthesizRR | None = None, task: TaskSpec = TASK, hits=HITS):
    strategy = strategy or SynthesizRR()
    return strategy, strategy.plan(task, hits, strategy.load_templates(task))


def answer(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, model="qwen", prompt_tokens=200, completion_tokens=12, finish_reason=finish)


def test_registry_builds_synthesizrr_and_names_known_strategies():
    assert "synthesizrr" in available_strategies()
    strategy = get_strategy("synthesizrr", structured_output=True)
    assert isinstance(strategy, SynthesizRR) and strategy.structured_output
    with pytest.raises(ConfigError, match=r"unknown strategy 'nope'; known strategies: \[.*'synthesizrr'"):
        get_strategy("nope")
    with pytest.raises(ConfigError, match="does not accept options"):
        get_strategy("synthesizrr", colour="red")


def test_plan_makes_one_request_per_label_and_hit_in_order():
    _, requests = plan()
    assert [(r.label, r.hit.passage.id) for r in requests] == [("Sports", "s1"), ("Sports", "s2"), ("Business", "b1")]
    first = requests[0]
    assert [role for role, _ in first.messages] == ["system", "user"]
    assert "helpful writing assistant" in first.messages[0][1]
    assert first.messages[-1][1].endswith(SPORTS_TEXT)
    assert "one news headline of 4 to 14 words that is about sports" in first.messages[-1][1]
    assert first.json_schema is None
    assert first.template_id == "system+synthesizrr/refine" and len(first.template_sha256) == 64


def test_requests_of_one_label_share_everything_before_the_passage():
    _, requests = plan()
    one, two, other = (r.messages[-1][1] for r in requests)
    assert one[: -len(SPORTS_TEXT)] == two[: -len(TRAFFIC_TEXT)]
    assert requests[0].messages[0] == requests[2].messages[0]  # same system prompt for every label
    assert one[: -len(SPORTS_TEXT)] != other[: -len(BUSINESS_TEXT)]


def test_passage_text_is_inserted_literally():
    _, requests = plan()
    assert requests[2].messages[-1][1].endswith("$90 billion {sic}.")


def test_request_ids_and_seeds_are_deterministic_and_distinct():
    _, first = plan()
    _, again = plan()
    assert [r.id for r in first] == [r.id for r in again]
    assert len({r.id for r in first}) == 3
    seeds = [r.sampling.seed for r in first]
    assert len(set(seeds)) == 3 and seeds == [r.sampling.seed for r in again]
    assert all(r.sampling.temperature == 0.7 and r.sampling.max_tokens == 40 for r in first)
    _, reseeded = plan(task=dataclasses.replace(TASK, seed=14))
    assert [r.sampling.seed for r in reseeded] != seeds
    assert {r.id for r in reseeded}.isdisjoint(r.id for r in first)


def test_seed_and_id_of_a_request_do_not_depend_on_other_labels():
    _, all_labels = plan()
    _, business_only = plan(hits={"Business": HITS["Business"]})
    assert business_only[0].id == all_labels[2].id
    assert business_only[0].sampling.seed == all_labels[2].sampling.seed


def test_a_reused_passage_gets_a_new_sample_index_and_id():
    _, requests = plan(hits={"Sports": [hit("s1", SPORTS_TEXT), hit("s1", SPORTS_TEXT, rank=5)]})
    assert [r.sample_index for r in requests] == [0, 1]
    assert requests[0].id != requests[1].id
    assert requests[0].sampling.seed != requests[1].sampling.seed


def test_structured_output_sets_schema_json_instruction_and_a_different_id():
    _, plain = plan()
    _, structured = plan(SynthesizRR(structured_output=True))
    assert structured[0].json_schema == ANSWER_SCHEMA
    assert 'JSON object with one key, "text", whose value is the news headline' in structured[0].messages[-1][1]
    assert structured[0].id != plain[0].id


def test_unknown_label_and_missing_templates_are_config_errors():
    strategy = SynthesizRR()
    with pytest.raises(ConfigError, match=r"label 'Politics'.*labels: \['Sports', 'Business'\]"):
        strategy.plan(TASK, {"Politics": [hit("p", "x")]}, strategy.load_templates(TASK))
    with pytest.raises(ConfigError, match=r"templates \['system'\] were not loaded"):
        strategy.plan(TASK, HITS, {"synthesizrr/refine": strategy.load_templates(TASK)["synthesizrr/refine"]})


def test_task_without_system_template_uses_the_refine_file_identity():
    task = dataclasses.replace(TASK, system_template="")
    strategy, requests = plan(task=task)
    refine = strategy.load_templates(task)["synthesizrr/refine"]
    assert [role for role, _ in requests[0].messages] == ["user"]
    assert (requests[0].template_id, requests[0].template_sha256) == (refine.id, refine.sha256)


SEEDED = dataclasses.replace(TASK, template="synthesizrr/seeded", labels=(
    LabelSpec("Sports", "sports", seeds=("Bode Miller won his first World Cup super-giant slalom race Sunday.",
                                         "Lindsay Davenport regained the No. 1 ranking in Moscow.")),
    LabelSpec("Business", "business and finance", seeds=("Shares in Jardine Lloyd Thomas plunged 20 per cent.",))))


def test_the_seeded_template_shows_the_labels_seeds_before_the_passage_and_shares_their_prefix():
    _, requests = plan(task=SEEDED)
    first, second, business = (r.messages[-1][1] for r in requests)
    assert "- Bode Miller won his first World Cup" in first and "- Lindsay Davenport regained" in first
    assert "Jardine" not in first and "- Shares in Jardine Lloyd Thomas plunged" in business
    assert first.index("Lindsay Davenport") < first.index("Old Trafford")  # seeds come before the passage
    prefix = first[:first.index("Passage:")]
    assert second.startswith(prefix) and TRAFFIC_TEXT in second  # one prefix per label for the server's cache


def test_the_seeded_template_stops_before_any_call_for_a_label_without_seeds():
    task = dataclasses.replace(SEEDED, labels=(SEEDED.labels[0], LabelSpec("Business", "business and finance")))
    with pytest.raises(ConfigError, match=r"label 'Business' has no seeds.*synthesizrr/seeded.*add `seeds:`"):
        plan(task=task)


def test_parse_keeps_a_good_answer_with_full_provenance():
    strategy, requests = plan()
    result = strategy.parse(requests[0], answer('Headline: "Rashford strikes late as United edge Chelsea"'), TASK)
    assert isinstance(result, Example)
    assert result.text == "Rashford strikes late as United edge Chelsea"
    assert result.label == "Sports"
    p = result.provenance
    assert (p.passage_id, p.retrieval_score, p.retrieval_rank, p.cosine, p.query) == ("s1", 1.0, 1, 0.55, "q-s1")
    assert (p.template_id, p.template_sha256) == (requests[0].template_id, requests[0].template_sha256)
    assert (p.model, p.prompt_tokens, p.completion_tokens) == ("qwen", 200, 12)
    assert p.sampling == requests[0].sampling.as_dict() and p.seed == requests[0].sampling.seed
    assert p.request_id == requests[0].id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   \n ** \n", "empty"),
        ("I'm sorry, but I can't help with rewriting this passage.", "refusal"),
        ("As an AI language model, I cannot write news headlines about sports.", "refusal"),
        ("United win", "too_short"),
        ("United beat Chelsea in a thrilling match at Old Trafford that fans will talk about for years", "too_long"),
        ("Manchester United beat Chelsea 2-1 at Old Trafford on Saturday", "copy_of_passage"),
    ],
)
def test_parse_rejects_malformed_answers_with_a_reason(raw, reason):
    strategy, requests = plan()
    result = strategy.parse(requests[0], answer(raw), TASK)
    assert isinstance(result, Rejection)
    assert (result.reason, result.raw, result.label) == (reason, raw, "Sports")
    assert result.detail and result.provenance.request_id == requests[0].id


def test_truncated_answer_is_rejected_unless_its_kept_first_line_is_complete():
    strategy, requests = plan()
    cut = strategy.parse(requests[0], answer("Rashford late goal gives United derby", finish="length"), TASK)
    assert isinstance(cut, Rejection) and cut.reason == "truncated"
    kept = strategy.parse(
        requests[0], answer("Rashford late goal gives United win\n\nThis headline sums up the match and", finish="length"), TASK
    )
    assert isinstance(kept, Example) and kept.text == "Rashford late goal gives United win"


@pytest.mark.parametrize(
    "raw",
    [
        '{"text": "Rashford seals late win for United"}',
        '```json\n{"text": "Rashford seals late win for United"}\n```',
        '{"text": "Rashford seals late win for United"',  # broken JSON: the text field is still read
        "Rashford seals late win for United",  # plain text despite the schema
    ],
)
def test_structured_answers_parse_json_and_fall_back_to_text(raw):
    strategy, requests = plan(SynthesizRR(structured_output=True))
    result = strategy.parse(requests[0], answer(raw), TASK)
    assert isinstance(result, Example)
    assert result.text == "Rashford seals late win for United"


def test_broken_json_note_is_kept_in_a_rejection_detail():
    strategy, requests = plan(SynthesizRR(structured_output=True))
    result = strategy.parse(requests[0], answer('{"text": "Win"'), TASK)
    assert isinstance(result, Rejection) and result.reason == "too_short"
    assert "broken JSON answer" in result.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sure! Here is a news headline:\n\n**Rashford seals it for United**", "Rashford seals it for United"),
        ("Here's a headline: 'Rashford's late goal sinks Chelsea'", "Rashford's late goal sinks Chelsea"),
        ("## News Headline: United edge Chelsea at home (6 words)", "United edge Chelsea at home"),
        ("- “United edge Chelsea in thriller”\n- Another one", "United edge Chelsea in thriller"),
        ('"Quote" marks stay when "they" are inside', '"Quote" marks stay when "they" are inside'),
    ],
)
def test_clean_text_strips_wrappers_from_short_kinds(raw, expected):
    assert clean_text(raw, TASK.output)[0] == expected


def test_clean_text_keeps_all_lines_of_long_kinds():
    review = OutputSpec(kind="product review", min_words=20, max_words=120)
    text, dropped = clean_text("Review:\nGreat battery.\n\n**Screen** is dim.", review)
    assert (text, dropped) == ("Great battery.\nScreen is dim.", False)


def test_extract_text_reports_how_it_read_the_answer():
    assert extract_text('{"text": "a \\"b\\""}') == ('a "b"', "")
    assert extract_text('{"label": 1}')[1] == "answer was not the requested JSON; read it as plain text"
    assert extract_text("plain") == ("plain", "")


def test_pipeline_round_trip_with_scripted_answers():
    strategy, requests = plan()
    llm = ScriptedLLM(
        [
            "Headline: Rashford late winner lifts United past Chelsea",
            "I'm sorry, but I cannot write about that.",
            "Apple shares climb on record quarterly revenue",
        ]
    )
    results = {}
    run_requests_sync(llm, requests, concurrency=1, on_result=lambda r, c: results.__setitem__(r.id, strategy.parse(r, c, TASK)))
    outcomes = [results[r.id] for r in requests]
    assert [type(o).__name__ for o in outcomes] == ["Example", "Rejection", "Example"]
    assert outcomes[1].reason == "refusal"
    assert [c.messages for c in llm.calls] == [r.messages for r in requests]


def test_default_scripted_llm_gives_kept_deterministic_examples_offline():
    for structured in (False, True):
        strategy, requests = plan(SynthesizRR(structured_output=structured))
        texts = []
        for _ in range(2):
            llm = ScriptedLLM()
            kept = []
            run_requests_sync(llm, requests, concurrency=2, on_result=lambda r, c: kept.append(strategy.parse(r, c, TASK)))
            texts.append(sorted(k.text for k in kept if isinstance(k, Example)))
        assert len(texts[0]) == 3 and texts[0] == texts[1]
        assert any(t.startswith("Sports: Manchester United Beat Chelsea") for t in texts[0])


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=300), finish=st.sampled_from(["stop", "length"]), structured=st.booleans())
def test_parse_never_raises_on_any_model_output(raw, finish, structured):
    strategy = SynthesizRR(structured_output=structured)
    request = STRUCTURED_REQUEST if structured else PLAIN_REQUEST
    result = strategy.parse(request, answer(raw, finish), TASK)
    assert isinstance(result, (Example, Rejection))
    if isinstance(result, Example):
        assert result.text.strip() == result.text and result.text


def test_scripted_json_round_trip_through_the_schema():
    strategy, requests = plan(SynthesizRR(structured_output=True))
    llm = ScriptedLLM([json.dumps({"text": "Apple stock climbs after record quarter"})])
    out = []
    run_requests_sync(llm, requests[2:], concurrency=1, on_result=lambda r, c: out.append(strategy.parse(r, c, TASK)))
    assert llm.calls[0].json_schema == ANSWER_SCHEMA
    assert isinstance(out[0], Example) and out[0].text == "Apple stock climbs after record quarter"


PLAIN_REQUEST = plan()[1][0]
STRUCTURED_REQUEST = plan(SynthesizRR(structured_output=True))[1][0]


def test_parse_rejects_an_answer_that_repeats_the_prompts_rules_but_not_one_that_reuses_its_passage():
    task = dataclasses.replace(TASK, output=OutputSpec(kind="news headline", min_words=4, max_words=60),
                               sampling=SamplingParams(temperature=0.7, max_tokens=120))
    strategy, requests = plan(task=task)
    rules = "Stay within 60 words; leave out details rather than run long. Write one news headline of 4 to 60 words"
    assert all(part in requests[0].messages[-1][1] for part in rules.split(". "))  # the refine template's own wording
    echoed = strategy.parse(requests[0], answer(rules), task)
    assert isinstance(echoed, Rejection) and echoed.reason == "echoes_prompt", echoed
    assert "instructions" in echoed.detail
    # half the passage's words, in a new frame: an edit, which the echo check leaves to copy_of_passage
    kept = strategy.parse(requests[0], answer("Old Trafford cheers as Manchester United beat Chelsea 2-1 at Old "
                                              "Trafford on Saturday, sealed by Rashford"), task)
    assert isinstance(kept, Example), kept
