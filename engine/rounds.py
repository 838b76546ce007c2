"""The round loop shared by every strategy: plan a round, have `engine.calls` answer it, parse, filter, review.

Labels that lose examples to rejections are topped up in later rounds: retrieval strategies take
their next retrieved passages, generation-only strategies (fewgen) plan new sample indexes.
Label verification, when asked for, judges the kept examples through the same journal
(`engine.judge`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.calls import OnProgress, Progress, call_all, estimate, make_ask
from engine.filters import Deduper, first_per_label
from engine.judge import RoundJudge
from engine.llm.runner import ChatLLM
from engine.retrieval.screen import Screen
from engine.types import Completion, Example, Hit, Rejection, Request, TaskSpec

if TYPE_CHECKING:  # engine.plan plans a run's parts with this module, so these are for the type checker only
    from engine.cache import CachedJournal
    from engine.journal import Journal
    from engine.plan import SynthOptions
    from engine.prompts import Template
    from engine.quality import QualityChecks
    from engine.strategies.base import Strategy

__all__ = ["Outcomes", "Part", "run_rounds", "first_round"]


@dataclass
class Outcomes:
    """Everything the rounds produced, in plan order (so a resumed run writes the same dataset)."""

    examples: list[tuple[Example, Request]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    failed: list[Request] = field(default_factory=list)
    unsent: list[Request] = field(default_factory=list)
    rounds: int = 0
    verification: dict | None = None
    stages: dict = field(default_factory=dict)
    verdicts: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (request id, text) -> judge's label


@dataclass
class _Plan:
    """Where each label stands: how many examples it still wants and what it has used up."""

    want: dict[str, int]
    cursor: dict[str, int]


@dataclass(frozen=True)
class Part:
    """One strategy's share of a run: the labels it makes, its templates and (if it retrieves) its passages.

    A run has one part, or two when labels the corpus cannot support go to the task's fallback
    strategy; `why` says why this part makes its labels (empty for the task's own strategy).
    """

    strategy: Strategy
    templates: Mapping[str, Template]
    picks: dict[str, list[Hit]] | None
    labels: tuple[str, ...]
    why: str = ""


def run_rounds(task: TaskSpec, parts: list[Part], llm: ChatLLM, journal: Journal | CachedJournal, options: SynthOptions,
               progress: Progress, on_progress: OnProgress | None, quality: QualityChecks | None = None,
               on_round: Callable[[], None] | None = None) -> Outcomes:
    """Plan, call, parse, review and verify in rounds until every label has its examples.

    Every part's requests of a round are sent together. Review (e.g. TarGEN's self-correction) and
    label verification run on each round's new examples, so what they drop or move is replaced in
    the next round. There are up to `max_rounds` rounds, plus the extra rounds a strategy spreads
    its plan over (oneshot's `rounds_of`). One deduper spans every part, so no text is kept twice;
    `quality` (an `engine.quality.QualityChecks`) adds near-duplicate, leakage and grounding checks;
    `on_round` is called after each round (a run folder on S3 uploads its journal then).
    """
    outcomes = Outcomes()
    deduper = _Checks(Deduper(), quality)
    part_of = {label: part for part in parts for label in part.labels}
    ask = make_ask(llm, journal, options.concurrency, progress, on_progress)
    judge = RoundJudge(task, llm, journal, options, progress, on_progress) if task.verify else None
    screen = Screen(task, llm, journal, options, progress, on_progress) if task.retrieval.screen else None
    state = _Plan(want={name: task.gathered_per_label for name in part_of}, cursor=dict.fromkeys(part_of, 0))
    reviews = []
    for _ in range(options.max_rounds + max(part.strategy.planned_rounds(task) for part in parts) - 1):
        if progress.unsent:  # the call budget is spent: stop planning
            break
        history = [example for example, _ in outcomes.examples]
        requests = [request for part in parts
                    for request in _plan_round(task, part, state, [e for e in history if e.label in part.labels], screen)]
        if not requests:
            break
        outcomes.rounds += 1
        if progress.estimate is None:
            progress.estimate = estimate(requests, progress, judged=bool(judge))
        start = len(outcomes.examples)
        early = _EarlyTags(task, part_of, quality) if quality is not None and quality.tags_entities else None
        answers = call_all(requests, llm, journal, options.concurrency, progress, on_progress,
                           on_answer=early.answered if early else None)
        _collect(task, part_of, requests, answers, deduper, outcomes, progress, state, early.finish() if early else {})
        kept = []
        for part in parts:
            new = [pair for pair in outcomes.examples[start:] if part_of[pair[1].label] is part]
            review = part.strategy.review(task, new, ask)
            reviews.append(review.report)
            outcomes.rejections.extend(review.rejections)
            for _, request, check in review.held:  # unchecked: retried by a re-run, like a failed or unsent request
                (outcomes.unsent if check.id in progress.unsent else outcomes.failed).append(request)
            kept.extend(review.kept)
        outcomes.examples[start:] = judge.check(kept, outcomes) if judge else kept
        _trim_surplus(task, outcomes)
        state.want = {name: n for name, n in _still_wanted(task, outcomes).items() if name in part_of}
        if on_round:
            on_round()
    ran_out = {name: state.cursor[name] for part in parts if part.picks is not None for name in part.labels
               if state.want.get(name, 0) > 0 and state.cursor[name] >= len(part.picks.get(name, []))}
    if ran_out:  # short labels whose every retrieved passage was used (or screened out): how many there were
        outcomes.stages["passages_ran_out"] = ran_out
    outcomes.stages["review"] = reviews[0] if len(reviews) == 1 else reviews
    if judge:
        outcomes.verification = judge.summary()
    if screen:
        outcomes.stages["screen"] = screen.report()
    return outcomes


class _EarlyTags:
    """Parse each answer and tag its entities as it arrives, while the round's other requests are in
    flight: tagged after the round, the grounding check's spaCy work ran while no request was.
    A worker thread takes the answers from a queue, a batch of whatever has arrived at a time."""

    def __init__(self, task: TaskSpec, part_of: dict[str, Part], quality: QualityChecks):
        self.task, self.part_of, self.quality = task, part_of, quality
        self.parsed: dict[str, list[Example | Rejection] | None] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="seedbed-early-tags", daemon=True)
        self._thread.start()

    def answered(self, request: Request, completion: Completion) -> None:
        self._queue.put((request, completion))

    def _work(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            done = batch[-1] is None
            try:
                pairs = []
                for request, completion in (item for item in batch if item is not None):
                    self.parsed[request.id] = results = _parse(self.part_of[request.label].strategy, self.task,
                                                               request, completion)
                    pairs += [(r, request) for r in results or () if isinstance(r, Example)]
                self.quality.prefetch(pairs)
            except BaseException as exc:  # re-raised by finish(), on the caller's thread
                self._error = exc
                done = True

    def finish(self) -> dict[str, list[Example | Rejection] | None]:
        """The answers parsed so far (their entities tagged), once the worker has caught up."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.parsed


def _collect(task: TaskSpec, part_of: dict[str, Part], requests: list[Request], answers: dict[str, Completion],
             deduper: _Checks, outcomes: Outcomes, progress: Progress, state: _Plan,
             parsed_early: dict[str, list[Example | Rejection] | None]) -> None:
    """Parse one round's answers (those `_EarlyTags` has not) into examples, rejections, failures and
    held-back requests."""
    parsed = {request.id: parsed_early[request.id] if request.id in parsed_early
              else _parse(part_of[request.label].strategy, task, request, answers.get(request.id))
              for request in requests if request.id not in progress.unsent}
    if deduper.quality is not None:
        deduper.quality.prefetch([(result, request) for request in requests for result in parsed.get(request.id) or ()
                                  if isinstance(result, Example)])
    for request in requests:
        if request.id in progress.unsent:
            outcomes.unsent.append(request)
            continue
        results = _checked(parsed[request.id], request, deduper)
        if results is None and request.id in progress.too_long:  # rejected, so topped up like any rejection
            outcomes.rejections.append(Rejection(request.label, "prompt_too_long", "", progress.too_long[request.id]))
            continue
        if results is None:  # failed after retries: retried by the next run, so no top-up for it
            outcomes.failed.append(request)
            state.want[request.label] -= 1
            continue
        for result in results:
            if isinstance(result, Example) and len(results) > 1 and state.want.get(result.label, 0) <= 0:
                # a several-examples answer overshot the label's target: count it, do not keep it
                result = Rejection(result.label, "surplus", result.text, "the label already has its examples",
                                   result.provenance)
            if isinstance(result, Rejection):
                outcomes.rejections.append(result)
            else:
                outcomes.examples.append((result, request))
                state.want[result.label] = state.want.get(result.label, 0) - 1


def _trim_surplus(task: TaskSpec, outcomes: Outcomes) -> None:
    """Keep at most `gathered_per_label` per label: examples that a review or the judge moved into a
    label that already has its examples become `surplus` rejections (the earliest are kept)."""
    kept, surplus = first_per_label(outcomes.examples, task.gathered_per_label,
                                    "relabelled into a label that already had its examples")
    outcomes.examples[:] = kept
    outcomes.rejections.extend(surplus)


def _still_wanted(task: TaskSpec, outcomes: Outcomes) -> dict[str, int]:
    """Examples each label still needs: the target less what is kept and what failed (retried later)."""
    have = {spec.name: 0 for spec in task.labels}
    for example, _ in outcomes.examples:
        have[example.label] = have.get(example.label, 0) + 1
    for request in outcomes.failed:
        have[request.label] = have.get(request.label, 0) + 1
    return {name: task.gathered_per_label - count for name, count in have.items() if name in have}


def _plan_round(task: TaskSpec, part: Part, state: _Plan, history: list[Example], screen: Screen | None = None) -> list[Request]:
    strategy, templates, picks = part.strategy, part.templates, part.picks
    want = {name: n for name, n in state.want.items() if name in part.labels}
    if picks is None:  # generation only: new sample indexes per label
        counts = {name: n for name, n in want.items() if n > 0}
        requests = strategy.plan_counts(task, counts, templates, start=dict(state.cursor), history=history) if counts else []
        for name, n in counts.items():
            state.cursor[name] += n
        return requests
    batch: dict[str, list[Hit]] = {}
    while True:  # take each label's next passages; with a screen, until enough pass it or none are left
        windows = {}
        for name, n in want.items():
            missing = n - len(batch.get(name, []))
            hits = picks.get(name, [])[state.cursor[name]:state.cursor[name] + missing] if missing > 0 else []
            if hits:
                windows[name] = hits
                state.cursor[name] += len(hits)
        if not windows:
            break
        for name, hits in (screen.keep(windows) if screen else windows).items():
            if hits:
                batch.setdefault(name, []).extend(hits)
    return strategy.plan(task, batch, templates) if batch else []


@dataclass
class _Checks:
    """Exact duplicates, then the quality filters, on each parsed example in plan order."""

    exact: Deduper
    quality: QualityChecks | None = None

    def check(self, example: Example, request: Request) -> Example | Rejection:
        if self.exact.check(example.text, example.label):
            return Rejection(example.label, "duplicate", example.text, "same text as an earlier example", example.provenance)
        rejection = self.quality.check(example, request) if self.quality is not None else None
        return rejection or example


def first_round(task: TaskSpec, part: Part) -> list[Request]:
    """The requests a part's first round sends, planned as `run_rounds` plans them (no LLM call)."""
    state = _Plan(want=dict.fromkeys(part.labels, task.gathered_per_label), cursor=dict.fromkeys(part.labels, 0))
    return _plan_round(task, part, state, [])


def _parse(strategy: Strategy, task: TaskSpec, request: Request, completion: Completion | None,
           ) -> list[Example | Rejection] | None:
    """One answer as its examples or rejections (several for a several-examples answer); None when it failed."""
    if completion is None:
        return None
    parsed = strategy.parse(request, completion, task)
    return parsed if isinstance(parsed, list) else [parsed]


def _checked(parsed: list[Example | Rejection] | None, request: Request, checks: _Checks) -> list[Example | Rejection] | None:
    """The parsed examples through the filters, in order (rejections pass unchanged); None stays None."""
    if parsed is None:
        return None
    return [checks.check(result, request) if isinstance(result, Example) else result for result in parsed]
