"""The dense index: FAISS exact inner product below a size threshold, an IVF on disk above it.

Vectors are unit-normalised, so inner product is cosine similarity. The IVF (`IVF`, `build_ivf`) is
FAISS's IVF-Flat laid out as plain .npy files: spherical k-means centroids (trained by FAISS on a sample),
then every vector grouped by its nearest centroid, written a range of lists at a time through an on-disk
sort (engine/index/spill.py), so building it holds a sample and a chunk, not every vector or a graph
(HNSW's was about 170 MB at 200,000 passages); searching reads the probed lists from a memory map.
Indexes built with an HNSW graph by earlier versions still open and search as they did.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.index.spill import NpyWriter, SortedRuns

__all__ = ["FLAT_MAX", "IVF", "build_ivf", "graph_parameters", "new_index", "kind_for", "save", "load", "open_dense",
           "search", "reconstruct"]

FLAT_MAX = 50_000  # below this, exact search is fast enough (0.5 ms/query batched at 100k)
# The IVF: LISTS_PER_SQRT x sqrt(passages) lists, k-means trained on TRAIN_PER_LIST vectors per list (a
# strided sample), IVF_PROBE lists searched per query; chosen by benchmarks/bench_search.py at 100k passages.
LISTS_PER_SQRT = 2
TRAIN_PER_LIST = 40
IVF_PROBE = 48
IVF_FILES = ("centroids.npy", "offsets.npy", "rows.npy", "positions.npy", "vectors.npy")
# The HNSW graph: at 124k passages, AG News titles against a mostly-review corpus (queries far from
# every passage, where a sparse graph routes worst) reach recall@10 0.975 / 0.9905 / 0.9965 against
# exact search at efSearch 256 / 512 / 1,024 on this graph; M 32 / efConstruction 80 / efSearch 128
# gave 0.866 (README "Search at 124,054 passages"). 768 keeps a margin over the 0.99 target at a few
# ms per query. efSearch is set on load, so it applies to indexes built before; M and efConstruction
# only to graphs built since (`seedbed rebuild-dense NAME` redoes one from the stored vectors).
HNSW_M = 64
HNSW_EF_CONSTRUCTION = 300
HNSW_EF_SEARCH = 768


def kind_for(count: int) -> str:
    """'flat' for small indexes (exact), 'ivf' for large ones (approximate: see IVF_PROBE above)."""
    return "flat" if count < FLAT_MAX else "ivf"


def kind_of(index) -> str:
    return "ivf" if isinstance(index, IVF) else "hnsw" if hasattr(index, "hnsw") else "flat"


def graph_parameters(index) -> dict[str, int]:
    """How a large index searches: an IVF's lists and probes; an HNSW graph's M and efConstruction (indexes of
    earlier versions), read from the graph; for a flat index, today's IVF settings, which a switch would use."""
    if isinstance(index, IVF):
        return {"ivf_lists": index.lists, "ivf_probe": IVF_PROBE}
    if hasattr(index, "hnsw"):
        return {"hnsw_m": int(index.hnsw.nb_neighbors(1)), "hnsw_ef_construction": int(index.hnsw.efConstruction)}
    return {"ivf_probe": IVF_PROBE}


def new_index(dim: int, kind: str = "flat"):
    """An empty FAISS index for `dim`-d unit vectors: exact ('flat'), or an HNSW graph ('hnsw', which
    only `rebuild_dense` tests still ask for; builds above FLAT_MAX make an IVF with `build_ivf`)."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    raise ValueError(f"unknown dense index kind {kind!r}")


def save(index, path: Path) -> None:
    """Write FAISS's own binary format (not pickle)."""
    import faiss

    faiss.write_index(index, str(path))


def open_dense(folder: Path):
    """The dense index of index folder `folder`: its IVF (`dense.ivf/`) or its FAISS file (`dense.faiss`)."""
    return IVF(folder / "dense.ivf") if (folder / "dense.ivf").is_dir() else load(folder / "dense.faiss")


