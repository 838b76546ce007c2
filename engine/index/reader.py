"""An opened index: passages, FAISS, BM25 and the embedder it was built with; search in three modes."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.files import validate_name
from engine.errors import ConfigError, IndexNotFound, IndexStoreError
from engine.index import dense, lexical, store
from engine.index.manifest import Manifest, read_manifest
from engine.remote import is_remote
from engine.types import Hit, Passage

__all__ = ["Index", "MODES", "check_query", "RRF_K", "index_path", "list_indexes", "missing_index", "recover"]

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al. (2009)


def index_path(name: str, root: Path) -> Path:
    """Folder of index `name` under `root` (the name is validated: no path tricks)."""
    return Path(root) / validate_name(name)


def list_indexes(root: Path | str) -> list[Manifest]:
    """Manifests of every complete index under `root` (a folder, or an s3:// URI)."""
    if is_remote(root):
        from engine.index.remote import list_remote

        return list_remote(str(root))
    root = Path(root)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and (folder / "manifest.json").is_file():
            found.append(read_manifest(folder))
    return found


def check_query(query: str) -> None:
    """Raise ConfigError for an empty or whitespace-only search query (it would match arbitrary passages)."""
    if not str(query).strip():
        raise ConfigError(f"search query is empty (got {query!r}); pass the words to search for")


@dataclass
class Index:
    """A loaded index. Build with `Index.open`; the embedder is injected or built from the manifest."""

    folder: Path
    manifest: Manifest
    passages: pl.DataFrame
    dense_index: object
    bm25: object
    embedder: object

    @classmethod
    def open(cls, name: str, root: Path | str = Path("indexes"), embedder=None) -> "Index":
        """Open index `name` under `root`: a folder, or an s3:// URI whose index is copied to a local cache
        first (engine/index/remote.py), so searching it stays local.

        Raises:
            IndexNotFound: no such index (the message lists the ones that exist).
            IndexMismatch: `embedder` differs from the one the index was built with.
            ConfigError: for an s3:// root, a missing bucket, denied access or an unreachable endpoint.
        """
        if is_remote(root):
            from engine.index.remote import fetch

            folder = fetch(name, str(root))
        else:
            folder = _local_folder(name, Path(root))
        manifest = read_manifest(folder)
        if embedder is None:
            from engine.embed import get_embedder

            embedder = get_embedder(manifest.embedder)
        manifest.check_embedder(embedder.id, embedder.dim)
        try:
            passages = store.load_passages(store.open_table(folder))
            dense_index = dense.load(folder / "dense.faiss")
            bm25 = lexical.load(folder / "bm25")
        except (OSError, RuntimeError, ValueError) as exc:
            raise IndexStoreError(f"index {name!r} at {folder} is damaged ({exc}); rebuild it with --force") from None
        if not len(passages) == dense_index.ntotal == int(bm25.scores["num_docs"]):
            raise IndexStoreError(
                f"index {name!r} at {folder} is inconsistent: {len(passages)} passages, {dense_index.ntotal} vectors, "
                f"{int(bm25.scores['num_docs'])} BM25 docs; rebuild it with --force"
            )
        return cls(folder, manifest, passages, dense_index, bm25, embedder)

    def __len__(self) -> int:
        return len(self.passages)

    def row_of(self, passage_id: str) -> int:
        """Row of a passage id (built once on first use)."""
        if not hasattr(self, "_rows"):
            self._rows = {pid: i for i, pid in enumerate(self.passages["id"].to_list())}
        return self._rows[passage_id]

    def passage(self, row: int) -> Passage:
        return store.row_to_passage(self.passages.row(int(row), named=True))

    def vectors(self, rows) -> np.ndarray:
        """Stored unit vectors of the given rows."""
        return dense.reconstruct(self.dense_index, np.asarray(rows))

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return self.embedder.encode(queries)

    def search(self, query: str, k: int = 10, mode: str = "hybrid", query_vector: np.ndarray | None = None) -> list[Hit]:
        """Ranked passages for `query`.

        Args:
            query: free text.
            k: how many hits (at most the index size).
            mode: 'dense' (cosine), 'bm25', or 'hybrid' (reciprocal-rank fusion of both).
            query_vector: a precomputed embedding of `query`, to skip encoding.

        Returns:
            Hits best first; each carries its dense cosine to the query.

        Raises:
            ConfigError: an empty or whitespace-only query, unknown mode or k < 1.
        """
        check_query(query)
        if mode not in MODES:
            raise ConfigError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        qvec = self.embed_queries([query])[0] if query_vector is None else query_vector
        if mode == "dense":
            rows, scores = self._dense(qvec, k)
        elif mode == "bm25":
            rows, scores = lexical.top_k(lexical.scores(self.bm25, query), k)
        else:
            rows, scores = self._hybrid(query, qvec, k)
        cosines = self.vectors(rows) @ qvec if len(rows) else np.zeros(0)
        return [
            Hit(passage=self.passage(r), score=float(s), rank=i + 1, query=query, cosine=float(c))
            for i, (r, s, c) in enumerate(zip(rows, scores, cosines))
        ]

    def _dense(self, qvec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = dense.search(self.dense_index, qvec[None, :], k)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    def _hybrid(self, query: str, qvec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = max(k * 2, 100)
        dense_rows, _ = self._dense(qvec, depth)
        bm25_rows, _ = lexical.top_k(lexical.scores(self.bm25, query), depth)
        fused: dict[int, float] = {}
        for ranking in (dense_rows, bm25_rows):
            for rank, row in enumerate(ranking, start=1):
                fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (RRF_K + rank)
        ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        return np.array([r for r, _ in ordered], dtype=np.int64), np.array([s for _, s in ordered])


def _local_folder(name: str, root: Path) -> Path:
    """The folder of index `name` under `root`, after crash recovery.

    Raises:
        IndexNotFound: no such index (the message lists the ones that exist).
    """
    folder = index_path(name, root)
    recover(folder)
    if not (folder / "manifest.json").is_file():
        raise missing_index(name, root)
    return folder


def missing_index(name: str, root: Path | str) -> IndexNotFound:
    """The error for index `name` missing under `root` (a folder or an s3:// URI): the ones there, and how to build it."""
    names = [m.name for m in list_indexes(root)]
    return IndexNotFound(f"no index named {name!r} under {root}; existing: {', '.join(names) or '(none)'}. "
                         f"Build it with `seedbed index CORPUS --name {name} --root {root}`")


def recover(target: Path) -> None:
    """Put back an index left aside by a crash mid-swap, and remove dead builds' temp folders."""
    parent = target.parent
    if not parent.is_dir():
        return
    for leftover in parent.glob(f".{target.name}.old-*"):
        owner = leftover.name.rsplit("-", 1)[-1]
        if owner.isdigit() and _alive(int(owner)):
            continue  # a build is between its two renames right now
        if not target.exists():
            os.rename(leftover, target)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    for temp in parent.glob(f".{target.name}.tmp-*"):
        pid = int(temp.name.split("-")[-2]) if temp.name.split("-")[-2].isdigit() else -1
        if not _alive(pid):
            shutil.rmtree(temp, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
