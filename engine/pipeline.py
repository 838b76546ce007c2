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
from engine.card import write_card
from engine.dataset import example_row, rejection_row, write_dataset
from engine.errors import ConfigError
from engine.filters import copy_rate
from engine.index.builder import BuildResult, build_index
from engine.index.reader import Index
from engine.cache import CachedJournal
from engine.journal import JOURNAL_NAME, Journal
from engine.retrieval.coverage import LabelCoverage, assess, routing
from engine.quality import QualityChecks, ReferenceGuard
from engine.calls import Progress, make_ask, request_tokens
from engine.refine import Outcomes, Part, first_round, run_rounds
from engine.strategies.base import get_strategy
from engine.types import Hit, Request, TaskSpec

__all__ = ["index", "search", "bench", "prepare", "plan", "SynthPlan", "SynthOptions", "SynthProgress", "SynthResult", "synthesize", "task_fingerprint"]

RUN_FILE = "run.json"


def index(corpus, name, embedder, root=Path("indexes"), options=None, add=False, force=False, progress=None) -> BuildResult:
    """Build or extend an index (see engine.index.builder.build_index)."""
    from engine.corpus import CorpusOptions

    return build_index(corpus, name, embedder, root=root, options=options or CorpusOptions(), add=add, force=force, progress=progress)


def search(name: str, query: str, k: int = 10, mode: str = "hybrid", root: Path = Path("indexes"), embedder=None) -> list[Hit]:
    """Ranked passages of index `name` for `query`."""
    return Index.open(name, root, embedder=embedder).search(query, k=k, mode=mode)


def bench(datasets, reference, train, embedder, config=None, **kwargs):
    """Measure synthetic datasets against human splits (see engine.metrics.bench.run_bench)."""
    from engine.metrics.bench import BenchConfig, run_bench

    return run_bench(datasets, reference, train, embedder, config or BenchConfig(), **kwargs)


@dataclass(frozen=True)
class SynthOptions:
    """How to run a synthesis (the task spec says what to make).

    Args:
        out: output folder (created; re-running into it resumes).
        concurrency: requests in flight (match the server's parallel slots), or an
            `engine.llm.adaptive.AdaptiveLimit` that adapts it (kept across rounds and stages).
        fresh: accept a changed task spec in an existing output folder.
        structured_output: ask the endpoint for JSON through a JSON schema.
        overgenerate: retrieve this many times the passages needed, to top up rejected examples.
        max_rounds: rounds of generation, the first included (later ones top up labels short of
            examples); a strategy that spreads its plan over several rounds (oneshot's `rounds_of`) gets those on top.
        max_calls: a budget of new LLM calls for generation (verification excluded); the run
            stops cleanly there and a re-run with a larger budget continues.
        prompts_dir: an alternative prompts folder.
        cache: a shared `engine.cache.LLMCache`: answers already paid for in any run are reused
            (None: only this folder's journal is).
        max_tokens_total: stop sending once this run's prompt + completion tokens would pass it.
        max_cost: stop sending once this run's spend would pass it (needs `prices`).
        prices: (input, output) price per million tokens, for cost estimates and `max_cost`.
        reference: texts no example may near-duplicate and no prompt may carry (e.g. the test split
            a student will be scored on); see engine/quality.py.
    """

    out: Path
    concurrency: Any = 4  # int, or an AdaptiveLimit
    fresh: bool = False
    structured_output: bool = False
    overgenerate: float = 2.0
    max_rounds: int = 5
    prompts_dir: Path | None = None
    max_calls: int | None = None
    cache: Any = None
    max_tokens_total: int | None = None
    max_cost: float | None = None
    prices: tuple[float, float] | None = None
    reference: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.max_cost is not None and self.prices is None:
            raise ConfigError("--max-cost needs prices: give --price-in and --price-out (per million tokens)")
        for name in ("max_calls", "max_tokens_total", "max_cost"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name.replace('_', '-')}={value!r} must be positive")


