"""OpenAIChat against a faked OpenAI-compatible endpoint (httpx2.MockTransport), all offline."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable

import httpx2
import openai
import pytest

from engine.errors import ConfigError, LLMFatalError, LLMRetryableError
from engine.llm.client import OpenAIChat, estimate_tokens
from engine.types import SamplingParams

BASE = "http://llm.test/v1"
SECRET = "sk-secret-123"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a headline."}]
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=32, seed=11)


def chat_body(text: str = "Markets rally", usage: bool = True, finish: str = "stop") -> dict:
    body = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}
    return body


class FakeServer:
    """Answers from a list of responders in turn (the last one repeats) and records requests."""

    def __init__(self, *responders: Callable[[httpx2.Request], httpx2.Response]):
        self.responders = list(responders)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        responder = self.responders[min(len(self.requests), len(self.responders)) - 1]
        return responder(request)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def ok(text: str = "Markets rally", **kw) -> Callable:
    return lambda request: httpx2.Response(200, json=chat_body(text, **kw))


def status(code: int, headers: dict | None = None, message: str = "nope") -> Callable:
    return lambda request: httpx2.Response(code, json={"error": {"message": message}}, headers=headers or {})


def make(server: FakeServer, max_retries: int = 3, **kw) -> tuple[OpenAIChat, list[float]]:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    http = openai.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(server))
    client = OpenAIChat(BASE, "m", api_key=SECRET, max_retries=max_retries, http_client=http, sleep=fake_sleep, **kw)
    return client, sleeps


def complete(client: OpenAIChat, schema: dict | None = None):
    return asyncio.run(client.complete(MESSAGES, PARAMS, schema))


def test_success_returns_text_model_tokens_and_sends_sampling():
    server = FakeServer(ok("Markets rally on rate cut"))
    client, sleeps = make(server)
    completion = complete(client)
    assert completion.text == "Markets rally on rate cut"
    assert (completion.model, completion.prompt_tokens, completion.completion_tokens) == ("served-model", 21, 3)
    assert completion.finish_reason == "stop"
    (request,) = server.requests
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = server.bodies()[0]
    assert body == {"model": "m", "messages": MESSAGES, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 11}
    assert sleeps == []


def test_missing_usage_is_estimated_and_length_finish_is_kept():
    client, _ = make(FakeServer(ok("one two three four", usage=False, finish="length")))
    completion = complete(client)
    assert completion.prompt_tokens == estimate_tokens("Be brief.Write a headline.") > 0
    assert completion.completion_tokens == estimate_tokens("one two three four") > 0
    assert completion.finish_reason == "length"


def test_json_schema_is_sent_as_strict_response_format():
    server = FakeServer(ok('{"text": "x"}'))
    client, _ = make(server)
    schema = {"title": "example", "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    complete(client, schema)
    assert server.bodies()[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "example", "schema": schema, "strict": True},
    }


def test_429_with_retry_after_waits_that_long_then_succeeds():
    server = FakeServer(status(429, {"retry-after": "2"}), ok("after wait"))
    client, sleeps = make(server)
    assert complete(client).text == "after wait"
    assert sleeps == [2.0]
    assert len(server.requests) == 2


def test_retry_after_ms_header_is_honoured():
    client, sleeps = make(FakeServer(status(503, {"retry-after-ms": "250"}), ok()))
    complete(client)
    assert sleeps == [0.25]


def test_repeated_500_gives_retryable_error_after_backoff():
    server = FakeServer(status(500, message="kv cache full"))
    client, sleeps = make(server, max_retries=3, backoff=1.0)
    with pytest.raises(LLMRetryableError, match=r"answered 500: kv cache full.*gave up after 4 attempt"):
        complete(client)
    assert len(server.requests) == 4
    assert len(sleeps) == 3
    for tries, delay in enumerate(sleeps):  # equal jitter: between half and all of base * 2**tries
        assert 2**tries / 2 <= delay <= 2**tries


def test_401_is_fatal_at_once_and_never_shows_the_key(caplog):
    server = FakeServer(status(401, message="invalid api key"))
    client, sleeps = make(server)
    with caplog.at_level(logging.DEBUG), pytest.raises(LLMFatalError) as info:
        complete(client)
    message = str(info.value)
    assert BASE in message and "(401)" in message and "--api-key" in message
    assert SECRET not in message and SECRET not in caplog.text and SECRET not in repr(client)
    assert len(server.requests) == 1 and sleeps == []


@pytest.mark.parametrize(("code", "hint"), [(400, "rejected the request (400)"), (404, "--base-url"), (403, "(403)")])
def test_client_errors_are_fatal_without_retries(code, hint):
    server = FakeServer(status(code, message="bad thing"))
    client, _ = make(server)
    with pytest.raises(LLMFatalError, match=r"bad thing") as info:
        complete(client)
    assert hint in str(info.value)
    assert len(server.requests) == 1


def test_timeout_is_retried():
    def time_out(request):
        raise httpx2.ReadTimeout("slow", request=request)

    server = FakeServer(time_out, ok("finally"))
    client, sleeps = make(server, timeout=5)
    assert complete(client).text == "finally"
    assert len(sleeps) == 1


def test_timeouts_after_retries_are_retryable_not_fatal():
    def time_out(request):
        raise httpx2.ReadTimeout("slow", request=request)

    client, _ = make(FakeServer(time_out), max_retries=1, timeout=5)
    with pytest.raises(LLMRetryableError, match="did not answer within 5s"):
        complete(client)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_becomes_fatal_with_the_url():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client = OpenAIChat(url, "m", max_retries=2, sleep=fake_sleep)
    with pytest.raises(LLMFatalError, match="cannot reach the LLM endpoint at") as info:
        asyncio.run(client.complete(MESSAGES, PARAMS))
    assert url in str(info.value) and "is the server running?" in str(info.value)
    assert len(sleeps) == 2  # it did retry before giving up


@pytest.mark.parametrize(
    "responder",
    [
        lambda r: httpx2.Response(200, text="<html>hello</html>", headers={"content-type": "text/html"}),
        lambda r: httpx2.Response(200, text="{not json", headers={"content-type": "application/json"}),
        lambda r: httpx2.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}),
    ],
    ids=["html", "broken-json", "no-choices"],
)
def test_garbage_body_is_retried_then_retryable_error(responder):
    server = FakeServer(responder)
    client, _ = make(server, max_retries=1)
    with pytest.raises(LLMRetryableError, match="not an OpenAI chat response.*--base-url"):
        complete(client)
    assert len(server.requests) == 2


def models(*names: str) -> Callable:
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "me"} for n in names]
    return lambda request: httpx2.Response(200, json={"object": "list", "data": data})


def test_check_passes_when_the_model_is_listed():
    server = FakeServer(models("other", "m"))
    client, _ = make(server)
    assert asyncio.run(client.check()) == ("other", "m")
    assert server.requests[0].method == "GET" and str(server.requests[0].url) == f"{BASE}/models"


def test_check_fails_when_the_model_is_not_served():
    client, _ = make(FakeServer(models("qwen", "smol")))
    with pytest.raises(LLMFatalError, match=r"model 'm' is not served by .*\['qwen', 'smol'\].*--model"):
        asyncio.run(client.check())


def test_check_accepts_servers_without_a_model_list():
    client, _ = make(FakeServer(status(404)))
    assert asyncio.run(client.check()) == ()


def test_check_reports_a_rejected_key_and_a_dead_endpoint():
    client, _ = make(FakeServer(status(401)))
    with pytest.raises(LLMFatalError, match="rejected the API key"):
        asyncio.run(client.check())
    dead, _ = make(FakeServer(status(502)), max_retries=0)
    with pytest.raises(LLMFatalError, match="does not answer GET /models properly"):
        asyncio.run(dead.check())


def test_async_context_manager_closes_the_http_client():
    http = openai.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(FakeServer(ok())))

    async def use() -> None:
        async with OpenAIChat(BASE, "m", http_client=http) as client:
            await client.complete(MESSAGES, PARAMS)

    asyncio.run(use())
    assert http.is_closed


def test_one_client_works_across_event_loops():
    server = FakeServer(ok("again"))
    client, _ = make(server)
    assert complete(client).text == "again"
    assert complete(client).text == "again"  # a second asyncio.run must not hit a closed loop


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(base_url="localhost:8080", model="m"), "must start with http"),
        (dict(base_url=BASE, model=""), "model must be a non-empty name"),
        (dict(base_url=BASE, model="m", max_retries=-1), "max_retries >= 0"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OpenAIChat(**kwargs)


class _ChatHandler(__import__("http.server").server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a pooled connection outlives the first event loop

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["content-length"]))
        payload = json.dumps(chat_body("from a real socket")).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_real_loopback_server_across_event_loops():
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = OpenAIChat(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", max_retries=0)
        # Two event loops, one client: its connection pool must be rebuilt for the second loop.
        assert asyncio.run(client.complete(MESSAGES, PARAMS)).text == "from a real socket"
        assert asyncio.run(client.complete(MESSAGES, PARAMS)).text == "from a real socket"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("message", [
    "request (2065 tokens) exceeds the available context size (2048 tokens), try increasing it",  # llama.cpp
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",  # OpenAI
])
def test_a_prompt_longer_than_the_context_is_a_per_request_error_not_fatal(message):
    from engine.errors import LLMPromptTooLongError

    server = FakeServer(status(400, message=message))
    client, sleeps = make(server)
    with pytest.raises(LLMPromptTooLongError, match="context window") as caught:
        complete(client)
    assert not isinstance(caught.value, (LLMFatalError, LLMRetryableError))
    assert len(server.requests) == 1 and sleeps == []  # not retried: it would fail the same way


def test_lone_surrogates_in_an_answer_become_replacement_characters():
    client, _ = make(FakeServer(lambda request: httpx2.Response(
        200, content=json.dumps(chat_body("cut mid-emoji \ud83d")).encode("ascii"), headers={"content-type": "application/json"})))
    text = complete(client).text
    assert text.startswith("cut mid-emoji ") and text.encode("utf-8")  # writable as UTF-8


@pytest.mark.parametrize("extra, cached", [
    ({"usage": {"prompt_tokens": 21, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 16}}}, 16),
    ({"timings": {"cache_n": 12, "prompt_n": 9}}, 12),  # an older llama-server: only its timings say
    ({}, None),  # the endpoint does not say: unknown, not zero
])
def test_prompt_tokens_from_the_servers_prefix_cache_are_recorded(extra, cached):
    def respond(request):
        return httpx2.Response(200, json={**chat_body(), **extra})

    client, _ = make(FakeServer(respond))
    assert complete(client).cached_tokens == cached


def test_the_fake_server_reports_a_shared_prefix_as_cached():
    from engine.testing import FakeOpenAIServer

    shared = [{"role": "system", "content": "one two three four five"}]

    async def go(base_url: str) -> list:
        async with OpenAIChat(base_url, "fake-model") as llm:
            return [await llm.complete(shared + [{"role": "user", "content": text}], PARAMS)
                    for text in ("six seven", "six eight", "nine")]

    with FakeOpenAIServer(prefix_cache=2) as server:
        answers = asyncio.run(go(server.base_url))
    assert [a.cached_tokens for a in answers] == [0, 6, 5]
    with FakeOpenAIServer() as server:
        assert asyncio.run(go(server.base_url))[1].cached_tokens is None


def test_server_specific_sampling_goes_in_the_body_beside_the_standard_fields():
    server = FakeServer(ok("Markets rally"))
    client, _ = make(server)
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=32, seed=11, extra=(("min_p", 0.05), ("xtc_probability", 0.5)))
    asyncio.run(client.complete(MESSAGES, params))
    assert server.bodies()[0] == {"model": "m", "messages": MESSAGES, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32,
                                  "seed": 11, "min_p": 0.05, "xtc_probability": 0.5}
