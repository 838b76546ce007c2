"""A persistent, content-addressed cache of LLM answers, shared by every run on the machine.

The run journal makes one output folder resumable; this cache makes a *request* reusable across
folders: a re-run with `--fresh`, a new output folder, one changed label or a different number of
examples pays only for requests it has never seen. The key is a sha256 of the endpoint identity,
the model and the request id (itself a hash of the rendered messages, the model-free sampling
parameters and the sample index), so any change to what would be sent misses the cache and
nothing else does.

Storage is one SQLite file (WAL mode: several runs may share it; a killed writer loses at most
its open transaction). Values are JSON, never pickles. When the file grows past `max_bytes`, the
least recently used answers are evicted down to 90 % of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.types import Completion

__all__ = ["LLMCache", "default_cache_dir", "DEFAULT_MAX_BYTES", "cache_key", "parse_size"]

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of answers is millions of short examples
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    completion TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_used ON answers (used);
"""


def default_cache_dir() -> Path:
    """`SEEDBED_CACHE_DIR`, else `$XDG_CACHE_HOME/seedbed/llm-cache`, else `~/.cache/seedbed/llm-cache`."""
    if os.environ.get("SEEDBED_CACHE_DIR"):
        return Path(os.environ["SEEDBED_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "seedbed" / "llm-cache"


def cache_key(endpoint: str, model: str, request_id: str) -> str:
    """sha256 of what determines an answer: where it came from, which model, what was asked."""
    return hashlib.sha256(json.dumps([endpoint, model, request_id]).encode()).hexdigest()


def parse_size(text: str | int) -> int:
    """'500MB', '2GiB', '1e9' or an int -> bytes.

    Raises:
        ConfigError: not a size.
    """
    if isinstance(text, int):
        return text
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    raw = str(text).strip().lower().replace(" ", "")
    number = raw.rstrip("kmgib")
    try:
        value = float(number) * units[raw[len(number):]]
    except (ValueError, KeyError):
        raise ConfigError(f"cache size {text!r} is not a size; write e.g. 500MB or 2GiB") from None
    if value < 0:
        raise ConfigError(f"cache size {text!r} is negative; write e.g. 500MB or 2GiB")
    return int(value)


class LLMCache:
    """Answers by key, on disk, least-recently-used eviction.

    Args:
        directory: where `answers.sqlite` lives (created).
        max_bytes: evict the least recently used answers when their total size passes this.

    Raises:
        ConfigError: the directory cannot be created or the file is not a Seedbed cache.
    """

    FILE = "answers.sqlite"

    def __init__(self, directory: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self.hits = self.misses = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.directory / self.FILE, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the LLM cache at {self.directory / self.FILE}: {exc}; set SEEDBED_CACHE_DIR to a "
                "writable folder, or run with --no-cache"
            ) from None
        self._size = self._total()

    @property
    def path(self) -> Path:
        return self.directory / self.FILE

    def get(self, key: str) -> Completion | None:
        """The cached answer for `key` (and mark it recently used), or None."""
        row = self._db.execute("SELECT completion FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        try:
            data = json.loads(row[0])
            completion = Completion.from_dict(data)
        except (ValueError, TypeError):  # a damaged row: treat as a miss and let the new answer replace it
            self.misses += 1
            return None
        self._db.execute("UPDATE answers SET used = ? WHERE key = ?", (time.time(), key))
        self.hits += 1
        return completion

    def put(self, key: str, completion: Completion) -> None:
        """Store an answer (replacing any under the same key), then evict if over the limit."""
        blob = json.dumps(asdict(completion), ensure_ascii=False)
        now = time.time()
        old = self._db.execute("SELECT size FROM answers WHERE key = ?", (key,)).fetchone()
        self._db.execute(
            "INSERT OR REPLACE INTO answers (key, completion, size, created, used) VALUES (?, ?, ?, ?, ?)",
            (key, blob, len(blob), now, now),
        )
        self._size += len(blob) - (old[0] if old else 0)
        if self._size > self.max_bytes:
            self.evict()

    def evict(self, target: int | None = None) -> int:
        """Drop least recently used answers until the total is at most `target` (90 % of the limit).

        Returns:
            How many answers were dropped.
        """
        target = int(self.max_bytes * 0.9) if target is None else target
        self._size = self._total()
        dropped = 0
        while self._size > target:
            rows = self._db.execute("SELECT key, size FROM answers ORDER BY used LIMIT 256").fetchall()
            if not rows:
                break
            cut = []
            for key, size in rows:
                if self._size <= target:
                    break
                cut.append((key,))
                self._size -= size
            self._db.executemany("DELETE FROM answers WHERE key = ?", cut)
            dropped += len(cut)
        return dropped

    def info(self) -> dict[str, Any]:
        """Entries, bytes of answers, file size on disk, limit, oldest and newest use."""
        count, total, oldest, newest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(used), MAX(used) FROM answers").fetchone()
        on_disk = sum(p.stat().st_size for p in self.directory.glob(self.FILE + "*") if p.is_file())
        return {"path": str(self.path), "entries": count, "answer_bytes": total, "file_bytes": on_disk,
                "max_bytes": self.max_bytes, "oldest_use": oldest, "newest_use": newest}

    def clear(self) -> int:
        """Delete every answer and shrink the file. Returns how many were deleted."""
        count = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        self._db.execute("DELETE FROM answers")
        self._db.execute("VACUUM")
        self._size = 0
        return count

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LLMCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _total(self) -> int:
        return self._db.execute("SELECT COALESCE(SUM(size), 0) FROM answers").fetchone()[0]


class CachedJournal:
    """A run journal backed by the shared cache: answers come from the journal, else the cache.

    A cache hit is copied into the journal, so the output folder stays resumable on its own;
    every new answer goes to both. Same interface as `engine.journal.Journal` for the request loop.

    Args:
        journal: the run's journal.
        cache: the shared cache.
        endpoint: the endpoint's identity (e.g. its base URL, or `local:llama-server/MODEL`).
    """

    def __init__(self, journal, cache: LLMCache, endpoint: str):
        self.journal, self.cache, self.endpoint = journal, cache, endpoint
        self.cache_hits = 0

    @property
    def shards(self):
        """Where the run journal's worker shards go (engine/journal.py)."""
        return self.journal.shards

    def completed(self, request_id: str, model: str) -> Completion | None:
        found = self.journal.completed(request_id, model)
        if found is not None:
            return found
        found = self.cache.get(cache_key(self.endpoint, model, request_id))
        if found is not None:
            self.cache_hits += 1
            self.journal.record_ok(request_id, model, found)
        return found

    def record_ok(self, request_id: str, model: str, completion: Completion) -> None:
        self.journal.record_ok(request_id, model, completion)  # the journal first: it is the run's record
        self.cache.put(cache_key(self.endpoint, model, request_id), completion)

    def record_failed(self, request_id: str, model: str, error: str) -> None:
        self.journal.record_failed(request_id, model, error)
