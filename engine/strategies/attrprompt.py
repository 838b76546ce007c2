"""AttrPrompt (Yu et al., 2023): attributed prompts, one drawn value per attribute dimension.

`setup` has the LLM list values of each class-specific dimension (e.g. subtopic) per label, asks
it which other labels are most similar to each label, and removes every value it says would fit
one of those labels too. Class-independent dimensions (e.g. style, length) take their values from
the spec, or are generated once when given as an empty list. The result is written atomically to
`attributes.json` in the run folder; the `attributes_file` option loads such a file instead, so
setup makes no calls. Each generation request draws one value per dimension, seeded from (task
seed, label, sample index), and states the draw as numbered requirements. Provenance has no
field for the draw: rejections name it in their detail and `review` reports it per request id.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine import filters
from engine.errors import ConfigError
from engine.prompts import Template
from engine.strategies.answers import (
    ANSWER_SCHEMA, LIST_SCHEMA, ListStyle, distinct, object_schema, parse_yes_no, read_list, whole_items,
)
from engine.strategies.attrprompt_state import (
    ATTRIBUTES_FILE, FORMAT, NAME, AttributeSet, drop_removed, given_attributes, read_attributes, unique_names,
    write_attributes,
)
from engine.strategies.base import Ask, LabelOnlyStrategy, Review, derive_seed, parse_text_answer
from engine.strategies.planning import (
    check_flags, choose_templates, int_option, render_request, sample_indexes, task_templates,
)
from engine.types import Completion, Example, LabelSpec, Rejection, Request, SamplingParams, TaskSpec

__all__ = ["ATTRIBUTES_FILE", "FORMAT", "AttrPrompt", "AttributeSet", "parse_similar", "parse_values", "parse_yes_no"]

GENERATE = "attrprompt/generate"
CLASS_VALUES, SHARED_VALUES = "attrprompt/class_values", "attrprompt/shared_values"
SIMILAR, FILTER = "attrprompt/similar", "attrprompt/filter"
MAX_VALUES, MAX_SIMILAR = 50, 10
# Attribute values and label names: at most 20 words, a full stop trimmed; numbers in a JSON array count.
VALUES = ListStyle(max_words=20, trailing=",;.", scalars=True)
# Greedy decoding: which labels are similar, and whether a value is ambiguous, should not vary by run.
JUDGE_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=16, seed=0)
FILTER_SCHEMA = object_schema("answer", {"type": "string", "enum": ["yes", "no"]})


class AttrPrompt(LabelOnlyStrategy):
    """Attribute-diverse, label-conditioned generation without retrieval.

    Args:
        structured_output: ask for JSON (`{"text"}`, `{"items"}`, `{"labels"}`, `{"answer"}`) through JSON schemas.
        attributes: dimension -> values; an empty list has the LLM generate that dimension's values
            (per label if the dimension is class-specific, once for all labels otherwise).
        class_specific: dimensions whose values are generated per label (default ["subtopic"]).
        values_per_dimension: how many values setup asks for per list (1..50).
        attributes_file: an attributes.json of an earlier run: loaded instead of generating.
        filter_similar: remove class-specific values the LLM says fit a similar label too.
        similar_labels: how many most-similar labels each label's values are checked against (1..10).

    Raises:
        ConfigError: an option of the wrong type or out of range, or an unreadable attributes_file.
    """

    name = NAME
    plans_before_setup = False

    def __init__(self, structured_output: bool = False, attributes: Mapping[str, Sequence[str]] | None = None,
                 class_specific: Sequence[str] | None = None, values_per_dimension: int = 8,
                 attributes_file: str | None = None, filter_similar: bool = True, similar_labels: int = 2):
        check_flags(self.name, structured_output=structured_output, filter_similar=filter_similar)
        self.structured_output, self.filter_similar = structured_output, filter_similar
        self.values_per_dimension = int_option(self.name, "values_per_dimension", values_per_dimension, MAX_VALUES)
        self.similar_labels = int_option(self.name, "similar_labels", similar_labels, MAX_SIMILAR)
        self.attributes_file = None if attributes_file is None else Path(attributes_file)
        self.attributes: AttributeSet | None = None  # set by setup, or now from attributes_file
        self._audit: dict[str, Any] = {}
        if self.attributes_file is not None:
            if attributes is not None or class_specific is not None:
                raise ConfigError("attrprompt option attributes_file supplies every dimension and value; remove "
                                  "`attributes` and `class_specific` from strategy_options, or drop attributes_file")
            self.attributes, self._audit = read_attributes(self.attributes_file)
        self.class_specific = tuple(self.attributes.per_label) if self.attributes else unique_names(
            "class_specific", ["subtopic"] if class_specific is None else class_specific)
        self.given = {} if self.attributes else given_attributes(attributes or {}, self.class_specific)
        self.dimensions = self.attributes.dimensions if self.attributes else (
            *self.class_specific, *(d for d in self.given if d not in self.class_specific))
        if not self.dimensions:
            raise ConfigError("attrprompt needs at least one attribute dimension: set strategy_options.attributes "
                              "(e.g. {style: [formal, casual]}) or class_specific (e.g. [subtopic])")

    # --- templates ---------------------------------------------------------------------------------

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """System + generation template (attrprompt/generate unless the task names its own), then the setup steps."""
        stages = (CLASS_VALUES, SHARED_VALUES) + ((SIMILAR, FILTER) if self.filter_similar else ())
        return task_templates(task, self.name, GENERATE) + stages

    def load_templates(self, task: TaskSpec, root: Path | None = None) -> dict[str, Template]:
        """Load every template, after checking the task fits the options (and a loaded attributes file)."""
        self._check_task(task)
        return super().load_templates(task, root)

    def _check_task(self, task: TaskSpec) -> None:
        keys = Counter(filters.normalize(spec.name) for spec in task.labels)
        if self._filters(task) and (keys[""] or max(keys.values()) > 1):
            raise ConfigError(f"task {task.name!r}: label names {[s.name for s in task.labels]} must differ in letters "
                              "or digits for the similar-label step; rename them or set filter_similar: false")
        if self.attributes_file is not None and self.attributes is not None:
            self.attributes.check_labels(task, str(self.attributes_file))

    def _filters(self, task: TaskSpec) -> bool:
        return self.filter_similar and len(task.labels) > 1 and bool(self.class_specific)

    # --- setup: attribute values -------------------------------------------------------------------

    def setup(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, workdir: Path) -> dict[str, Any]:
        """Generate (or load) the attribute values, filter class-specific ones, write ATTRIBUTES_FILE.

        Returns:
            The report: dimensions, values (per label for class-specific ones), similar labels, what
            the filter removed and why, and the requests made per step.
        """
        self._check_task(task)
        asked: Counter[str] = Counter()
        if self.attributes_file is not None:
            source = str(self.attributes_file)
        else:
            source = "generated"
            self.attributes, self._audit = self._generate(task, templates, ask, asked)
        assert self.attributes is not None
        data = write_attributes(workdir, self.attributes, task.name, self._audit)
        return {"source": source, "file": ATTRIBUTES_FILE, "dimensions": data["dimensions"],
                "class_specific": list(data["class_specific"]),
                "values": {**data["class_specific"], **data["class_independent"]},
                "requests": dict(asked), **self._audit}

    def _generate(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask,
                  asked: Counter) -> tuple[AttributeSet, dict[str, Any]]:
        lists = {(d, s.name): self._list_request(task, templates, d, s)
                 for d in self.class_specific for s in task.labels}
        lists |= {(d, ""): self._list_request(task, templates, d, None) for d, v in self.given.items()
                  if not v and d not in self.class_specific}
        similar = {s.name: self._similar_request(task, templates, s) for s in task.labels if self._filters(task)}
        answers = ask([*lists.values(), *similar.values()])
        asked.update({CLASS_VALUES: len(self.class_specific) * len(task.labels), SHARED_VALUES: len(lists) -
                      len(self.class_specific) * len(task.labels), SIMILAR: len(similar)})
        found = {key: _listed(answers.get(r.id), self.values_per_dimension) for key, r in lists.items()}
        names = {label: parse_similar(answers[r.id].text, task, label, self._similar_count(task))
                 for label, r in similar.items() if r.id in answers}
        per_label = {d: {s.name: found[(d, s.name)] for s in task.labels} for d in self.class_specific}
        removed, notes = self._filter(task, templates, ask, asked, per_label, names) if similar else ({}, [])
        notes += [f"no {d!r} values for {lab or 'any label'}: the request failed or its answer held no list"
                  for (d, lab), values in found.items() if not values]
        shared = {d: tuple(v) or found[(d, "")] for d, v in self.given.items() if d not in self.class_specific}
        audit = {"similar_labels": names, "removed": removed, "notes": notes}
        return AttributeSet(self.dimensions, per_label, shared), audit

    def _filter(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, asked: Counter,
                per_label: dict[str, dict[str, tuple[str, ...]]], similar: Mapping[str, list[str]]):
        """Ask per value whether it fits a similar label too; drop the yeses in place. Returns (removed, notes)."""
        checks = {(d, lab, v): self._filter_request(task, templates, d, task.label(lab), v, similar[lab])
                  for d, by in per_label.items() for lab, values in by.items() if similar.get(lab) for v in values}
        answers = ask(list(checks.values())) if checks else {}
        asked[FILTER] += len(checks)
        removed: dict[str, dict[str, list[dict[str, Any]]]] = {}
        notes = [f"label {lab!r}: no similar labels were named, so its values were not filtered"
                 for lab in per_label.get(self.class_specific[0], {}) if not similar.get(lab)]
        for (d, lab, value), check in checks.items():
            reply = answers.get(check.id)
            verdict = parse_yes_no(reply.text) if reply else None
            if verdict is None:
                notes.append(f"{d} {value!r} of {lab!r} kept unchecked: the filter request "
                             f"{'failed' if reply is None else 'got neither yes nor no'}")
            elif verdict:
                removed.setdefault(d, {}).setdefault(lab, []).append(
                    {"value": value, "similar_labels": similar[lab], "answer": reply.text.strip()[:80],
                     "reason": f"the LLM said it could just as well belong to {' or '.join(similar[lab])}"})
        notes += drop_removed(per_label, removed)
        return {d: by_label for d, by_label in removed.items() if by_label}, notes

    def _similar_count(self, task: TaskSpec) -> int:
        return min(self.similar_labels, len(task.labels) - 1)

    def _list_request(self, task: TaskSpec, templates: Mapping[str, Template], dim: str,
                      label: LabelSpec | None) -> Request:
        step = CLASS_VALUES if label else SHARED_VALUES
        context = {"task_description": task.description or task.name, "output_kind": task.output.kind,
                   "dimension": dim, "count": self.values_per_dimension,
                   "label": label.name if label else "", "verbalization": label.verbalization if label else ""}
        room = max(task.sampling.max_tokens, 64 + 24 * self.values_per_dimension)
        seed = derive_seed(task.seed, self.name, step, dim, label.name if label else "")
        sampling = dataclasses.replace(task.sampling, max_tokens=room, seed=seed)
        return self._stage_request(templates, (task.system_template, step), context, sampling, label, LIST_SCHEMA)

    def _similar_request(self, task: TaskSpec, templates: Mapping[str, Template], label: LabelSpec) -> Request:
        others = [s for s in task.labels if s.name != label.name]
        context = {"label": label.name, "verbalization": label.verbalization, "count": self._similar_count(task),
                   "labels": "\n".join(f"- {s.name}: {s.verbalization}" for s in others)}
        names = {"type": "string", "enum": [s.name for s in others]}
        schema = object_schema("labels", {"type": "array", "items": names})
        sampling = dataclasses.replace(JUDGE_SAMPLING, max_tokens=24 + 16 * self._similar_count(task))
        return self._stage_request(templates, (SIMILAR,), context, sampling, label, schema)

    def _filter_request(self, task: TaskSpec, templates: Mapping[str, Template], dim: str, label: LabelSpec,
                        value: str, similar: list[str]) -> Request:
        context = {"output_kind": task.output.kind, "label": label.name, "verbalization": label.verbalization,
                   "dimension": dim, "value": value,
                   "similar": "\n".join(f"- {name}: {task.label(name).verbalization}" for name in similar)}
        return self._stage_request(templates, (FILTER,), context, JUDGE_SAMPLING, label, FILTER_SCHEMA)

    def _stage_request(self, templates: Mapping[str, Template], names: tuple[str, ...], context: dict[str, Any],
                       sampling: SamplingParams, label: LabelSpec | None, schema: dict[str, Any]) -> Request:
        context = {**context, "answer_format": "json" if self.structured_output else "text"}
        schema_sent = schema if self.structured_output else None
        return render_request(names[-1], label.name if label else "", choose_templates(templates, names), context,
                              sampling, 0, schema_sent)

    # --- generation --------------------------------------------------------------------------------

    def plan_counts(self, task: TaskSpec, counts: Mapping[str, int], templates: Mapping[str, Template],
                    start: Mapping[str, int] | None = None, history: Sequence[Example] = ()) -> list[Request]:
        """`counts[label]` requests per label with sample indexes from `start[label]`, each with its own draw.

        Raises:
            ConfigError: no attributes yet (setup has not run and no attributes_file), a label the task
                does not have, a negative count or start, or a template missing from `templates`.
        """
        if self.attributes is None:
            raise ConfigError("attrprompt plans from the attribute values its setup stage makes; call "
                              "strategy.setup(task, templates, ask, workdir) first (seedbed synth does) "
                              "or set attributes_file")
        indexes = sample_indexes(task, counts, start)
        chosen = choose_templates(templates, self.template_names(task)[: 2 if task.system_template else 1])
        return [self._generate_request(task, label, index, chosen) for label, planned in indexes for index in planned]

    def drawn(self, task: TaskSpec, label: str, sample_index: int) -> tuple[tuple[str, str], ...]:
        """The (dimension, value) pairs request `sample_index` of `label` states (empty before setup)."""
        return self.attributes.draw(task.seed, label, sample_index) if self.attributes else ()

    def _generate_request(self, task: TaskSpec, label: LabelSpec, index: int, chosen: tuple[Template, ...]) -> Request:
        draw = self.drawn(task, label.name, index)
        context = {"output_kind": task.output.kind, "min_words": task.output.min_words,
                   "max_words": task.output.max_words, "label": label.name, "verbalization": label.verbalization,
                   "attributed": "some" if draw else "none",
                   "answer_format": "json" if self.structured_output else "text",
                   "requirements": "\n".join(f"{i}. {d[:1].upper()}{d[1:]}: {v}" for i, (d, v) in enumerate(draw, 1))}
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, index))
        schema = ANSWER_SCHEMA if self.structured_output else None
        return render_request(self.name, label.name, chosen, context, sampling, index, schema, grounding=draw)

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> Example | Rejection:
        """Clean the answer and run the per-answer filters; a rejection's detail names the drawn attributes."""
        draw = self.drawn(task, request.label, request.sample_index)
        attrs = "attributes: " + "; ".join(f"{d}={v}" for d, v in draw) if draw else ""
        return parse_text_answer(request, completion, task.output, context=attrs)

    def review(self, task: TaskSpec, examples: list[tuple[Example, Request]], ask: Ask) -> Review:
        """Keep everything; report each kept example's drawn attributes by request id, and value coverage."""
        draws = {example.provenance.request_id: dict(self.drawn(task, request.label, request.sample_index))
                 for example, request in examples}
        used = {d: len({draw[d] for draw in draws.values() if d in draw}) for d in self.dimensions}
        return Review(list(examples), [], {"attributes_by_request": draws, "distinct_values_used": used})


# --- answers of the setup steps (never raise) ---------------------------------------------------------


def parse_values(raw: str) -> list[str]:
    """Distinct items of a list answer (see `answers.read_list`): values of at most 20 words."""
    return distinct(read_list(raw, VALUES))


def parse_similar(raw: str, task: TaskSpec, label: str, limit: int) -> list[str]:
    """Names of other labels of `task` an answer names, in its order, at most `limit`; [] for 'none'.

    An item that is a label's verbalization names that label; otherwise every label name it
    contains as a whole word counts, in order of appearance.
    """
    others = [spec for spec in task.labels if spec.name != label]
    found: list[str] = []
    for item in parse_values(raw):
        key = f" {filters.normalize(item)} "
        named = [s.name for s in others if filters.normalize(s.verbalization) == key.strip()] or [
            name for _, name in sorted((key.find(f" {filters.normalize(s.name)} "), s.name) for s in others
                                       if f" {filters.normalize(s.name)} " in key)]
        found += [name for name in named if name not in found]
    return found[:limit]


def _listed(completion: Completion | None, want: int) -> tuple[str, ...]:
    if completion is None:
        return ()
    return tuple(whole_items(parse_values(completion.text), completion.finish_reason))[:want]
