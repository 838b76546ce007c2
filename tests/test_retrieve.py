"""Per-label retrieval: the similarity band, its reported relaxation, the reuse cap, and MMR diversity."""

from __future__ import annotations

import dataclasses

import json
import logging
from itertools import combinations

import numpy as np
import pytest

from engine.embed import HashEmbedder
from engine.index.builder import build_index
from engine.index.reader import Index
from engine.retrieval.retrieve import label_queries, mmr_order, retrieve_for_task
from engine.types import LabelSpec, OutputSpec, RetrievalParams, TaskSpec


def task(*labels: LabelSpec, **retrieval) -> TaskSpec:
    params = {"min_similarity": 0.1, "max_similarity": 0.9, "mode": "hybrid", "candidates": 200, **retrieval}
    return TaskSpec(name="t", labels=labels, output=OutputSpec("headline"), retrieval=RetrievalParams(**params))


def picked_ids(picks, label):
    return [h.passage.id for h in picks[label]]


def test_label_queries_are_the_verbalization_then_the_seeds():
    assert label_queries(LabelSpec("A", "about a", ("seed one", "seed two"))) == ["about a", "seed one", "seed two"]
    assert label_queries(LabelSpec("B", "about b")) == ["about b"]
    assert label_queries(LabelSpec("C", "same", ("same", "other"))) == ["same", "other"]  # no query twice


def test_a_labels_retrieval_queries_come_after_its_seeds_and_widen_what_it_retrieves(tmp_path):
    from test_coverage import LABELS, build_mix_index, make_task

    assert label_queries(LabelSpec("A", "about a", ("seed",), queries=("beat one", "seed"))) == ["about a", "seed", "beat one"]
    index = build_mix_index(tmp_path)  # real MiniLM vectors; Reuters stories carry their topics as `group`
    oil = LabelSpec("Business", "crude oil prices and OPEC output")
    widened = dataclasses.replace(oil, queries=("grain and wheat harvests and exports",))
    about_grain = lambda picks: sum("grain" in str(h.passage.metadata.get("group")) for h in picks["Business"])  # noqa: E731
    alone, _ = retrieve_for_task(index, make_task(labels=(oil, LABELS[1])), 10)
    both, _ = retrieve_for_task(index, make_task(labels=(widened, LABELS[1])), 10)
    assert about_grain(alone) <= 1 and about_grain(both) >= 4
    assert "grain and wheat harvests and exports" in {h.query for h in both["Business"]}


def test_a_passage_above_max_similarity_is_never_retrieved(hash_index):
    index = hash_index.index
    passage = index.passage(40)
    spec = LabelSpec("Copy", passage.text, seeds=(passage.text,))  # one query: the passage's own text
    assert label_queries(spec) == [passage.text]
    picks, report = retrieve_for_task(index, task(spec, max_similarity=0.9), per_label=len(index))  # take the whole pool
    assert passage.id not in picked_ids(picks, "Copy")
    assert len(picks["Copy"]) > 100
    assert all(h.cosine <= 0.9 for h in picks["Copy"])
    assert report.per_label["Copy"]["above_band"] >= 1
    # With the ceiling at 1.0 the passage itself is the most relevant pick.
    picks, report = retrieve_for_task(index, task(spec, max_similarity=1.0), per_label=5)
    assert picked_ids(picks, "Copy")[0] == passage.id
    assert report.per_label["Copy"]["above_band"] == 0


def test_passages_below_min_similarity_are_dropped(hash_index):
    index = hash_index.index
    spec = LabelSpec("Oil", "crude oil prices and OPEC output")
    all_hits = index.search(spec.verbalization, k=len(index), mode="dense")
    floor = 0.25
    assert sum(h.cosine < floor for h in all_hits) > 0 and sum(h.cosine >= floor for h in all_hits) >= 4
    picks, report = retrieve_for_task(index, task(spec, min_similarity=floor, mode="dense"), per_label=4)
    assert len(picks["Oil"]) == 4
    assert all(floor <= h.cosine <= 0.9 for h in picks["Oil"])
    counts = report.per_label["Oil"]
    assert counts["min_similarity_used"] == floor
    assert counts["below_band"] > 0 and counts["candidates_in_band"] >= 4 and counts["picked"] == 4
    assert [h.rank for h in picks["Oil"]] == [1, 2, 3, 4]
    assert all(h.query == spec.verbalization for h in picks["Oil"])