SynthProgress = Progress  # live counters handed to the progress callback


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
    index: Index | None,
    llm,
    options: SynthOptions,
    on_progress: Callable[[SynthProgress], None] | None = None,
    endpoint: str = "",
    synth_plan: "SynthPlan | None" = None,
) -> SynthResult:
    """Retrieve passages per label, have the LLM refine each into an example, filter, write.

    Completed answers are journalled as they arrive; re-running into the same folder reuses
    them, so an interrupted run continues without paying twice. Labels the index cannot support
    are made by the task's fallback strategy in the same run (see `plan`; pass its result as
    `synth_plan` when it was already made).

    Raises:
        ConfigError: the folder holds a different task (without `fresh`) or is locked by another run.
        LLMFatalError: the endpoint failed for good (what finished is kept in the journal).
    """
    started = time.monotonic()
    synth_plan = synth_plan or plan(task, index, options)
    with _locked(options.out):
        _check_run_identity(options.out, task, llm.model, options.fresh)
        progress = Progress(budget=options.max_calls, max_tokens=options.max_tokens_total,
                            max_cost=options.max_cost, prices=options.prices)
        with Journal(options.out / JOURNAL_NAME) as run_journal:
            journal = CachedJournal(run_journal, options.cache, endpoint or llm.model) if options.cache else run_journal
            ask = make_ask(llm, journal, options.concurrency, progress, on_progress)
            setup = {}
            for part in synth_plan.parts:
                setup[part.strategy.name] = part.strategy.setup(task, part.templates, ask, options.out)
            quality = QualityChecks(task, synth_plan.reference, extractor=_entity_extractor)
            outcomes = run_rounds(task, list(synth_plan.parts), llm, journal, options, progress, on_progress, quality)
            outcomes.stages["quality"] = quality.report()
            if task.quality.confidence_keep:
                _confidence_filter(task, index, outcomes)
            outcomes.stages["setup"] = next(iter(setup.values())) if len(setup) == 1 else setup
            progress.cache_hits = getattr(journal, "cache_hits", 0)
        return _finish(task, index, llm, options, outcomes, synth_plan, progress, started, endpoint)


def _confidence_filter(task: TaskSpec, index: Index | None, outcomes: Outcomes) -> None:
    """The cartography filter over the whole dataset (engine/cartography.py), in place."""
    from engine.cartography import confidence_filter
    from engine.embed import get_embedder

    embedder = index.embedder if index is not None else get_embedder()
    kept, dropped, report = confidence_filter(outcomes.examples, embedder, task.quality.confidence_keep, task.seed)
    outcomes.examples[:] = kept
    outcomes.rejections.extend(dropped)
    outcomes.stages["confidence"] = report


@dataclass(frozen=True)
class SynthPlan:
    """What a run will do, known before any LLM call: passages, coverage, which strategy makes which label.

    Attributes:
        parts: one `engine.refine.Part` per strategy (the task's own, and its fallback if used).
        retrieval: per-label retrieval counts for the manifest ({} without retrieval).
        coverage: per-label `engine.retrieval.coverage.LabelCoverage` (None without retrieval).
        per_label: passages retrieved per label (examples times the over-generation factor).
        reference: the leakage guard built from `SynthOptions.reference`, or None.
    """

    parts: tuple[Part, ...]
    retrieval: dict[str, Any]
    coverage: dict[str, LabelCoverage] | None
    per_label: int
    reference: ReferenceGuard | None = None

    def part_for(self, label: str) -> Part:
        """The part (strategy) that makes `label`."""
        return next(part for part in self.parts if label in part.labels)

    @property
    def routes(self) -> dict[str, str]:
        """label -> the name of the strategy that makes it."""
        return {label: part.strategy.name for part in self.parts for label in part.labels}

    def estimate(self, task: TaskSpec) -> dict[str, Any]:
        """The first round's requests and tokens, from the rendered prompts (no LLM call).

        A part whose plan needs its setup stage first (attrprompt's attributes) counts its
        requests but not their tokens (`tokens_unknown_for`). With `retrieval.screen`, each
        first-round passage's yes/no question is counted too (`screen_requests`; a "no" costs one
        more question and one more rewrite, which the estimate cannot know).
        """
        requests = prompt = completion = screened = 0
        unknown = []
        for part in self.parts:
            if part.picks is None and not part.strategy.plans_before_setup:
                requests += task.examples_per_label * len(part.labels)
                unknown.append(part.strategy.name)
                continue
            rendered = first_round(task, part)
            if part.picks is not None and task.retrieval.screen:
                screens = _screen_requests(task, rendered)
                screened += len(screens)
                rendered = rendered + screens
            tokens = request_tokens(rendered)
            requests, prompt, completion = requests + len(rendered), prompt + tokens[0], completion + tokens[1]
        return {"requests": requests, "prompt_tokens": prompt, "completion_tokens_max": completion,
                "tokens_unknown_for": unknown, "screen_requests": screened}


def _screen_requests(task: TaskSpec, rendered: list[Request]) -> list[Request]:
    """The yes/no screening requests for the passages of `rendered` (engine/retrieval/screen.py)."""
    from engine.prompts import load_template
    from engine.retrieval.screen import SCREEN_TEMPLATE, plan_screen

    template = load_template(SCREEN_TEMPLATE)
    by_label: dict[str, list[Hit]] = {}
    for request in rendered:
        if request.hit is not None:
            by_label.setdefault(request.label, []).append(request.hit)
    return [r for label, hits in by_label.items() for r in plan_screen(task, label, hits, template)]


