"""The request loop shared by every strategy: plan a round, answer from the journal or the LLM, parse.

Labels that lose examples to rejections are topped up in later rounds: retrieval strategies take
their next retrieved passages, generation-only strategies (fewgen) plan new sample indexes.
Label verification, when asked for, judges the kept examples through the same journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from engine.errors import LLMError, LLMFatalError, LLMPromptTooLongError
from engine.llm.client import estimate_tokens
from engine.filters import Deduper
from engine.llm.runner import run_requests_sync
from engine.types import Completion, Example, Hit, Rejection, Request, TaskSpec

__all__ = ["Outcomes", "Part", "Progress", "run_rounds", "first_round", "request_tokens", "call_all", "make_ask", "FAIL_FAST_AFTER"]

FAIL_FAST_AFTER = 8  # this many failures in a row with no success stops the run


@dataclass
class Progress:
    """Live counters (mutable on purpose) handed to a progress callback after every answer."""

    planned: int = 0
    sent: int = 0
    done: int = 0
    reused: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    budget: int | None = None  # most new LLM calls for generation (verification is not counted)
    unsent: set[str] = field(default_factory=set)  # request ids held back by the budget
    unbudgeted: int = 0  # calls outside the budget (label verification)
    too_long: dict[str, str] = field(default_factory=dict)  # request id -> why its prompt did not fit
    max_tokens: int | None = None  # cap on this run's prompt + completion tokens
    max_cost: float | None = None  # cap on this run's spend (needs prices)
    prices: tuple[float, float] | None = None  # (input, output) per million tokens
    reserved: list[int] = field(default_factory=lambda: [0, 0])  # tokens (prompt, completion) in flight
    capped: int = 0  # requests held back by the token or cost cap
    cache_hits: int = 0
    estimate: dict | None = None  # the first generation round, before it is sent

    def cost(self, prompt: int | None = None, completion: int | None = None) -> float | None:
        """Spend for these tokens (default: this run's so far) at `prices`; None without prices."""
        if self.prices is None:
            return None
        prompt = self.prompt_tokens if prompt is None else prompt
        completion = self.completion_tokens if completion is None else completion
        return round((prompt * self.prices[0] + completion * self.prices[1]) / 1e6, 6)

    def would_pass_cap(self, prompt: int, completion: int) -> bool:
        """Would one more request of this size, with what is spent and in flight, pass a cap?"""
        prompt += self.prompt_tokens + self.reserved[0]
        completion += self.completion_tokens + self.reserved[1]
        if self.max_tokens is not None and prompt + completion > self.max_tokens:
            return True
        return self.max_cost is not None and (self.cost(prompt, completion) or 0.0) > self.max_cost

    def projected_cost(self) -> float | None:
        """Spend so far scaled to every planned request (a running projection for the progress bar)."""
        spent = self.cost()
        if spent is None or not self.done:
            return spent
        return round(spent * max(1.0, self.planned / self.done), 6)


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

    strategy: Any
    templates: Any
    picks: dict[str, list[Hit]] | None
    labels: tuple[str, ...]
    why: str = ""


def run_rounds(task: TaskSpec, parts: list[Part], llm, journal, options, progress: Progress,
               on_progress: Callable | None, quality=None) -> Outcomes:
    """Plan, call, parse, review and verify in rounds until every label has its examples.

    Every part's requests of a round are sent together. Review (e.g. TarGEN's self-correction) and
    label verification run on each round's new examples, so what they drop or move is replaced in
    the next round. There are up to `max_rounds` rounds, plus the extra rounds a strategy spreads
    its plan over (oneshot's `rounds_of`). One deduper spans every part, so no text is kept twice;
    `quality` (an `engine.quality.QualityChecks`) adds near-duplicate, leakage and grounding checks.
    """
    outcomes = Outcomes()
    deduper = _Checks(Deduper(), quality)
    part_of = {label: part for part in parts for label in part.labels}
    ask = make_ask(llm, journal, options.concurrency, progress, on_progress)
    judge = _Judge(task, llm, journal, options, progress, on_progress) if task.verify else None
    state = _Plan(want={name: task.examples_per_label for name in part_of}, cursor=dict.fromkeys(part_of, 0))
    reviews = []
    for _ in range(options.max_rounds + max(part.strategy.planned_rounds(task) for part in parts) - 1):
        if progress.unsent:  # the call budget is spent: stop planning
            break
        history = [example for example, _ in outcomes.examples]
        requests = [request for part in parts
                    for request in _plan_round(task, part, state, [e for e in history if e.label in part.labels])]
        if not requests:
            break
        outcomes.rounds += 1
        if progress.estimate is None:
            progress.estimate = estimate(requests, progress, judged=bool(judge))
        start = len(outcomes.examples)
        answers = call_all(requests, llm, journal, options.concurrency, progress, on_progress)
        _collect(task, part_of, requests, answers, deduper, outcomes, progress, state)
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
    outcomes.stages["review"] = reviews[0] if len(reviews) == 1 else reviews
    if judge:
        outcomes.verification = judge.summary()
    return outcomes


def _collect(task, part_of: dict[str, Part], requests, answers, deduper, outcomes: Outcomes, progress: Progress,
             state: _Plan) -> None:
    """Parse one round's answers into examples, rejections, failures and held-back requests."""
    for request in requests:
        if request.id in progress.unsent:
            outcomes.unsent.append(request)
            continue
        results = _judge(part_of[request.label].strategy, task, request, answers.get(request.id), deduper)
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
    """Keep at most `examples_per_label` per label: examples that a review or the judge moved into a
    label that already has its examples become `surplus` rejections (the earliest are kept)."""
    have: dict[str, int] = {}
    kept = []
    for example, request in outcomes.examples:
        have[example.label] = have.get(example.label, 0) + 1
        if have[example.label] <= task.examples_per_label:
            kept.append((example, request))
        else:
            outcomes.rejections.append(Rejection(example.label, "surplus", example.text,
                                                 "relabelled into a label that already had its examples", example.provenance))
    outcomes.examples[:] = kept


def _still_wanted(task: TaskSpec, outcomes: Outcomes) -> dict[str, int]:
    """Examples each label still needs: the target less what is kept and what failed (retried later)."""
    have = {spec.name: 0 for spec in task.labels}
    for example, _ in outcomes.examples:
        have[example.label] = have.get(example.label, 0) + 1
    for request in outcomes.failed:
        have[request.label] = have.get(request.label, 0) + 1
    return {name: task.examples_per_label - count for name, count in have.items() if name in have}


def _plan_round(task, part: Part, state: _Plan, history) -> list[Request]:
    strategy, templates, picks = part.strategy, part.templates, part.picks
    want = {name: n for name, n in state.want.items() if name in part.labels}
    if picks is None:  # generation only: new sample indexes per label
        counts = {name: n for name, n in want.items() if n > 0}
        requests = strategy.plan_counts(task, counts, templates, start=dict(state.cursor), history=history) if counts else []
        for name, n in counts.items():
            state.cursor[name] += n
        return requests
    batch = {}
    for name, n in want.items():
        hits = picks.get(name, [])[state.cursor[name]:state.cursor[name] + n] if n > 0 else []
        if hits:
            batch[name] = hits
            state.cursor[name] += len(hits)
    return strategy.plan(task, batch, templates) if batch else []


def call_all(requests: list[Request], llm, journal, concurrency: int, progress: Progress,
             on_progress: Callable | None, budgeted: bool = True) -> dict[str, Completion]:
    """Answers for `requests`: from the journal when recorded, else from the LLM (journalled on arrival).

    With a budget, requests beyond it are not sent (their ids go to `progress.unsent`); a later
    run with a larger budget sends them, reusing everything already answered.
    """
    answers: dict[str, Completion] = {}
    to_send: list[Request] = []
    for request in requests:
        cached = journal.completed(request.id, llm.model)
        if cached is not None:
            answers[request.id] = cached
            progress.reused += 1
        else:
            to_send.append(request)
    if budgeted and progress.budget is not None:
        room = max(0, progress.budget - (progress.sent - progress.unbudgeted))
        progress.unsent.update(request.id for request in to_send[room:])
        to_send = to_send[:room]
    progress.planned += len(requests)
    progress.sent += len(to_send)
    if not budgeted:
        progress.unbudgeted += len(to_send)

    def on_result(request: Request, result) -> None:
        if isinstance(result, _OverCap):  # never sent: a re-run with a larger cap sends it
            progress.unsent.add(request.id)
            progress.capped += 1
            progress.sent -= 1
            return
        if isinstance(result, Completion):
            journal.record_ok(request.id, llm.model, result)
            answers[request.id] = result
            progress.prompt_tokens += result.prompt_tokens
            progress.completion_tokens += result.completion_tokens
        elif isinstance(result, LLMPromptTooLongError):  # this prompt's fault, not the endpoint's
            journal.record_failed(request.id, llm.model, str(result))
            progress.too_long[request.id] = str(result)
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
        capped = progress.max_tokens is not None or progress.max_cost is not None
        run_requests_sync(_Capped(llm, progress) if capped else llm, to_send, concurrency=concurrency,
                          on_result=on_result)
    return answers


class _OverCap(LLMError):
    """Internal: the request was held back because it would pass --max-tokens-total or --max-cost."""


class _Capped:
    """Wraps the LLM so each request checks the token/cost cap before it goes out.

    A request reserves its estimated prompt tokens and its max_tokens while in flight, so requests
    running together cannot pass the cap between them; the real counts replace the reservation.
    """

    def __init__(self, llm, progress: Progress):
        self.llm, self.progress, self.model = llm, progress, llm.model

    async def release_loop(self) -> None:
        release = getattr(self.llm, "release_loop", None)
        if release is not None:
            await release()

    async def complete(self, messages, params, json_schema=None) -> Completion:
        need = (estimate_tokens("".join(m["content"] for m in messages)), params.max_tokens or 0)
        if self.progress.would_pass_cap(*need):
            raise _OverCap("held back by the token or cost cap")
        self.progress.reserved[0] += need[0]
        self.progress.reserved[1] += need[1]
        try:
            return await self.llm.complete(messages, params, json_schema)
        finally:
            self.progress.reserved[0] -= need[0]
            self.progress.reserved[1] -= need[1]


def estimate(requests: list[Request], progress: Progress, judged: bool) -> dict:
    """Requests, prompt tokens (from the rendered messages) and the most completion tokens of a round.

    Top-ups for rejected answers add to it; with verification each kept example also costs a
    short judge call.
    """
    prompt, completion = request_tokens(requests)
    return {"requests": len(requests), "prompt_tokens": prompt, "completion_tokens_max": completion,
            "cost_max": progress.cost(prompt, completion), "plus_judge_calls": judged}


@dataclass
class _Checks:
    """Exact duplicates, then the quality filters, on each parsed example in plan order."""

    exact: Deduper
    quality: Any = None

    def check(self, example: Example, request: Request) -> Example | Rejection:
        if self.exact.check(example.text, example.label):
            return Rejection(example.label, "duplicate", example.text, "same text as an earlier example", example.provenance)
        rejection = self.quality.check(example, request) if self.quality is not None else None
        return rejection or example


def request_tokens(requests: list[Request]) -> tuple[int, int]:
    """(prompt tokens estimated from the rendered messages, the most completion tokens) of `requests`."""
    prompt = sum(estimate_tokens("".join(text for _, text in r.messages)) for r in requests)
    return prompt, sum(r.sampling.max_tokens or 0 for r in requests)


def first_round(task: TaskSpec, part: Part) -> list[Request]:
    """The requests a part's first round sends, planned as `run_rounds` plans them (no LLM call)."""
    state = _Plan(want=dict.fromkeys(part.labels, task.examples_per_label), cursor=dict.fromkeys(part.labels, 0))
    return _plan_round(task, part, state, [])


def _judge(strategy, task, request, completion, checks: _Checks) -> list[Example | Rejection] | None:
    """Parse one answer (one or several examples) and filter them; None when the request failed."""
    if completion is None:
        return None
    parsed = strategy.parse(request, completion, task)
    return [checks.check(result, request) if isinstance(result, Example) else result
            for result in (parsed if isinstance(parsed, list) else [parsed])]


def make_ask(llm, journal, concurrency: int, progress: Progress, on_progress: Callable | None):
    """The `ask` callable strategies use for their own stages: answers through the journal and runner."""
    return lambda requests: call_all(list(requests), llm, journal, concurrency, progress, on_progress)


class _Judge:
    """Label verification round by round: an LLM judge says which label fits each new example."""

    def __init__(self, task: TaskSpec, llm, journal, options, progress: Progress, on_progress: Callable | None):
        from engine.prompts import load_template
        from engine.verify import JUDGE_TEMPLATE

        self.task, self.llm, self.journal, self.options = task, llm, journal, options
        self.progress, self.on_progress = progress, on_progress
        self.template = load_template(JUDGE_TEMPLATE, options.prompts_dir)
        self.judged: list[Example] = []
        self.verdicts: list[str | None] = []

    def check(self, pairs: list[tuple[Example, Request]], outcomes: Outcomes) -> list[tuple[Example, Request]]:
        """Apply the task's policy to `pairs`; dropped ones become rejections in `outcomes`.

        A judge call that failed after retries counts as an unreadable verdict. An example whose judge
        call the token or cost cap held back is held back with it (its generation request goes to
        `outcomes.unsent`), so a re-run with a larger cap checks it instead of dropping it.
        """
        from engine.verify import apply_policy, parse_verdict, plan_verification

        if not pairs:
            return []
        requests = plan_verification(self.task, [example for example, _ in pairs], self.template,
                                     self.options.structured_output)
        answers = call_all(requests, self.llm, self.journal, self.options.concurrency, self.progress,
                           self.on_progress, budgeted=False)
        held = [r.id in self.progress.unsent for r in requests]
        outcomes.unsent.extend(request for (_, request), h in zip(pairs, held) if h)
        pairs = [pair for pair, h in zip(pairs, held) if not h]
        requests = [r for r, h in zip(requests, held) if not h]
        examples = [example for example, _ in pairs]
        if not pairs:
            return []
        verdicts = [parse_verdict(r, answers[r.id], self.task) if r.id in answers else None for r in requests]
        self.judged.extend(examples)
        self.verdicts.extend(verdicts)
        outcomes.verdicts.update({(e.provenance.request_id, e.text): v for e, v in zip(examples, verdicts)})
        result = apply_policy(examples, verdicts, self.task.verify)
        outcomes.rejections.extend(result.rejections)
        kept = iter(result.kept)
        return [(next(kept), request) for (_, request), record in zip(pairs, result.records) if record.action != "dropped"]

    def summary(self) -> dict | None:
        """Agreement and actions over every example judged in the run."""
        from engine.verify import apply_policy

        return apply_policy(self.judged, self.verdicts, self.task.verify).summary() if self.judged else None
