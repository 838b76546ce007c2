"""AdaptiveLimit: AIMD on recorded outcomes, in the runner, and against a fake server with hidden capacity."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import ConfigError, LLMFatalError, LLMRetryableError
from engine.llm.adaptive import AdaptiveLimit, parse_concurrency
from engine.llm.client import OpenAIChat
from engine.testing import ScriptedLLM
from engine.testing import FakeOpenAIServer, Fault
from engine.llm.runner import run_requests, run_requests_sync
from engine.types import Completion, Request, SamplingParams


def make_requests(n: int) -> list[Request]:
    return [
        Request(id=f"r{i}", label="L", messages=(("user", f"prompt {i}"),), template_id="t", template_sha256="s",
                sampling=SamplingParams(seed=i))
        for i in range(n)
    ]


def feed(limit: AdaptiveLimit, windows: int, latency: float = 0.1) -> list[int]:
    """Report `windows` full windows of successes at `latency`; return the limit after each."""
    seen = []
    for _ in range(windows):
        for _ in range(limit.limit):
            limit.record_success(latency)
        seen.append(limit.limit)
    return seen


def test_the_limit_rises_by_one_per_clean_window_and_never_exceeds_max():
    limit = AdaptiveLimit(start=4, max=7)
    assert feed(limit, 5) == [5, 6, 7, 7, 7]
    assert limit.peak == 7 and limit.increases == 3 and limit.decreases == 0


def test_a_partial_window_does_not_raise_the_limit():
    limit = AdaptiveLimit(start=4)
    for _ in range(3):
        limit.record_success(0.1)
    assert limit.limit == 4


def test_a_failure_backs_off_multiplicatively_down_to_min():
    limit = AdaptiveLimit(start=16, min=2, max=32)
    steps = []
    for _ in range(6):
        limit.record_failure()
        steps.append(limit.limit)
    assert steps == [12, 9, 6, 4, 3, 2]
    limit.record_failure()
    assert limit.limit == 2 and limit.decreases == 6  # at min: no further step counted


def test_one_congestion_event_backs_off_once_not_once_per_request():
    limit = AdaptiveLimit(start=8)
    tickets = [limit.ticket() for _ in range(8)]  # eight requests in flight at limit 8
    for ticket in tickets[:5]:  # five of them hit the same overload
        limit.record_failure(ticket)
    assert limit.limit == 6 and limit.decreases == 1
    limit.record_failure(tickets[0])  # that request's retry, sent at the new limit, fails too
    assert limit.limit == 4 and limit.decreases == 2


def test_latency_growing_past_the_tolerance_backs_off():
    limit = AdaptiveLimit(start=4, tolerance=2.0)
    feed(limit, 2, latency=0.1)
    assert limit.limit == 6
    feed(limit, 1, latency=0.19)  # slower but within 2x the best window: still rising
    assert limit.limit == 7
    feed(limit, 1, latency=0.25)
    assert limit.limit == 5 and limit.decreases == 1


def test_retried_or_stale_requests_give_no_latency_sample():
    limit = AdaptiveLimit(start=2)
    stale = limit.ticket()
    retried = limit.ticket()
    limit.record_failure(retried)  # back off to 1; `stale` was sent before it
    limit.record_success(60.0, retried)  # includes the backoff wait: ignored
    limit.record_success(60.0, stale)
    assert limit.limit == 1 and limit._window_n == 0
    assert feed(limit, 1, latency=0.1) == [2]  # a fresh baseline after the back-off


def test_new_run_forgets_the_latency_baseline_but_keeps_the_limit():
    limit = AdaptiveLimit(start=4)
    feed(limit, 2, latency=0.01)  # fast judge calls
    limit.new_run()
    assert feed(limit, 1, latency=1.0) == [7]  # slow generation calls are not "overload"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"start": 0}, "1 <= min <= start <= max"), ({"start": 8, "max": 4}, "start=8, max=4"),
     ({"backoff": 1.0}, "0 < backoff < 1"), ({"tolerance": 1.0}, "tolerance > 1")],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AdaptiveLimit(**kwargs)


def test_parse_concurrency_reads_numbers_and_auto():
    assert parse_concurrency("8") == 8 and parse_concurrency(3) == 3
    auto = parse_concurrency("auto", max=16)
    assert isinstance(auto, AdaptiveLimit) and (auto.limit, auto.max) == (4, 16)
    assert auto.describe() == "auto(1..16, now 4)"
    for bad in ("0", "many", -2):
        with pytest.raises(ConfigError, match="positive integer or 'auto'"):
            parse_concurrency(bad)


def test_the_runner_follows_the_limit_up_and_delivers_every_result_once():
    llm = ScriptedLLM(delay=0.04)
    limit = AdaptiveLimit(start=2, max=5, tolerance=100.0)  # a loaded test machine must not look like overload
    delivered: list[str] = []
    run_requests_sync(llm, make_requests(40), concurrency=limit, on_result=lambda r, c: delivered.append(r.id))
    assert sorted(delivered) == sorted(f"r{i}" for i in range(40))
    assert limit.peak == 5 and llm.max_in_flight == 5  # rose to max, never past it


def test_the_runner_backs_off_on_failures_and_delivers_them():
    errors = [LLMRetryableError("503") for _ in range(3)]
    llm = ScriptedLLM([*errors, *(["ok"] * 9)])
    limit = AdaptiveLimit(start=4, max=4)
    delivered: list[object] = []
    run_requests_sync(llm, make_requests(12), concurrency=limit, on_result=lambda r, c: delivered.append(c))
    assert sum(isinstance(item, LLMRetryableError) for item in delivered) == 3
    assert sum(isinstance(item, Completion) for item in delivered) == 9
    assert limit.decreases == 1  # three failures of one event, one back-off


def test_a_fatal_error_cancels_the_rest_under_an_adaptive_limit():
    llm = ScriptedLLM(["a", LLMFatalError("key rejected"), *(["never"] * 10)], delay=0.01)
    delivered: list[str] = []
    with pytest.raises(LLMFatalError, match="key rejected"):
        run_requests_sync(llm, make_requests(12), concurrency=AdaptiveLimit(start=1, max=1),
                          on_result=lambda r, c: delivered.append(c.text))
    assert delivered == ["a"] and len(llm.calls) == 2


def test_an_exception_in_on_result_stops_an_adaptive_run():
    def explode(request, completion):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_requests_sync(ScriptedLLM(), make_requests(3), concurrency=AdaptiveLimit(start=2), on_result=explode)


def test_the_client_reports_each_retried_failure_before_retrying():
    limit = AdaptiveLimit(start=8)
    seen: list[str] = []

    def on_retry(error):
        seen.append(str(error))
        limit.on_retry(error)

    async def go(srv: FakeOpenAIServer) -> Completion:
        async with OpenAIChat(srv.base_url, srv.model, backoff=0.001, on_retry=on_retry) as llm:
            return await llm.complete([{"role": "user", "content": "hi"}], SamplingParams())

    with FakeOpenAIServer(schedule=[Fault.rate_limit(retry_after=0.01), Fault.error(503)]) as srv:
        assert asyncio.run(go(srv)).text
    assert len(seen) == 2 and "429" in seen[0] and "503" in seen[1]
    assert limit.limit == 4  # 8 -> 6 -> 4: outside the runner every report counts


def test_against_a_server_with_hidden_capacity_it_backs_off_and_loses_nothing():
    limit = AdaptiveLimit(start=2, max=12, tolerance=100.0)  # here only the 429s should steer it
    delivered: list[object] = []

    async def go(srv: FakeOpenAIServer) -> None:
        async with OpenAIChat(srv.base_url, srv.model, max_retries=6, backoff=0.01, on_retry=limit.on_retry) as llm:
            await run_requests(llm, make_requests(60), concurrency=limit, on_result=lambda r, c: delivered.append(c))

    with FakeOpenAIServer(capacity=3, latency=0.03, overload_retry_after=0.02) as srv:
        asyncio.run(go(srv))
    assert len(delivered) == 60 and all(isinstance(item, Completion) for item in delivered)
    assert limit.decreases >= 1 and 3 < limit.peak < 12  # it probed past the capacity and came back
    # A fixed 12 makes 30-60 of these requests bounce with 429; probing costs a handful.
    assert srv.count - 60 <= 15
