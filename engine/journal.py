"""Crash-safe run journal: every LLM answer is appended (and fsync'd) as it arrives.

One JSON object per line. A re-run into the same folder reads the journal and reuses every
completed request instead of paying for it again; failed requests are retried. A torn last line
(a crash mid-write) is ignored, so any prefix of a journal loads.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.types import Completion

__all__ = ["Journal", "JOURNAL_NAME"]

JOURNAL_NAME = "journal.jsonl"
_FIELDS = set(Completion.__dataclass_fields__)


class Journal:
    """Append-only record of answers, keyed by (request id, model).

    Args:
        path: the journal file (created if missing).
        fsync_every: fsync after this many appended lines (1 = every line); `close()` always syncs.
    """

    def __init__(self, path: Path, fsync_every: int = 1):
        self.path = Path(path)
        self.fsync_every = max(1, fsync_every)
        self._done: dict[tuple[str, str], Completion] = {}
        self._failed: dict[tuple[str, str], str] = {}
        self._load()
        torn = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")
        if torn:  # a crash mid-line: start a fresh line so the next entry is not glued to it
            self._handle.write("\n")
        self._pending = 0

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                entry = _parse_line(line)
                if entry is None:
                    continue
                key = (entry["request_id"], entry["model"])
                if entry["status"] == "ok":
                    self._done[key] = Completion(**{k: v for k, v in entry["completion"].items() if k in _FIELDS})
                    self._failed.pop(key, None)
                elif key not in self._done:
                    self._failed[key] = entry.get("error", "")

    def completed(self, request_id: str, model: str) -> Completion | None:
        """The recorded answer for a request, if it completed before."""
        return self._done.get((request_id, model))

    @property
    def completed_count(self) -> int:
        return len(self._done)

    def record_ok(self, request_id: str, model: str, completion: Completion) -> None:
        """Append a completed request."""
        self._done[(request_id, model)] = completion
        self._append({"request_id": request_id, "model": model, "status": "ok", "completion": asdict(completion)})

    def record_failed(self, request_id: str, model: str, error: str) -> None:
        """Append a request that failed after retries (it is retried on resume)."""
        self._failed[(request_id, model)] = error
        self._append({"request_id": request_id, "model": model, "status": "failed", "error": error})

    def _append(self, entry: dict[str, Any]) -> None:
        entry["at"] = round(time.time(), 3)
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        self._pending += 1
        if self._pending >= self.fsync_every:
            os.fsync(self._handle.fileno())
            self._pending = 0

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _parse_line(line: str) -> dict[str, Any] | None:
    """A journal entry, or None for a torn or foreign line."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or entry.get("status") not in {"ok", "failed"}:
        return None
    if not isinstance(entry.get("request_id"), str) or not isinstance(entry.get("model"), str):
        return None
    if entry["status"] == "ok" and not isinstance(entry.get("completion"), dict):
        return None
    return entry
