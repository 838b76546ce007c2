"""Lexical diversity of a set of texts. Every count uses `selfbleu.tokenize` (lowercased words and
punctuation marks), so the numbers of two sets are comparable when the sets have the same size
(most of these grow or shrink with size: compare a synthetic set with a size-matched human sample).

- distinct-n (Li et al., 2016): unique n-grams / all n-grams over the whole set; 1 = no n-gram repeats.
- compression ratio (Shaib et al., 2024): bytes of the texts joined by newlines / bytes after gzip
  (level 9); higher = more redundant (less diverse).
- vocabulary size: the number of distinct tokens.
- length: tokens per text: mean, standard deviation (population), median, 5th and 95th percentile.
- Self-BLEU-n, n = 1..5: see engine.metrics.selfbleu.
"""

from __future__ import annotations

import gzip
from typing import Sequence

import numpy as np

from engine.errors import MetricUnavailable
from engine.metrics.selfbleu import self_bleu, tokenize

__all__ = ["distinct_n", "compression_ratio", "vocabulary_size", "length_stats", "lexical_metrics"]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over all texts.

    Raises:
        MetricUnavailable: the texts have no n-gram of that order.
    """
    seen, total = set(), 0
    for text in texts:
        tokens = tokenize(text)
        grams = list(zip(*(tokens[k:] for k in range(n))))
        total += len(grams)
        seen.update(grams)
    if total == 0:
        raise MetricUnavailable(f"distinct-{n}: no text has {n} tokens")
    return len(seen) / total


def compression_ratio(texts: Sequence[str]) -> float:
    """Raw bytes / gzip bytes of the texts joined by newlines (gzip level 9, mtime 0 for determinism)."""
    raw = "\n".join(texts).encode("utf-8")
    if not raw:
        raise MetricUnavailable("compression ratio: the texts are empty")
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


def vocabulary_size(texts: Sequence[str]) -> int:
    """Number of distinct tokens over all texts."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(tokenize(text))
    return len(vocab)


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Tokens per text: mean, std (population), median, p5, p95."""
    if not texts:
        raise MetricUnavailable("length: no texts")
    lengths = np.array([len(tokenize(t)) for t in texts], dtype=float)
    p5, median, p95 = np.percentile(lengths, [5, 50, 95])
    return {"mean": float(lengths.mean()), "std": float(lengths.std()), "median": float(median),
            "p5": float(p5), "p95": float(p95)}


def lexical_metrics(texts: Sequence[str], max_n: int = 5) -> dict[str, object]:
    """All lexical metrics of one set: {name: value, or {'unavailable': reason}}."""
    out: dict[str, object] = {}
    try:
        for n, value in self_bleu(texts, max_n).items():
            out[f"self_bleu_{n}"] = value
    except MetricUnavailable as exc:
        for n in range(1, max_n + 1):
            out[f"self_bleu_{n}"] = {"unavailable": str(exc)}
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = _guard(distinct_n, texts, n)
    out["compression_ratio"] = _guard(compression_ratio, texts)
    out["vocabulary_size"] = vocabulary_size(texts)
    out["length"] = _guard(length_stats, texts)
    return out


def _guard(func, *args):
    try:
        return func(*args)
    except MetricUnavailable as exc:
        return {"unavailable": str(exc)}
