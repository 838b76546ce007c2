"""A run's folder: its lock, its identity (`run.json`), and what a finished run writes there.

`pipeline.synthesize` holds the lock for the whole run, checks the identity before the first call
and ends with `finish`: the dataset files, the manifest (counts, tokens, cost, retrieval, coverage,
routes, stages, options) and the dataset card.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from engine import __version__
from engine.card import write_card
from engine.config import task_to_dict
from engine.dataset import example_row, rejection_row, write_dataset
from engine.errors import ConfigError
from engine.calls import Progress
from engine.filters import copy_rate
from engine.index.reader import Index
from engine.plan import SynthOptions, SynthPlan
from engine.rounds import Outcomes
from engine.types import TaskSpec

if TYPE_CHECKING:
    from engine.llm.runner import ChatLLM

__all__ = ["RUN_FILE", "SynthResult", "task_fingerprint", "locked", "check_run_identity", "finish"]

RUN_FILE = "run.json"


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


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold `out/.lock` for the run (created with `out`), so two runs never write one folder.

    Raises:
        ConfigError: another run holds the lock.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another seedbed run is writing to {out}; wait for it or choose another --out") from None
        yield


def check_run_identity(out: Path, task: TaskSpec, model: str, fresh: bool) -> None:
    """Record the task and model in `out/run.json`; a folder holding another task's or model's run is refused.

    Raises:
        ConfigError: `out` holds a run of another task spec or model (without `fresh`), or its run.json is damaged.
    """
    path = out / RUN_FILE
    identity = {"task": task.name, "task_fingerprint": task_fingerprint(task), "model": model}
    if path.exists() and not fresh:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{path} is damaged; pass --fresh to start the run record anew (the journal is kept)") from None
        if previous.get("task_fingerprint") != identity["task_fingerprint"] or previous.get("model") != model:
            raise ConfigError(
                f"{out} holds a run of another task spec or model (task {previous.get('task')!r}, model "
                f"{previous.get('model')!r}); pass --fresh to run the new spec there (answers that still match "
                "are reused), or choose another --out"
            )
    from engine.files import write_json_atomic

    write_json_atomic(path, identity)



def finish(task: TaskSpec, index: Index | None, llm: ChatLLM, options: SynthOptions, outcomes: Outcomes,
           synth_plan: SynthPlan, progress: Progress, started: float, endpoint: str) -> SynthResult:
    """Write the dataset, its manifest and its card into `options.out`, and say what the run produced."""
    rows = [
        example_row(example, request.hit.passage.text if request.hit else None,
                    copy_rate(example.text, request.hit.passage.text) if request.hit else None,
                    outcomes.verdicts.get((example.provenance.request_id, example.text)),
                    made_by=_made_by(request.label, synth_plan))
        for example, request in outcomes.examples
    ]
    kept = Counter(example.label for example, _ in outcomes.examples)
    rejected = Counter(rejection.reason for rejection in outcomes.rejections)
    tokens = Counter()
    for example, _ in outcomes.examples:
        tokens["prompt"] += example.provenance.prompt_tokens
        tokens["completion"] += example.provenance.completion_tokens
        tokens["cached"] += example.provenance.cached_tokens or 0
    seconds = time.monotonic() - started
    manifest = {
        "seedbed_version": __version__,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task_to_dict(task),
        "task_fingerprint": task_fingerprint(task),
        "strategy": task.strategy,
        "index": _index_facts(index),
        "model": llm.model,
        "endpoint": endpoint,
        "counts": {
            "kept": sum(kept.values()), "kept_per_label": {spec.name: kept.get(spec.name, 0) for spec in task.labels},
            "rejected": sum(rejected.values()), "rejected_by_reason": dict(rejected.most_common()),
            "failed": len(outcomes.failed), "unsent_over_budget": len(outcomes.unsent), "requests": progress.planned, "llm_calls": progress.sent,
            "judge_calls": progress.unbudgeted,
            "reused_from_journal": progress.reused - progress.cache_hits, "reused_from_cache": progress.cache_hits,
            "unsent_over_token_or_cost_cap": progress.capped, "rounds": outcomes.rounds,
        },
        "estimate": progress.estimate,
        "cost_this_run": progress.cost(),
        "tokens": {"prompt_this_run": progress.prompt_tokens, "completion_this_run": progress.completion_tokens,
                   "prompt_kept_examples": tokens["prompt"], "completion_kept_examples": tokens["completion"],
                   **_prefix_cache(progress, tokens["cached"]),
                   # every answer the run used, this run's and those reused from its journal or the shared cache:
                   # what the dataset cost, which a re-run over a finished run (no new call) still reports
                   "prompt_all_answers": progress.prompt_tokens + progress.reused_tokens[0],
                   "completion_all_answers": progress.completion_tokens + progress.reused_tokens[1],
                   "prompt_cached_all_answers": progress.cached_tokens + progress.reused_tokens[2]},
        "wall_seconds": round(seconds, 2),
        "retrieval": synth_plan.retrieval,
        "coverage": {name: c.as_dict() for name, c in synth_plan.coverage.items()} if synth_plan.coverage else None,
        "routes": {name: _made_by(name, synth_plan) for name in synth_plan.routes},
        "verification": outcomes.verification,
        "stages": outcomes.stages,
        "options": {"concurrency": options.concurrency if isinstance(options.concurrency, int) else options.concurrency.describe(), "structured_output": options.structured_output,
                    "overgenerate": options.overgenerate, "max_rounds": options.max_rounds,
                    "max_calls": options.max_calls, "max_tokens_total": options.max_tokens_total,
                    "max_cost": options.max_cost, "prices_per_million": options.prices,
                    "cache": str(options.cache.path) if options.cache else None},
    }
    files = write_dataset(options.out, rows, [rejection_row(r) for r in outcomes.rejections], manifest)
    files["card"] = write_card(options.out, manifest)
    return SynthResult(
        out=options.out, files=files, kept={spec.name: kept.get(spec.name, 0) for spec in task.labels},
        rejected=dict(rejected), failed=len(outcomes.failed), calls=progress.sent, reused=progress.reused,
        prompt_tokens=progress.prompt_tokens, completion_tokens=progress.completion_tokens, seconds=seconds,
        manifest=manifest,
    )


def _prefix_cache(progress: Progress, cached_kept: int) -> dict[str, int | float | None]:
    """What the server took from its prefix cache this run, and so what it evaluated (None: not reported).

    `prompt_evaluated_share` is evaluated / sent prompt tokens over the answers whose endpoint reported
    its cache (llama-server and OpenAI do; the share is what issue 14's target of <= 0.6 is about).
    """
    if not progress.cache_reported:
        return {"prompt_cached_this_run": None, "prompt_evaluated_this_run": None, "prompt_evaluated_share": None,
                "answers_reporting_cache": 0}
    evaluated = progress.prompt_tokens - progress.cached_tokens
    return {"prompt_cached_this_run": progress.cached_tokens, "prompt_evaluated_this_run": evaluated,
            "prompt_evaluated_share": round(evaluated / progress.prompt_tokens, 4) if progress.prompt_tokens else None,
            "answers_reporting_cache": progress.cache_reported, "prompt_cached_kept_examples": cached_kept}


def _made_by(label: str, synth_plan: SynthPlan) -> dict[str, str]:
    """Which strategy made a label's examples, and why (empty for the task's own strategy)."""
    part = synth_plan.part_for(label)
    reason = part.why
    if reason and synth_plan.coverage:
        reason = f"{reason} ({synth_plan.coverage[label].reason})"
    return {"strategy": part.strategy.name, "strategy_reason": reason}


def _index_facts(index: Index | None) -> dict[str, Any] | None:
    if index is None:
        return None
    m = index.manifest
    return {"name": m.name, "passages": m.passages, "corpus_fingerprint": m.corpus_fingerprint,
            "updated_at": m.updated_at, "embedder": m.embedder, "engine_version": m.engine_version,
            "format_version": m.format_version, "dense_kind": m.dense_kind,
            # retrieval's passages depend on the graph and on how far it is searched (dense.HNSW_EF_SEARCH)
            "dense_search": {**{k: m.parameters.get(k) for k in ("hnsw_m", "hnsw_ef_construction")},
                             "hnsw_ef_search": getattr(getattr(index.dense_index, "hnsw", None), "efSearch", None)},
            "sources": [{"path": s.get("path"), "documents": s.get("documents")} for s in m.sources]}
