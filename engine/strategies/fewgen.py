"""FewGen, the baseline every method is measured against: k-shot, label-conditioned generation.

No retrieval. Each request shows k human seed examples of one label, drawn at random per
request, and asks for one new example of that label. The draw is seeded from (task seed, label,
sample index), so a plan is reproducible and `parse` can recompute which seeds a request showed.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

from engine import filters
from engine.errors import ConfigError
from engine.prompts import Template, combined_identity
from engine.strategies.base import (
    Strategy,
    available_strategies,
    build_provenance,
    clean_text,
    derive_seed,
    extract_text,
    first_failure,
    request_id,
)
from engine.strategies.synthesizrr import ANSWER_SCHEMA
from engine.types import Completion, Example, Hit, LabelSpec, Rejection, Request, TaskSpec

__all__ = ["FewGen", "DEFAULT_TEMPLATE", "DEFAULT_SHOTS", "MAX_SHOTS"]

DEFAULT_TEMPLATE = "fewgen/generate"
DEFAULT_SHOTS = 4
MAX_SHOTS = 32


class FewGen(Strategy):
    """Plain k-shot prompting from each label's seed examples.

    Args:
        structured_output: ask for `{"text": ...}` through the endpoint's JSON-schema response format.
        shots: seed examples shown per request (0..32; 0 is zero-shot). A label with fewer seeds
            shows all of them, in a per-request random order.

    Raises:
        ConfigError: `shots` is not an integer in 0..32.
    """

    name = "fewgen"
    uses_retrieval = False

    def __init__(self, structured_output: bool = False, shots: int = DEFAULT_SHOTS):
        if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= MAX_SHOTS:
            raise ConfigError(
                f"fewgen option shots={shots!r} is not allowed; give an integer from 0 (zero-shot) to {MAX_SHOTS}"
            )
        self.structured_output = structured_output
        self.shots = shots

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """The system template and the task's template, or `fewgen/generate` when the task names
        another strategy's template (task specs default to `synthesizrr/refine`)."""
        main = task.template
        owner = main.split("/", 1)[0] if "/" in main else ""
        if not main or (owner != self.name and owner in available_strategies()):
            main = DEFAULT_TEMPLATE
        return tuple(name for name in (task.system_template, main) if name)

    def plan(
        self,
        task: TaskSpec,
        hits_by_label: Mapping[str, list[Hit]],
        templates: Mapping[str, Template],
    ) -> list[Request]:
        """`examples_per_label` requests for every label of the task; `hits_by_label` is ignored.

        Raises:
            ConfigError: a template missing from `templates`, or one needing an unknown variable.
        """
        counts = {label.name: task.examples_per_label for label in task.labels}
        return self.plan_counts(task, counts, templates)

    def plan_counts(
        self,
        task: TaskSpec,
        counts: Mapping[str, int],
        templates: Mapping[str, Template],
        start: Mapping[str, int] | None = None,
        history: Sequence[Example] = (),
    ) -> list[Request]:
        """`counts[label]` requests per label, sample indexes start[label], start[label]+1, ...

        Top-up rounds pass `start` = the number of requests already planned for each label, so
        their requests (and ids, seeds and seed draws) are new. Labels come in the task's order.

        Raises:
            ConfigError: a label the task does not have, a negative count or start, or a template
                missing from `templates`.
        """
        start = start or {}
        _check_labels(task, counts, "counts")
        _check_labels(task, start, "start")
        chosen = _templates(self, task, templates)
        template_id, template_sha = combined_identity(chosen)
        requests: list[Request] = []
        for label in task.labels:
            first = start.get(label.name, 0)
            for sample_index in range(first, first + counts.get(label.name, 0)):
                requests.append(self._request(task, label, sample_index, chosen, template_id, template_sha))
        return requests

    def demonstrations(self, task: TaskSpec, label: LabelSpec, sample_index: int) -> tuple[str, ...]:
        """The seed examples request `sample_index` of `label` shows (deterministic; only this label's seeds)."""
        rng = random.Random(derive_seed(task.seed, self.name, "demonstrations", label.name, sample_index))
        return tuple(rng.sample(label.seeds, min(self.shots, len(label.seeds))))

    def _request(
        self,
        task: TaskSpec,
        label: LabelSpec,
        sample_index: int,
        templates: tuple[Template, ...],
        template_id: str,
        template_sha: str,
    ) -> Request:
        context = self._context(task, label, self.demonstrations(task, label, sample_index))
        messages = tuple(message for template in templates for message in template.render_from(context))
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, sample_index))
        schema = ANSWER_SCHEMA if self.structured_output else None
        return Request(
            id=request_id(self.name, template_sha, messages, sampling, sample_index, schema),
            label=label.name,
            messages=messages,
            template_id=template_id,
            template_sha256=template_sha,
            sampling=sampling,
            hit=None,
            sample_index=sample_index,
            json_schema=schema,
        )

    def _context(self, task: TaskSpec, label: LabelSpec, demos: tuple[str, ...]) -> dict[str, Any]:
        # Every variable a fewgen template may use; a template declares the subset it needs.
        return {
            "task_name": task.name,
            "task_description": task.description,
            "label": label.name,
            "verbalization": label.verbalization,
            "output_kind": task.output.kind,
            "min_words": task.output.min_words,
            "max_words": task.output.max_words,
            "answer_format": "json" if self.structured_output else "text",
            "demonstrations": "few" if demos else "zero",
            "examples": "\n".join(f"{i}. {' '.join(demo.split())}" for i, demo in enumerate(demos, start=1)),
            "shots": len(demos),
        }

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> Example | Rejection:
        """Clean the answer and run the filters, then reject a copy of any seed example of the task."""
        provenance = build_provenance(request, completion)
        text, note = extract_text(completion.text)
        text, dropped_tail = clean_text(text, task.output)
        finish_reason = "stop" if dropped_tail else completion.finish_reason
        failure = first_failure(text, task.output, finish_reason, None) or _copied_seed(text, task)
        if failure:
            reason, detail = failure
            detail = "; ".join(part for part in (detail, note) if part)
            return Rejection(request.label, reason, completion.text, detail, provenance)
        return Example(text=text, label=request.label, provenance=provenance)


