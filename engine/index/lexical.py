"""BM25 over passages with bm25s, saved as plain .npy/.json files (never pickle)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["BM25_PARAMS", "tokenize", "build", "save", "load", "scores", "top_k"]

BM25_PARAMS = {"method": "lucene", "k1": 1.5, "b": 0.75}
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str, stopwords: frozenset[str] | None = None) -> list[str]:
    """Lowercased word tokens of 2+ characters, English stopwords removed."""
    stop = _stopwords() if stopwords is None else stopwords
    return [t for t in _TOKEN.findall(text.lower()) if t not in stop]


def build(texts: Iterable[str], method: str = "lucene", k1: float = 1.5, b: float = 0.75):
    """Index texts (in row order) with bm25s."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every build step at DEBUG
    stop = _stopwords()
    corpus = [tokenize(t, stop) or ["\u2205"] for t in texts]  # bm25s rejects empty docs
    model = bm25s.BM25(method=method, k1=k1, b=b)
    model.index(corpus, show_progress=False)
    return model


def save(model, folder: Path) -> None:
    model.save(str(folder), allow_pickle=False, show_progress=False)


def load(folder: Path):
    import bm25s

    return bm25s.BM25.load(str(folder), allow_pickle=False, mmap=False)


def scores(model, query: str) -> np.ndarray:
    """BM25 score of every passage (row order) for `query`; zeros when no query term is known."""
    tokens = [t for t in tokenize(query) if t in model.vocab_dict]
    if not tokens:
        return np.zeros(int(model.scores["num_docs"]), dtype=np.float32)
    return np.asarray(model.get_scores(tokens), dtype=np.float32)


def top_k(values: np.ndarray, k: int, exclude_zero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the k highest values, best first (ties broken by row for determinism)."""
    k = min(k, len(values))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    part = np.argpartition(-values, k - 1)[:k]
    order = np.lexsort((part, -values[part]))
    rows = part[order]
    if exclude_zero:
        rows = rows[values[rows] > 0]
    return rows.astype(np.int64), values[rows]


def tokenized(texts: Sequence[str]) -> list[list[str]]:
    """Token lists as BM25 sees them (used by the rank-bm25 oracle test)."""
    stop = _stopwords()
    return [tokenize(t, stop) for t in texts]
