"""The FAISS dense index: exact inner product below a size threshold, HNSW graphs above it.

Vectors are unit-normalised, so inner product is cosine similarity. An HNSW index is a list of graphs
over consecutive rows, each of at most SHARD_ROWS passages (`Graphs`): a build makes, writes and drops
one graph before the next, so its memory is that of one graph whatever the corpus size, and a search
asks every graph for its top k and merges them by their exact scores.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["FLAT_MAX", "SHARD_ROWS", "Graphs", "graph_parameters", "new_index", "kind_for", "kind_of", "build",
           "save", "load", "search", "reconstruct", "set_ef_search"]

FLAT_MAX = 50_000  # below this, exact search is fast enough (0.5 ms/query batched at 100k)
# Passages per HNSW graph (at most; a build splits its rows evenly between the fewest graphs). One graph
# of 200,000 passages held ~170 MB while it was built, which made `seedbed index`'s peak memory grow
# with the corpus (+58.6 % from 20,000 to 200,000 passages); graphs of at most 32,768 (M 32) bring that
# to +11.8 % (M 64: +12.5 %; M 32 and 50,000: +16.4 %, as FAISS's arrays double past 32,768 rows;
# benchmarks/bench_index.py). Each graph is one more search per query, the graphs searched in parallel,
# one thread per core (benchmarks/bench_search.py, README "Search at 100,665 passages").
SHARD_ROWS = 32_768
# The HNSW graphs. One graph of 124k passages (M 64), AG News titles against a mostly-review corpus
# (queries far from every passage, where a sparse graph routes worst), reached recall@10 0.975 / 0.9905
# / 0.9965 against exact search at efSearch 256 / 512 / 1,024; M 32 / efConstruction 80 / efSearch 128
# gave 0.866 (README "Search at 124,054 passages"). Graphs of at most SHARD_ROWS need less: 100,665
# passages as 4 graphs of M 32 reach 0.993 / 0.996 / 0.997 / 0.9985 at efSearch 256 / 320 / 384 / 512
# (one M 64 graph of them all: 0.995 at 768; in the same run its top-100 took 4.25 ms against the 4's
# 4.65, the hybrid query end to end 19.4 ms against 21.4: the memory bound costs ~2 ms). A graph larger
# than SHARD_ROWS (built before graphs were split, until `seedbed rebuild-dense NAME` splits it) keeps
# 768. efSearch is set on load, so it applies to indexes built before; M and efConstruction only to
# graphs built since.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 300
HNSW_EF_SEARCH = 320
HNSW_EF_SEARCH_LARGE = 768


class Graphs:
    """An HNSW index as graphs over consecutive rows (at most SHARD_ROWS each); rows are global.

    It answers what the code asks of a FAISS index (`ntotal`, `d`, `add`, `search`, `reconstruct`);
    an index written before graphs were split loads as one graph of any size.
    """

    def __init__(self, dim: int, shards: Iterable = (), first: int = 0) -> None:
        self.d = dim
        self.shards = list(shards)
        self.first = first  # graphs before these, left on disk (`load(tail=True)`, for an --add): append only

    @property
    def ntotal(self) -> int:
        return sum(shard.ntotal for shard in self.shards)

    @property
    def hnsw(self):
        """The first graph's HNSW structure (every graph of an index is built with the same M and efConstruction)."""
        return self.shards[0].hnsw if self.shards else None

    def _offsets(self) -> list[int]:
        offsets = [0]
        for shard in self.shards:
            offsets.append(offsets[-1] + shard.ntotal)
        return offsets

    def add(self, vectors: np.ndarray) -> None:
        """Append rows: to the last graph while it has room, then to new ones."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        while len(vectors):
            if not self.shards or self.shards[-1].ntotal >= SHARD_ROWS:
                self.shards.append(_new_graph(self.d))
            room = SHARD_ROWS - self.shards[-1].ntotal
            self.shards[-1].add(vectors[:room])
            vectors = vectors[room:]

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query over every graph, merged by score; rows are -1 where fewer exist.
        The graphs are searched in parallel threads (FAISS releases the GIL), one per core."""
        if self.first:
            raise ValueError("an index loaded with tail=True holds only its last graph: load it whole to search it")
        offsets = self._offsets()
        graphs = [(offset, shard) for offset, shard in zip(offsets, self.shards) if shard.ntotal]
        found = _pool().map(lambda graph: graph[1].search(vectors, min(k, graph[1].ntotal)), graphs) \
            if len(graphs) > 1 else [graph.search(vectors, min(k, graph.ntotal)) for _, graph in graphs]
        parts_scores, parts_rows = [], []
        for (offset, _), (scores, rows) in zip(graphs, found):
            parts_scores.append(scores)
            parts_rows.append(np.where(rows >= 0, rows + offset, -1))
        scores = np.concatenate(parts_scores, axis=1)
        rows = np.concatenate(parts_rows, axis=1)
        scores = np.where(rows >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def reconstruct(self, row: int) -> np.ndarray:
        offsets = self._offsets()
        if not 0 <= row < offsets[-1]:
            raise IndexError(f"row {row} is outside the index's {offsets[-1]} rows")
        shard = bisect.bisect_right(offsets, row) - 1
        return self.shards[shard].reconstruct(row - offsets[shard])


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="seedbed-graphs")
    return _POOL


