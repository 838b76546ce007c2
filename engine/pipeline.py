"""The use cases, each short: index(), search(), plan(), synthesize(), bench().

The CLI (cli*.py) and the HTTP API (engine/api/) are thin adapters over these functions; nothing here prints. A synthesis is
planned before any LLM call (engine/plan.py), run in rounds (engine/rounds.py) and written into
its folder (engine/run_folder.py).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from engine.cache import CachedJournal
from engine.calls import Progress, make_ask
from engine.index.builder import BuildResult, build_index
from engine.index.reader import Index, check_query
from engine.journal import JOURNAL_NAME, Journal
from engine.plan import SynthOptions, SynthPlan, plan, prepare
from engine.quality import QualityChecks
from engine.remote import is_remote
from engine.rounds import Outcomes, run_rounds
from engine.run_folder import SynthResult, check_run_identity, finish, locked, task_fingerprint
from engine.types import Hit, TaskSpec

if TYPE_CHECKING:
    from engine.corpus import CorpusOptions
    from engine.embed import Embedder
    from engine.llm.runner import ChatLLM
    from engine.metrics.bench import BenchConfig, BenchResult
    from engine.metrics.data import LabeledSet
    from engine.metrics.entities import Extractor

__all__ = ["index", "search", "bench", "prepare", "plan", "SynthPlan", "SynthOptions", "SynthProgress", "SynthResult", "synthesize", "task_fingerprint"]


def index(corpus: str | Path, name: str, embedder: Embedder, root: Path = Path("indexes"), options: CorpusOptions | None = None,
          add: bool = False, force: bool = False, progress: Callable[[int, int], None] | None = None,
          ray: str | None = None, ray_workers: int = 2) -> BuildResult:
    """Build or extend an index (see engine.index.builder.build_index)."""
    from engine.corpus import CorpusOptions

    return build_index(corpus, name, embedder, root=root, options=options or CorpusOptions(), add=add, force=force,
                       progress=progress, ray=ray, ray_workers=ray_workers)


def search(name: str, query: str, k: int = 10, mode: str = "hybrid", root: Path = Path("indexes"),
           embedder: Embedder | None = None) -> list[Hit]:
    """Ranked passages of index `name` for `query` (an empty query is refused before the index is opened)."""
    check_query(query)
    return Index.open(name, root, embedder=embedder).search(query, k=k, mode=mode)


def bench(datasets: list[LabeledSet], reference: LabeledSet, train: LabeledSet | None, embedder: Embedder,
          config: BenchConfig | None = None, **kwargs: Any) -> BenchResult:
    """Measure synthetic datasets against human splits (see engine.metrics.bench.run_bench, which takes
    `kwargs`: extractor, progress, cache)."""
    from engine.metrics.bench import BenchConfig, run_bench

    return run_bench(datasets, reference, train, embedder, config or BenchConfig(), **kwargs)


SynthProgress = Progress  # live counters handed to the progress callback


def synthesize(
    task: TaskSpec,
    index: Index | None,
    llm: ChatLLM,
    options: SynthOptions,
    on_progress: Callable[[SynthProgress], None] | None = None,
    endpoint: str = "",
    synth_plan: SynthPlan | None = None,
    on_round: Callable[[], None] | None = None,
    shards: str | None = None,
) -> SynthResult:
    """Retrieve passages per label, have the LLM refine each into an example, filter, write.

    Completed answers are journalled as they arrive; re-running into the same folder reuses
    them, so an interrupted run continues without paying twice. Labels the index cannot support
    are made by the task's fallback strategy in the same run (see `plan`; pass its result as
    `synth_plan` when it was already made). `options.out` may be an s3:// URI: the run works in a
    local copy of that folder and uploads it (engine/remote_run.py), and the workers of a distributed run put
    their journal shards in its `journal.d/` (`shards`). `on_round` is called after each round.

    Raises:
        ConfigError: the folder holds a different task (without `fresh`) or is locked by another run; for an
            s3:// folder, a missing bucket, denied access or an unreachable endpoint.
        LLMFatalError: the endpoint failed for good (what finished is kept in the journal).
    """
    if is_remote(options.out):
        from engine.remote_run import staged_run

        with staged_run(options.out) as staged:
            local = dataclasses.replace(options, out=staged.folder)
            result = synthesize(task, index, llm, local, on_progress, endpoint, synth_plan, on_round=staged.push_round,
                                shards=staged.shards)
            return staged.publish(result)
    started = time.monotonic()
    synth_plan = synth_plan or plan(task, index, options)
    with locked(options.out):
        check_run_identity(options.out, task, llm.model, options.fresh)
        progress = Progress(budget=options.max_calls, max_tokens=options.max_tokens_total,
                            max_cost=options.max_cost, prices=options.prices)
        with Journal(options.out / JOURNAL_NAME, shards=shards) as run_journal:
            journal = CachedJournal(run_journal, options.cache, endpoint or llm.model) if options.cache else run_journal
            ask = make_ask(llm, journal, options.concurrency, progress, on_progress)
            setup = {}
            for part in synth_plan.parts:
                setup[part.strategy.name] = part.strategy.setup(task, part.templates, ask, options.out)
            quality = QualityChecks(task, synth_plan.reference, extractor=_entity_extractor)
            outcomes = run_rounds(task, list(synth_plan.parts), llm, journal, options, progress, on_progress, quality,
                                  on_round)
            outcomes.stages["quality"] = quality.report()
            if task.quality.confidence_keep:
                _confidence_filter(task, index, outcomes)
            outcomes.stages["setup"] = next(iter(setup.values())) if len(setup) == 1 else setup
            progress.cache_hits = getattr(journal, "cache_hits", 0)
        return finish(task, index, llm, options, outcomes, synth_plan, progress, started, endpoint)


def _confidence_filter(task: TaskSpec, index: Index | None, outcomes: Outcomes) -> None:
    """The cartography filter over the whole dataset (engine/cartography.py), in place."""
    from engine.cartography import confidence_filter
    from engine.embed import get_embedder

    embedder = index.embedder if index is not None else get_embedder()
    kept, dropped, report = confidence_filter(outcomes.examples, embedder, task.quality.confidence_keep, task.seed,
                                             task.examples_per_label)
    outcomes.examples[:] = kept
    outcomes.rejections.extend(dropped)
    outcomes.stages["confidence"] = report


def _entity_extractor() -> Extractor:
    from engine.metrics.entities import spacy_extractor

    return spacy_extractor()
