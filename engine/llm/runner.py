"""Run many planned requests against one LLM with a bounded number in flight.

Results are handed to `on_result` as each request finishes, so the caller can write them out
(and a crash loses at most what was in flight). A request that still fails transiently after
the client's own retries is delivered as its LLMError; an LLMFatalError stops the whole run.

The bound is either a fixed number (that many workers share the queue) or an AdaptiveLimit
(engine/llm/adaptive.py), which a dispatcher consults before starting each request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from engine.errors import ConfigError, LLMError, LLMFatalError, LLMRetryableError
from engine.llm.adaptive import AdaptiveLimit, Ticket
from engine.types import Completion, Request, SamplingParams

__all__ = ["ChatLLM", "OnResult", "run_requests", "run_requests_sync"]

OnResult = Callable[[Request, "Completion | LLMError"], None]


@runtime_checkable
class ChatLLM(Protocol):
    """What the runner and the pipeline need from an LLM: OpenAIChat and ScriptedLLM both fit."""

    model: str

    async def complete(
        self,
        messages: list[dict[str, str]],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion: ...

    async def check(self) -> tuple[str, ...]: ...

    async def close(self) -> None: ...


async def run_requests(
    llm: ChatLLM,
    requests: Sequence[Request],
    *,
    concurrency: int | AdaptiveLimit,
    on_result: OnResult,
) -> None:
    """Send `requests` with at most `concurrency` in flight; deliver each result as it completes.

    Args:
        llm: the client (its own retries apply to each request).
        requests: planned requests, started in this order.
        concurrency: how many requests may be in flight at once (match the server's slots), or an
            AdaptiveLimit that learns it; give OpenAIChat `on_retry=limit.on_retry` too, so the
            limit sees 429s and timeouts that the client retries.
        on_result: called once per finished request with its Completion or its non-fatal LLMError.

    Raises:
        ConfigError: concurrency < 1.
        LLMFatalError: the endpoint failed for good; requests still in flight are cancelled,
            everything that finished before was already delivered.
    """
    if isinstance(concurrency, AdaptiveLimit):
        return await _run_adaptive(llm, requests, concurrency, on_result)
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    pending = iter(requests)
    workers = [asyncio.ensure_future(_worker(llm, pending, on_result)) for _ in range(min(concurrency, len(requests)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise


async def _worker(llm: ChatLLM, pending: Iterator[Request], on_result: OnResult) -> None:
    # Workers share one iterator; asyncio runs one coroutine at a time, so next() never races.
    for request in pending:
        on_result(request, await _call(llm, request))


async def _call(llm: ChatLLM, request: Request) -> Completion | LLMError:
    try:
        return await llm.complete(request.chat_messages(), request.sampling, request.json_schema)
    except LLMFatalError:
        raise
    except LLMError as error:
        return error


async def _run_adaptive(llm: ChatLLM, requests: Sequence[Request], limit: AdaptiveLimit, on_result: OnResult) -> None:
    # A dispatcher instead of workers: the number in flight follows limit.limit as it moves.
    limit.new_run()
    running: set[asyncio.Future[None]] = set()
    try:
        for request in requests:
            while not limit.has_room():  # counts other runs sharing this limit too
                running = await _reap(running) if running else await _pause()
            # The ticket is taken now, not when the task first runs, so it records the epoch
            # (the limit) this request was dispatched under.
            ticket = limit.ticket()
            task = asyncio.ensure_future(_limited_call(llm, request, limit, ticket, on_result))
            task.add_done_callback(lambda _, t=ticket: limit.done(t))  # also when cancelled before it starts
            running.add(task)
        while running:
            running = await _reap(running)
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise


async def _reap(running: set[asyncio.Future[None]]) -> set[asyncio.Future[None]]:
    """Wait for at least one request to finish; re-raise the first failure (fatal, or from on_result)."""
    done, still_running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.result()  # the caller cancels the rest, and collects any other errors, when this raises
    return still_running


async def _pause() -> set[asyncio.Future[None]]:
    """Wait a moment for a slot that another thread's run holds (this run has nothing in flight)."""
    await asyncio.sleep(0.01)
    return set()


async def _limited_call(llm: ChatLLM, request: Request, limit: AdaptiveLimit, ticket: Ticket, on_result: OnResult) -> None:
    limit.bind(ticket)  # this task's own context: the client's on_retry hook finds it there
    started = time.perf_counter()
    result = await _call(llm, request)
    if isinstance(result, LLMRetryableError):
        limit.record_failure(ticket)
    elif not isinstance(result, LLMError):
        limit.record_success(time.perf_counter() - started, ticket)
    on_result(request, result)


async def _run_and_release(llm: ChatLLM, requests: Sequence[Request], concurrency, on_result: OnResult) -> None:
    try:
        await run_requests(llm, requests, concurrency=concurrency, on_result=on_result)
    finally:
        release = getattr(llm, "release_loop", None)  # connection pools must close in the loop that opened them
        if release is not None:
            await release()


def run_requests_sync(
    llm: ChatLLM,
    requests: Sequence[Request],
    *,
    concurrency: int | AdaptiveLimit,
    on_result: OnResult,
) -> None:
    """Blocking wrapper around `run_requests` for callers without an event loop (the CLI).

    Raises:
        RuntimeError: called from inside a running event loop (await `run_requests` there).
        ConfigError, LLMFatalError: as `run_requests`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run_and_release(llm, requests, concurrency, on_result))
    raise RuntimeError("run_requests_sync was called inside a running event loop; use `await run_requests(...)`")