def load(path: Path):
    import faiss

    index = faiss.read_index(str(path))
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def search(index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) per query vector; rows are -1 where fewer than k exist."""
    k = max(1, min(k, index.ntotal))
    if isinstance(index, IVF):
        return index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    scores, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    return scores, rows


def reconstruct(index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of the given rows."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    if isinstance(index, IVF):
        return index.reconstruct(rows)
    return np.vstack([index.reconstruct(int(r)) for r in rows]).astype(np.float32)


class IVF:
    """An IVF-Flat index on disk (see the module's docstring), opened read-only from its folder.

    Files: centroids.npy (lists x d), offsets.npy (lists + 1: where each list starts in vectors.npy),
    vectors.npy (passages x d, grouped by list), rows.npy (each stored vector's row), positions.npy (each
    row's place in vectors.npy). Vectors and rows are memory-mapped: a query reads only its probed lists.
    """

    def __init__(self, folder: Path):
        import faiss

        missing = [name for name in IVF_FILES if not (folder / name).is_file()]
        if missing:
            raise ValueError(f"{folder} lacks {', '.join(missing)}")
        self.centroids = np.load(folder / "centroids.npy")
        self.offsets = np.load(folder / "offsets.npy")
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        self.rows = np.load(folder / "rows.npy", mmap_mode="r")
        self.positions = np.load(folder / "positions.npy", mmap_mode="r")
        self.lists, self.d = self.centroids.shape
        self.ntotal = len(self.rows)
        if not (len(self.offsets) == self.lists + 1 and self.offsets[-1] == self.ntotal == len(self.vectors)
                == len(self.positions) and self.vectors.shape[1] == self.d):
            raise ValueError(f"{folder}: its files disagree on the number of lists or vectors")
        self.quantizer = faiss.IndexFlatIP(self.d)
        self.quantizer.add(self.centroids)
        self.probe = IVF_PROBE

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query over the vectors of its `probe` nearest lists (-1 rows pad)."""
        _, probed = self.quantizer.search(queries, min(self.probe, self.lists))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (query, lists) in enumerate(zip(queries, probed)):
            lists = np.sort(lists[lists >= 0])  # in file order: the reads go forwards
            spans = [np.arange(self.offsets[lst], self.offsets[lst + 1]) for lst in lists]
            places = np.concatenate(spans) if spans else np.zeros(0, np.int64)
            found = self.vectors[places] @ query
            top = np.argsort(-found, kind="stable")[:k] if len(found) <= 4 * k else _top(found, k)
            scores[i, :len(top)], rows[i, :len(top)] = found[top], self.rows[places[top]]
        return scores, rows

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[self.positions[rows]], dtype=np.float32)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-values, k - 1)[:k]
    return part[np.argsort(-values[part], kind="stable")]


def ivf_lists(count: int) -> int:
    return max(1, min(count, int(round(LISTS_PER_SQRT * np.sqrt(count)))))


def build_ivf(read: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], folder: Path, dim: int, total: int) -> IVF:
    """Write an IVF of the `total` vectors that `read()` yields as (rows, vectors) batches in row order
    (it is called twice: a strided training sample, then every vector) to `folder`, and open it."""
    import faiss

    lists = ivf_lists(total)
    sample = _sample(read(), total, min(total, TRAIN_PER_LIST * lists))
    kmeans = faiss.Kmeans(dim, lists, niter=20, seed=1234, spherical=True, min_points_per_centroid=1,
                          max_points_per_centroid=TRAIN_PER_LIST)
    kmeans.train(sample)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    del sample, kmeans
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="seedbed-ivf-", dir=folder) as spill:
        runs = SortedRuns(Path(spill), {"row": ("int64", ()), "vector": ("float32", (dim,))})
        sizes = np.zeros(lists, np.int64)
        for rows, vectors in read():
            _, nearest = quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
            sizes += np.bincount(nearest[:, 0], minlength=lists)
            runs.add(nearest[:, 0], row=rows, vector=vectors)
        if sizes.sum() != total:
            raise ValueError(f"the IVF read {sizes.sum()} vectors, expected {total}")
        positions = np.empty(total, np.int64)
        done = 0
        with NpyWriter(folder / "vectors.npy", np.float32, (total, dim)) as out_vectors, \
                NpyWriter(folder / "rows.npy", np.int64, (total,)) as out_rows:
            for _, _, chunk in runs.merged(sizes, chunk_rows=max(1, (4 << 20) // (4 * dim))):
                out_vectors.write(chunk["vector"])
                out_rows.write(chunk["row"])
                positions[chunk["row"]] = np.arange(done, done + len(chunk["row"]))
                done += len(chunk["row"])
    np.save(folder / "positions.npy", positions)
    np.save(folder / "centroids.npy", centroids)
    np.save(folder / "offsets.npy", np.concatenate([[0], np.cumsum(sizes)]))
    return IVF(folder)


def _sample(batches: Iterator[tuple[np.ndarray, np.ndarray]], total: int, size: int) -> np.ndarray:
    """About `size` vectors spread evenly over the rows (every total // size-th), for k-means."""
    stride = max(1, total // max(1, size))
    sample, filled = None, 0
    for rows, vectors in batches:
        picked = vectors[rows % stride == 0][:size - filled]
        if sample is None:
            sample = np.empty((size, vectors.shape[1]), np.float32)
        sample[filled:filled + len(picked)] = picked
        filled += len(picked)
    return sample[:filled]
