"""The use cases, each short: index(), search(), synthesize().

cli.py and server.py are thin adapters over these functions; nothing here prints.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from engine import __version__
from engine.config import task_to_dict
from engine.dataset import example_row, rejection_row, write_dataset
from engine.errors import ConfigError, LLMFatalError
from engine.filters import Deduper, copy_rate
from engine.index.builder import BuildResult, build_index
from engine.index.reader import Index
from engine.journal import JOURNAL_NAME, Journal
from engine.llm.runner import run_requests_sync
from engine.retrieve import retrieve_for_task
from engine.strategies.base import get_strategy
from engine.types import Completion, Example, Hit, Rejection, Request, TaskSpec

__all__ = ["index", "search", "SynthOptions", "SynthProgress", "SynthResult", "synthesize", "task_fingerprint"]

RUN_FILE = "run.json"
FAIL_FAST_AFTER = 8  # this many failures in a row with no success stops the run


def index(corpus, name, embedder, root=Path("indexes"), options=None, add=False, force=False, progress=None) -> BuildResult:
    """Build or extend an index (see engine.index.builder.build_index)."""
    from engine.corpus import CorpusOptions

    return build_index(corpus, name, embedder, root=root, options=options or CorpusOptions(), add=add, force=force, progress=progress)


def search(name: str, query: str, k: int = 10, mode: str = "hybrid", root: Path = Path("indexes"), embedder=None) -> list[Hit]:
    """Ranked passages of index `name` for `query`."""
    return Index.open(name, root, embedder=embedder).search(query, k=k, mode=mode)


@dataclass(frozen=True)
class SynthOptions:
    """How to run a synthesis (the task spec says what to make).

    Args:
        out: output folder (created; re-running into it resumes).
        concurrency: requests in flight (match the server's parallel slots).
        fresh: accept a changed task spec in an existing output folder.
        structured_output: ask the endpoint for JSON through a JSON schema.
        overgenerate: retrieve this many times the passages needed, to top up rejected examples.
        max_rounds: how many times labels short of examples are topped up.
        prompts_dir: an alternative prompts folder.
    """

    out: Path
    concurrency: int = 4
    fresh: bool = False
    structured_output: bool = False
    overgenerate: float = 2.0
    max_rounds: int = 5
    prompts_dir: Path | None = None


@dataclass
class SynthProgress:
    """Live counters (mutable on purpose) handed to a progress callback after every answer."""

    planned: int = 0
    sent: int = 0
    done: int = 0
    reused: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class SynthResult:
    """What a run produced and what it cost."""

    out: Path
    files: dict[str, Path]
    kept: dict[str, int]
    rejected: dict[str, int]
    failed: int
    calls: int
    reused: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    manifest: dict[str, Any] = field(repr=False)


def task_fingerprint(task: TaskSpec) -> str:
    """sha256 of the task spec's content (order of keys irrelevant)."""
    return hashlib.sha256(json.dumps(task_to_dict(task), sort_keys=True).encode()).hexdigest()


def synthesize(
    task: TaskSpec,
    index: Index,
    llm,
    options: SynthOptions,
    on_progress: Callable[[SynthProgress], None] | None = None,
    endpoint: str = "",
) -> SynthResult:
    """Retrieve passages per label, have the LLM refine each into an example, filter, write.

    Completed answers are journalled as they arrive; re-running into the same folder reuses
    them, so an interrupted run continues without paying twice.

    Raises:
        ConfigError: the folder holds a different task (without `fresh`) or is locked by another run.
        LLMFatalError: the endpoint failed for good (what finished is kept in the journal).
    """
    started = time.monotonic()
    with _locked(options.out):
        _check_run_identity(options.out, task, llm.model, options.fresh)
        strategy = get_strategy(task.strategy, structured_output=options.structured_output)
        templates = strategy.load_templates(task, options.prompts_dir)
        per_label = math.ceil(task.examples_per_label * max(1.0, options.overgenerate))
        picks, retrieval = retrieve_for_task(index, task, per_label)
        progress = SynthProgress()
        with Journal(options.out / JOURNAL_NAME) as journal:
            outcomes = _rounds(task, strategy, templates, picks, llm, journal, options, progress, on_progress)
        return _finish(task, index, llm, options, outcomes, retrieval, progress, started, endpoint)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another seedbed run is writing to {out}; wait for it or choose another --out") from None
        yield


def _check_run_identity(out: Path, task: TaskSpec, model: str, fresh: bool) -> None:
    path = out / RUN_FILE
    identity = {"task": task.name, "task_fingerprint": task_fingerprint(task), "model": model}
    if path.exists() and not fresh:
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("task_fingerprint") != identity["task_fingerprint"] or previous.get("model") != model:
            raise ConfigError(
                f"{out} holds a run of another task spec or model (task {previous.get('task')!r}, model "
                f"{previous.get('model')!r}); pass --fresh to run the new spec there (answers that still match "
                "are reused), or choose another --out"
            )
    from engine.index.manifest import write_json_atomic

    write_json_atomic(path, identity)


@dataclass
class _Outcomes:
    examples: list[tuple[Example, Request]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    failed: list[Request] = field(default_factory=list)
    rounds: int = 0


def _rounds(task, strategy, templates, picks, llm, journal, options, progress, on_progress) -> _Outcomes:
    """Plan, call and parse; top up labels that lost examples to rejections, up to max_rounds."""
    outcomes = _Outcomes()
    deduper = Deduper()
    cursor = dict.fromkeys(picks, 0)
    want = {name: task.examples_per_label for name in picks}
    for _ in range(options.max_rounds):
        batch = {name: picks[name][cursor[name]:cursor[name] + want[name]] for name in picks if want[name] > 0}
        batch = {name: hits for name, hits in batch.items() if hits}
        if not batch:
            break
        for name, hits in batch.items():
            cursor[name] += len(hits)
        outcomes.rounds += 1
        requests = strategy.plan(task, batch, templates)
        answers = _call_all(requests, llm, journal, options, progress, on_progress)
        for request in requests:
            result = _judge(strategy, task, request, answers.get(request.id), deduper)
            if isinstance(result, Example):
                outcomes.examples.append((result, request))
                want[request.label] -= 1
            elif isinstance(result, Rejection):
                outcomes.rejections.append(result)
            else:  # failed after retries: retried by the next run, so no top-up passage for it
                outcomes.failed.append(request)
                want[request.label] -= 1
    return outcomes


def _call_all(requests, llm, journal, options, progress, on_progress) -> dict[str, Completion]:
    answers: dict[str, Completion] = {}
    to_send: list[Request] = []
    for request in requests:
        cached = journal.completed(request.id, llm.model)
        if cached is not None:
            answers[request.id] = cached
            progress.reused += 1
        else:
            to_send.append(request)
    progress.planned += len(requests)
    progress.sent += len(to_send)

    def on_result(request: Request, result) -> None:
        if isinstance(result, Completion):
            journal.record_ok(request.id, llm.model, result)
            answers[request.id] = result
            progress.prompt_tokens += result.prompt_tokens
            progress.completion_tokens += result.completion_tokens
        else:
            journal.record_failed(request.id, llm.model, str(result))
            progress.failed += 1
            if progress.failed >= FAIL_FAST_AFTER and progress.failed == progress.done + 1:
                raise LLMFatalError(
                    f"the first {progress.failed} requests all failed after retries, so the endpoint looks broken; "
                    f"last error: {result}"
                )
        progress.done += 1
        if on_progress:
            on_progress(progress)

    if on_progress:
        on_progress(progress)
    if to_send:
        run_requests_sync(llm, to_send, concurrency=options.concurrency, on_result=on_result)
    return answers


def _judge(strategy, task, request, completion, deduper) -> Example | Rejection | None:
    if completion is None:
        return None
    result = strategy.parse(request, completion, task)
    if isinstance(result, Example):
        reason = deduper.check(result.text, result.label)
        if reason:
            return Rejection(result.label, reason, completion.text, "same text as an earlier example", result.provenance)
    return result


def _finish(task, index, llm, options, outcomes: _Outcomes, retrieval, progress, started, endpoint) -> SynthResult:
    rows = [
        example_row(example, request.hit.passage.text if request.hit else None,
                    copy_rate(example.text, request.hit.passage.text) if request.hit else None)
        for example, request in outcomes.examples
    ]
    kept = Counter(example.label for example, _ in outcomes.examples)
    rejected = Counter(rejection.reason for rejection in outcomes.rejections)
    tokens = Counter()
    for example, _ in outcomes.examples:
        tokens["prompt"] += example.provenance.prompt_tokens
        tokens["completion"] += example.provenance.completion_tokens
    seconds = time.monotonic() - started
    manifest = {
        "seedbed_version": __version__,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task_to_dict(task),
        "task_fingerprint": task_fingerprint(task),
        "strategy": task.strategy,
        "index": {"name": index.manifest.name, "passages": index.manifest.passages,
                  "corpus_fingerprint": index.manifest.corpus_fingerprint, "updated_at": index.manifest.updated_at,
                  "embedder": index.manifest.embedder},
        "model": llm.model,
        "endpoint": endpoint,
        "counts": {
            "kept": sum(kept.values()), "kept_per_label": {spec.name: kept.get(spec.name, 0) for spec in task.labels},
            "rejected": sum(rejected.values()), "rejected_by_reason": dict(rejected.most_common()),
            "failed": len(outcomes.failed), "requests": progress.planned, "llm_calls": progress.sent,
            "reused_from_journal": progress.reused, "rounds": outcomes.rounds,
        },
        "tokens": {"prompt_this_run": progress.prompt_tokens, "completion_this_run": progress.completion_tokens,
                   "prompt_kept_examples": tokens["prompt"], "completion_kept_examples": tokens["completion"]},
        "wall_seconds": round(seconds, 2),
        "retrieval": retrieval.per_label,
        "options": {"concurrency": options.concurrency, "structured_output": options.structured_output,
                    "overgenerate": options.overgenerate, "max_rounds": options.max_rounds},
    }
    files = write_dataset(options.out, rows, [rejection_row(r) for r in outcomes.rejections], manifest)
    return SynthResult(
        out=options.out, files=files, kept={spec.name: kept.get(spec.name, 0) for spec in task.labels},
        rejected=dict(rejected), failed=len(outcomes.failed), calls=progress.sent, reused=progress.reused,
        prompt_tokens=progress.prompt_tokens, completion_tokens=progress.completion_tokens, seconds=seconds,
        manifest=manifest,
    )
