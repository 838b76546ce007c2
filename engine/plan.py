"""What a run will do, known before any LLM call: its options, the plan (passages, coverage, which
strategy makes which label, the first round's estimate), and the checks that fail before anything starts.

`seedbed plan` prints a plan; `pipeline.synthesize` runs one. Nothing here calls an LLM or writes a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.quality import ReferenceGuard
from engine.calls import request_tokens
from engine.rounds import Part, first_round
from engine.retrieval.coverage import LabelCoverage, assess, routing
from engine.strategies.base import get_strategy
from engine.index.reader import Index
from engine.remote import is_remote
from engine.types import Hit, Request, TaskSpec

if TYPE_CHECKING:
    from engine.cache import LLMCache
    from engine.llm.adaptive import AdaptiveLimit
    from engine.prompts import Template
    from engine.strategies.base import Strategy

__all__ = ["SynthOptions", "SynthPlan", "plan", "prepare"]

SCREEN_REACH = 3  # with retrieval.screen, passages retrieved per label: this many times the wanted ones


@dataclass(frozen=True)
class SynthOptions:
    """How to run a synthesis (the task spec says what to make).

    Args:
        out: output folder (created; re-running into it resumes), or an s3:// URI (engine/remote_run.py).
        concurrency: requests in flight (match the server's parallel slots), or an
            `engine.llm.adaptive.AdaptiveLimit` that adapts it (kept across rounds and stages).
        fresh: accept a changed task spec in an existing output folder.
        structured_output: ask the endpoint for JSON through a JSON schema.
        overgenerate: retrieve this many times the passages needed, to top up rejected examples.
        max_rounds: rounds of generation, the first included (later ones top up labels short of
            examples); a strategy that spreads its plan over several rounds (oneshot's `rounds_of`) gets those on top.
        max_calls: a budget of new LLM calls for generation (verification excluded); the run
            stops cleanly there and a re-run with a larger budget continues.
        prompts_dir: an alternative prompts folder.
        cache: a shared `engine.cache.LLMCache`: answers already paid for in any run are reused
            (None: only this folder's journal is).
        max_tokens_total: stop sending once this run's prompt + completion tokens would pass it.
        max_cost: stop sending once this run's spend would pass it (needs `prices`).
        prices: (input, output) price per million tokens, for cost estimates and `max_cost`.
        reference: texts no example may near-duplicate and no prompt may carry (e.g. the test split
            a student will be scored on); see engine/quality.py.
    """

    out: Path | str
    concurrency: int | AdaptiveLimit = 4
    fresh: bool = False
    structured_output: bool = False
    overgenerate: float = 2.0
    max_rounds: int = 5
    prompts_dir: Path | None = None
    max_calls: int | None = None
    cache: LLMCache | None = None
    max_tokens_total: int | None = None
    max_cost: float | None = None
    prices: tuple[float, float] | None = None
    reference: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_cost is not None and self.prices is None:
            raise ConfigError("--max-cost needs prices: give --price-in and --price-out (per million tokens)")
        for name in ("max_calls", "max_tokens_total", "max_cost"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name.replace('_', '-')}={value!r} must be positive")


@dataclass(frozen=True)
class SynthPlan:
    """What a run will do, known before any LLM call: passages, coverage, which strategy makes which label.

    Attributes:
        parts: one `engine.rounds.Part` per strategy (the task's own, and its fallback if used).
        retrieval: per-label retrieval counts for the manifest ({} without retrieval).
        coverage: per-label `engine.retrieval.coverage.LabelCoverage` (None without retrieval).
        per_label: passages retrieved per label (examples times the over-generation factor).
        reference: the leakage guard built from `SynthOptions.reference`, or None.
    """

    parts: tuple[Part, ...]
    retrieval: dict[str, Any]
    coverage: dict[str, LabelCoverage] | None
    per_label: int
    reference: ReferenceGuard | None = None

    def part_for(self, label: str) -> Part:
        """The part (strategy) that makes `label`."""
        return next(part for part in self.parts if label in part.labels)

    @property
    def routes(self) -> dict[str, str]:
        """label -> the name of the strategy that makes it."""
        return {label: part.strategy.name for part in self.parts for label in part.labels}

    def estimate(self, task: TaskSpec) -> dict[str, Any]:
        """The first round's requests and tokens, from the rendered prompts (no LLM call).

        A part whose plan needs its setup stage first (attrprompt's attributes) counts its
        requests but not their tokens (`tokens_unknown_for`). With `retrieval.screen`, each
        first-round passage's yes/no question is counted too (`screen_requests`; a "no" costs one
        more question and one more rewrite, which the estimate cannot know).
        """
        requests = prompt = completion = screened = 0
        unknown = []
        for part in self.parts:
            if part.picks is None and not part.strategy.plans_before_setup:
                requests += task.gathered_per_label * len(part.labels)
                unknown.append(part.strategy.name)
                continue
            rendered = first_round(task, part)
            if part.picks is not None and task.retrieval.screen:
                screens = _screen_requests(task, rendered)
                screened += len(screens)
                rendered = rendered + screens
            tokens = request_tokens(rendered)
            requests, prompt, completion = requests + len(rendered), prompt + tokens[0], completion + tokens[1]
        return {"requests": requests, "prompt_tokens": prompt, "completion_tokens_max": completion,
                "tokens_unknown_for": unknown, "screen_requests": screened}


def _screen_requests(task: TaskSpec, rendered: list[Request]) -> list[Request]:
    """The yes/no screening requests for the passages of `rendered` (engine/retrieval/screen.py)."""
    from engine.prompts import load_template
    from engine.retrieval.screen import SCREEN_TEMPLATE, plan_screen

    template = load_template(SCREEN_TEMPLATE)
    by_label: dict[str, list[Hit]] = {}
    for request in rendered:
        if request.hit is not None:
            by_label.setdefault(request.label, []).append(request.hit)
    return [r for label, hits in by_label.items() for r in plan_screen(task, label, hits, template)]

def plan(task: TaskSpec, index: Index | None, options: SynthOptions) -> SynthPlan:
    """Check the task, retrieve passages, judge the corpus's coverage per label and route labels.

    Makes no LLM call and writes nothing: `seedbed plan` prints it, `seedbed synth` runs it.

    Raises:
        ConfigError: what `prepare` raises.
        CoverageError: labels the index cannot support, in a task without `fallback`.
    """
    strategy, templates = prepare(task, index, options)
    labels = tuple(spec.name for spec in task.labels)
    reference = ReferenceGuard(options.reference, task.quality.near_duplicate or 0.7) if options.reference else None
    if not strategy.uses_retrieval:
        part = Part(strategy, templates, None, labels)
        return SynthPlan((part,), {}, None, 0, reference)
    per_label = math.ceil(task.gathered_per_label * max(1.0, options.overgenerate))
    # a retrieval screen turns passages away: it may reach past the wanted ones into the rest of each pool
    picks, report = strategy.retrieve(index, task, per_label * (SCREEN_REACH if task.retrieval.screen else 1))
    if reference is not None:
        picks = _without_leaks(picks, report.per_label, reference)
        for label, dropped in strategy.drop_demonstrations(reference.near).items():  # they reach every prompt
            report.per_label[label]["near_reference_dropped"] += dropped
            report.per_label[label]["demonstrations"] -= dropped
    coverage = assess(task, report.per_label, per_label)
    routes = routing(task, coverage, index.manifest.name)
    own = tuple(name for name in labels if routes[name] == task.strategy)
    parts = [Part(strategy, templates, picks, own)] if own else []
    rest = tuple(name for name in labels if name not in own)
    if rest:
        fallback = get_strategy(task.fallback, structured_output=options.structured_output, **task.fallback_options)
        parts.append(Part(fallback, fallback.load_templates(task, options.prompts_dir), None, rest,
                          why=f"fallback: index {index.manifest.name!r} cannot support the label"))
    return SynthPlan(tuple(parts), report.per_label, coverage, per_label, reference)


def _without_leaks(picks: dict[str, list[Hit]], counts: dict[str, dict[str, Any]],
                   reference: ReferenceGuard) -> dict[str, list[Hit]]:
    """Drop passages that near-duplicate a reference row, so none reaches a prompt; counted per label."""
    kept = {}
    for label, hits in picks.items():
        clean = [hit for hit in hits if not reference.near(hit.passage.text)]
        counts[label]["near_reference_dropped"] = len(hits) - len(clean)
        counts[label]["assigned"] = max(0, counts[label]["assigned"] - (len(hits) - len(clean)))
        counts[label]["picked"] = len(clean)
        kept[label] = clean
    return kept


def prepare(task: TaskSpec, index: Index | None, options: SynthOptions) -> tuple[Strategy, dict[str, Template]]:
    """Everything checkable before an LLM starts or a file is written: strategy, options, templates, index.

    Returns:
        (strategy, templates).

    Raises:
        ConfigError: unknown strategy or option, a bad template, or a missing index.
    """
    if "structured_output" in task.strategy_options:
        raise ConfigError("strategy_options.structured_output is set with --structured/--no-structured; remove it from the spec")
    strategy = get_strategy(task.strategy, structured_output=options.structured_output, **task.strategy_options)
    templates = strategy.load_templates(task, options.prompts_dir)
    if task.verify:
        from engine.prompts import load_template
        from engine.verify import JUDGE_TEMPLATE, check_labels

        load_template(JUDGE_TEMPLATE, options.prompts_dir)
        check_labels(task, ())  # label names the judge could confuse fail now, not after generation
    if strategy.uses_retrieval and index is None:
        raise ConfigError(f"strategy {task.strategy!r} retrieves passages: pass --index NAME")
    if strategy.uses_retrieval and task.retrieval.screen:
        from engine.prompts import load_template
        from engine.retrieval.screen import SCREEN_TEMPLATE

        load_template(SCREEN_TEMPLATE, options.prompts_dir)  # a missing screen template fails now
    if not is_remote(options.out) and options.out.exists() and not options.out.is_dir():
        raise ConfigError(f"--out {options.out} is a file; pass a folder for the dataset")
    return strategy, templates

