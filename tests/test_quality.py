"""Quality filters after generation: near-duplicates (MinHash), the test-set leakage guard, and grounding
of named entities (real spaCy NER), each counted; plus the reference guard on retrieval."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from engine.config import parse_task
from engine.errors import ConfigError
from engine.llm.fake import ScriptedLLM
from engine.metrics.entities import spacy_extractor
from engine.pipeline import SynthOptions, synthesize
from engine.quality import NearDuplicateIndex, QualityChecks, ReferenceGuard
from engine.types import (Example, Hit, LabelSpec, OutputSpec, Passage, Provenance, QualityParams, Request,
                          RetrievalParams, SamplingParams, TaskSpec)

TASK = TaskSpec(name="t", labels=(LabelSpec("World", "world news about governments and wars"),
                                  LabelSpec("Business", "business news about companies")),
                output=OutputSpec("news summary", min_words=5, max_words=40))
WEINBERGER = ("Defense Secretary Caspar Weinberger said on Tuesday the United States was prepared to protect "
              "shipping in the Gulf, and warned Tehran against attacks on tankers.")


def example(text: str, label: str = "World", rid: str = "r1") -> Example:
    provenance = Provenance(None, None, None, None, None, "t", "h", "m", {}, 0, 0, 0, request_id=rid)
    return Example(text, label, provenance)


def request(passage: str | None) -> Request:
    hit = Hit(Passage("p1", passage), 1.0, 1, cosine=0.5) if passage else None
    return Request("r1", "World", (("user", "x"),), "t", "h", SamplingParams(), hit=hit)


@pytest.fixture(scope="module")
def extractor():
    return spacy_extractor()


def test_near_duplicates_are_found_and_distinct_texts_are_not():
    index = NearDuplicateIndex(0.7)
    index.add("a", "Oil prices rose sharply on Monday after OPEC ministers agreed to cut crude output in Vienna")
    assert index.near("Oil prices rose sharply on Monday after OPEC ministers agreed to cut crude output in Geneva")
    assert not index.near("Wheat farmers in Kansas expect a record harvest after heavy spring rains")
    assert not NearDuplicateIndex(0.7).near("anything at all")


def test_a_near_duplicate_under_another_label_is_dropped_and_counted():
    checks = QualityChecks(dataclasses.replace(TASK, quality=QualityParams(near_duplicate=0.7, grounding="off")))
    first = "Oil prices rose sharply on Monday after OPEC ministers agreed to cut crude output in Vienna"
    assert checks.check(example(first), request(None)) is None
    rejection = checks.check(example(first.replace("Vienna", "Geneva"), "Business", "r2"), request(None))
    assert rejection.reason == "near_duplicate" and rejection.label == "Business"
    assert checks.report()["dropped"] == {"near_duplicate": 1}


def test_an_example_that_near_duplicates_a_reference_row_is_dropped():
    row = "Saudi Arabia said it would defend the official crude price and keep its oil output steady this year"
    checks = QualityChecks(dataclasses.replace(TASK, quality=QualityParams(near_duplicate=0.7, grounding="off")),
                           reference=ReferenceGuard([row]))
    assert checks.check(example(row.replace("this year", "in 1987")), request(None)).reason == "leaks_reference"
    assert checks.report()["reference_rows"] == 1 and checks.report()["dropped"] == {"leaks_reference": 1}


def test_a_passage_quoting_a_short_reference_row_leaks_it():
    row = "Saudi Arabia said it would defend the official crude price and keep its oil output steady"
    guard = ReferenceGuard([row, "an unrelated row about wheat harvests in Kansas this spring"])
    passage = "RIYADH, March 3 - " + row + ". Officials added that quotas would be reviewed in June, and traders agreed."
    assert guard.near(passage) == [0]
    assert guard.near("Crude prices fell in Rotterdam as stocks rose for the third week running.") == []


def test_an_invented_entity_is_caught_and_a_grounded_one_is_kept(extractor):
    checks = QualityChecks(TASK, extractor=lambda: extractor)
    invented = example("US President George W. Bush said he's prepared for a potential war with Iran.")
    rejection = checks.check(invented, request(WEINBERGER))
    assert rejection.reason == "ungrounded_entity" and "George W. Bush" in rejection.detail
    grounded = example("Weinberger said the United States would protect Gulf shipping and warned Tehran.", rid="r2")
    assert checks.check(grounded, request(WEINBERGER)) is None
    report = checks.report()["grounding"]
    assert report["checked"] == 2 and report["ungrounded"] == 1 and report["ungrounded_rate"] == 0.5


def test_flag_policy_counts_without_dropping_and_label_only_examples_are_not_checked(extractor):
    checks = QualityChecks(dataclasses.replace(TASK, quality=QualityParams(grounding="flag")), extractor=lambda: extractor)
    assert checks.check(example("George W. Bush visited Iran."), request(WEINBERGER)) is None
    assert checks.report()["grounding"]["ungrounded"] == 1 and checks.report()["dropped"] == {}
    assert checks.check(example("Angela Merkel met Jacques Chirac in Paris.", rid="r3"), request(None)) is None
    assert checks.report()["grounding"]["checked"] == 1  # no passage, nothing to be faithful to


def test_quality_section_is_validated():
    base = {"name": "t", "output": "headline", "labels": [{"name": "A", "verbalization": "a"}]}
    assert parse_task({**base, "quality": {"near_duplicate": 0.8, "grounding": "flag"}}).quality == QualityParams(0.8, "flag")
    with pytest.raises(ConfigError, match="quality.grounding='maybe'; use one of drop, flag, off"):
        parse_task({**base, "quality": {"grounding": "maybe"}})
    with pytest.raises(ConfigError, match="quality.near_duplicate=1.5 must be between 0"):
        parse_task({**base, "quality": {"near_duplicate": 1.5}})


def test_a_passage_near_a_reference_row_never_reaches_a_prompt(hash_index, tmp_path):
    index = hash_index.index
    task = TaskSpec(name="leak", labels=(LabelSpec("Oil", "crude oil prices, OPEC and oil production"),),
                    output=OutputSpec("news headline", min_words=4, max_words=14), examples_per_label=3,
                    retrieval=RetrievalParams(min_similarity=0.1, max_similarity=0.9), seed=5)
    first = synthesize(task, index, ScriptedLLM(), SynthOptions(out=tmp_path / "a"))
    used = pl.read_parquet(first.files["parquet"])["passage_text"].to_list()
    llm = ScriptedLLM()
    guarded = synthesize(task, index, llm, SynthOptions(out=tmp_path / "b", reference=(used[0],)))
    prompts = "\n".join(content for call in llm.calls for _, content in call.messages)
    assert used[0].strip()[:100] not in prompts
    assert guarded.manifest["retrieval"]["Oil"]["near_reference_dropped"] >= 1
    assert guarded.manifest["stages"]["quality"]["reference_rows"] == 1
