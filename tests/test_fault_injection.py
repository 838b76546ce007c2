"""The real OpenAIChat client against FakeOpenAIServer on loopback: every fault the network can serve."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.errors import ConfigError, LLMFatalError, LLMPromptTooLongError, LLMRetryableError
from engine.llm.client import OpenAIChat
from engine.testing import default_answer
from engine.testing import FakeOpenAIServer, Fault, read_request_log
from engine.types import Completion, SamplingParams

MESSAGES = [
    {"role": "system", "content": "Write one news headline."},
    {"role": "user", "content": "Write about markets.\nPassage:\nStocks rallied on Tuesday as investors cheered a rate cut."},
]
PARAMS = SamplingParams(max_tokens=32, seed=3)
OVERFLOW = "request (2065 tokens) exceeds the available context size (2048 tokens), try increasing it"


def client(srv: FakeOpenAIServer, **kw) -> OpenAIChat:
    settings = {"timeout": 2.0, "max_retries": 3, "backoff": 0.02, "max_backoff": 0.1, **kw}
    return OpenAIChat(srv.base_url, srv.model, **settings)


def complete(llm: OpenAIChat, messages=MESSAGES) -> Completion:
    async def run() -> Completion:
        async with llm:
            return await llm.complete(messages, PARAMS)

    return asyncio.run(run())


def gaps(srv: FakeOpenAIServer) -> list[float]:
    times = [r.received_at for r in srv.requests if r.number]
    return [later - earlier for earlier, later in zip(times, times[1:])]


def test_a_clean_answer_is_deterministic_with_usage_and_the_request_is_recorded():
    with FakeOpenAIServer() as srv:
        first, second = complete(client(srv)), complete(client(srv))
        bodies = srv.chat_bodies()
    assert first.text == second.text == default_answer(MESSAGES)
    assert first.model == "fake-model" and first.prompt_tokens > 10 and first.completion_tokens == len(first.text.split())
    assert srv.count == 2 and bodies[0]["messages"] == MESSAGES and bodies[0]["seed"] == 3


def test_an_answer_slower_than_the_client_timeout_is_retried():
    with FakeOpenAIServer(schedule={1: Fault.slow(30.0)}) as srv:
        completion = complete(client(srv, timeout=0.3))
    assert completion.text == default_answer(MESSAGES)
    # gave up on the first after its timeout, long before the 30 s answer (the bound has 20 s of slack)
    assert srv.count == 2 and 0.3 <= gaps(srv)[0] < 10.0


def test_a_dropped_connection_is_retried():
    with FakeOpenAIServer(schedule=[Fault.drop(), Fault.drop()]) as srv:
        assert complete(client(srv)).text == default_answer(MESSAGES)
    assert srv.count == 3


def test_dropped_connections_after_retries_are_retryable_not_fatal():
    with FakeOpenAIServer(schedule=lambda n, body: Fault.drop()) as srv:
        with pytest.raises(LLMRetryableError, match="Server disconnected.*gave up after 3 attempt"):
            complete(client(srv, max_retries=2))
    assert srv.count == 3


def test_429_retry_after_is_honoured():
    with FakeOpenAIServer(schedule={1: Fault.rate_limit(retry_after=0.4)}) as srv:
        assert complete(client(srv, backoff=0.001)).text == default_answer(MESSAGES)
    assert srv.count == 2
    assert gaps(srv)[0] >= 0.4  # the server's wait, not the client's 1 ms backoff


def test_500_is_retried_with_growing_backoff():
    with FakeOpenAIServer(schedule=[Fault.error(500), Fault.error(503), Fault.error(500)]) as srv:
        assert complete(client(srv, backoff=0.1, max_backoff=1.0)).text == default_answer(MESSAGES)
    first, second, third = gaps(srv)
    assert srv.count == 4
    assert first >= 0.05 and second >= 0.1 and third >= 0.2  # at least half of 0.1 * 2**k each time


def test_garbage_is_retried_then_a_clean_retryable_error():
    with FakeOpenAIServer(schedule=lambda n, body: Fault.garbage()) as srv:
        with pytest.raises(LLMRetryableError, match="not an OpenAI chat response.*gave up after 3 attempt"):
            complete(client(srv, max_retries=2))
    assert srv.count == 3


def test_broken_json_then_a_good_answer_succeeds():
    broken = Fault.garbage('{"choices": [', content_type="application/json")
    with FakeOpenAIServer(schedule=[broken]) as srv:
        assert complete(client(srv)).text == default_answer(MESSAGES)
    assert srv.count == 2


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        (Fault.error(401, "invalid api key"), LLMFatalError, "rejected the API key"),
        (Fault.error(400, "unknown field 'foo'"), LLMFatalError, r"rejected the request \(400\): unknown field"),
        (Fault.error(400, OVERFLOW, "exceed_context_size_error"), LLMPromptTooLongError, "context window"),
    ],
    ids=["401", "400", "context-overflow"],
)
def test_client_errors_fail_at_once_with_one_request(fault, error, message):
    with FakeOpenAIServer(schedule=lambda n, body: fault) as srv:
        with pytest.raises(error, match=message) as caught:
            complete(client(srv))
    assert srv.count == 1
    if error is LLMPromptTooLongError:
        assert not isinstance(caught.value, (LLMFatalError, LLMRetryableError))


def test_a_wrong_api_key_is_rejected_by_the_server_itself():
    with FakeOpenAIServer(api_key="right") as srv:
        with pytest.raises(LLMFatalError, match="rejected the API key"):
            complete(client(srv, api_key="wrong"))
        assert complete(client(srv, api_key="right")).text
    assert srv.count == 1  # the rejected request never reached the chat route


def test_check_lists_the_served_model():
    async def check(llm: OpenAIChat) -> tuple[str, ...]:
        async with llm:
            return await llm.check()

    with FakeOpenAIServer(model="tiny") as srv:
        assert asyncio.run(check(OpenAIChat(srv.base_url, "tiny"))) == ("tiny",)
        assert [(r.method, r.path) for r in srv.requests] == [("GET", "/v1/models")]


def test_capacity_rejects_requests_beyond_it_with_429():
    async def burst(llm: OpenAIChat) -> list[object]:
        async with llm:
            return await asyncio.gather(*(llm.complete(MESSAGES, PARAMS) for _ in range(4)), return_exceptions=True)

    with FakeOpenAIServer(capacity=2, latency=0.3) as srv:
        results = asyncio.run(burst(client(srv, max_retries=0)))
    assert sum(isinstance(r, Completion) for r in results) == 2
    assert sum(isinstance(r, LLMRetryableError) and "429" in str(r) for r in results) == 2
    assert srv.count == 4 and srv.max_in_flight >= 3  # the rejected ones were answered at once


def test_slow_overload_degrades_latency_instead_of_rejecting():
    async def burst(llm: OpenAIChat) -> list[Completion]:
        async with llm:
            return await asyncio.gather(*(llm.complete(MESSAGES, PARAMS) for _ in range(4)))

    # Past capacity the server slows down (4 in flight on 2 slots: 0.1 * (4/2)**2 = 0.4 s) instead of
    # answering 429. What is asserted is counted by the server, not timed: all four were admitted at
    # once and none was retried. The client's timeout is far above the slowest answer, so a loaded
    # machine cannot turn a slow answer into a retry.
    with FakeOpenAIServer(capacity=2, latency=0.1, overload="slow") as srv:
        assert len(asyncio.run(burst(client(srv, max_retries=0, timeout=60.0)))) == 4
    assert srv.max_in_flight == 4 and srv.count == 4


def test_the_request_log_counts_every_call(tmp_path):
    log = tmp_path / "requests.jsonl"
    with FakeOpenAIServer(schedule={1: Fault.error(503)}, log_path=log) as srv:
        complete(client(srv))
    entries = read_request_log(log)
    assert [(e["number"], e["fault"]) for e in entries] == [(1, "status"), (2, None)]
    assert all(json.dumps(e) for e in entries)


def test_unknown_routes_404_and_bad_settings_are_config_errors():
    with FakeOpenAIServer() as srv:
        with pytest.raises(LLMFatalError, match="404"):
            complete(OpenAIChat(srv.base_url.removesuffix("/v1") + "/v2", "fake-model", max_retries=0))
    with pytest.raises(ConfigError, match="capacity"):
        FakeOpenAIServer(capacity=0)
    with pytest.raises(RuntimeError, match="with"):
        _ = FakeOpenAIServer().base_url