def _copied_seed(text: str, task: TaskSpec) -> tuple[str, str] | None:
    # A model shown examples often hands one back; a seed in the dataset would leak into evaluation.
    for label in task.labels:
        for number, seed in enumerate(label.seeds, start=1):
            if filters.copy_of_passage(text, seed) or filters.normalize(text) == filters.normalize(seed):
                return "copy_of_seed", f"copy rate {filters.copy_rate(text, seed):.2f} of seed {number} of {label.name!r}"
    return None


def _check_labels(task: TaskSpec, values: Mapping[str, int], what: str) -> None:
    known = [spec.name for spec in task.labels]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{what} were given for label {name!r}, which task {task.name!r} does not have; labels: {known}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{what}[{name!r}] is {value!r}; give a whole number of requests, 0 or more")


def _templates(strategy: Strategy, task: TaskSpec, templates: Mapping[str, Template]) -> tuple[Template, ...]:
    names = strategy.template_names(task)
    missing = [name for name in names if name not in templates]
    if missing:
        raise ConfigError(
            f"templates {missing} were not loaded (got {sorted(templates)}); load them with strategy.load_templates(task)"
        )
    chosen = tuple(templates[name] for name in names)
    with_system = [t.path for t in chosen if any(role == "system" for role, _ in t.messages)]
    if len(with_system) > 1:
        raise ConfigError(
            f"both {with_system[0]} and {with_system[1]} have a '### system' message; "
            "set the task's system_template to '' or remove one of them"
        )
    return chosen
