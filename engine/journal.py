"""Crash-safe run journal: every LLM answer is appended as it arrives, in fsync'd batches.

One JSON object per line. A re-run into the same folder reads the journal and reuses every
completed request instead of paying for it again; failed requests are retried. A torn last line
(a crash mid-write) is ignored, so any prefix of a journal loads.

What survives what:
- A process crash (kill -9, OOM kill, a segfault, Ctrl-C): every answer whose `record_*` call has
  returned. Each line is handed to the operating system (`write` + `flush`) before the call
  returns, and the OS keeps a dead process's writes. Only the requests still in flight are lost.
- An OS crash or power loss: every answer up to the last fsync. Lines are fsync'd in batches (a
  per-line fsync costs milliseconds on the event loop that delivers answers), when `fsync_every`
  lines are waiting or when a line is appended `fsync_interval` seconds or more after the oldest
  waiting one, and always on `sync()` and `close()`. So at most `fsync_every - 1` answers are
  exposed, and only until the next append or close. `fsync_every=1` restores a sync per line.

Workers of a distributed run (`engine.llm.distributed`) each append to a shard of their own in the
journal's shard folder (`journal.d/` beside `journal.jsonl`), so an answer is durable as soon as a
worker has it, even if the driver dies before it hears of it; a journal reads its shards with itself.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.files import ends_with_newline
from engine.types import Completion

__all__ = ["Journal", "JOURNAL_NAME", "read_answers", "shard_dir"]

JOURNAL_NAME = "journal.jsonl"


def shard_dir(path: Path) -> Path:
    """The folder of a journal's worker shards: `journal.d/` beside `journal.jsonl`."""
    return path.with_name(path.stem + ".d")


class Journal:
    """Append-only record of answers, keyed by (request id, model).

    Args:
        path: the journal file (created if missing).
        fsync_every: fsync once this many appended lines wait (1 = every line).
        fsync_interval: also fsync on the first append this many seconds or more after the
            oldest waiting line (0 = every line). See the module docstring for what each
            kind of crash can lose.
        shards: an s3:// URI for the workers' shards instead of the local `journal.d/`.
    """

    def __init__(self, path: Path, fsync_every: int = 16, fsync_interval: float = 0.2, shards: str | None = None):
        self.path = Path(path)
        self._shards = shards
        self.fsync_every = max(1, fsync_every)
        self.fsync_interval = max(0.0, fsync_interval)
        self._done, self._failed = read_answers(self.path)
        torn = self.path.exists() and self.path.stat().st_size > 0 and not ends_with_newline(self.path)
        self._handle = open(self.path, "ab")
        self._unsynced = 0
        self._oldest_unsynced = 0.0
        if torn:  # a crash mid-line: start a fresh line so the next entry is not glued to it
            self._handle.write(b"\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    @property
    def shards(self) -> Path | str:
        """Where a distributed run's workers put their shards: `journal.d/` beside the journal, or the
        s3:// URI given as `shards` (a run folder on S3: engine/remote_run.py)."""
        return self._shards or shard_dir(self.path)

    def completed(self, request_id: str, model: str) -> Completion | None:
        """The recorded answer for a request, if it completed before."""
        return self._done.get((request_id, model))

    @property
    def completed_count(self) -> int:
        return len(self._done)

    @property
    def unsynced(self) -> int:
        """Lines written to the OS but not yet fsync'd (what a power loss could take)."""
        return self._unsynced

    def record_ok(self, request_id: str, model: str, completion: Completion) -> None:
        """Append a completed request; on return it survives a crash of this process."""
        self._append({"request_id": request_id, "model": model, "status": "ok", "completion": asdict(completion)})
        self._done[(request_id, model)] = completion

    def record_failed(self, request_id: str, model: str, error: str) -> None:
        """Append a request that failed after retries (it is retried on resume)."""
        self._append({"request_id": request_id, "model": model, "status": "failed", "error": error})
        self._failed[(request_id, model)] = error

    def _append(self, entry: dict[str, Any]) -> None:
        entry["at"] = round(time.time(), 3)
        self._handle.write(_encode(entry))
        self._handle.flush()  # in the OS now: a kill -9 of this process cannot lose it
        now = time.monotonic()
        if not self._unsynced:
            self._oldest_unsynced = now
        self._unsynced += 1
        if self._unsynced >= self.fsync_every or now - self._oldest_unsynced >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """fsync every line appended so far (they then survive a power loss too)."""
        if self._unsynced and not self._handle.closed:
            os.fsync(self._handle.fileno())
        self._unsynced = 0

    def close(self) -> None:
        """Sync what is still unsynced and close the file."""
        if not self._handle.closed:
            self.sync()
            self._handle.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_answers(path: Path) -> tuple[dict[tuple[str, str], Completion], dict[tuple[str, str], str]]:
    """(answers, failures) recorded in a journal and its worker shards, keyed by (request id, model);
    read only (a worker of a distributed run reads the others' shards this way). An answer anywhere wins
    over a failure anywhere."""
    done: dict[tuple[str, str], Completion] = {}
    failed: dict[tuple[str, str], str] = {}
    shards = shard_dir(path)
    for part in [path, *(sorted(shards.glob("*.jsonl")) if shards.is_dir() else [])]:
        if not part.exists():
            continue
        with open(part, encoding="utf-8", errors="replace", newline="\n") as handle:
            for line in handle:
                entry = _parse_line(line)
                if entry is None:
                    continue
                key = (entry["request_id"], entry["model"])
                if entry["status"] == "ok":
                    done[key] = entry["completion"]
                    failed.pop(key, None)
                elif key not in done:
                    failed[key] = entry.get("error", "")
    return done, failed


def _encode(entry: dict[str, Any]) -> bytes:
    """One journal line. Text is kept readable (UTF-8); an answer holding a lone surrogate (a
    model cut off mid-emoji) cannot be UTF-8, so that line is written with \\u escapes instead,
    which load back to the same string."""
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(entry) + "\n").encode("ascii")


def _parse_line(line: str) -> dict[str, Any] | None:
    """A journal entry (an ok entry's completion as a Completion), or None for a torn or foreign line."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or entry.get("status") not in {"ok", "failed"}:
        return None
    if not isinstance(entry.get("request_id"), str) or not isinstance(entry.get("model"), str):
        return None
    if entry["status"] == "ok":
        fields = entry.get("completion")
        if not isinstance(fields, dict) or not isinstance(fields.get("text"), str) or not isinstance(fields.get("model"), str):
            return None
        entry["completion"] = Completion.from_dict(fields)
    return entry
