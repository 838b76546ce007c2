"""Synthesis jobs for the HTTP API: queued, run one at a time, persisted, resumed after a restart.

Each job is a folder `JOBS/<id>/` holding `job.json` (state, request, progress) and `out/` (the
run's output folder). A job runs `pipeline.synthesize` into `out/`, so its journal makes a resume
after a server restart free: unfinished jobs are queued again when the manager starts, and every
answer already paid for is reused.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from engine.config import parse_task
from engine.errors import ConfigError, SeedbedError
from engine.pipeline import SynthOptions, prepare, synthesize

__all__ = ["JobManager", "JobNotFound", "JOB_STATES"]

log = logging.getLogger(__name__)
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
_ID = re.compile(r"^[0-9a-f]{12}$")


class JobNotFound(SeedbedError):
    """No job with that id (or the id is malformed)."""


class _Stop(Exception):
    """Raised from the progress hook to stop a running job (cancel or shutdown)."""


class JobManager:
    """Queue, run and persist synthesis jobs.

    Args:
        folder: where job folders live (created).
        llm: the chat LLM jobs use (not shared with request handlers' event loop).
        indexes: loaded indexes by name.
        cache: an optional shared `engine.cache.LLMCache` path folder (opened in the worker thread).
    """

    def __init__(self, folder: Path, llm, indexes: dict[str, Any], cache_dir: Path | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.llm, self.indexes, self.cache_dir = llm, indexes, cache_dir
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._cancel: set[str] = set()
        self._shutdown = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> list[str]:
        """Queue unfinished jobs again and start the worker. Returns the resumed job ids."""
        resumed = []
        for path in sorted(self.folder.glob("*/job.json"), key=lambda p: p.stat().st_mtime):
            job = _read(path)
            if job and job.get("state") in ("queued", "running"):
                self._update(job["id"], state="queued", resumed=job.get("resumed", 0) + 1)
                self._queue.put(job["id"])
                resumed.append(job["id"])
        self._thread = threading.Thread(target=self._work, name="seedbed-jobs", daemon=True)
        self._thread.start()
        return resumed

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker; a running job stays `running` on disk and resumes at the next start."""
        self._shutdown.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, task: dict[str, Any], index: str | None, max_calls: int | None = None) -> dict[str, Any]:
        """Validate a task spec against an index and queue it.

        Raises:
            ConfigError: the spec is invalid, names an unknown strategy option, or needs an index
                that is not loaded.
        """
        spec = parse_task(task, source="request body: task")
        name, idx = self._index(index, spec)
        prepare(spec, idx, SynthOptions(out=self.folder / "_check", max_calls=max_calls))
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        job = {"id": job_id, "state": "queued", "created": now, "updated": now, "task": task, "index": name,
               "max_calls": max_calls, "progress": {}, "result": None, "error": None, "resumed": 0}
        (self.folder / job_id).mkdir()
        _write(self._path(job_id), job)
        self._queue.put(job_id)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's record. Raises JobNotFound."""
        job = _read(self._path(job_id))
        if job is None:
            raise JobNotFound(f"no job {job_id!r}; list ids come from POST /v1/jobs")
        return job

    def list(self) -> list[dict[str, Any]]:
        """Every job's record, oldest first."""
        jobs = [_read(path) for path in self.folder.glob("*/job.json")]
        return sorted((job for job in jobs if job), key=lambda job: job.get("created", 0))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (what it paid for stays in its journal). Raises JobNotFound."""
        job = self.get(job_id)
        if job["state"] in ("queued", "running"):
            with self._lock:
                self._cancel.add(job_id)
            if job["state"] == "queued":
                job = self._update(job_id, state="cancelled")
        return job

    def dataset(self, job_id: str, fmt: str = "jsonl") -> Path:
        """The finished job's dataset file. Raises JobNotFound, or ConfigError while it is not done."""
        job = self.get(job_id)
        if job["state"] != "done":
            raise ConfigError(f"job {job_id} is {job['state']}; its dataset is ready when the state is done")
        return self.folder / job_id / "out" / f"dataset.{fmt}"

    def _index(self, name: str | None, spec) -> tuple[str | None, Any]:
        from engine.strategies.base import get_strategy

        needs = get_strategy(spec.strategy, **spec.strategy_options).uses_retrieval
        if not needs:
            return None, None
        if name is None and self.indexes:
            name = next(iter(self.indexes))
        if name not in self.indexes:
            raise ConfigError(f"index {name!r} is not loaded; loaded: {sorted(self.indexes)}; start "
                              "`seedbed serve --index NAME` with it")
        return name, self.indexes[name]

    def _path(self, job_id: str) -> Path:
        if not _ID.match(job_id or ""):
            raise JobNotFound(f"no job {job_id!r}: job ids are 12 hex characters")
        return self.folder / job_id / "job.json"

    def _update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            job = self.get(job_id)
            job.update(changes, updated=time.time())
            _write(self._path(job_id), job)
            return job

    def _work(self) -> None:
        while not self._shutdown.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            if self.get(job_id)["state"] == "cancelled":
                continue
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        job = self._update(job_id, state="running")
        spec = parse_task(job["task"], source=f"job {job_id}")
        index = self.indexes.get(job["index"]) if job["index"] else None
        last = [0.0]

        def on_progress(progress) -> None:
            if self._shutdown.is_set() or job_id in self._cancel:
                raise _Stop()
            if time.monotonic() - last[0] > 1.0 or progress.done == progress.sent:
                last[0] = time.monotonic()
                self._update(job_id, progress={"done": progress.done, "sent": progress.sent,
                                               "reused": progress.reused, "failed": progress.failed,
                                               "prompt_tokens": progress.prompt_tokens,
                                               "completion_tokens": progress.completion_tokens})

        cache = None
        try:
            if self.cache_dir is not None:
                from engine.cache import LLMCache

                cache = LLMCache(self.cache_dir)
            options = SynthOptions(out=self.folder / job_id / "out", max_calls=job["max_calls"], cache=cache)
            result = synthesize(spec, index, self.llm, options, on_progress=on_progress, endpoint="serve")
            counts = result.manifest["counts"]
            self._update(job_id, state="done", result={"kept": result.kept, "rejected": result.rejected,
                                                       "failed": result.failed, "llm_calls": counts["llm_calls"],
                                                       "reused": result.reused, "seconds": round(result.seconds, 2)})
        except _Stop:
            if job_id in self._cancel:
                self._update(job_id, state="cancelled")
            # on shutdown the job stays `running` on disk and is resumed at the next start
        except SeedbedError as exc:
            self._update(job_id, state="failed", error=str(exc))
        except Exception as exc:  # a bug must not kill the worker; the client sees the type only
            log.exception("job %s failed", job_id)
            self._update(job_id, state="failed", error=f"internal error ({type(exc).__name__}); see the server log")
        finally:
            if cache is not None:
                cache.close()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write(path: Path, job: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(job, indent=1), encoding="utf-8")
    os.replace(tmp, path)
