"""run_requests: bounded concurrency, results as they complete, fatal errors stop the run."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.errors import ConfigError, LLMFatalError, LLMRetryableError
from engine.llm.client import OpenAIChat
from engine.testing import ScriptedLLM
from engine.llm.runner import ChatLLM, run_requests, run_requests_sync
from engine.types import Completion, Request, SamplingParams


def make_requests(n: int) -> list[Request]:
    return [
        Request(
            id=f"r{i}",
            label="L",
            messages=(("user", f"prompt {i}"),),
            template_id="t",
            template_sha256="s",
            sampling=SamplingParams(seed=i),
        )
        for i in range(n)
    ]


class PerPromptLLM:
    """Answers each prompt after its own delay, or raises what the table says."""

    model = "per-prompt"

    def __init__(self, delays: dict[str, float], errors: dict[str, Exception] | None = None):
        self.delays = delays
        self.errors = errors or {}
        self.started: list[str] = []

    async def complete(self, messages, params, json_schema=None) -> Completion:
        prompt = messages[-1]["content"]
        self.started.append(prompt)
        await asyncio.sleep(self.delays.get(prompt, 0.0))
        if prompt in self.errors:
            raise self.errors[prompt]
        return Completion(text=f"answer to {prompt}", model=self.model)

    async def check(self):
        return (self.model,)

    async def close(self):
        pass


@pytest.mark.parametrize("concurrency", [1, 3, 4])
def test_in_flight_requests_reach_but_never_exceed_concurrency(concurrency):
    llm = ScriptedLLM(delay=0.02)
    delivered: list[str] = []
    run_requests_sync(llm, make_requests(12), concurrency=concurrency, on_result=lambda r, c: delivered.append(r.id))
    assert llm.max_in_flight == concurrency
    assert sorted(delivered) == sorted(f"r{i}" for i in range(12))


def test_results_are_delivered_as_they_complete_not_in_order():
    llm = PerPromptLLM({"prompt 0": 0.15, "prompt 1": 0.0, "prompt 2": 0.05})
    delivered: list[tuple[str, str]] = []
    run_requests_sync(llm, make_requests(3), concurrency=3, on_result=lambda r, c: delivered.append((r.id, c.text)))
    assert delivered == [("r1", "answer to prompt 1"), ("r2", "answer to prompt 2"), ("r0", "answer to prompt 0")]


def test_messages_sampling_and_schema_reach_the_llm():
    llm = ScriptedLLM(["ok"])
    request = Request(
        id="x", label="L", messages=(("system", "s"), ("user", "u")), template_id="t", template_sha256="h",
        sampling=SamplingParams(seed=5), json_schema={"type": "object"},
    )
    run_requests_sync(llm, [request], concurrency=2, on_result=lambda r, c: None)
    (call,) = llm.calls
    assert call.messages == (("system", "s"), ("user", "u"))
    assert call.params.seed == 5 and call.json_schema == {"type": "object"}


def test_retryable_errors_are_delivered_and_the_run_goes_on():
    error = LLMRetryableError("503 after retries")
    llm = ScriptedLLM(["a", error, "c"])
    delivered: list[object] = []
    run_requests_sync(llm, make_requests(3), concurrency=1, on_result=lambda r, c: delivered.append(c))
    assert [getattr(item, "text", item) for item in delivered] == ["a", error, "c"]


def test_fatal_error_stops_the_run_after_delivering_what_finished():
    llm = ScriptedLLM(["a", "b", LLMFatalError("key rejected"), "never"])
    delivered: list[str] = []
    with pytest.raises(LLMFatalError, match="key rejected"):
        run_requests_sync(llm, make_requests(6), concurrency=1, on_result=lambda r, c: delivered.append(c.text))
    assert delivered == ["a", "b"]
    assert len(llm.calls) == 3  # nothing was sent after the fatal error


def test_fatal_error_cancels_requests_in_flight():
    llm = PerPromptLLM(
        {"prompt 0": 0.0, "prompt 1": 0.02, **{f"prompt {i}": 60.0 for i in range(2, 10)}},
        errors={"prompt 1": LLMFatalError("endpoint gone")},
    )
    delivered: list[str] = []
    started = time.perf_counter()
    with pytest.raises(LLMFatalError, match="endpoint gone"):
        run_requests_sync(llm, make_requests(10), concurrency=4, on_result=lambda r, c: delivered.append(r.id))
    assert time.perf_counter() - started < 30.0  # the 60 s requests were cancelled, not awaited
    assert delivered == ["r0"]
    assert llm.started == ["prompt 0", "prompt 1", "prompt 2", "prompt 3", "prompt 4"]  # 5+ never sent


def test_an_exception_in_on_result_stops_the_run():
    def explode(request, completion):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_requests_sync(ScriptedLLM(), make_requests(3), concurrency=2, on_result=explode)


def test_no_requests_is_a_no_op_and_bad_concurrency_is_a_config_error():
    llm = ScriptedLLM()
    run_requests_sync(llm, [], concurrency=2, on_result=lambda r, c: pytest.fail("nothing to deliver"))
    assert llm.calls == []
    with pytest.raises(ConfigError, match="concurrency must be at least 1, got 0"):
        run_requests_sync(llm, make_requests(1), concurrency=0, on_result=lambda r, c: None)


def test_sync_wrapper_refuses_to_nest_in_a_running_loop():
    async def inside() -> None:
        run_requests_sync(ScriptedLLM(), make_requests(1), concurrency=1, on_result=lambda r, c: None)

    with pytest.raises(RuntimeError, match="await run_requests"):
        asyncio.run(inside())


def test_async_entry_point_works_inside_a_loop():
    delivered: list[str] = []
    asyncio.run(run_requests(ScriptedLLM(), make_requests(2), concurrency=2, on_result=lambda r, c: delivered.append(r.id)))
    assert sorted(delivered) == ["r0", "r1"]


def test_both_llms_satisfy_the_protocol():
    assert isinstance(ScriptedLLM(), ChatLLM)
    assert isinstance(OpenAIChat("http://127.0.0.1:1/v1", "m"), ChatLLM)


def test_blocking_runs_close_their_connections_in_their_own_event_loop(capfd):
    # Each run_requests_sync is its own asyncio.run: a connection pool left open would be
    # garbage-collected inside a later loop and print "Event loop is closed" tracebacks.
    import gc

    from engine.llm.client import OpenAIChat
    from engine.testing import FakeOpenAIServer

    answers = []
    with FakeOpenAIServer() as server:
        llm = OpenAIChat(server.base_url, "fake-model", max_retries=0)
        for _ in range(3):
            run_requests_sync(llm, make_requests(3), concurrency=2, on_result=lambda r, res: answers.append(res))
            gc.collect()
    assert len(answers) == 9 and all(a.text for a in answers)
    assert "Event loop is closed" not in capfd.readouterr().err
