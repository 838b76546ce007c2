"""The one client to any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama).

Retries are ours, not the SDK's: exponential backoff with jitter, honouring Retry-After, for
timeouts, connection errors, 429 and 5xx. Errors come out as LLMFatalError (stop the run) or
LLMRetryableError (this request failed; try it again on resume).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from engine.errors import ConfigError, LLMError, LLMFatalError, LLMPromptTooLongError, LLMRetryableError
from engine.types import Completion, SamplingParams

__all__ = ["OpenAIChat", "estimate_tokens"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRYABLE_STATUS = {408, 409, 429}
_MAX_RETRY_AFTER = 120.0
# How servers word "the prompt is longer than the context window" (llama.cpp, OpenAI, vLLM, TGI).
_CONTEXT_OVERFLOW = re.compile(
    r"exceeds? the available context|context[_ ]length[_ ]exceeded|maximum context length|"
    r"exceed_context_size|context window|too many tokens|input is too long",
    re.IGNORECASE,
)


class _MalformedResponse(Exception):
    """The endpoint answered 2xx with something that is not a chat completion."""


def estimate_tokens(text: str) -> int:
    """A rough token count (about 4 characters per token) for servers that send no `usage`."""
    return math.ceil(len(text) / 4) if text else 0


class OpenAIChat:
    """Async chat client for one model behind one OpenAI-compatible base URL.

    Args:
        base_url: e.g. `http://127.0.0.1:8080/v1`.
        model: the model name the server knows.
        api_key: sent as a bearer token; local servers ignore it. Never logged.
        timeout: seconds per attempt.
        max_retries: extra attempts after the first for transient failures.
        http_client: an `httpx2.AsyncClient` (e.g. with a MockTransport) for tests.
        backoff: base delay in seconds; attempt k waits about backoff * 2**k (capped, jittered).
        sleep: the coroutine used to wait between attempts (injectable for tests).
        on_retry: called with the LLMRetryableError of each failed attempt just before the client
            waits and retries (e.g. `AdaptiveLimit.on_retry`, so 429s and timeouts lower the
            concurrency even when a retry then succeeds). It must not block.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout: float = 300.0,
        max_retries: int = 4,
        http_client: Any | None = None,
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[LLMRetryableError], None] | None = None,
    ):
        if not re.match(r"^https?://", base_url or ""):
            raise ConfigError(
                f"base_url must start with http:// or https://, got {base_url!r}; e.g. http://127.0.0.1:8080/v1"
            )
        if not model:
            raise ConfigError("model must be a non-empty name, got ''; pass the name the server serves")
        if max_retries < 0 or timeout <= 0:
            raise ConfigError(f"need max_retries >= 0 and timeout > 0, got {max_retries} and {timeout}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self._api_key = api_key
        self._http_client = http_client
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._on_retry = on_retry
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None
        # Imported now, in the thread that makes the client. The openai SDK looks at sys.modules["httpx"]
        # on every request; when another thread imports httpx for the first time meanwhile (in `seedbed
        # serve`, a job's first use of huggingface_hub does), the SDK sees a half-initialised module:
        # "AttributeError: partially initialized module 'httpx' has no attribute 'Timeout'", a 500 on
        # 1 to 2 chats in 700 (benchmarks/bench_soak.py, 2026-12-06). Loaded here, it is whole.
        import httpx  # noqa: F401
        import openai  # noqa: F401

    def __repr__(self) -> str:
        return f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r})"

    def clone(self) -> "OpenAIChat":
        """A client with the same settings and its own connection pool (for another thread's event loop)."""
        return OpenAIChat(self.base_url, self.model, self._api_key, self.timeout, self.max_retries,
                          backoff=self._backoff, max_backoff=self._max_backoff, sleep=self._sleep,
                          on_retry=self._on_retry)

    async def __aenter__(self) -> OpenAIChat:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections this client opened (an injected http_client is closed too)."""
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def release_loop(self) -> None:
        """Close the connections opened in the running event loop before it ends (not an injected client).

        `run_requests_sync` calls this at the end of each `asyncio.run`: a pool left open would be
        garbage-collected later inside another loop and log "Event loop is closed" tracebacks.
        """
        if self._sdk is not None and self._http_client is None and self._sdk_loop is asyncio.get_running_loop():
            await self._sdk.close()
            self._sdk = None

    def _client(self) -> Any:
        # Built lazily and per event loop: connection pools belong to the loop that opened them,
        # and callers may run several asyncio.run() calls with one client.
        loop = asyncio.get_running_loop()
        if self._sdk is None or (self._sdk_loop is not loop and self._http_client is None):
            import openai  # imported here so importing engine stays cheap

            self._sdk = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self.timeout,
                max_retries=0,
                http_client=self._http_client,
            )
            self._sdk_loop = loop
        return self._sdk

    async def complete(
        self,
        messages: list[dict[str, str]],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Send one chat request and return its text and token counts.

        Raises:
            LLMFatalError: bad key, bad request, unknown route/model, or unreachable after retries.
            LLMRetryableError: still failing transiently (timeout, 429, 5xx, garbage) after retries.
        """
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, **_sampling(params)}
        if json_schema is not None:
            kwargs["response_format"] = _response_format(json_schema)
        response = await self._with_retries(lambda: self._create(kwargs))
        return _to_completion(response, messages, self.model)

    async def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> AsyncIterator[str]:
        """Send one chat request with `stream: true` and yield the answer's text pieces as they come.

        Opening the stream is retried like `complete`; a failure after the first piece is raised
        as the mapped LLMError (a half-streamed answer cannot be retried transparently).
        """
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, **_sampling(params), "stream": True}
        stream = await self._with_retries(lambda: self._client().chat.completions.create(**kwargs))
        try:
            async for chunk in stream:
                choices = getattr(chunk, "choices", None) or []
                piece = getattr(getattr(choices[0], "delta", None), "content", None) if choices else None
                if piece:
                    yield _valid_unicode(piece)
        except LLMError:
            raise
        except Exception as exc:  # mapped like any transport failure; unknown ones re-raised by _classify
            raise self._classify(exc) from exc

    async def _create(self, kwargs: dict[str, Any]) -> Any:
        response = await self._client().chat.completions.create(**kwargs)
        if not getattr(response, "choices", None):
            raise _MalformedResponse(f"no choices in the answer: {str(response)[:200]!r}")
        return response

    async def check(self) -> tuple[str, ...]:
        """Fail fast before a run: the endpoint answers GET /models and lists our model if it lists any.

        Returns:
            The model names the server lists (empty if it does not implement /models).
        Raises:
            LLMFatalError: unreachable, key rejected, not an OpenAI-compatible endpoint, or the
                model is not among those served.
        """
        try:
            served = await self._with_retries(self._list_models)
        except LLMRetryableError as exc:
            raise LLMFatalError(f"the endpoint at {self.base_url} does not answer GET /models properly: {exc}") from exc
        if served and self.model not in served:
            raise LLMFatalError(
                f"model {self.model!r} is not served by {self.base_url}; it serves {list(served)}; "
                "set --model to one of them"
            )
        return served

    async def _list_models(self) -> tuple[str, ...]:
        import openai

        try:
            page = await self._client().models.list()
        except openai.NotFoundError:
            return ()  # the server answers but does not list models: nothing to verify
        except (AttributeError, TypeError, ValueError) as exc:  # the SDK choking on a non-API body (e.g. HTML)
            raise LLMFatalError(
                f"the endpoint at {self.base_url} is not an OpenAI-compatible API (GET /models answered "
                f"something unreadable: {type(exc).__name__}); check --base-url, which usually ends in /v1"
            ) from None
        data = getattr(page, "data", None)
        if not isinstance(data, list):
            raise _MalformedResponse(f"GET /models did not return a model list: {str(page)[:200]!r}")
        return tuple(str(getattr(item, "id", "")) for item in data)

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        tries = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:  # classified below; anything we do not know is re-raised
                error = self._classify(exc)
                if not isinstance(error, LLMRetryableError):
                    raise error from exc
                if tries >= self.max_retries:
                    raise self._give_up(error, exc, tries + 1) from exc
                delay = self._delay(tries, error.retry_after)
                log.warning("LLM call failed (%s); retry %d/%d in %.1fs", error, tries + 1, self.max_retries, delay)
                if self._on_retry is not None:
                    self._on_retry(error)
                await self._sleep(delay)
                tries += 1

    def _delay(self, tries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _MAX_RETRY_AFTER)
        ceiling = min(self._max_backoff, self._backoff * 2**tries)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter": spread, never zero

    def _classify(self, exc: Exception) -> LLMError:
        import openai

        if isinstance(exc, openai.APIStatusError):
            return self._classify_status(exc)
        if isinstance(exc, openai.APITimeoutError):
            return LLMRetryableError(f"the endpoint at {self.base_url} did not answer within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return LLMRetryableError(f"connection to {self.base_url} failed: {_root_cause(exc)}")
        if isinstance(exc, (_MalformedResponse, ValueError, openai.APIResponseValidationError)):
            return LLMRetryableError(
                f"the endpoint at {self.base_url} answered with something that is not an OpenAI chat "
                f"response ({str(exc)[:200]}); check that --base-url is the API root (it usually ends in /v1)"
            )
        raise exc

    def _classify_status(self, exc: Any) -> LLMError:
        status, detail = exc.status_code, _server_message(exc)
        where = f"the endpoint at {self.base_url}"
        if status in (400, 413) and _CONTEXT_OVERFLOW.search(detail):
            return LLMPromptTooLongError(
                f"the prompt does not fit the model's context window ({detail}); use shorter passages or "
                "fewer demonstrations, or give the server a larger context"
            )
        if status in _RETRYABLE_STATUS or status >= 500:
            return LLMRetryableError(f"{where} answered {status}: {detail}", retry_after=_retry_after(exc.response))
        if status in (401, 403):
            return LLMFatalError(f"{where} rejected the API key ({status}): {detail}; set --api-key or SEEDBED_API_KEY")
        if status == 404:
            return LLMFatalError(
                f"{where} answered 404 (no such route or model {self.model!r}): {detail}; check --base-url "
                "(usually ends in /v1) and --model"
            )
        return LLMFatalError(
            f"{where} rejected the request ({status}): {detail}; check the model name and sampling options"
        )

    def _give_up(self, error: LLMRetryableError, exc: Exception, attempts: int) -> Exception:
        if _is_refused(exc):
            return LLMFatalError(
                f"cannot reach the LLM endpoint at {self.base_url} after {attempts} attempt(s): "
                f"{_root_cause(exc)}; is the server running?"
            )
        return LLMRetryableError(f"{error} (gave up after {attempts} attempt(s))", retry_after=error.retry_after)


def _sampling(params: SamplingParams) -> dict[str, Any]:
    """The SDK's keyword arguments for `params`: the server-specific ones go in its `extra_body`."""
    kwargs = params.as_dict()
    extra = kwargs.pop("extra", None)
    return {**kwargs, "extra_body": extra} if extra else kwargs


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title", "output")))[:64] or "output"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _to_completion(response: Any, messages: list[dict[str, str]], model: str) -> Completion:
    choice = response.choices[0]
    text = _valid_unicode(getattr(choice.message, "content", None) or "")
    usage = getattr(response, "usage", None)
    prompt_tokens = getattr(usage, "prompt_tokens", None)
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens("".join(m["content"] for m in messages))
    completion_tokens = getattr(usage, "completion_tokens", None)
    return Completion(
        text=text,
        model=getattr(response, "model", None) or model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens if completion_tokens is not None else estimate_tokens(text),
        finish_reason=getattr(choice, "finish_reason", None) or "stop",
        cached_tokens=_cached_tokens(response, usage),
    )


def _cached_tokens(response: Any, usage: Any) -> int | None:
    """Prompt tokens served from the server's prefix cache, when the endpoint reports them.

    OpenAI and llama-server send `usage.prompt_tokens_details.cached_tokens`; older llama-servers
    only `timings.cache_n`. None when neither is there (the count is then unknown, not zero).
    """
    details = getattr(usage, "prompt_tokens_details", None)
    cached = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    if cached is None:
        timings = getattr(response, "timings", None) or (getattr(response, "model_extra", None) or {}).get("timings")
        cached = timings.get("cache_n") if isinstance(timings, dict) else None
    return int(cached) if isinstance(cached, (int, float)) and cached >= 0 else None


def _valid_unicode(text: str) -> str:
    """Replace lone surrogates (a model cut off mid-emoji can send one as a JSON escape) with U+FFFD.

    Python strings hold them, but no UTF-8 file (journal, dataset) can: they would fail the write.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _retry_after(response: Any) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(headers[name]) * scale
        except (KeyError, ValueError):
            pass
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _root_cause(exc: BaseException) -> str:
    last = _causes(exc)[-1]
    return f"{type(last).__name__}: {last}" if str(last) else type(last).__name__


def _is_refused(exc: BaseException) -> bool:
    # The SDK wraps transport errors; ConnectError (httpx/httpx2) or the OS error means nobody listens.
    return any(
        type(cause).__name__ == "ConnectError" or isinstance(cause, ConnectionRefusedError) for cause in _causes(exc)
    )
