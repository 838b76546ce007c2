"""Self-BLEU, exact and fast.

Definition (Zhu et al., 2018, Texygen): Self-BLEU-n of a set of texts is the mean, over every text,
of its sentence BLEU-n against all the *other* texts as references. BLEU-n here is nltk's
`sentence_bleu(others, text, weights=(1/n,)*n, smoothing_function=SmoothingFunction().method1)`:

    BLEU-n = BP * exp(sum_k (1/n) * log p_k),  k = 1..n
    p_k    = sum_g min(c_hyp(g), max_ref c_ref(g)) / max(1, number of k-grams in the hypothesis)
             (a p_k of 0 becomes 0.1 / denominator: method-1 smoothing; if p_1 is 0, BLEU is 0)
    BP     = 1 if h > r, 0 if h == 0, else exp(1 - r / h), with h the hypothesis length and r the
             reference length closest to h (ties go to the shorter reference)

Higher Self-BLEU means the texts repeat each other's n-grams: less diverse.

nltk rebuilds every reference's n-gram counts for every hypothesis (O(N^2) Counters). Here each
text's counts are built once; per n-gram we keep the largest count over all texts, how many texts
hold it, and the second-largest count. The "max over the other texts" of an n-gram is then the
largest count unless this text is its only holder, in which case it is the second-largest. Closest
reference lengths come from the sorted length list the same way. That is the same arithmetic as
nltk, so the results agree to float rounding (tests/test_metrics_lexical.py checks 1e-9 on real text;
benchmarks/bench_selfbleu.py checks 1e-6 and the speed-up on 2,000 AG News texts).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from typing import Sequence

from engine.errors import MetricUnavailable

__all__ = ["tokenize", "self_bleu", "self_bleu_per_text", "self_bleu_reference", "self_bleu_reference_per_text", "EPSILON"]

EPSILON = 0.1  # nltk SmoothingFunction().method1's default
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercased words and single punctuation marks (offline: nltk.word_tokenize needs downloaded data)."""
    return _TOKEN.findall(text.lower())


def self_bleu(texts: Sequence[str], max_n: int = 5) -> dict[int, float]:
    """Self-BLEU-n for n = 1..max_n of a set of texts (see the module docstring).

    Args:
        texts: at least two texts.
        max_n: the largest n-gram order.

    Returns:
        {n: Self-BLEU-n}.

    Raises:
        MetricUnavailable: fewer than two texts.
    """
    per_text = self_bleu_per_text(texts, max_n)
    return {n: math.fsum(row[n - 1] for row in per_text) / len(per_text) for n in range(1, max_n + 1)}


def self_bleu_per_text(texts: Sequence[str], max_n: int = 5) -> list[list[float]]:
    """For each text, [BLEU-1, ..., BLEU-max_n] against all the other texts."""
    if len(texts) < 2:
        raise MetricUnavailable(f"Self-BLEU needs at least 2 texts, got {len(texts)}")
    tokens = [tokenize(t) for t in texts]
    lengths = [len(t) for t in tokens]
    closest = _closest_other_lengths(lengths)
    numerators = [[0] * max_n for _ in tokens]
    for n in range(1, max_n + 1):
        counts = [Counter(zip(*(t[k:] for k in range(n)))) if len(t) >= n else Counter() for t in tokens]
        top = _top_two(counts)
        for i, own in enumerate(counts):
            numerators[i][n - 1] = _clipped(own, top)
    return [_bleu_row(numerators[i], lengths[i], closest[i], max_n) for i in range(len(tokens))]


def _top_two(counts: list[Counter]) -> dict[tuple, list[int]]:
    """Per n-gram: [largest count, texts holding it, largest count below it (0 if none)]."""
    top: dict[tuple, list[int]] = {}
    for own in counts:
        for gram, c in own.items():
            entry = top.get(gram)
            if entry is None:
                top[gram] = [c, 1, 0]
            elif c > entry[0]:
                entry[2], entry[0], entry[1] = entry[0], c, 1
            elif c == entry[0]:
                entry[1] += 1
            elif c > entry[2]:
                entry[2] = c
    return top


def _clipped(own: Counter, top: dict[tuple, list[int]]) -> int:
    total = 0
    for gram, c in own.items():
        best, holders, second = top[gram]
        other = second if (c == best and holders == 1) else best
        total += c if c < other else other
    return total


def _closest_other_lengths(lengths: list[int]) -> list[int]:
    """For each text, the closest length among the other texts (ties: the shorter), as nltk's closest_ref_length."""
    ordered = sorted(lengths)
    out = []
    for h in lengths:
        lo, hi = bisect.bisect_left(ordered, h), bisect.bisect_right(ordered, h)
        if hi - lo >= 2:
            out.append(h)
            continue
        below = ordered[lo - 1] if lo > 0 else None
        above = ordered[hi] if hi < len(ordered) else None
        candidates = [x for x in (below, above) if x is not None]
        out.append(min(candidates, key=lambda r: (abs(r - h), r)))
    return out


def _bleu_row(numerators: list[int], hyp_len: int, ref_len: int, max_n: int) -> list[float]:
    if numerators[0] == 0:
        return [0.0] * max_n
    logs = []
    for n in range(1, max_n + 1):
        denominator = max(1, hyp_len - n + 1)
        num = numerators[n - 1]
        logs.append(math.log(num / denominator if num else EPSILON / denominator))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return [bp * math.exp(math.fsum((1 / n) * logs[k] for k in range(n))) for n in range(1, max_n + 1)]


def self_bleu_reference(texts: Sequence[str], max_n: int = 5) -> dict[int, float]:
    """Self-BLEU with nltk's sentence_bleu, one call per text: the slow O(N^2) reference definition."""
    rows = self_bleu_reference_per_text(texts, max_n)
    return {n: math.fsum(row[n - 1] for row in rows) / len(rows) for n in range(1, max_n + 1)}


def self_bleu_reference_per_text(texts: Sequence[str], max_n: int = 5, rows: Sequence[int] | None = None) -> list[list[float]]:
    """nltk's BLEU-1..max_n of each text in `rows` (default: all) against all the other texts."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokens = [tokenize(t) for t in texts]
    weights = [tuple([1.0 / n] * n) for n in range(1, max_n + 1)]
    smooth = SmoothingFunction().method1
    out = []
    for i in range(len(tokens)) if rows is None else rows:
        scores = sentence_bleu(tokens[:i] + tokens[i + 1:], tokens[i], weights, smoothing_function=smooth)
        out.append([float(s) for s in scores])
    return out