def test_a_band_too_strict_is_relaxed_and_reported(hash_index, caplog):
    index = hash_index.index
    spec = LabelSpec("Oil", "crude oil prices and OPEC output")
    with caplog.at_level(logging.WARNING, logger="engine.retrieval.retrieve"):
        picks, report = retrieve_for_task(index, task(spec, min_similarity=0.8, max_similarity=0.9, relax_limit=0.8),
                                          per_label=5)
    used = report.per_label["Oil"]["min_similarity_used"]
    assert used < 0.8 and report.per_label["Oil"]["relaxed_from"] == 0.8
    assert len(picks["Oil"]) == 5
    assert all(used <= h.cosine <= 0.9 for h in picks["Oil"])
    assert report.per_label["Oil"]["candidates_in_band"] < 5
    assert "relaxed the lower bound" in caplog.text and "'Oil'" in caplog.text
    json.dumps(report.per_label)  # goes into the run manifest as is


def test_relaxation_is_capped_by_relax_limit(hash_index):
    index = hash_index.index
    spec = LabelSpec("Oil", "crude oil prices and OPEC output")
    capped, report = retrieve_for_task(index, task(spec, min_similarity=0.8, max_similarity=0.9, relax_limit=0.1), per_label=5)
    assert report.per_label["Oil"]["min_similarity_used"] == 0.7  # two steps of 0.05, no further
    assert all(h.cosine >= 0.7 for h in capped["Oil"]) and len(capped["Oil"]) < 5
    never, report = retrieve_for_task(index, task(spec, min_similarity=0.8, max_similarity=0.9, relax_limit=0.0), per_label=5)
    assert report.per_label["Oil"]["min_similarity_used"] == 0.8 and report.per_label["Oil"]["relaxed_from"] is None


def test_reuse_cap_keeps_labels_apart(hash_index):
    index = hash_index.index
    same = "wheat grain exports to the soviet union"
    labels = (LabelSpec("A", same), LabelSpec("B", same), LabelSpec("C", "company quarterly earnings per share"))
    picks, _ = retrieve_for_task(index, task(*labels, max_reuse=1, assign_labels=False), per_label=6)
    assert all(len(picks[name]) == 6 for name in "ABC")
    seen: dict[str, str] = {}
    for name in "ABC":
        for pid in picked_ids(picks, name):
            assert pid not in seen, f"{pid} picked for {seen.get(pid)} and {name}"
            seen[pid] = name
    assert len(set(picked_ids(picks, "A"))) == 6  # no passage twice under one label either
    # The cap is what keeps them apart: allowing reuse lets identical queries share passages.
    shared, _ = retrieve_for_task(index, task(*labels, max_reuse=2, assign_labels=False), per_label=6)
    assert set(picked_ids(shared, "A")) & set(picked_ids(shared, "B"))


def test_a_near_copy_of_a_seed_is_excluded_even_when_another_query_finds_it(hash_index):
    index = hash_index.index
    passage = index.passage(40)
    words = passage.text.split()
    spec = LabelSpec("Copy", " ".join(words[:12]), seeds=(passage.text,))  # the verbalization is close, not a copy
    band = task(spec, min_similarity=0.1, max_similarity=0.9)
    by_verbalization = [h for h in index.search(spec.verbalization, k=len(index)) if h.passage.id == passage.id]
    assert by_verbalization and 0.1 <= by_verbalization[0].cosine <= 0.9  # the premise of the test
    picks, _ = retrieve_for_task(index, band, per_label=len(index))  # take the whole pool
    assert len(picks["Copy"]) > 100
    assert passage.id not in picked_ids(picks, "Copy")


# --- MMR -------------------------------------------------------------------------------------------

