"""Embeddings for the benchmark: each distinct text is embedded once per run, and, with an
EmbeddingCache, once per machine.

Embedding is most of a benchmark's time (2 cores: tens of texts per second), and the human splits
are the same in every benchmark of a task, so a second `seedbed bench` of another run against the
same reference embeds only the new set. The cache is one SQLite file of float32 vectors (raw
bytes, never pickles) keyed by sha256 of the embedder id, its dimension and the text; past
`max_bytes` the least recently used vectors are evicted down to 90 % of it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["EmbeddingCache", "Vectors", "default_embed_cache_dir", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 512 << 20  # about 330k MiniLM vectors
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL, used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used);
"""


def default_embed_cache_dir() -> Path:
    """`SEEDBED_EMBED_CACHE_DIR`, else `$XDG_CACHE_HOME/seedbed/embed-cache`, else `~/.cache/seedbed/embed-cache`."""
    if os.environ.get("SEEDBED_EMBED_CACHE_DIR"):
        return Path(os.environ["SEEDBED_EMBED_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seedbed" / "embed-cache"


class EmbeddingCache:
    """A bounded, persistent map (embedder id, dim, text) -> float32 vector."""

    def __init__(self, directory: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        folder = Path(directory) if directory else default_embed_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.max_bytes = folder / "vectors.sqlite", max_bytes
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def key(embedder_id: str, dim: int, text: str) -> str:
        return hashlib.sha256(f"{embedder_id}\0{dim}\0{text}".encode()).hexdigest()

    def get_many(self, embedder_id: str, dim: int, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """{text: vector} for the texts found; marks them as used now."""
        keys = {self.key(embedder_id, dim, t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        for start in range(0, len(items), 500):
            chunk = items[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape == (dim,):
                    found[keys[key]] = vector
        if found:
            now = time.time()
            with self._db:
                self._db.executemany("UPDATE vectors SET used = ? WHERE key = ?",
                                     [(now, self.key(embedder_id, dim, t)) for t in found])
        return found

    def put_many(self, embedder_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors (row i for text i), then evict if the cache is over its size."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now, dim = time.time(), vectors.shape[1]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, vector, used) VALUES (?, ?, ?)",
                                 [(self.key(embedder_id, dim, t), v.tobytes(), now) for t, v in zip(texts, vectors)])
        self._evict(dim)

    def _evict(self, dim: int) -> None:
        per_row = dim * 4 + 120  # vector bytes plus key and index overhead, roughly
        (rows,) = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()
        if rows * per_row <= self.max_bytes:
            return
        drop = rows - int(0.9 * self.max_bytes / per_row)
        with self._db:
            self._db.execute("DELETE FROM vectors WHERE key IN (SELECT key FROM vectors ORDER BY used LIMIT ?)", (drop,))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class Vectors:
    """Embeds each distinct text once (consulting the cache first) and times the embedding it does."""

    def __init__(self, embedder, cache: EmbeddingCache | None = None):
        self.embedder, self.cache = embedder, cache
        self.rows: dict[str, int] = {}
        self.seconds, self.encoded, self.cached = 0.0, 0, 0
        self.matrix = np.zeros((0, embedder.dim), dtype=np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of `texts`, row for row."""
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if new:
            found = self.cache.get_many(self.embedder.id, self.embedder.dim, new) if self.cache is not None else {}
            missing = [t for t in new if t not in found]
            fresh = np.zeros((0, self.embedder.dim), dtype=np.float32)
            if missing:
                start = time.perf_counter()
                fresh = np.asarray(self.embedder.encode(missing), dtype=np.float32)
                self.seconds += time.perf_counter() - start
                if self.cache is not None:
                    self.cache.put_many(self.embedder.id, missing, fresh)
            self.encoded, self.cached = self.encoded + len(missing), self.cached + len(found)
            fresh_rows = dict(zip(missing, fresh))
            block = np.stack([found[t] if t in found else fresh_rows[t] for t in new])
            base = len(self.rows)
            self.rows.update((t, base + i) for i, t in enumerate(new))
            self.matrix = np.vstack([self.matrix, block])
        return self.matrix[[self.rows[t] for t in texts]]
