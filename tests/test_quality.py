"""Quality filters after generation: near-duplicates (MinHash), the test-set leakage guard, stock phrases,
and grounding of named entities (real spaCy NER), each counted; plus the reference guard on retrieval."""

from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest

from conftest import REPO
from engine.config import parse_task
from engine.errors import ConfigError
from engine.testing import ScriptedLLM
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


def test_a_name_taken_from_a_seed_is_not_grounded_but_the_verbalization_is(extractor):
    # A seeded or RetrICL prompt shows the seeds; a rewrite of WEINBERGER that borrows the seed's Darfur
    # invents it as surely as any other name. The label's verbalization still counts as the task's text.
    seeded = dataclasses.replace(TASK, labels=(
        LabelSpec("World", "world news about governments, wars and the Gulf",
                  seeds=("The UN envoy to Sudan urged the government to accept monitors in Darfur.",)),
        TASK.labels[1]))
    checks = QualityChecks(seeded, extractor=lambda: extractor)
    borrowed = example("Weinberger warned Tehran as the UN envoy pressed Sudan over Darfur.")
    rejection = checks.check(borrowed, request(WEINBERGER))
    assert rejection.reason == "ungrounded_entity" and "Darfur" in rejection.detail and "Sudan" in rejection.detail
    assert checks.check(example("Weinberger warned Tehran over attacks in the Gulf.", rid="r2"),
                        request(WEINBERGER)) is None


def test_a_rounds_examples_are_tagged_in_one_batch_with_the_same_verdicts(extractor):
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return extractor(texts)

    texts = ["US President George W. Bush said he's prepared for a potential war with Iran.",
             "Weinberger said the United States would protect Gulf shipping and warned Tehran.",
             "Angela Merkel met Jacques Chirac in Paris about the Gulf."]
    pairs = [(example(t, rid=f"r{n}"), request(WEINBERGER)) for n, t in enumerate(texts)]
    one_by_one = QualityChecks(TASK, extractor=lambda: extractor)
    expected = [one_by_one.check(e, r) for e, r in pairs]
    batched = QualityChecks(TASK, extractor=lambda: counting)
    batched.prefetch(pairs + [(example("No passage here, Paris.", rid="x"), request(None))])
    assert [batched.check(e, r) for e, r in pairs] == expected
    assert calls == [texts]  # one call for the round; label-only examples are not tagged
    assert [r.reason if r else None for r in expected] == ["ungrounded_entity", None, "ungrounded_entity"]
    assert batched.report() == one_by_one.report()


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


def test_answers_are_tagged_while_the_rounds_other_requests_are_in_flight(hash_index, tmp_path, monkeypatch, extractor):
    """The grounding check's entity tagging runs on a worker thread as answers arrive, not after the
    round; the dataset and the verdicts are those of tagging after the round."""
    import threading

    from engine import pipeline

    seen = []

    def recording(texts):
        seen.append((threading.current_thread().name, len(texts), llm.calls_made()))
        return extractor(texts)

    task = TaskSpec(name="early", labels=(LabelSpec("Oil", "crude oil prices, OPEC and oil production"),
                                          LabelSpec("Grain", "wheat, corn and grain harvests and exports")),
                    output=OutputSpec("news headline", min_words=4, max_words=30), examples_per_label=6,
                    retrieval=RetrievalParams(min_similarity=0.05, max_similarity=0.95), seed=3)
    monkeypatch.setattr(pipeline, "_entity_extractor", lambda: recording)
    llm = ScriptedLLM(delay=0.05)
    llm.calls_made = lambda: len(llm.calls)
    early = synthesize(task, hash_index.index, llm, SynthOptions(out=tmp_path / "early", concurrency=2))
    assert any(name == "seedbed-early-tags" and calls < 12 for name, _, calls in seen), seen  # mid-round
    seen.clear()
    monkeypatch.setattr(QualityChecks, "tags_entities", property(lambda self: False))  # tag after the round
    llm = ScriptedLLM(delay=0.05)
    llm.calls_made = lambda: len(llm.calls)
    late = synthesize(task, hash_index.index, llm, SynthOptions(out=tmp_path / "late", concurrency=2))
    assert seen and all(name == "MainThread" for name, _, _ in seen)
    columns = ["text", "label", "passage_id"]
    assert pl.read_parquet(early.files["parquet"])[columns].equals(pl.read_parquet(late.files["parquet"])[columns])
    assert early.manifest["stages"]["quality"] == late.manifest["stages"]["quality"]


