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
from engine.prompts import Template
from engine.strategies.answers import ANSWER_SCHEMA
from engine.strategies.base import LabelOnlyStrategy, copied, derive_seed, parse_text_answer
from engine.strategies.planning import choose_templates, render_request, sample_indexes, task_templates
from engine.types import Completion, Example, LabelSpec, Rejection, Request, TaskSpec

__all__ = ["FewGen", "DEFAULT_TEMPLATE", "DEFAULT_SHOTS", "MAX_SHOTS"]

DEFAULT_TEMPLATE = "fewgen/generate"
DEFAULT_SHOTS = 4
MAX_SHOTS = 32


class FewGen(LabelOnlyStrategy):
    """Plain k-shot prompting from each label's seed examples.

    Args:
        structured_output: ask for `{"text": ...}` through the endpoint's JSON-schema response format.
        shots: seed examples shown per request (0..32; 0 is zero-shot). A label with fewer seeds
            shows all of them, in a per-request random order.

    Raises:
        ConfigError: `shots` is not an integer in 0..32.
    """

    name = "fewgen"

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
        return task_templates(task, self.name, DEFAULT_TEMPLATE)

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
        indexes = sample_indexes(task, counts, start)
        chosen = choose_templates(templates, self.template_names(task))
        return [self._request(task, label, index, chosen) for label, planned in indexes for index in planned]

    def demonstrations(self, task: TaskSpec, label: LabelSpec, sample_index: int) -> tuple[str, ...]:
        """The seed examples request `sample_index` of `label` shows (deterministic; only this label's seeds)."""
        rng = random.Random(derive_seed(task.seed, self.name, "demonstrations", label.name, sample_index))
        return tuple(rng.sample(label.seeds, min(self.shots, len(label.seeds))))

    def _request(self, task: TaskSpec, label: LabelSpec, sample_index: int, templates: tuple[Template, ...]) -> Request:
        context = self._context(task, label, self.demonstrations(task, label, sample_index))
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, sample_index))
        schema = ANSWER_SCHEMA if self.structured_output else None
        return render_request(self.name, label.name, templates, context, sampling, sample_index, schema)

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
        return parse_text_answer(request, completion, task.output, check=lambda text: _copied_seed(text, task))


def _copied_seed(text: str, task: TaskSpec) -> tuple[str, str] | None:
    # A model shown examples often hands one back; a seed in the dataset would leak into evaluation.
    for label in task.labels:
        for number, seed in enumerate(label.seeds, start=1):
            if copied(text, seed):
                return "copy_of_seed", f"copy rate {filters.copy_rate(text, seed):.2f} of seed {number} of {label.name!r}"
    return None
