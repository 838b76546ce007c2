"""Lexical metrics on known values; fast Self-BLEU equals nltk's sentence_bleu (method-1 smoothing)."""

from __future__ import annotations

import json
import math
import random

import pytest

from engine.errors import MetricUnavailable
from engine.metrics.lexical import compression_ratio, distinct_n, length_stats, lexical_metrics, vocabulary_size
from engine.metrics.selfbleu import self_bleu, self_bleu_per_text, self_bleu_reference, tokenize

from conftest import REUTERS


def reuters_titles(n: int) -> list[str]:
    rows = [json.loads(line) for line in REUTERS.read_text(encoding="utf-8").splitlines()[:n]]
    return [r["title"] + ". " + " ".join(r["text"].split()[:30]) for r in rows]


def test_self_bleu_known_values():
    scores = self_bleu(["a b c", "a b d"], max_n=3)
    # each text against the other: p1 = 2/3, p2 = 1/2, p3 = 0 -> 0.1 / 1 (method 1), equal lengths so BP = 1
    assert scores[1] == pytest.approx(2 / 3, abs=1e-12)
    assert scores[2] == pytest.approx(math.sqrt(2 / 3 * 1 / 2), abs=1e-12)
    assert scores[3] == pytest.approx((2 / 3 * 1 / 2 * 0.1) ** (1 / 3), abs=1e-12)


def test_self_bleu_identical_texts_is_one_and_disjoint_is_zero():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx({n: 1.0 for n in range(1, 6)})
    assert self_bleu(["alpha beta", "gamma delta"]) == {n: 0.0 for n in range(1, 6)}


def test_self_bleu_clips_to_the_max_count_of_the_other_texts_and_uses_brevity_penalty():
    # hyp "x x x y" (4 tokens); the other texts hold x at most twice ("x x") and y once -> p1 = (2 + 1) / 4
    # closest other length to 4 is 3 ("x x y" beats 2 by distance... here lengths 2 and 3: 3 is closer) -> BP = 1 as 4 > 3
    rows = self_bleu_per_text(["x x x y", "x x", "z y w"], max_n=1)
    assert rows[0][0] == pytest.approx(3 / 4)
    # "x x" (2 tokens): clipped x = 2 (max x in "x x x y" is 3), p1 = 1; closest length is 3 -> BP = exp(1 - 3/2)
    assert rows[1][0] == pytest.approx(math.exp(1 - 3 / 2))


def test_self_bleu_equals_nltk_on_real_text_and_edge_cases():
    texts = reuters_titles(60) + ["", "Oil", "oil oil oil oil", reuters_titles(1)[0], "the the the the the the"]
    fast, reference = self_bleu(texts), self_bleu_reference(texts)
    assert max(abs(fast[n] - reference[n]) for n in fast) < 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_self_bleu_equals_nltk_on_random_small_vocabularies(seed):
    # few words and short texts: many shared n-grams, ties in counts and lengths (the hard cases for top-two)
    rng = random.Random(seed)
    texts = [" ".join(rng.choice("abcd") for _ in range(rng.randint(0, 9))) for _ in range(25)]
    fast, reference = self_bleu(texts), self_bleu_reference(texts)
    assert max(abs(fast[n] - reference[n]) for n in fast) < 1e-12


def test_self_bleu_needs_two_texts():
    with pytest.raises(MetricUnavailable, match="at least 2"):
        self_bleu(["only one"])


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Oil, OPEC's output.") == ["oil", ",", "opec", "'", "s", "output", "."]


def test_distinct_n_known_values():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b", "c d"], 2) == 1.0
    with pytest.raises(MetricUnavailable):
        distinct_n(["a"], 2)


def test_compression_ratio_is_higher_for_repetitive_text():
    repetitive = ["the same sentence again"] * 50
    diverse = reuters_titles(50)
    assert compression_ratio(repetitive) > 10 > compression_ratio(diverse) > 1
    with pytest.raises(MetricUnavailable):
        compression_ratio([])


def test_vocabulary_and_length_known_values():
    assert vocabulary_size(["A a b", "B c."]) == 4
    stats = length_stats(["a b", "a b c d"])
    assert stats["mean"] == 3 and stats["std"] == 1 and stats["median"] == 3


def test_lexical_metrics_report_unavailable_instead_of_raising():
    out = lexical_metrics(["one"])
    assert out["self_bleu_1"] == {"unavailable": "Self-BLEU needs at least 2 texts, got 1"}
    assert "unavailable" in out["distinct_2"] and out["vocabulary_size"] == 1