def test_the_confidence_filter_drops_each_labels_least_confident_examples_out_of_fold():
    """Real MiniLM embeddings: 8 sports and 8 business headlines, two of each labelled the other way."""
    from engine.cartography import confidence_filter
    from engine.embed import get_embedder
    from engine.types import Example, Provenance

    sports = ["The Rangers beat the Bruins 4-2 in overtime", "Gretzky scored twice as Edmonton won the series",
              "The goalie made 41 saves in the playoff opener", "Montreal fired its coach after a losing streak",
              "The striker's late goal sent the club into the final", "The pitcher threw a no-hitter at Fenway",
              "The champion won the marathon in record time", "The quarterback threw three touchdown passes"]
    business = ["Shares of the bank fell after quarterly earnings missed forecasts", "The oil company raised its dividend",
                "Inflation rose to four percent, the central bank said", "The retailer cut 2,000 jobs to reduce costs",
                "The merger creates the largest chemical maker in Europe", "Bond yields climbed as investors sold",
                "The airline reported a record quarterly profit", "Exports fell for a third month as the dollar rose"]
    swapped = {sports[0], business[0]}
    texts = sports + business
    labels = ["Sports" if (t in sports) != (t in swapped) else "Business" for t in texts]
    pairs = [(Example(t, label, Provenance(None, None, None, None, None, "t", "h", "m", {}, 0, 0, 0)), None) for t, label in zip(texts, labels)]
    kept, dropped, report = confidence_filter(pairs, get_embedder(), keep=0.75)
    assert {r.raw for r in dropped} >= swapped and all(r.reason == "low_confidence" for r in dropped)
    assert report["per_label"] == {"Business": {"kept": 6, "dropped": 2, "threshold": report["per_label"]["Business"]["threshold"]},
                                   "Sports": {"kept": 6, "dropped": 2, "threshold": report["per_label"]["Sports"]["threshold"]}}
    assert [p[0].text for p in kept] == [t for t in texts if t not in {r.raw for r in dropped}]  # order kept
    again = confidence_filter(pairs, get_embedder(), keep=0.75)
    assert [r.raw for r in again[1]] == [r.raw for r in dropped]  # deterministic: a resumed run drops the same


def test_the_confidence_filter_keeps_everything_when_no_student_can_be_trained():
    from engine.cartography import confidence_filter
    from engine.embed import HashEmbedder
    from engine.types import Example, Provenance

    prov = Provenance(None, None, None, None, None, "t", "h", "m", {}, 0, 0, 0)
    pairs = [(Example("a text", "A", prov), None), (Example("another", "A", prov), None), (Example("b", "B", prov), None)]
    kept, dropped, report = confidence_filter(pairs, HashEmbedder(), keep=0.5)
    assert kept == pairs and dropped == [] and "needs 2 labels with 2 examples each" in report["skipped"]
    kept, dropped, report = confidence_filter(pairs, HashEmbedder(), keep=0.5, target=1)  # gathered over the target
    assert kept == [pairs[0], pairs[2]] and [(r.raw, r.reason) for r in dropped] == [("another", "surplus")]


def test_the_confidence_filter_keeps_at_most_the_target_per_label():
    """A run gathers examples_per_label / keep; the cut keeps the most confident, never over the target."""
    from engine.cartography import confidence_filter
    from engine.embed import HashEmbedder
    from engine.types import Example, Provenance

    prov = Provenance(None, None, None, None, None, "t", "h", "m", {}, 0, 0, 0)
    pairs = [(Example(f"{label} text number {i}", label, prov), None) for label in "AB" for i in range(10)]
    kept, dropped, report = confidence_filter(pairs, HashEmbedder(), keep=0.9, target=7)
    assert {label: c["kept"] for label, c in report["per_label"].items()} == {"A": 7, "B": 7}
    assert len(kept) == 14 and len(dropped) == 6 and all("(at most 7)" in r.detail for r in dropped)


def test_an_example_made_of_phrases_kept_examples_already_use_is_dropped_naming_them():
    checks = QualityChecks(dataclasses.replace(TASK, quality=QualityParams(grounding="off", stock_phrases=0.15)))
    closer = "All in all I would recommend this film to anyone who loves a good story."
    openings = ["The harbour scenes were shot at dawn and the fog does half the acting.",
                "Its second half drags, but the courtroom duel between the sisters is electric.",
                "A silent-era score, played live on a theatre organ, carries every chase scene.",
                "The child actors improvise most of their lines and it shows, charmingly."]
    verdicts = [checks.check(example(f"{opening} {closer}", rid=f"r{i}"), request(None)) for i, opening in enumerate(openings)]
    assert verdicts[:2] == [None, None]  # a phrase is stock once two kept examples use it
    assert [v.reason for v in verdicts[2:]] == ["stock_phrases", "stock_phrases"]
    assert verdicts[2].detail.endswith('(over 15%): "all in all i would recommend this film to anyone who loves a good story"')
    assert checks.check(example(openings[2]), request(None)) is None  # the same review without the stock closer
    assert checks.report()["dropped"] == {"stock_phrases": 2} and checks.report()["stock_phrases_threshold"] == 0.15