def plan(task: TaskSpec, index: Index | None, options: SynthOptions) -> SynthPlan:
    """Check the task, retrieve passages, judge the corpus's coverage per label and route labels.

    Makes no LLM call and writes nothing: `seedbed plan` prints it, `seedbed synth` runs it.

    Raises:
        ConfigError: what `prepare` raises.
        CoverageError: labels the index cannot support, in a task without `fallback`.
    """
    strategy, templates = prepare(task, index, options)
    labels = tuple(spec.name for spec in task.labels)
    reference = ReferenceGuard(options.reference, task.quality.near_duplicate or 0.7) if options.reference else None
    if not strategy.uses_retrieval:
        part = Part(strategy, templates, None, labels)
        return SynthPlan((part,), {}, None, 0, reference)
    per_label = math.ceil(task.examples_per_label * max(1.0, options.overgenerate))
    picks, report = strategy.retrieve(index, task, per_label)
    if reference is not None:
        picks = _without_leaks(picks, report.per_label, reference)
    coverage = assess(task, report.per_label, per_label)
    routes = routing(task, coverage, index.manifest.name)
    own = tuple(name for name in labels if routes[name] == task.strategy)
    parts = [Part(strategy, templates, picks, own)] if own else []
    rest = tuple(name for name in labels if name not in own)
    if rest:
        fallback = get_strategy(task.fallback, structured_output=options.structured_output, **task.fallback_options)
        parts.append(Part(fallback, fallback.load_templates(task, options.prompts_dir), None, rest,
                          why=f"fallback: index {index.manifest.name!r} cannot support the label"))
    return SynthPlan(tuple(parts), report.per_label, coverage, per_label, reference)


def _without_leaks(picks: dict[str, list[Hit]], counts: dict[str, dict], reference: ReferenceGuard) -> dict[str, list[Hit]]:
    """Drop passages that near-duplicate a reference row, so none reaches a prompt; counted per label."""
    kept = {}
    for label, hits in picks.items():
        clean = [hit for hit in hits if not reference.near(hit.passage.text)]
        counts[label]["near_reference_dropped"] = len(hits) - len(clean)
        counts[label]["assigned"] = max(0, counts[label]["assigned"] - (len(hits) - len(clean)))
        counts[label]["picked"] = len(clean)
        kept[label] = clean
    return kept


def _entity_extractor():
    from engine.metrics.entities import spacy_extractor

    return spacy_extractor()

def prepare(task: TaskSpec, index: Index | None, options: SynthOptions):
    """Everything checkable before an LLM starts or a file is written: strategy, options, templates, index.

    Returns:
        (strategy, templates).

    Raises:
        ConfigError: unknown strategy or option, a bad template, or a missing index.
    """
    if "structured_output" in task.strategy_options:
        raise ConfigError("strategy_options.structured_output is set with --structured/--no-structured; remove it from the spec")
    strategy = get_strategy(task.strategy, structured_output=options.structured_output, **task.strategy_options)
    templates = strategy.load_templates(task, options.prompts_dir)
    if task.verify:
        from engine.prompts import load_template
        from engine.verify import JUDGE_TEMPLATE, check_labels

        load_template(JUDGE_TEMPLATE, options.prompts_dir)
        check_labels(task, ())  # label names the judge could confuse fail now, not after generation
    if strategy.uses_retrieval and index is None:
        raise ConfigError(f"strategy {task.strategy!r} retrieves passages: pass --index NAME")
    if strategy.uses_retrieval and task.retrieval.screen:
        from engine.prompts import load_template
        from engine.retrieval.screen import SCREEN_TEMPLATE

        load_template(SCREEN_TEMPLATE, options.prompts_dir)  # a missing screen template fails now
    if options.out.exists() and not options.out.is_dir():
        raise ConfigError(f"--out {options.out} is a file; pass a folder for the dataset")
    return strategy, templates


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


def _finish(task, index, llm, options, outcomes: Outcomes, synth_plan: SynthPlan, progress, started, endpoint) -> SynthResult:
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
                   "prompt_kept_examples": tokens["prompt"], "completion_kept_examples": tokens["completion"]},
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


def _made_by(label: str, synth_plan: SynthPlan) -> dict[str, str]:
    """Which strategy made a label's examples, and why (empty for the task's own strategy)."""
    part = synth_plan.part_for(label)
    reason = part.why
    if reason and synth_plan.coverage:
        reason = f"{reason} ({synth_plan.coverage[label].reason})"
    return {"strategy": part.strategy.name, "strategy_reason": reason}


def _index_facts(index) -> dict[str, Any] | None:
    if index is None:
        return None
    m = index.manifest
    return {"name": m.name, "passages": m.passages, "corpus_fingerprint": m.corpus_fingerprint,
            "updated_at": m.updated_at, "embedder": m.embedder, "engine_version": m.engine_version,
            "format_version": m.format_version,
            "sources": [{"path": s.get("path"), "documents": s.get("documents")} for s in m.sources]}
