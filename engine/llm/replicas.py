"""Several OpenAI-compatible endpoints serving one model, used as one (`--base-url` given more than once).

Each request goes to the healthy replica with the fewest requests in flight (ties: the one used
least recently), so replicas of unequal speed each get what they can take. A replica whose request
fails after its client's own retries (refused connection, timeouts, 5xx) is drained for `cooldown`
seconds and the request is sent to another replica; only when every replica has failed it does
the request fail, with the last replica's error. A prompt that does not fit the context fails at
once: another replica of the same model would refuse it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import ConfigError, LLMError, LLMFatalError, LLMPromptTooLongError
from engine.types import Completion, SamplingParams

__all__ = ["ReplicaPool"]

log = logging.getLogger(__name__)


class ReplicaPool:
    """One chat LLM over several replicas of the same model (each an `engine.llm.client.OpenAIChat`).

    Args:
        replicas: the clients, one per endpoint; they must serve the same model name.
        cooldown: seconds a failed replica gets no new request (then it is tried again).
        clock: monotonic seconds (tests pass a fake).

    Raises:
        ConfigError: no replica, or replicas that name different models.
    """

    def __init__(self, replicas: Sequence[Any], cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if not replicas:
            raise ConfigError("a replica pool needs at least one endpoint; give --base-url URL")
        models = {replica.model for replica in replicas}
        if len(models) > 1:
            raise ConfigError(f"the replicas serve different models {sorted(models)}; give endpoints that serve one model")
        self.replicas = list(replicas)
        self.model = self.replicas[0].model
        self.cooldown, self._clock = cooldown, clock
        self.in_flight = [0] * len(self.replicas)
        self.answered = [0] * len(self.replicas)  # requests each replica answered (for reports and tests)
        self.drained_until = [0.0] * len(self.replicas)
        self._last_used = [0.0] * len(self.replicas)
        self._uses = 0

    def __repr__(self) -> str:
        return f"ReplicaPool({', '.join(r.base_url for r in self.replicas)}; model={self.model!r})"

    @property
    def base_urls(self) -> list[str]:
        return [replica.base_url for replica in self.replicas]

    def _pick(self, tried: set[int]) -> int | None:
        now = self._clock()
        open_ = [i for i in range(len(self.replicas)) if i not in tried and self.drained_until[i] <= now]
        if not open_:  # every untried replica is draining: try the one that comes back first, not none
            open_ = sorted((i for i in range(len(self.replicas)) if i not in tried), key=lambda i: self.drained_until[i])[:1]
        if not open_:
            return None
        return min(open_, key=lambda i: (self.in_flight[i], self._last_used[i]))

    async def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                       json_schema: dict[str, Any] | None = None) -> Completion:
        tried: set[int] = set()
        last: LLMError = LLMFatalError("no replica to send to")
        while True:
            index = self._pick(tried)
            if index is None:  # every replica failed this request
                raise last
            tried.add(index)
            self._uses += 1
            self._last_used[index] = self._uses
            self.in_flight[index] += 1
            try:
                completion = await self.replicas[index].complete(messages, params, json_schema)
            except LLMPromptTooLongError:
                raise
            except LLMError as error:
                last = error
                self.drained_until[index] = self._clock() + self.cooldown
                if len(tried) < len(self.replicas):
                    log.warning("replica %s failed (%s); drained for %.0fs, request sent to another replica",
                                self.replicas[index].base_url, error, self.cooldown)
                continue
            finally:
                self.in_flight[index] -= 1
            self.answered[index] += 1
            self.drained_until[index] = 0.0
            return completion

    async def check(self) -> tuple[str, ...]:
        """Check every replica; the ones that fail are drained (with a warning) while one works.

        Raises:
            LLMFatalError: no replica works (the message lists each one's error).
        """
        errors, models = [], ()
        for index, replica in enumerate(self.replicas):
            try:
                models = await replica.check()
            except LLMError as error:
                errors.append(f"{replica.base_url}: {error}")
                self.drained_until[index] = self._clock() + self.cooldown
        if len(errors) == len(self.replicas):
            raise LLMFatalError("no replica answers: " + "; ".join(errors))
        for error in errors:
            log.warning("replica %s; it is drained and tried again later", error)
        return models

    async def release_loop(self) -> None:
        for replica in self.replicas:
            release = getattr(replica, "release_loop", None)
            if release is not None:
                await release()

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()
