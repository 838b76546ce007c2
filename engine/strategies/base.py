"""The Strategy contract (plan -> messages -> parse), its registry, and helpers every strategy shares.

A strategy never calls the LLM itself: `plan` turns a task and retrieved passages into Requests,
the runner sends them, and `parse` turns each answer into an Example or a Rejection. `parse`
never raises on bad model output: bad output is data, counted by its reason code.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from engine import filters
from engine.errors import ConfigError
from engine.prompts import Template, load_template
from engine.types import Completion, Example, Hit, OutputSpec, Provenance, Rejection, Request, SamplingParams, TaskSpec

__all__ = [
    "Ask",
    "Review",
    "Strategy",
    "available_strategies",
    "get_strategy",
    "request_id",
    "derive_seed",
    "build_provenance",
    "first_failure",
    "extract_text",
    "clean_text",
    "SHORT_KIND_MAX_WORDS",
]

# name -> "module:Class"; imported only when asked for, so importing engine stays cheap.
_STRATEGIES: dict[str, str] = {
    "synthesizrr": "engine.strategies.synthesizrr:SynthesizRR",
    "fewgen": "engine.strategies.fewgen:FewGen",
    "attrprompt": "engine.strategies.attrprompt:AttrPrompt",
    "targen": "engine.strategies.targen:TarGEN",
    "oneshot": "engine.strategies.oneshot:OneShot",
}


Ask = Callable[[Sequence[Request]], dict[str, Completion]]


@dataclass(frozen=True)
class Review:
    """What a review stage kept, what it rejected, and what it reports."""

    kept: list[tuple[Example, Request]]
    rejections: list[Rejection]
    report: dict[str, Any]


class Strategy(ABC):
    """One data-synthesis method. Subclasses set `name` and implement `plan` and `parse`.

    `uses_retrieval` is False for methods that ignore retrieved passages (FewGen): the pipeline
    then skips retrieval and passes `plan` an empty mapping.
    """

    name: ClassVar[str] = ""
    uses_retrieval: ClassVar[bool] = True

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """The prompt templates `plan` needs: by default the task's system and main template."""
        return tuple(name for name in (task.system_template, task.template) if name)

    def load_templates(self, task: TaskSpec, root: Path | None = None) -> dict[str, Template]:
        """Load every template this strategy needs for `task` (root: prompts folder override)."""
        return {name: load_template(name, root) for name in self.template_names(task)}

    @abstractmethod
    def plan(
        self,
        task: TaskSpec,
        hits_by_label: Mapping[str, list[Hit]],
        templates: Mapping[str, Template],
    ) -> list[Request]:
        """Turn a task and its retrieved passages into LLM requests (deterministic, no I/O)."""

    @abstractmethod
    def parse(
        self, request: Request, completion: Completion, task: TaskSpec
    ) -> Example | Rejection | list[Example | Rejection]:
        """Turn one answer into an Example, or a Rejection with a reason code; never raises on bad output.

        A strategy whose requests ask for several examples at once returns a list.
        """

    # --- optional stages (multi-step methods) --------------------------------------------------

    def retrieve(self, index, task: TaskSpec, per_label: int):
        """Passages per label for `plan` (retrieval strategies); returns (picks, RetrievalReport)."""
        from engine.retrieve import retrieve_for_task

        return retrieve_for_task(index, task, per_label)

    def setup(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, workdir: Path) -> dict[str, Any]:
        """Run LLM steps needed before planning (e.g. generate attribute values or contexts).

        Args:
            ask: answers a list of Requests through the run's journal, cache and runner, returning
                {request id: Completion} (failed requests are absent). Deterministic requests give
                a resumable, pay-once stage.
            workdir: the run's output folder, for artefacts worth keeping (e.g. generated attribute
                lists), written atomically.

        Returns:
            A JSON-ready report for the run manifest ({} when there is nothing to say).
        """
        return {}

    def plan_counts(
        self,
        task: TaskSpec,
        counts: Mapping[str, int],
        templates: Mapping[str, Template],
        start: Mapping[str, int] | None = None,
        history: Sequence[Example] = (),
    ) -> list[Request]:
        """Generation-only strategies (`uses_retrieval = False`): `counts[label]` new requests per
        label with sample indexes from `start[label]`; `history` holds the examples kept so far
        (used by self-referencing methods)."""
        raise NotImplementedError(f"strategy {self.name!r} plans from retrieved passages, not from counts")

    def review(self, task: TaskSpec, examples: list[tuple[Example, Request]], ask: Ask) -> Review:
        """Check or correct the kept examples after generation (e.g. TarGEN's self-correction).

        Returns:
            Review(kept pairs in order, rejections, a JSON-ready report); by default everything is kept.
        """
        return Review(list(examples), [], {})


