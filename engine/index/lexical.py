"""BM25 over passages with bm25s, saved as plain .npy/.json files (never pickle)."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["BM25_PARAMS", "tokenize", "build", "build_batches", "save", "load", "scores", "top_k"]

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
    """Index texts (in row order) with bm25s's scoring; see `build_batches`."""
    return build_batches([list(texts)], method=method, k1=k1, b=b)


def build_batches(batches: Iterable[Sequence[str]], method: str = "lucene", k1: float = 1.5, b: float = 0.75):
    """Index texts that arrive in batches (row order), holding no text and no token list past its batch.

    The same index as bm25s's own (`lucene` or `robertson` scoring: each token's docs and scores are
    equal; token ids may be numbered differently). The first pass writes, per batch, each document's
    distinct token ids and term frequencies (6 bytes each) to a temporary folder; the second reads
    them back a batch at a time, computes their scores and places them straight into the final
    column-major arrays (8 bytes each), so the peak is those arrays and the vocabulary, not every token
    list as Python strings (about 1 GB at 200,000 passages).
    """
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs at DEBUG
    if method not in ("lucene", "robertson"):
        raise ValueError(f"streaming BM25 supports lucene and robertson scoring, not {method!r}")
    vocab: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="seedbed-bm25-") as spill:
        parts, doc_len, df = _count_batches(batches, vocab, Path(spill))
        if not parts:
            raise ValueError("BM25 needs at least one passage")
        n_docs, n_vocab = len(doc_len), len(vocab)
        if method == "lucene":
            idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        else:  # robertson, negative idf clipped to 0 as bm25s does by default
            idf = np.maximum(np.log((n_docs - df + 0.5) / (df + 0.5)), 0)
        indptr = np.zeros(n_vocab + 1, np.int64)
        np.cumsum(df, out=indptr[1:])
        data, indices = _place_scores(parts, indptr, idf.astype(np.float32), doc_len, k1, b)
    model = bm25s.BM25(method=method, k1=k1, b=b)
    model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}
    vocab[""] = n_vocab  # bm25s's empty-query token, added after the matrix's columns
    model.vocab_dict = vocab
    model.unique_token_ids_set = set(vocab.values())
    model.nonoccurrence_array = None  # lucene and robertson score absent tokens 0
    return model


def _count_batches(batches: Iterable[Sequence[str]], vocab: dict[str, int],
                   spill: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """First pass: number the tokens into `vocab` and write, per batch, each document's distinct token ids,
    term frequencies and distinct-token count to `spill`. Returns (the batch files, every document's
    length in tokens, each token's document frequency)."""
    stop = _stopwords()
    parts: list[Path] = []
    lengths: list[np.ndarray] = []
    df = np.zeros(0, np.int64)
    for texts in batches:
        toks: list[int] = []
        tfs: list[int] = []
        distinct: list[int] = []
        lens: list[int] = []
        for text in texts:
            counts: dict[int, int] = {}
            tokens = tokenize(text, stop) or ["\u2205"]  # an empty passage gets one placeholder token, as before
            for token in tokens:
                tid = vocab.setdefault(token, len(vocab))
                counts[tid] = counts.get(tid, 0) + 1
            toks.extend(counts)
            tfs.extend(min(n, 65535) for n in counts.values())
            distinct.append(len(counts))
            lens.append(len(tokens))
        if lens:
            tok = np.asarray(toks, np.int32)
            df = np.pad(df, (0, len(vocab) - len(df)))
            df += np.bincount(tok, minlength=len(vocab))
            parts.append(spill / f"{len(parts)}.npz")
            np.savez(parts[-1], tok=tok, tf=np.asarray(tfs, np.uint16), distinct=np.asarray(distinct, np.int32))
            lengths.append(np.asarray(lens, np.int32))
    return parts, (np.concatenate(lengths) if lengths else np.zeros(0, np.int32)), df


def _place_scores(parts: list[Path], indptr: np.ndarray, idf: np.ndarray, doc_len: np.ndarray, k1: float,
                  b: float) -> tuple[np.ndarray, np.ndarray]:
    """Second pass: each batch's scores placed straight into the column-major (data, indices) arrays."""
    avg_len = doc_len.mean()
    data, indices = np.empty(indptr[-1], np.float32), np.empty(indptr[-1], np.int32)
    fill, first = indptr[:-1].copy(), 0  # next free slot of each token's column; the batch's first doc
    for part in parts:
        with np.load(part) as arrays:  # never pickles (allow_pickle stays False)
            tok, tf, distinct = arrays["tok"], arrays["tf"].astype(np.float32), arrays["distinct"]
        docs = np.repeat(np.arange(first, first + len(distinct), dtype=np.int32), distinct)
        score = (idf[tok] * (tf / (k1 * (1 - b + b * doc_len[docs] / avg_len) + tf))).astype(np.float32)
        order = np.argsort(tok, kind="stable")  # by token, docs ascending within: this batch's column slices
        by_token = tok[order]
        starts = np.flatnonzero(np.r_[True, by_token[1:] != by_token[:-1]])
        sizes = np.diff(np.r_[starts, len(by_token)])  # docs of this batch per token
        slots = fill[by_token] + np.arange(len(by_token)) - np.repeat(starts, sizes)
        data[slots], indices[slots] = score[order], docs[order]
        fill[by_token[starts]] += sizes
        first += len(distinct)
    return data, indices


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
