"""Choose the LLM for a run: a remote OpenAI-compatible endpoint, the embedded llama.cpp server, or the fake."""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from engine.runtime.catalog import DEFAULT_MODEL

if TYPE_CHECKING:
    from engine.llm.runner import ChatLLM

__all__ = ["EndpointSettings", "open_llm", "FAKE_DELAY_ENV"]

FAKE_DELAY_ENV = "SEEDBED_FAKE_DELAY"  # seconds each fake call sleeps (kill/resume tests, benchmarks)


@dataclass(frozen=True)
class EndpointSettings:
    """Where the LLM lives.

    Args:
        base_url: an OpenAI-compatible `/v1` URL; None means the embedded local server.
        model: the model name (a catalog name for the local server).
        api_key: bearer token for remote endpoints (never logged).
        fake: use the deterministic ScriptedLLM (offline demos and tests).
        parallel: local server slots (and so the useful concurrency).
        timeout: seconds per request attempt.
        replicas: more URLs serving the same model beside `base_url`: requests are spread over all
            of them, and a failing one is drained (engine/llm/replicas.py).
        ray: answer each round's requests on a Ray cluster: "local" or its address
            (engine/llm/distributed.py); None runs in this process.
        ray_workers: Ray actors answering requests.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    fake: bool = False
    parallel: int = 4
    timeout: float = 300.0
    replicas: tuple[str, ...] = ()
    ray: str | None = None
    ray_workers: int = 2

    def describe(self) -> str:
        """Where requests go, for logs and manifests (no key)."""
        if self.fake:
            return "fake:scripted"
        if self.base_url and self.replicas:
            return " + ".join((self.base_url, *self.replicas))
        return self.base_url or f"local:llama-server/{self.model or DEFAULT_MODEL}"


@contextmanager
def open_llm(settings: EndpointSettings, *, on_retry: Callable[[Exception], None] | None = None) -> Iterator[ChatLLM]:
    """Yield a ready chat LLM; the embedded server (if started) is stopped on exit, even on error.

    Args:
        settings: where the LLM lives.
        on_retry: OpenAIChat's hook for each failed attempt it retries; pass
            `AdaptiveLimit.on_retry` with `--concurrency auto` (the fake LLM never retries).

    Raises:
        LLMFatalError: the endpoint is unreachable or does not serve the model.
        RuntimeSetupError: the embedded server or model cannot be prepared.
    """
    if settings.ray and settings.fake:
        from engine.errors import ConfigError

        raise ConfigError("--fake answers in this process, so Ray workers cannot reach it; with --ray give --base-url "
                          "(e.g. a fake server: python -m engine.testing.server)")
    if settings.replicas and not settings.base_url:
        from engine.errors import ConfigError

        raise ConfigError("replica URLs need --base-url: give --base-url once per replica")
    if settings.fake:
        from engine.testing.fake import ScriptedLLM

        yield ScriptedLLM(model=settings.model or "scripted", delay=_fake_delay())
        return
    from engine.llm.client import OpenAIChat

    if settings.base_url:
        if not settings.model:
            from engine.errors import ConfigError

            raise ConfigError(f"--base-url {settings.base_url} needs --model (or SEEDBED_MODEL): the model name that endpoint serves")
        urls = (settings.base_url, *settings.replicas)
        key = settings.api_key or "not-needed"
        clients = [OpenAIChat(url, settings.model, api_key=key, timeout=settings.timeout, on_retry=on_retry) for url in urls]
        if len(clients) == 1:
            llm = clients[0]
        else:
            from engine.llm.replicas import ReplicaPool

            llm = ReplicaPool(clients)
        _check(llm)
        with _on_ray(llm, [(url, key) for url in urls], settings) as ready:
            yield ready
        return
    if settings.ray and settings.ray != "local":
        from engine.errors import ConfigError

        raise ConfigError(f"--ray {settings.ray}: the embedded server listens on this machine's loopback, which the "
                          "cluster's workers cannot reach; give --base-url for an endpoint they can reach")
    from engine.runtime.server import LocalServer, ServerConfig

    with LocalServer.from_catalog(settings.model or DEFAULT_MODEL, ServerConfig(parallel=settings.parallel)) as server:
        from engine.runtime.supervise import SupervisedLLM

        llm = OpenAIChat(server.base_url, server.model, api_key=server.api_key, timeout=settings.timeout,
                         on_retry=on_retry)
        _check(llm)
        with _on_ray(SupervisedLLM(llm, server), [(server.base_url, server.api_key)], settings) as ready:
            yield ready


@contextmanager
def _on_ray(llm, endpoints: list[tuple[str, str]], settings: EndpointSettings):
    """`llm`, or with `settings.ray` the same LLM with its batches answered on the Ray cluster (its
    actors stopped on exit)."""
    if not settings.ray:
        yield llm
        return
    from engine.llm.distributed import RayLLM

    distributed = RayLLM(llm, endpoints, address=settings.ray, workers=settings.ray_workers, timeout=settings.timeout)
    try:
        yield distributed
    finally:
        distributed.shutdown()


def _fake_delay() -> float:
    """Seconds per fake call from SEEDBED_FAKE_DELAY: a fast fake finishes before a test can kill it."""
    raw = os.environ.get(FAKE_DELAY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        delay = float(raw)
    except ValueError:
        delay = -1.0
    if not 0.0 <= delay <= 60.0:
        from engine.errors import ConfigError

        raise ConfigError(f"{FAKE_DELAY_ENV}={raw!r} is not a delay; give seconds per fake call from 0 to 60, e.g. 0.1")
    return delay


def _check(llm) -> None:
    async def run() -> None:
        try:
            await llm.check()
        finally:
            await llm.close()

    asyncio.run(run())