def available_strategies() -> tuple[str, ...]:
    """Names `get_strategy` accepts."""
    return tuple(sorted(_STRATEGIES))


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy called `name` with its options (e.g. `structured_output=True`).

    Raises:
        ConfigError: unknown name (the message lists the known ones) or unknown option.
    """
    target = _STRATEGIES.get(name)
    if target is None:
        raise ConfigError(f"unknown strategy {name!r}; known strategies: {list(available_strategies())}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r} does not accept options {sorted(options)}: {exc}") from exc


def request_id(
    strategy: str,
    template_sha256: str,
    messages: tuple[tuple[str, str], ...],
    sampling: SamplingParams,
    sample_index: int,
    json_schema: Mapping[str, Any] | None = None,
) -> str:
    """Content hash of everything (except the model) that determines an answer."""
    payload = {
        "strategy": strategy,
        "template_sha256": template_sha256,
        "messages": [list(message) for message in messages],
        "sampling": sampling.as_dict(),
        "sample_index": sample_index,
        "json_schema": json_schema,
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def derive_seed(task_seed: int, *parts: Any) -> int:
    """A per-request sampling seed: stable for the same inputs, different across requests (0..2**31-1)."""
    encoded = json.dumps([task_seed, *parts], ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(encoded.encode("utf-8")).digest()[:8], "big") % (2**31)


def build_provenance(request: Request, completion: Completion) -> Provenance:
    """Everything needed to audit or reproduce the example behind `request`."""
    hit = request.hit
    return Provenance(
        passage_id=hit.passage.id if hit else None,
        retrieval_score=hit.score if hit else None,
        retrieval_rank=hit.rank if hit else None,
        cosine=hit.cosine if hit else None,
        query=hit.query if hit else None,
        template_id=request.template_id,
        template_sha256=request.template_sha256,
        model=completion.model,
        sampling=request.sampling.as_dict(),
        seed=request.sampling.seed,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        request_id=request.id,
    )


def first_failure(
    text: str, spec: OutputSpec, finish_reason: str, passage: str | None
) -> tuple[str, str] | None:
    """Run the per-answer filters in order; return (reason, detail) of the first that fails, else None.

    Pass finish_reason 'stop' when the kept text is complete even though the answer was cut later.
    """
    words = filters.word_count(text)
    checks = (
        (filters.empty(text), "no letters or digits left after cleanup"),
        (filters.refusal(text), "the answer reads like a refusal"),
        (filters.placeholder(text), "the answer echoes a template slot instead of a text"),
        (filters.truncated(finish_reason), "the server stopped at max_tokens; raise max_tokens or lower max_words"),
        (filters.too_short(text, spec), f"{words} words, need at least {spec.min_words}"),
        (filters.too_long(text, spec), f"{words} words, allowed at most {spec.max_words}"),
    )
    for reason, detail in checks:
        if reason:
            return reason, detail
    if passage is not None and filters.copy_of_passage(text, passage):
        return "copy_of_passage", f"copy rate {filters.copy_rate(text, passage):.2f} of the source passage"
    return None


# --- answer cleanup, shared by strategies -------------------------------------------------------

SHORT_KIND_MAX_WORDS = 30  # kinds this short (headlines, titles, queries) keep only their first line
_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_PREAMBLE = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|here(?:'s| is| are))\b", re.IGNORECASE)
_INLINE_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|of course|okay)[,!.]?\s*)?here(?:'s| is) (?:a|an|the|your|one)\b[^:\n]{0,60}:\s*",
    re.IGNORECASE,
)
_GENERIC_PREFIXES = ("headline", "title", "review", "answer", "output", "text", "example", "response", "summary")
_MARKDOWN_LEAD = re.compile(r"^(?:#{1,6}\s+|[-*\u2022]\s+|\d+[.)]\s+|>\s*)")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "`": "`"}
_WORD_COUNT_NOTE = re.compile(r"\s*\(\s*\d+\s+words?\s*\)\s*$", re.IGNORECASE)
_JSON_TEXT_FIELD = re.compile(r'"text"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)


def extract_text(raw: str) -> tuple[str, str]:
    """The answer's text: the `text` field of a JSON object answer, else the raw text.

    Returns:
        (text, detail): detail is '' or a note on how a broken JSON answer was read.
    """
    body = "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()
    if not body.startswith("{"):
        return raw, ""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"], ""
    match = _JSON_TEXT_FIELD.search(body)
    if match:
        try:
            return json.loads(f'"{match.group(1)}"'), "broken JSON answer; took its text field"
        except ValueError:
            return match.group(1), "broken JSON answer; took its text field unescaped"
    return raw, "answer was not the requested JSON; read it as plain text"


def clean_text(text: str, output: OutputSpec) -> tuple[str, bool]:
    """Strip what models wrap around an answer: preambles, 'Headline:' labels, markdown, quotes.

    Short kinds (max_words <= SHORT_KIND_MAX_WORDS) keep only the first remaining line.

    Returns:
        (clean text, whether later lines were dropped): when lines were dropped, a cut-off
        (finish_reason 'length') tail does not make the kept text truncated.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not _FENCE.match(line)]
    while len(lines) > 1 and _PREAMBLE.match(lines[0]) and lines[0].rstrip("*").endswith(":"):
        lines.pop(0)
    prefixes = _label_prefix(output.kind)
    cleaned = [_clean_line(line, prefixes) for line in lines]
    cleaned = [line for line in cleaned if line]
    if output.max_words <= SHORT_KIND_MAX_WORDS:
        return (cleaned[0] if cleaned else ""), len(cleaned) > 1
    return "\n".join(cleaned), False