def test_human_news_passes_the_stock_phrase_filter_at_a_tight_threshold():
    """400 stories of the bundled news mix (Reuters wires and newsgroup posts), each checked against
    the ones kept before it: at 0.04 (tried on IMDb) at most 1 is dropped, although wire copy
    repeats its formulas; at 0.1 none is."""
    rows = [json.loads(line)["text"] for line in (REPO / "corpora/news-mix/news_mix.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [" ".join(text.split()[:150]) for text in rows[::6][:400]]
    for threshold, most in ((0.04, 1), (0.1, 0)):
        checks = QualityChecks(dataclasses.replace(TASK, quality=QualityParams(grounding="off", stock_phrases=threshold)))
        dropped = [text for i, text in enumerate(texts) if checks.check(example(text, rid=f"h{i}"), request(None))]
        assert len(texts) == 400 and len(dropped) <= most


def test_stock_phrase_threshold_is_validated_and_off_keeps_the_fingerprint():
    from engine.config import task_to_dict

    base = {"name": "t", "output": "headline", "labels": [{"name": "A", "verbalization": "a"}]}
    assert parse_task({**base, "quality": {"stock_phrases": 0.15}}).quality.stock_phrases == 0.15
    with pytest.raises(ConfigError, match=r"quality.stock_phrases=1.0 must be at least 0 \(off, the default\) and below 1"):
        parse_task({**base, "quality": {"stock_phrases": 1.0}})
    assert "stock_phrases" not in task_to_dict(parse_task(base))["quality"]
    assert task_to_dict(parse_task({**base, "quality": {"stock_phrases": 0.2}}))["quality"]["stock_phrases"] == 0.2


def test_a_run_tops_up_what_the_stock_phrase_filter_drops(hash_index, tmp_path):
    """Every answer ends with the same closer until the filter has dropped some: the run still ends at
    its target, each drop in rejected.jsonl and the manifest."""
    closer = " I would recommend this story to anyone who follows the markets closely."
    calls = []

    def respond(messages) -> str:
        calls.append(1)
        body = f"Story {len(calls)}: " + " ".join(f"w{len(calls)}x{k}" for k in range(8))
        return body + (closer if len(calls) <= 6 else ".")

    task = TaskSpec(name="stock", labels=(LabelSpec("Oil", "crude oil prices"), LabelSpec("Grain", "grain harvests")),
                    output=OutputSpec("news summary", min_words=4, max_words=40), examples_per_label=3,
                    retrieval=RetrievalParams(min_similarity=0.1, max_similarity=0.9, assign_labels=False),
                    quality=QualityParams(grounding="off", stock_phrases=0.15), seed=5)
    result = synthesize(task, hash_index.index, ScriptedLLM(respond=respond), SynthOptions(out=tmp_path / "run", concurrency=1))
    rows = pl.read_parquet(result.files["parquet"])
    assert rows.height == 6 and sum("recommend this story" in t for t in rows["text"].to_list()) == 2
    rejected = [json.loads(line) for line in (tmp_path / "run" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["reason"] for r in rejected].count("stock_phrases") == 4
    assert result.manifest["stages"]["quality"]["dropped"]["stock_phrases"] == 4


def test_a_run_whose_passages_run_out_to_the_stock_phrase_filter_says_so_with_the_fix(hash_index, tmp_path, capsys):
    from engine.cli_synth import print_summary

    calls = []

    def respond(messages) -> str:  # every answer closes with the same sentence
        calls.append(1)
        return f"Story {len(calls)} " + " ".join(f"w{len(calls)}x{k}" for k in range(6)) + ". All in all a story worth following closely."

    task = TaskSpec(name="stock", labels=(LabelSpec("Oil", "crude oil prices"),),
                    output=OutputSpec("news summary", min_words=4, max_words=40), examples_per_label=4,
                    retrieval=RetrievalParams(min_similarity=0.1, max_similarity=0.9, assign_labels=False),
                    quality=QualityParams(grounding="off", stock_phrases=0.15), seed=5)
    result = synthesize(task, hash_index.index, ScriptedLLM(respond=respond), SynthOptions(out=tmp_path / "run", concurrency=1))
    assert result.kept["Oil"] == 2  # the third and later share the stock closer with 2 kept ones
    print_summary(result)
    out = capsys.readouterr().out
    dropped = result.manifest["counts"]["rejected_by_reason"]["stock_phrases"]
    assert dropped > 0 and f"or allow more reuse with a higher quality.stock_phrases (it dropped {dropped} answers)" in out
