"""Retrieval-grounded generation: retrieve passages for a question, answer from them with citations.

The use case behind `POST /v1/chat/completions` of `seedbed serve`. The passages go into the last
user message as numbered data (template `prompts/ground/answer.md`); the template's system message
holds the rules, so nothing in a passage can change the prompt's structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.injection import followed, instructions, leaks_prompt
from engine.prompts import Template, load_template
from engine.types import Hit

__all__ = ["GROUND_TEMPLATE", "GUARDED_ANSWER", "Grounded", "ground", "filter_hits", "passages_block"]

GROUND_TEMPLATE = "ground/answer"
# What the caller gets instead of an answer that obeyed a passage or repeated the rules.
GUARDED_ANSWER = ("The retrieved passages contain instructions addressed to the assistant, and the answer followed "
                  "them, so it was withheld. Rephrase the question or filter the index to other sources.")


@dataclass(frozen=True)
class Grounded:
    """Messages ready for the LLM and the passages they cite, numbered from 1 in `hits` order."""

    messages: list[dict[str, str]]
    hits: list[Hit]
    template: Template

    @property
    def gives_orders(self) -> bool:
        """Whether a cited passage holds instructions addressed to a model (engine/injection.py)."""
        return any(instructions(hit.passage.text) for hit in self.hits)

    def check(self, answer: str) -> str | None:
        """Why `answer` must not reach the caller: it obeys a passage's orders or repeats the system prompt; else None."""
        if self.gives_orders:
            reason = followed(answer, "\n".join(hit.passage.text for hit in self.hits))
            if reason:
                return reason
        system = " ".join(m["content"] for m in self.messages if m["role"] == "system")
        return "repeats the system prompt" if leaks_prompt(answer, system) else None


def filter_hits(hits: list[Hit], filters: dict[str, Any] | None) -> list[Hit]:
    """Hits whose `source` or metadata fields equal every value in `filters` (exact match).

    Keys are `source` or a metadata field name (`metadata.topic` and `topic` are the same).
    """
    if not filters:
        return hits
    kept = []
    for hit in hits:
        fields = {"source": hit.passage.source, **(hit.passage.metadata or {})}
        if all(fields.get(key.removeprefix("metadata.")) == value for key, value in filters.items()):
            kept.append(hit)
    return kept


def passages_block(hits: list[Hit]) -> str:
    """`[n] text` per hit, blank-line separated; whitespace inside a passage is collapsed."""
    return "\n\n".join(f"[{n}] {' '.join(hit.passage.text.split())}" for n, hit in enumerate(hits, start=1))


def ground(index, messages: list[dict[str, str]], k: int = 5, mode: str = "hybrid",
           filters: dict[str, Any] | None = None, prompts_dir: Path | None = None) -> Grounded:
    """Retrieve passages for the last user message and build the grounded chat messages.

    Args:
        index: an open `engine.index.reader.Index`.
        messages: the caller's chat, OpenAI style; the last one must come from the user.
        k: passages to put in the prompt.
        mode: dense, bm25 or hybrid.
        filters: exact-match filters on `source` and metadata fields.
        prompts_dir: an alternative prompts folder.

    Raises:
        ConfigError: no messages, the last is not a non-empty user message, or a bad k or mode.
    """
    if not messages or messages[-1].get("role") != "user" or not str(messages[-1].get("content") or "").strip():
        raise ConfigError("messages must end with a non-empty user message (the question to answer from the index)")
    question = str(messages[-1]["content"]).strip()
    fetch = k if not filters else min(len(index), k * 10)  # filters apply after retrieval: over-fetch
    hits = filter_hits(index.search(question, k=max(1, min(fetch, len(index))), mode=mode), filters)[:k]
    template = load_template(GROUND_TEMPLATE, prompts_dir)
    rendered = template.render(passages=passages_block(hits) or "(no passages found)", question=question)
    system = [{"role": role, "content": text} for role, text in rendered if role == "system"]
    user = [{"role": role, "content": text} for role, text in rendered if role != "system"]
    history = [{"role": m["role"], "content": str(m.get("content") or "")} for m in messages[:-1]]
    return Grounded(messages=system + history + user, hits=hits, template=template)
