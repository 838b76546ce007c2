"""ScriptedLLM: a deterministic stand-in for an LLM endpoint, for tests and offline demos.

Three ways to answer, in this order: a queue of scripted answers (`enqueue`), a callable
`messages -> str`, or (when neither is given) a default answer built from the passage in the
last user message, so a whole pipeline runs offline and gives the same output every time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.errors import LLMFatalError
from engine.types import Completion, SamplingParams

__all__ = ["ScriptedLLM", "ScriptedCall", "default_answer"]

Script = str | Completion | BaseException
_STOPWORDS = frozenset(
    "a an and are as at be been but by for from had has have he her his in into is it its of on or "
    "our she that the their there they this to was were which who will with would you".split()
)
_PASSAGE_LINE = re.compile(r"(?im)^\s*passage\s*:\s*$")
_TOPIC = re.compile(r"\babout ([^.,;:\n]+)")
_BOUNDS = re.compile(r"\b(\d+)\s*(?:to|-)\s*(\d+)\s+words\b")


@dataclass(frozen=True)
class ScriptedCall:
    """One recorded call to ScriptedLLM.complete."""

    messages: tuple[tuple[str, str], ...]
    params: SamplingParams
    json_schema: dict[str, Any] | None


class ScriptedLLM:
    """Fake chat LLM with the same interface as OpenAIChat (`model`, `complete`, `check`, `close`).

    Args:
        script: answers to return in order; a Completion is returned as is, an exception is raised.
            When given and used up, further calls raise LLMFatalError.
        respond: a callable(messages) -> str used when no script is given.
        model: the model name reported in completions.
        delay: seconds each call sleeps (to exercise concurrency).
        finish_reason: reported for string answers.
    """

    def __init__(
        self,
        script: Iterable[Script] | None = None,
        *,
        respond: Callable[[list[dict[str, str]]], str] | None = None,
        model: str = "scripted",
        delay: float = 0.0,
        finish_reason: str = "stop",
    ):
        self.model = model
        self.calls: list[ScriptedCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._scripted = script is not None
        self._queue: deque[Script] = deque(script or ())
        self._respond = respond
        self._delay = delay
        self._finish_reason = finish_reason

    def enqueue(self, *answers: Script) -> None:
        """Append answers to the script (switches the fake to scripted mode)."""
        self._scripted = True
        self._queue.extend(answers)

    async def complete(
        self,
        messages: list[dict[str, str]],
        params: SamplingParams,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Record the call and answer from the script, the callable, or the default answer."""
        self.calls.append(ScriptedCall(tuple((m["role"], m["content"]) for m in messages), params, json_schema))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._delay:
                await asyncio.sleep(self._delay)
            return self._answer(messages, json_schema)
        finally:
            self.in_flight -= 1

    def _answer(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None) -> Completion:
        if self._scripted:
            if not self._queue:
                raise LLMFatalError(
                    f"ScriptedLLM ran out of scripted answers after {len(self.calls) - 1} call(s); "
                    "enqueue more or pass respond="
                )
            item = self._queue.popleft()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Completion):
                return item
            return self._completion(messages, item)
        text = self._respond(messages) if self._respond else default_answer(messages)
        if json_schema is not None and self._respond is None:
            text = json.dumps({"text": text})
        return self._completion(messages, text)

    def _completion(self, messages: list[dict[str, str]], text: str) -> Completion:
        return Completion(
            text=text,
            model=self.model,
            prompt_tokens=sum(len(m["content"].split()) for m in messages),
            completion_tokens=len(text.split()),
            finish_reason=self._finish_reason,
        )

    async def check(self) -> tuple[str, ...]:
        """Always reachable; serves exactly its own model."""
        return (self.model,)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> ScriptedLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def default_answer(messages: list[dict[str, str]]) -> str:
    """A plausible, deterministic example built from the prompt: 'Topic: Salient Passage Words'.

    Content words are taken in passage order but not contiguously, so the answer is grounded in
    the passage without being a verbatim copy of it (which the copy filter would reject).
    """
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    instructions, passage = _split_passage(prompt)
    low, high = _bounds(instructions)
    topic = _TOPIC.search(instructions)
    prefix = f"{topic.group(1).strip().title()}:" if topic else "Update:"
    wanted = max((low + high) // 2 - len(prefix.split()), 1)
    words = _content_words(passage, wanted)
    words += _filler(wanted - len(words))
    return " ".join([prefix, *words])


# 61 plain lowercase words (a prime count) that no entity tagger takes for a name
_FILLER = ("quiet steady plain clear usual simple broad short early later bright calm firm fresh full good great "
           "large light long main modest narrow open proper rare real rich rough round sharp slow small smooth "
           "solid sound strong sweet tall thick thin tight warm whole wide wise young able active actual basic "
           "brief careful common direct fair final general gentle honest natural").split()


def _filler(count: int) -> list[str]:
    """`count` filler words in which no 5-word sequence repeats (a repeated filler reads as a decoding loop
    to the `repetitive` filter): the list walked with stride 1, then 2, 3, ... (61 is prime)."""
    size = len(_FILLER)
    return [_FILLER[(i % size) * (1 + i // size) % size] for i in range(count)]


def _split_passage(prompt: str) -> tuple[str, str]:
    markers = list(_PASSAGE_LINE.finditer(prompt))
    if markers:
        return prompt[: markers[-1].start()], prompt[markers[-1].end() :]
    head, _, tail = prompt.rstrip().rpartition("\n\n")
    return head, tail


def _bounds(instructions: str) -> tuple[int, int]:
    match = _BOUNDS.search(instructions)
    if match and int(match.group(1)) <= int(match.group(2)):
        return int(match.group(1)), int(match.group(2))
    return 3, 12


def _content_words(passage: str, limit: int) -> list[str]:
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z][A-Za-z'-]+|\d+", passage):
        if word.lower() not in _STOPWORDS and word.lower() not in (w.lower() for w in seen):
            seen.append(word if word.isupper() else word.capitalize())
        if len(seen) >= limit:
            break
    return seen
