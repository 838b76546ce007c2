"""Semantic, human-likeness and entity metrics on known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import MetricUnavailable
from engine.metrics.entities import entity_entropy, entity_metrics, popularity_bias, spacy_extractor
from engine.metrics.semantic import (frechet_distance, frechet_from_moments, label_cosines, mean_pairwise_cosine,
                                     semantic_metrics, vendi_score)

E = np.eye(4, dtype=np.float32)


def unit_rows(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mean_pairwise_cosine_known_values_and_brute_force():
    assert mean_pairwise_cosine(E) == 0.0
    assert mean_pairwise_cosine(np.stack([E[0]] * 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(np.stack([E[0], E[0], E[1]])) == pytest.approx(1 / 3)  # 2 of 6 ordered pairs are 1
    x = unit_rows(30)
    sims = x @ x.T
    assert mean_pairwise_cosine(x) == pytest.approx((sims.sum() - np.trace(sims)) / (30 * 29), abs=1e-12)
    with pytest.raises(MetricUnavailable):
        mean_pairwise_cosine(E[:1])


def test_label_cosines_and_separability():
    out = label_cosines(np.stack([E[0], E[0], E[1], E[1]]), ["a", "a", "b", "b"])
    assert out["within_label_cosine"] == pytest.approx(1.0)
    assert out["between_label_cosine"] == 0.0
    assert out["class_separability"] == pytest.approx(1.0)
    assert out["within_label_cosine_per_label"] == pytest.approx({"a": 1.0, "b": 1.0})
    with pytest.raises(MetricUnavailable, match="at least 2 labels"):
        label_cosines(E, ["a"] * 4)


def test_vendi_score_known_values_and_brute_force():
    assert vendi_score(E) == pytest.approx(4.0)                 # 4 orthogonal items: 4 effective items
    assert vendi_score(np.stack([E[0]] * 5)) == pytest.approx(1.0)
    assert vendi_score(np.stack([E[0], E[0], E[1], E[1]])) == pytest.approx(2.0)
    for n in (10, 40):                                          # n < d and n > d take different paths
        x = unit_rows(n)
        eig = np.clip(np.linalg.eigvalsh(x @ x.T / n), 1e-15, None)
        assert vendi_score(x) == pytest.approx(math.exp(-(eig * np.log(eig)).sum()), rel=1e-9)


def test_frechet_from_moments_known_value():
    d, m = 5, np.arange(5.0)
    # N(0, I) vs N(m, 4I): |m|^2 + Tr(I + 4I - 2 * 2I) = |m|^2 + d
    assert frechet_from_moments(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(m @ m + d)


def test_frechet_distance_of_samples():
    x = unit_rows(200)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 1.0) == pytest.approx(16.0, rel=1e-6)  # shift by 1 in 16 dims
    with pytest.raises(MetricUnavailable):
        frechet_distance(x[:1], x)


def test_semantic_metrics_one_label_is_reported_not_raised():
    out = semantic_metrics(unit_rows(10), ["a"] * 10)
    assert isinstance(out["vendi_score"], float)
    assert out["class_separability"] == {"unavailable": "class separability needs at least 2 labels, got 1"}


def test_mauve_identical_sets_near_one_and_distinct_sets_low_and_too_few_reported():
    from engine.metrics.human import MIN_MAUVE, human_likeness, mauve_score

    x = unit_rows(120, seed=1)
    far = unit_rows(120, seed=2) + 3.0
    assert mauve_score(x, x)["mauve"] == pytest.approx(1.0, abs=1e-6)
    assert mauve_score(x, far)["mauve"] < 0.1
    with pytest.raises(MetricUnavailable, match=str(MIN_MAUVE)):
        mauve_score(x[:10], x)
    out = human_likeness(x[:20], x, None)
    assert "unavailable" in out["mauve"]["synthetic"] and "disjoint" in out["mauve"]["human"]["unavailable"]
    assert isinstance(out["frechet_distance"]["synthetic"], float)


def test_entity_entropy_known_values():
    mentions = [[("Paris", "GPE"), ("Bob", "PERSON")], [("paris", "GPE"), ("London ", "GPE")]]
    out = entity_entropy(mentions)
    assert out["GPE"]["entropy_bits"] == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))
    assert out["GPE"]["mentions"] == 3 and out["GPE"]["unique"] == 2
    assert out["PERSON"] == {"entropy_bits": 0.0, "mentions": 1, "unique": 1}


def test_popularity_bias_share_of_examples_with_a_top_entity():
    mentions = [[("Obama", "PERSON")], [("obama", "PERSON"), ("Paris", "GPE")], [("Rome", "GPE")], []]
    out = popularity_bias(mentions, top_k=1)
    assert out["share"] == 0.5 and out["top"] == [{"entity": "obama", "type": "PERSON", "examples": 2}]
    with pytest.raises(MetricUnavailable, match="no named entity"):
        popularity_bias([[], []])


def test_spacy_extractor_finds_people_and_places_offline():
    extract = spacy_extractor()
    (found,) = extract(["Barack Obama flew to Paris on Monday."])
    kinds = {kind for _, kind in found}
    assert {"PERSON", "GPE"} <= kinds
    out = entity_metrics(["Obama flew to Paris on Monday.", "Angela Merkel met Obama in Berlin."], extract, top_k=1)
    assert out["popularity_bias"]["share"] == 1.0 and out["entity_entropy"]["GPE"]["unique"] == 2
