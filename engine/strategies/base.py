"""The Strategy contract (plan -> messages -> parse), its registry, and helpers every strategy shares.

A strategy never calls the LLM itself: `plan` turns a task and retrieved passages into Requests,
the runner sends them, and `parse` turns each answer into an Example or a Rejection. `parse`
never raises on bad model output: bad output is data, counted by its reason code.

Siblings hold the rest of what strategies share: `answers` reads model answers (its
`extract_text` and `clean_text` are exported from here too), `planning` builds requests.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine import filters, injection
from engine.ids import derive_seed, request_id  # noqa: F401 (re-exported: strategies use them from here)
from engine.errors import ConfigError
from engine.prompts import Template, load_template
from engine.strategies.answers import SHORT_KIND_MAX_WORDS, clean_text, extract_text, fit_sentences  # also exported from here
from engine.types import Completion, Example, Hit, OutputSpec, Provenance, Rejection, Request, TaskSpec

__all__ = [
    "Ask",
    "Review",
    "Strategy",
    "LabelOnlyStrategy",
    "available_strategies",
    "get_strategy",
    "request_id",
    "derive_seed",
    "build_provenance",
    "first_failure",
    "copied",
    "parse_text_answer",
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
    """What a review stage kept, what it rejected, and what it reports.

    `held` lists (example, its request, the review's own request) for examples the review could not
    check because its call got no answer (failed after retries, or held back by the budget): they
    are neither kept nor rejected, so a re-run checks them.
    """

    kept: list[tuple[Example, Request]]
    rejections: list[Rejection]
    report: dict[str, Any]
    held: list[tuple[Example, Request, Request]] = field(default_factory=list)


class Strategy(ABC):
    """One data-synthesis method. Subclasses set `name` and implement `plan` and `parse`.

    `uses_retrieval` is False for methods that ignore retrieved passages (FewGen): the pipeline
    then skips retrieval and passes `plan` an empty mapping.
    """

    name: ClassVar[str] = ""
    uses_retrieval: ClassVar[bool] = True
    plans_before_setup: ClassVar[bool] = True  # False when `plan_counts` needs `setup` to have run

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
        from engine.retrieval.retrieve import retrieve_for_task

        return retrieve_for_task(index, task, per_label)

    def drop_demonstrations(self, near) -> dict[str, int]:
        """Remove passages that `near(text)` flags from what `retrieve` set aside to show in every prompt
        (RetrICL's demonstrations; the leakage guard's hook); returns the count dropped per label."""
        return {}

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

    def planned_rounds(self, task: TaskSpec) -> int:
        """Rounds the strategy spreads one full plan over (oneshot's `rounds_of`); the pipeline's
        top-up rounds come on top of these, so a throttled plan is not cut short by them."""
        return 1

    def review(self, task: TaskSpec, examples: list[tuple[Example, Request]], ask: Ask) -> Review:
        """Check or correct the kept examples after generation (e.g. TarGEN's self-correction).

        Returns:
            Review(kept pairs in order, rejections, a JSON-ready report); by default everything is kept.
        """
        return Review(list(examples), [], {})


class LabelOnlyStrategy(Strategy):
    """A strategy that writes examples from the labels alone, without retrieval: subclasses implement
    `plan_counts`, and `plan` asks it for `gathered_per_label` of every label."""

    uses_retrieval: ClassVar[bool] = False

    def plan(
        self,
        task: TaskSpec,
        hits_by_label: Mapping[str, list[Hit]],
        templates: Mapping[str, Template],
    ) -> list[Request]:
        """`plan_counts` for `gathered_per_label` of every label of the task; `hits_by_label` is ignored.

        Raises:
            ConfigError: what `plan_counts` raises, e.g. a template missing from `templates`.
        """
        return self.plan_counts(task, {label.name: task.gathered_per_label for label in task.labels}, templates)


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
        cached_tokens=completion.cached_tokens,
        request_id=request.id,
        grounding=dict(request.grounding) or None,
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
    if passage is not None and filters.mentions_passage(text):
        return "mentions_passage", "the answer talks about its source passage instead of being an example"
    if filters.repetitive(text):
        return "repetitive", (f"{filters.repeated_share(text):.0%} of its words are in {filters.REPEAT_N}-word "
                              "sequences it repeats (a decoding loop)")
    obeyed = injection.followed(text, passage or "")
    if obeyed:
        return "follows_passage_instructions", obeyed
    return None


def copied(text: str, source: str) -> bool:
    """Whether `text` copies `source` (a seed or an example the prompt showed): same words or a high copy rate."""
    return filters.copy_of_passage(text, source) or filters.normalize(text) == filters.normalize(source)


def parse_text_answer(
    request: Request,
    completion: Completion,
    output: OutputSpec,
    passage: str | None = None,
    check: Callable[[str], tuple[str, str] | None] | None = None,
    context: str = "",
) -> Example | Rejection:
    """The `parse` of a one-example answer: read and clean its text, run the per-answer filters, then `check`.

    Args:
        passage: the source passage, for the copy check (None: no passage).
        check: a further check of the clean text, returning (reason, detail) when it fails.
        context: added to a rejection's detail (e.g. the attributes the request stated).

    Returns:
        The Example, or a Rejection whose detail also says how a broken JSON answer was read.
    """
    provenance = build_provenance(request, completion)
    text, note = extract_text(completion.text)
    text, dropped_tail = clean_text(text, output)
    finish_reason = "stop" if dropped_tail else completion.finish_reason
    trimmed = False
    if output.fit_sentences:
        text, trimmed = fit_sentences(text, output, cut_off=finish_reason == "length")
        finish_reason = "stop" if trimmed else finish_reason
    if trimmed:
        provenance = dataclasses.replace(provenance, trimmed=True)
    failure = first_failure(text, output, finish_reason, passage) or (check(text) if check else None)
    if failure:
        reason, detail = failure
        detail = "; ".join(part for part in (detail, note, context) if part)
        return Rejection(request.label, reason, completion.text, detail, provenance)
    return Example(text=text, label=request.label, provenance=provenance)
