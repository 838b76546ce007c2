"""Sending requests: answers from the journal when recorded, else from the LLM, under a call budget
and token/cost caps, with live counters for the progress bar and a first-round estimate.

`engine.rounds` plans the rounds and decides what to send; this module sends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from engine.errors import LLMError, LLMFatalError, LLMPromptTooLongError
from engine.llm.client import estimate_tokens
from engine.llm.runner import ChatLLM, run_requests_sync
from engine.types import Completion, Request, SamplingParams

if TYPE_CHECKING:
    from engine.cache import CachedJournal
    from engine.journal import Journal
    from engine.llm.adaptive import AdaptiveLimit

__all__ = ["Progress", "OnProgress", "call_all", "make_ask", "estimate", "request_tokens", "FAIL_FAST_AFTER"]

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
    cached_tokens: int = 0  # prompt tokens the server took from its prefix cache (of answers that said)
    cache_reported: int = 0  # answers whose endpoint reported its cached prompt tokens
    reused_tokens: list[int] = field(default_factory=lambda: [0, 0, 0])  # (prompt, completion, cached) of reused answers
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


OnProgress = Callable[[Progress], None]  # called with the live counters after every answer


def call_all(requests: list[Request], llm: ChatLLM, journal: Journal | CachedJournal, concurrency: int | AdaptiveLimit,
             progress: Progress, on_progress: OnProgress | None, budgeted: bool = True,
             on_answer: Callable[[Request, Completion], None] | None = None) -> dict[str, Completion]:
    """Answers for `requests`: from the journal when recorded, else from the LLM (journalled on arrival).

    With a budget, requests beyond it are not sent (their ids go to `progress.unsent`); a later
    run with a larger budget sends them, reusing everything already answered. `on_answer` sees each
    new answer as it arrives, after it is journalled (it must be quick: it runs on the event loop).
    """
    answers: dict[str, Completion] = {}
    to_send: list[Request] = []
    for request in requests:
        cached = journal.completed(request.id, llm.model)
        if cached is not None:
            answers[request.id] = cached
            progress.reused += 1
            progress.reused_tokens[0] += cached.prompt_tokens
            progress.reused_tokens[1] += cached.completion_tokens
            progress.reused_tokens[2] += cached.cached_tokens or 0
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

    def on_result(request: Request, result: Completion | LLMError) -> None:
        if isinstance(result, _OverCap):  # never sent: a re-run with a larger cap sends it
            progress.unsent.add(request.id)
            progress.capped += 1
            progress.sent -= 1
            return
        if isinstance(result, Completion):
            journal.record_ok(request.id, llm.model, result)
            answers[request.id] = result
            if on_answer is not None:
                on_answer(request, result)
            progress.prompt_tokens += result.prompt_tokens
            progress.completion_tokens += result.completion_tokens
            if result.cached_tokens is not None:
                progress.cached_tokens += result.cached_tokens
                progress.cache_reported += 1
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
        run_many = getattr(llm, "run_many", None)  # engine.llm.distributed.RayLLM: the batch goes to a cluster
        if run_many is not None:
            if capped:
                _run_many_capped(run_many, to_send, concurrency, on_result, journal.shards, progress)
            else:
                run_many(to_send, concurrency, on_result, journal.shards)
        else:
            run_requests_sync(_Capped(llm, progress) if capped else llm, to_send, concurrency=concurrency,
                              on_result=on_result)
    return answers


def _run_many_capped(run_many, requests: list[Request], concurrency: int, on_result, shards, progress: Progress) -> None:
    """On a cluster under a token or cost cap: waves of `concurrency` requests, each request admitted
    before its wave goes out as `_Capped` admits one locally (its estimated tokens reserved, or held back
    as over the cap); a wave's reservations end when its answers are in."""
    for start in range(0, len(requests), concurrency):
        wave, needs = [], []
        for request in requests[start:start + concurrency]:
            need = _need(request.chat_messages(), request.sampling)
            if progress.would_pass_cap(*need):
                on_result(request, _OverCap("held back by the token or cost cap"))
                continue
            _reserve(progress, need, 1)
            wave.append(request)
            needs.append(need)
        try:
            if wave:
                run_many(wave, concurrency, on_result, shards)
        finally:
            for need in needs:
                _reserve(progress, need, -1)


def _need(messages: list[dict[str, str]], params: SamplingParams) -> tuple[int, int]:
    """A request's reservation: its estimated prompt tokens and its max_tokens."""
    return estimate_tokens("".join(m["content"] for m in messages)), params.max_tokens or 0


def _reserve(progress: Progress, need: tuple[int, int], sign: int) -> None:
    progress.reserved[0] += sign * need[0]
    progress.reserved[1] += sign * need[1]


class _OverCap(LLMError):
    """Internal: the request was held back because it would pass --max-tokens-total or --max-cost."""


class _Capped:
    """Wraps the LLM so each request checks the token/cost cap before it goes out.

    A request reserves its estimated prompt tokens and its max_tokens while in flight, so requests
    running together cannot pass the cap between them; the real counts replace the reservation.
    """

    def __init__(self, llm: ChatLLM, progress: Progress) -> None:
        self.llm, self.progress, self.model = llm, progress, llm.model

    async def release_loop(self) -> None:
        release = getattr(self.llm, "release_loop", None)
        if release is not None:
            await release()

    async def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                       json_schema: dict[str, Any] | None = None) -> Completion:
        need = _need(messages, params)
        if self.progress.would_pass_cap(*need):
            raise _OverCap("held back by the token or cost cap")
        _reserve(self.progress, need, 1)
        try:
            return await self.llm.complete(messages, params, json_schema)
        finally:
            _reserve(self.progress, need, -1)


def estimate(requests: list[Request], progress: Progress, judged: bool) -> dict[str, Any]:
    """Requests, prompt tokens (from the rendered messages) and the most completion tokens of a round.

    Top-ups for rejected answers add to it; with verification each kept example also costs a
    short judge call.
    """
    prompt, completion = request_tokens(requests)
    return {"requests": len(requests), "prompt_tokens": prompt, "completion_tokens_max": completion,
            "cost_max": progress.cost(prompt, completion), "plus_judge_calls": judged}


def request_tokens(requests: list[Request]) -> tuple[int, int]:
    """(prompt tokens estimated from the rendered messages, the most completion tokens) of `requests`."""
    prompt = sum(estimate_tokens("".join(text for _, text in r.messages)) for r in requests)
    return prompt, sum(r.sampling.max_tokens or 0 for r in requests)


def make_ask(llm: ChatLLM, journal: Journal | CachedJournal, concurrency: int | AdaptiveLimit, progress: Progress,
             on_progress: OnProgress | None) -> Callable[[Sequence[Request]], dict[str, Completion]]:
    """The `ask` callable strategies use for their own stages: answers through the journal and runner."""
    return lambda requests: call_all(list(requests), llm, journal, concurrency, progress, on_progress)
