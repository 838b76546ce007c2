"""BM25 over passages with bm25s, saved as plain .npy/.json files (never pickle)."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from engine.index.spill import NpyWriter, SortedRuns, release_memory

__all__ = ["BM25_PARAMS", "tokenize", "build", "build_batches", "write_batches", "save", "load", "scores", "top_k"]

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
    """Index texts (in row order) with bm25s's scoring; see `write_batches`."""
    return build_batches([list(texts)], method=method, k1=k1, b=b)


def build_batches(batches: Iterable[Sequence[str]], method: str = "lucene", k1: float = 1.5, b: float = 0.75):
    """The model `write_batches` writes, built in a temp folder and loaded into memory."""
    with tempfile.TemporaryDirectory(prefix="seedbed-bm25-") as folder:
        write_batches(batches, Path(folder) / "bm25", method=method, k1=k1, b=b)
        return load(Path(folder) / "bm25")


def write_batches(batches: Iterable[Sequence[str]], folder: Path, method: str = "lucene", k1: float = 1.5,
                  b: float = 0.75) -> None:
    """Index texts that arrive in batches (row order) and write the index to `folder` in bm25s's format,
    holding no text, no token list and no posting past its batch or chunk.

    The same index as bm25s's own (`lucene` or `robertson` scoring: each token's docs and scores are
    equal; token ids may be numbered differently). The first pass numbers the tokens and spills each
    batch's (token, document, term frequency) postings to disk sorted by token (engine/index/spill.py);
    the second reads them back a range of tokens at a time and appends their scores to the final
    column-major arrays on disk. What stays in memory is the vocabulary and a few numbers per document
    and per token, not the score matrix (65 MB at 200,000 passages) nor the token lists (about 1 GB).
    """
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs at DEBUG
    if method not in ("lucene", "robertson"):
        raise ValueError(f"streaming BM25 supports lucene and robertson scoring, not {method!r}")
    vocab: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="seedbed-bm25-") as spill:
        runs = SortedRuns(Path(spill), {"doc": "int32", "tf": "uint16"})
        doc_len, df = _count_batches(batches, vocab, runs)
        if not len(doc_len):
            raise ValueError("BM25 needs at least one passage")
        n_docs, n_vocab = len(doc_len), len(vocab)
        if method == "lucene":
            idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        else:  # robertson, negative idf clipped to 0 as bm25s does by default
            idf = np.maximum(np.log((n_docs - df + 0.5) / (df + 0.5)), 0)
        indptr = np.zeros(n_vocab + 1, np.int64)
        np.cumsum(df, out=indptr[1:])
        model = bm25s.BM25(method=method, k1=k1, b=b)  # writes the vocabulary and parameters; the arrays below
        model.scores = {"data": np.zeros(0, np.float32), "indices": np.zeros(0, np.int32), "indptr": indptr,
                        "num_docs": n_docs}
        vocab[""] = n_vocab  # bm25s's empty-query token, added after the matrix's columns
        model.vocab_dict, model.nonoccurrence_array = vocab, None  # lucene and robertson score absent tokens 0
        model.save(str(folder), allow_pickle=False, show_progress=False)
        del vocab, model
        release_memory()
        _write_scores(runs, df, idf.astype(np.float32), doc_len, k1, b, Path(folder))


def _count_batches(batches: Iterable[Sequence[str]], vocab: dict[str, int],
                   runs: SortedRuns) -> tuple[np.ndarray, np.ndarray]:
    """First pass: number the tokens into `vocab` and add each batch's (token, document, term frequency)
    postings to `runs`. Returns (every document's length in tokens, each token's document frequency)."""
    stop = _stopwords()
    lengths: list[np.ndarray] = []
    df = np.zeros(0, np.int64)
    first = 0
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
            tok = np.asarray(toks, np.int64)
            df = np.pad(df, (0, len(vocab) - len(df)))
            df += np.bincount(tok, minlength=len(vocab))
            docs = np.repeat(np.arange(first, first + len(lens), dtype=np.int32), distinct)
            runs.add(tok, doc=docs, tf=np.asarray(tfs, np.uint16))
            lengths.append(np.asarray(lens, np.int32))
            first += len(lens)
    return (np.concatenate(lengths) if lengths else np.zeros(0, np.int32)), df


def _write_scores(runs: SortedRuns, df: np.ndarray, idf: np.ndarray, doc_len: np.ndarray, k1: float, b: float,
                  folder: Path) -> None:
    """Second pass: the postings a range of tokens at a time, scored, appended to the column-major
    (data, indices) arrays on disk; within a token, documents ascend, as in bm25s's own matrix."""
    avg_len, nnz = doc_len.mean(), int(df.sum())
    with NpyWriter(folder / "data.csc.index.npy", np.float32, (nnz,)) as data, \
            NpyWriter(folder / "indices.csc.index.npy", np.int32, (nnz,)) as indices:
        for _, _, chunk in runs.merged(df):
            tok, docs, tf = chunk["key"], chunk["doc"], chunk["tf"].astype(np.float32)
            data.write(idf[tok] * (tf / (k1 * (1 - b + b * doc_len[docs] / avg_len) + tf)))
            indices.write(docs)


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