def _label_prefix(kind: str) -> re.Pattern[str]:
    words = [word for word in kind.lower().split() if len(word) >= 3]
    names = sorted({*_GENERIC_PREFIXES, kind.lower(), *words}, key=len, reverse=True)
    alternatives = "|".join(re.escape(name) for name in names if name)
    bold = r"(?:\*\*|__)?"
    return re.compile(rf"^{bold}(?:{alternatives})(?:\s*\d+)?\s*{bold}\s*:\s*{bold}\s*", re.IGNORECASE)


def _clean_line(line: str, prefixes: re.Pattern[str]) -> str:
    line = _INLINE_PREAMBLE.sub("", line)
    line = _MARKDOWN_LEAD.sub("", line)
    line = prefixes.sub("", line)
    line = line.replace("**", "").replace("__", "")
    line = _WORD_COUNT_NOTE.sub("", line)
    return " ".join(_strip_quotes(line.strip()).split())


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and not _quote_inside(text):
        text = text[1:-1].strip()
    return text


def _quote_inside(text: str) -> bool:
    # An apostrophe between letters (Rashford's) is not a closing quote.
    inner = text[1:-1]
    marks = {text[0], text[-1]}
    return any(
        ch in marks and not (0 < i < len(inner) - 1 and inner[i - 1].isalpha() and inner[i + 1].isalpha())
        for i, ch in enumerate(inner)
    )
