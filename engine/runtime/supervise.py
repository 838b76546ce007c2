"""Keep the embedded llama-server alive for a whole run: a server that dies mid-run is restarted.

llama-server can die under a long run (killed by the OOM killer, a crash on an odd prompt, a
user's stray `kill`). Without a supervisor every request still in the plan would fail after its
retries; with it, the first request that fails while the process is gone restarts the server on
the same port (so the client's base URL stays valid) and the failed requests are sent again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.errors import LLMError, RuntimeSetupError
from engine.types import Completion, SamplingParams

__all__ = ["SupervisedLLM", "MAX_RESTARTS"]

log = logging.getLogger(__name__)
MAX_RESTARTS = 3  # a server that keeps dying is a real problem: then the run stops with the error


class SupervisedLLM:
    """The embedded server's chat client that restarts the server when its process has died.

    Args:
        llm: the OpenAIChat client of `server`.
        server: the running `engine.runtime.server.LocalServer`.
        max_restarts: restarts allowed in one run.
    """

    def __init__(self, llm, server, max_restarts: int = MAX_RESTARTS):
        self.llm, self.server, self.max_restarts = llm, server, max_restarts
        self.restarts = 0
        self._generation = 0  # bumped per restart, so concurrent failures restart the server once
        self._lock: asyncio.Lock | None = None

    @property
    def model(self) -> str:
        return self.llm.model

    @property
    def base_url(self) -> str:
        return self.llm.base_url

    async def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                       json_schema: dict[str, Any] | None = None) -> Completion:
        """As `OpenAIChat.complete`; a failure while the server process is gone restarts it and retries.

        Raises:
            LLMError: as OpenAIChat.complete, or the server died more than `max_restarts` times
                (the message names its log).
        """
        while True:
            generation = self._generation
            try:
                return await self.llm.complete(messages, params, json_schema)
            except LLMError:
                if not await self._recovered(generation):
                    raise

    async def _recovered(self, generation: int) -> bool:
        """Restart the server if its process died; True when the request should be sent again."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._generation != generation:  # another request restarted it meanwhile
                return True
            if self.server.process_running():
                return False  # the server is up: the error is the request's, not the process's
            if self.restarts >= self.max_restarts:
                raise RuntimeSetupError(
                    f"llama-server died {self.restarts + 1} times in this run; giving up. "
                    f"See its log {self.server.log_path}")
            self.restarts += 1
            log.warning("llama-server is gone (log: %s); restarting it (%d/%d) and resending the failed requests",
                        self.server.log_path, self.restarts, self.max_restarts)
            await asyncio.to_thread(self.server.restart)
            self._generation += 1
            return True

    def stream(self, messages: list[dict[str, str]], params: SamplingParams):
        """As `OpenAIChat.stream` (no restart: a half-streamed answer cannot be resent transparently)."""
        return self.llm.stream(messages, params)

    def clone(self) -> "SupervisedLLM":
        """A supervised client of the same server with its own connection pool."""
        return SupervisedLLM(self.llm.clone(), self.server, self.max_restarts)

    async def release_loop(self) -> None:
        await self.llm.release_loop()

    async def check(self) -> tuple[str, ...]:
        return await self.llm.check()

    async def close(self) -> None:
        await self.llm.close()