def kind_for(count: int) -> str:
    """'flat' for small indexes (exact), 'hnsw' for large ones (approximate: see HNSW_M above)."""
    return "flat" if count < FLAT_MAX else "hnsw"


def kind_of(index) -> str:
    return "hnsw" if isinstance(index, Graphs) else "flat"


def graph_parameters(index) -> dict[str, int]:
    """The HNSW M and efConstruction an index's graphs were built with, read from them (an `--add` keeps
    older graphs); for a flat index, today's, which a switch to HNSW would use."""
    if isinstance(index, Graphs) and index.shards:
        hnsw = index.shards[0].hnsw
        return {"hnsw_m": int(hnsw.nb_neighbors(1)), "hnsw_ef_construction": int(hnsw.efConstruction)}
    return {"hnsw_m": HNSW_M, "hnsw_ef_construction": HNSW_EF_CONSTRUCTION}


def _new_graph(dim: int):
    import faiss

    graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    graph.hnsw.efSearch = HNSW_EF_SEARCH
    return graph


def new_index(dim: int, kind: str):
    """An empty index of the given kind for `dim`-d unit vectors."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        return Graphs(dim)
    raise ValueError(f"unknown dense index kind {kind!r}")


def build(batches: Iterable[np.ndarray], dim: int, kind: str, path: Path, total: int | None = None) -> dict[str, int]:
    """Write an index of `kind` over the vectors of `batches` to `path` (the files `save` writes); an HNSW
    index's graphs are each built, written and dropped before the next starts, `total` rows (when known)
    split evenly between the fewest graphs of at most SHARD_ROWS. Returns its graph parameters
    (`graph_parameters`)."""
    if kind == "flat":
        index = new_index(dim, kind)
        for vectors in batches:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        save(index, path)
        return graph_parameters(index)
    per_graph = -(-total // -(-total // SHARD_ROWS)) if total else SHARD_ROWS
    graph, written = None, 0
    for vectors in batches:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        while len(vectors):
            graph = graph if graph is not None else _new_graph(dim)
            room = per_graph - graph.ntotal
            graph.add(vectors[:room])
            vectors = vectors[room:]
            if graph.ntotal == per_graph:
                _write_graph(graph, path, written)
                graph, written = None, written + 1
    if graph is not None or written == 0:
        _write_graph(graph if graph is not None else _new_graph(dim), path, written)
        written += 1
    _remove_stale(path, written)
    return graph_parameters(None)  # every graph was made by _new_graph: today's settings


def _shard_path(path: Path, number: int) -> Path:
    return path if number == 0 else path.with_name(f"{path.stem}-{number}{path.suffix}")


def _write_graph(graph, path: Path, number: int) -> None:
    import faiss

    faiss.write_index(graph, str(_shard_path(path, number)))


def _graph_files(path: Path) -> int:
    """How many graph files `save` left at `path`: `path` itself and the numbered ones after it."""
    count = 1
    while _shard_path(path, count).exists():
        count += 1
    return count


def _remove_stale(path: Path, count: int) -> None:
    """Graph files numbered `count` and up, left by an earlier index with more graphs (a rebuild's copy)."""
    for number in range(max(count, 1), _graph_files(path)):
        _shard_path(path, number).unlink()


def save(index, path: Path) -> None:
    """Write FAISS's own binary format (not pickle): `path`, and for graphs after the first
    `STEM-1.faiss`, `STEM-2.faiss`... beside it."""
    import faiss

    if isinstance(index, Graphs):
        for number, graph in enumerate(index.shards or [_new_graph(index.d)], start=index.first):
            faiss.write_index(graph, str(_shard_path(path, number)))
        _remove_stale(path, index.first + max(1, len(index.shards)))
        return
    faiss.write_index(index, str(path))
    _remove_stale(path, 1)


def load(path: Path, tail: bool = False):
    """The index `save` wrote at `path` (all of its graphs), efSearch set to today's. `tail`: of an HNSW
    index of several graphs only the last, to append to and `save` (an `--add` then holds one graph)."""
    import faiss

    count = _graph_files(path)
    if tail and count > 1:
        graph = faiss.read_index(str(_shard_path(path, count - 1)))
        return Graphs(graph.d, [graph], first=count - 1)
    first = faiss.read_index(str(path))
    if not hasattr(first, "hnsw"):
        return first
    index = Graphs(first.d, [first] + [faiss.read_index(str(_shard_path(path, n))) for n in range(1, count)])
    set_ef_search(index)
    return index


def set_ef_search(index, ef: int | None = None) -> None:
    """How far every graph of an HNSW index is searched: `ef`, or by default HNSW_EF_SEARCH (a graph
    larger than SHARD_ROWS: HNSW_EF_SEARCH_LARGE). No-op on a flat index."""
    for graph in getattr(index, "shards", ()):
        default = HNSW_EF_SEARCH if graph.ntotal <= SHARD_ROWS else HNSW_EF_SEARCH_LARGE
        graph.hnsw.efSearch = ef or default


def search(index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) per query vector; rows are -1 where fewer than k exist."""
    k = max(1, min(k, index.ntotal))
    scores, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    return scores, rows


def reconstruct(index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of the given rows."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    return np.vstack([index.reconstruct(int(r)) for r in rows]).astype(np.float32)
