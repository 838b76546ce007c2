"""Run many planned requests against one LLM with a bounded number in flight.

Results are handed to `on_result` as each request finishes, so the caller can write them out
(and a crash loses at most what was in flight). A request that still fails transiently after
the client's own retries is delivered as its LLMError; an LLMFatalError stops the whole run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from engine.errors import ConfigError, LLMError, LLMFatalError
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
    concurrency: int,
    on_result: OnResult,
) -> None:
    """Send `requests` with at most `concurrency` in flight; deliver each result as it completes.

    Args:
        llm: the client (its own retries apply to each request).
        requests: planned requests, started in this order.
        concurrency: how many requests may be in flight at once (match the server's slots).
        on_result: called once per finished request with its Completion or its non-fatal LLMError.

    Raises:
        ConfigError: concurrency < 1.
        LLMFatalError: the endpoint failed for good; requests still in flight are cancelled,
            everything that finished before was already delivered.
    """
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


def run_requests_sync(
    llm: ChatLLM,
    requests: Sequence[Request],
    *,
    concurrency: int,
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
        return asyncio.run(run_requests(llm, requests, concurrency=concurrency, on_result=on_result))
    raise RuntimeError("run_requests_sync was called inside a running event loop; use `await run_requests(...)`")
