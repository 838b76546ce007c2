"""Adaptive concurrency: find how many requests an endpoint serves well at once, and follow it.

The rule is AIMD, as TCP does it. The limit starts at `start`. After every window of `limit`
clean successes it rises by one, as long as the window's mean latency stays within `tolerance`
times the best window seen (more requests in flight at the same latency means more throughput).
It falls multiplicatively (times `backoff`) on an overload signal: a 429, a timeout, a dropped
connection, a 5xx, or a window whose latency grew past the tolerance.

Where the signals come from:
- the runner reports each request's outcome (`record_success`, `record_failure`), so any ChatLLM
  works;
- a client that retries internally should also report each failed attempt *before* it waits and
  retries, or a 429 that is retried successfully would never be seen: pass `limit.on_retry` as
  OpenAIChat's `on_retry` hook.

One congestion event makes many requests fail at once; only the first failure of a request sent
after the last back-off counts (each request carries a ticket with the "epoch" it started in), so
one event halves the limit once, not once per request. A request that needed a retry gives no
latency sample: its time includes the backoff wait, not the server's speed.

A limit is plain state, not tied to an event loop: one instance can serve many `run_requests`
calls (a pipeline's rounds) and keeps what it learned; each call starts by forgetting the
latency baseline (`new_run`), because different stages send requests of different sizes.
Its state is guarded by a lock and it counts the requests in flight across all its callers, so
runs in several threads (each with its own event loop) can share one limit for one endpoint:
together they keep at most `limit` requests in flight.
"""

from __future__ import annotations

import math
import threading
from contextvars import ContextVar
from dataclasses import dataclass

from engine.errors import ConfigError

__all__ = ["AdaptiveLimit", "Ticket", "parse_concurrency"]


@dataclass
class Ticket:
    """What the limiter knows about one request in flight (kept in a context variable)."""

    owner: int  # id() of the AdaptiveLimit that issued it: a ticket leaked into a context is ignored
    epoch: int
    retried: bool = False


# Set by the runner in each request's task, so `on_retry` (called deep inside the client, in the
# same task) knows which request failed. Module-level, as contextvars must be.
_CURRENT: ContextVar[Ticket | None] = ContextVar("seedbed_adaptive_ticket", default=None)
# Latency growth below this is scheduling noise (event loop, GC), never overload: without it, a
# baseline of microseconds (a local fake) would make every jitter look like "twice as slow".
_LATENCY_SLACK = 0.01


class AdaptiveLimit:
    """An AIMD concurrency limit: pass it as `run_requests(concurrency=...)`.

    Args:
        start: the limit before anything is known (4 suits one local llama.cpp server).
        min: never go below this many in flight.
        max: never go above this many in flight.
        backoff: factor applied on an overload signal (0 < backoff < 1).
        tolerance: a window whose mean latency exceeds tolerance x the best window counts as
            overload (> 1; generous, since answers of different lengths take different times).

    Raises:
        ConfigError: the bounds are not 1 <= min <= start <= max, or backoff/tolerance are out of range.
    """

    def __init__(self, start: int = 4, *, min: int = 1, max: int = 32, backoff: float = 0.75, tolerance: float = 2.0):
        if not 1 <= min <= start <= max:
            raise ConfigError(f"adaptive concurrency needs 1 <= min <= start <= max, got min={min}, start={start}, max={max}")
        if not 0 < backoff < 1 or tolerance <= 1:
            raise ConfigError(f"need 0 < backoff < 1 and tolerance > 1, got backoff={backoff}, tolerance={tolerance}")
        self.start, self.min, self.max = start, min, max
        self.backoff, self.tolerance = backoff, tolerance
        self._limit = start
        self._epoch = 0
        self._baseline: float | None = None
        self._window_n = 0
        self._window_sum = 0.0
        self.increases = 0
        self.decreases = 0
        self.peak = start
        self._in_flight = 0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"AdaptiveLimit(start={self.start}, min={self.min}, max={self.max}, limit={self._limit})"

    def describe(self) -> str:
        """A short JSON-friendly description for manifests, e.g. 'auto(4..32, now 6)'."""
        return f"auto({self.min}..{self.max}, now {self._limit})"

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Requests dispatched under this limit (by any caller, in any thread) and not yet `done`."""
        return self._in_flight

    def has_room(self) -> bool:
        """Whether one more request may be dispatched now."""
        return self._in_flight < self._limit

    def new_run(self) -> None:
        """Forget the latency baseline and the current window; keep the limit learned so far."""
        with self._lock:
            self._baseline = None
            self._reset_window()

    def ticket(self) -> Ticket:
        """A ticket for one request about to be sent (counted in flight until `done`); then `bind` it."""
        with self._lock:
            self._in_flight += 1
            return Ticket(id(self), self._epoch)

    def done(self, ticket: Ticket) -> None:
        """The request of `ticket` is over (answered, failed or cancelled): its slot is free."""
        with self._lock:
            self._in_flight -= 1

    def bind(self, ticket: Ticket) -> None:
        """Make `ticket` the current request's for `on_retry`; call inside the task that sends it."""
        _CURRENT.set(ticket)

    def record_success(self, latency: float, ticket: Ticket | None = None) -> None:
        """A request finished well after `latency` seconds; may raise the limit or, if slow, lower it."""
        with self._lock:
            if ticket is not None and (ticket.retried or ticket.epoch != self._epoch):
                return  # its latency says nothing about the current limit
            self._window_n += 1
            self._window_sum += latency
            if self._window_n >= self._limit:
                self._close_window()

    def record_failure(self, ticket: Ticket | None = None) -> None:
        """A request (or one attempt of it) failed transiently: back off once per congestion event."""
        with self._lock:
            if ticket is not None:
                if ticket.epoch != self._epoch:
                    ticket.epoch, ticket.retried = self._epoch, True
                    return  # sent before the last back-off, which already answered this event
                ticket.retried = True
            self._decrease()
            if ticket is not None:
                ticket.epoch = self._epoch  # its retry is sent at the new limit

    def on_retry(self, error: Exception | None = None) -> None:
        """Hook for OpenAIChat(on_retry=...): an attempt failed transiently and will be retried.

        Args:
            error: the classified LLMRetryableError (unused: every transient failure counts).
        """
        ticket = _CURRENT.get()
        self.record_failure(ticket if ticket is not None and ticket.owner == id(self) else None)

    def _close_window(self) -> None:
        mean = self._window_sum / self._window_n
        self._reset_window()
        if self._baseline is None or mean < self._baseline:
            self._baseline = mean
        if mean > self.tolerance * self._baseline + _LATENCY_SLACK:
            self._decrease()
        elif self._limit < self.max:
            self._limit += 1
            self.increases += 1
            self.peak = max(self.peak, self._limit)

    def _decrease(self) -> None:
        lowered = max(self.min, min(self._limit - 1, math.floor(self._limit * self.backoff)))
        if lowered < self._limit:
            self._limit = lowered
            self.decreases += 1
        self._epoch += 1
        self._reset_window()

    def _reset_window(self) -> None:
        self._window_n = 0
        self._window_sum = 0.0


def parse_concurrency(value: str | int, *, start: int = 4, max: int = 32) -> int | AdaptiveLimit:
    """Turn a `--concurrency` value into what `run_requests` takes: an int, or 'auto' -> AdaptiveLimit.

    Args:
        value: a positive integer (or its text), or 'auto'.
        start: the adaptive limit's starting point.
        max: the adaptive limit's ceiling.

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AdaptiveLimit(start=min(start, max), max=max)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ConfigError(f"concurrency must be a positive integer or 'auto', got {value!r}")
    return number