BASE = "Crude oil prices rose sharply on Monday after OPEC ministers agreed to cut output"
NEAR_COPIES = [f"{BASE} {tail}." for tail in ("today", "again", "in Vienna", "this week")]
DISTINCT = [
    "OPEC ministers met in Geneva to discuss quotas while crude stocks in Texas fell for the third week",
    "Oil companies in the North Sea reported higher output as prices recovered from last year's lows",
    "Saudi Arabia said it would defend the official crude price and keep its oil output steady",
    "Refinery margins in Rotterdam improved as gasoline demand rose ahead of the summer driving season",
    "Wheat farmers in Kansas expect a record harvest after heavy spring rains across the plains",
]


@pytest.fixture(scope="module")
def mmr_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mmr")
    corpus = folder / "oil.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in NEAR_COPIES + DISTINCT), encoding="utf-8")
    build_index(corpus, "oil", HashEmbedder(256), root=folder / "indexes")
    return Index.open("oil", folder / "indexes", embedder=HashEmbedder(256))


def _pairwise_max(index, hits):
    vectors = index.vectors([index.row_of(h.passage.id) for h in hits])
    return max(float(vectors[i] @ vectors[j]) for i, j in combinations(range(len(hits)), 2))


def test_mmr_lambda_one_is_relevance_order_and_lambda_zero_is_diverse(mmr_index):
    index = mmr_index
    hits = index.search(BASE, k=len(index), mode="dense")
    copies = {h.passage.id for h in hits if h.passage.text.startswith(BASE)}
    assert len(copies) == 4 and {h.passage.id for h in hits[:4]} == copies  # the near-copies are most relevant

    by_relevance = mmr_order(index, hits, limit=4, lam=1.0)
    assert [h.passage.id for h in by_relevance] == [h.passage.id for h in sorted(hits, key=lambda h: -h.cosine)[:4]]
    assert _pairwise_max(index, by_relevance) > 0.9

    diverse = mmr_order(index, hits, limit=4, lam=0.0)
    assert sum(h.passage.id in copies for h in diverse) == 1  # never two near-copies while others remain
    assert _pairwise_max(index, diverse) < 0.9

    balanced = mmr_order(index, hits, limit=4, lam=0.5)
    assert balanced[0].passage.id == by_relevance[0].passage.id  # the first pick is always the most relevant


def test_mmr_orders_by_the_relevance_it_is_given(mmr_index):
    hits = mmr_index.search(BASE, k=6, mode="dense")
    reverse = np.arange(len(hits), dtype=np.float32)  # the least similar hit is now the most relevant
    order = mmr_order(mmr_index, hits, limit=len(hits), lam=1.0, relevance=reverse)
    assert [h.passage.id for h in order] == [h.passage.id for h in reversed(hits)]


def test_mmr_relevance_margin_prefers_passages_that_belong_to_the_label_most(tmp_path):
    from test_coverage import LABELS, build_mix_index, make_task

    index = build_mix_index(tmp_path)
    base = make_task(labels=LABELS[:2])
    by_cosine, _ = retrieve_for_task(index, base, 6)
    task = make_task(labels=LABELS[:2], retrieval=dataclasses.replace(base.retrieval, mmr_lambda=1.0, mmr_relevance="margin"))
    picks, _ = retrieve_for_task(index, task, 6)
    queries = {spec.name: index.embed_queries(label_queries(spec)) for spec in task.labels}
    from engine.retrieval.retrieve import assignment

    for label, hits in picks.items():
        vectors = index.vectors(np.array([index.row_of(h.passage.id) for h in hits]))
        margins = assignment(vectors, label, queries)[0]
        assert list(margins) == sorted(margins, reverse=True)  # lambda 1: pure margin order
    assert picks != by_cosine


def test_mmr_edge_cases(mmr_index):
    hits = mmr_index.search(BASE, k=3, mode="dense")
    assert mmr_order(mmr_index, [], limit=5, lam=0.5) == []
    assert len(mmr_order(mmr_index, hits, limit=10, lam=0.5)) == 3
    assert len({h.passage.id for h in mmr_order(mmr_index, hits, limit=3, lam=0.0)}) == 3


def test_vectors_are_the_stored_unit_vectors(mmr_index):
    rows = np.arange(len(mmr_index))
    vectors = mmr_index.vectors(rows)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = HashEmbedder(256).encode([mmr_index.passage(r).text for r in rows])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
