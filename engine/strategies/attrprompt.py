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
import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import filters
from engine.errors import ConfigError
from engine.index.manifest import write_json_atomic
from engine.prompts import Template, combined_identity
from engine.strategies.base import (
    Ask, Review, Strategy, available_strategies, build_provenance, clean_text, derive_seed, extract_text,
    first_failure, request_id,
)
from engine.strategies.synthesizrr import ANSWER_SCHEMA
from engine.types import Completion, Example, Hit, LabelSpec, Rejection, Request, SamplingParams, TaskSpec

__all__ = ["ATTRIBUTES_FILE", "FORMAT", "AttrPrompt", "AttributeSet", "parse_similar", "parse_values", "parse_yes_no"]

GENERATE = "attrprompt/generate"
CLASS_VALUES, SHARED_VALUES = "attrprompt/class_values", "attrprompt/shared_values"
SIMILAR, FILTER = "attrprompt/similar", "attrprompt/filter"
ATTRIBUTES_FILE = "attributes.json"
FORMAT = "seedbed-attrprompt/1"
MAX_VALUES, MAX_SIMILAR, MAX_VALUE_WORDS = 50, 10, 20
# Greedy decoding: which labels are similar, and whether a value is ambiguous, should not vary by run.
JUDGE_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=16, seed=0)
def _object_schema(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"title": key, "type": "object", "properties": {key: value}, "required": [key],
            "additionalProperties": False}


LIST_SCHEMA = _object_schema("items", {"type": "array", "items": {"type": "string"}})
FILTER_SCHEMA = _object_schema("answer", {"type": "string", "enum": ["yes", "no"]})
_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*\u2022+]\s+|\(?\d{1,3}[.):]\s+|[a-z][.)]\s+)")
_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|here (?:are|is)|let me know|i hope|note)\b", re.IGNORECASE
)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "`": "`"}


@dataclass(frozen=True)
class AttributeSet:
    """Dimensions in draw order; class-specific values per label (`per_label[dim][label]`), others shared."""

    dimensions: tuple[str, ...]
    per_label: dict[str, dict[str, tuple[str, ...]]]
    shared: dict[str, tuple[str, ...]]

    def values(self, dimension: str, label: str) -> tuple[str, ...]:
        """The values `label` may draw for `dimension` (empty: the dimension is left out for it)."""
        if dimension in self.per_label:
            return self.per_label[dimension].get(label, ())
        return self.shared.get(dimension, ())

    def draw(self, task_seed: int, label: str, sample_index: int) -> tuple[tuple[str, str], ...]:
        """One (dimension, value) per dimension with values, stable for the same seed, label and index."""
        rng = random.Random(derive_seed(task_seed, AttrPrompt.name, "draw", label, sample_index))
        return tuple((dim, rng.choice(values)) for dim in self.dimensions if (values := self.values(dim, label)))

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "dimensions": list(self.dimensions),
                "class_specific": {d: {lab: list(v) for lab, v in by.items()} for d, by in self.per_label.items()},
                "class_independent": {d: list(v) for d, v in self.shared.items()}}

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> AttributeSet:
        """Read `as_dict` output back. Raises ConfigError naming `source` and the bad field."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ConfigError(f"{source} is not an attributes file (want an object with format {FORMAT!r}, got "
                              f"{raw.get('format') if isinstance(raw, dict) else type(raw).__name__!r}); "
                              f"give the {ATTRIBUTES_FILE} an attrprompt run wrote")
        dims = _strings(raw.get("dimensions"), f"{source}: dimensions")
        per_label, shared = raw.get("class_specific"), raw.get("class_independent")
        nested = isinstance(per_label, dict) and all(isinstance(v, dict) for v in per_label.values())
        if not nested or not isinstance(shared, dict):
            raise ConfigError(f"{source}: class_specific must map dimension -> label -> values and class_independent "
                              "dimension -> values")
        if sorted(dims) != sorted([*per_label, *shared]) or set(per_label) & set(shared):
            raise ConfigError(f"{source}: dimensions {dims} must be the keys of class_specific {sorted(per_label)} "
                              f"and class_independent {sorted(shared)}, each in one of them")
        return cls(tuple(dims),
                   {d: {lab: tuple(_strings(v, f"{source}: class_specific.{d}.{lab}")) for lab, v in by.items()}
                    for d, by in per_label.items()},
                   {d: tuple(_strings(v, f"{source}: class_independent.{d}")) for d, v in shared.items()})


class AttrPrompt(Strategy):
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

    name = "attrprompt"
    uses_retrieval = False

    def __init__(self, structured_output: bool = False, attributes: Mapping[str, Sequence[str]] | None = None,
                 class_specific: Sequence[str] | None = None, values_per_dimension: int = 8,
                 attributes_file: str | None = None, filter_similar: bool = True, similar_labels: int = 2):
        for option, value in (("structured_output", structured_output), ("filter_similar", filter_similar)):
            if not isinstance(value, bool):
                raise ConfigError(f"attrprompt option {option}={value!r} is not allowed; give true or false")
        self.structured_output, self.filter_similar = structured_output, filter_similar
        self.values_per_dimension = _count("values_per_dimension", values_per_dimension, MAX_VALUES)
        self.similar_labels = _count("similar_labels", similar_labels, MAX_SIMILAR)
        self.attributes_file = None if attributes_file is None else Path(attributes_file)
        self.attributes: AttributeSet | None = None  # set by setup, or now from attributes_file
        self._audit: dict[str, Any] = {}
        if self.attributes_file is not None:
            if attributes is not None or class_specific is not None:
                raise ConfigError("attrprompt option attributes_file supplies every dimension and value; remove "
                                  "`attributes` and `class_specific` from strategy_options, or drop attributes_file")
            self.attributes, self._audit = _read_file(self.attributes_file)
        self.class_specific = tuple(self.attributes.per_label) if self.attributes else _names(
            "class_specific", ["subtopic"] if class_specific is None else class_specific)
        self.given = {} if self.attributes else _given(attributes or {}, self.class_specific)
        self.dimensions = self.attributes.dimensions if self.attributes else (
            *self.class_specific, *(d for d in self.given if d not in self.class_specific))
        if not self.dimensions:
            raise ConfigError("attrprompt needs at least one attribute dimension: set strategy_options.attributes "
                              "(e.g. {style: [formal, casual]}) or class_specific (e.g. [subtopic])")

    # --- templates ---------------------------------------------------------------------------------

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """System + generation template (attrprompt/generate unless the task names its own), then the setup steps."""
        main, stages = task.template, (CLASS_VALUES, SHARED_VALUES) + ((SIMILAR, FILTER) if self.filter_similar else ())
        owner = main.split("/", 1)[0] if "/" in main else ""
        if not main or (owner != self.name and owner in available_strategies()):
            main = GENERATE
        return tuple(name for name in (task.system_template, main) if name) + stages

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
            for dim, by_label in self.attributes.per_label.items():
                missing = [spec.name for spec in task.labels if spec.name not in by_label]
                if missing:
                    raise ConfigError(f"attributes_file {self.attributes_file} has no {dim!r} values for label(s) "
                                      f"{missing} of task {task.name!r}; generate a new file (drop attributes_file)")

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
        Path(workdir).mkdir(parents=True, exist_ok=True)
        data = self.attributes.as_dict()
        write_json_atomic(Path(workdir) / ATTRIBUTES_FILE, {**data, "task": task.name, **self._audit})
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
        for d, by_label in removed.items():
            for lab, records in list(by_label.items()):
                gone = {r["value"] for r in records}
                kept = tuple(v for v in per_label[d][lab] if v not in gone)
                if kept:
                    per_label[d][lab] = kept
                else:  # an empty list would silently drop the dimension; the class keeps its values
                    del by_label[lab]
                    notes.append(f"the filter found every {d!r} value of {lab!r} ambiguous; all were kept instead")
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
        schema = _object_schema("labels", {"type": "array", "items": names})
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
        chosen = _chosen(templates, names)
        context = {**context, "answer_format": "json" if self.structured_output else "text"}
        messages = tuple(m for t in chosen for m in t.render_from(context))
        template_id, sha = combined_identity(chosen)
        schema_sent = schema if self.structured_output else None
        return Request(request_id(names[-1], sha, messages, sampling, 0, schema_sent),
                       label.name if label else "", messages, template_id, sha, sampling, json_schema=schema_sent)

    # --- generation --------------------------------------------------------------------------------

    def plan(self, task: TaskSpec, hits_by_label: Mapping[str, list[Hit]],
             templates: Mapping[str, Template]) -> list[Request]:
        """`examples_per_label` requests per label; `hits_by_label` is ignored (no retrieval)."""
        return self.plan_counts(task, {label.name: task.examples_per_label for label in task.labels}, templates)

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
        start = start or {}
        _check_counts(task, counts, "counts")
        _check_counts(task, start, "start")
        main = self.template_names(task)[: 2 if task.system_template else 1]
        chosen = _chosen(templates, main)
        return [self._generate_request(task, label, index, chosen) for label in task.labels
                for index in range(start.get(label.name, 0), start.get(label.name, 0) + counts.get(label.name, 0))]

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
        messages = tuple(m for t in chosen for m in t.render_from(context))
        template_id, sha = combined_identity(chosen)
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, index))
        schema = ANSWER_SCHEMA if self.structured_output else None
        return Request(request_id(self.name, sha, messages, sampling, index, schema), label.name, messages,
                       template_id, sha, sampling, hit=None, sample_index=index, json_schema=schema)

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> Example | Rejection:
        """Clean the answer and run the per-answer filters; a rejection's detail names the drawn attributes."""
        provenance = build_provenance(request, completion)
        text, note = extract_text(completion.text)
        text, dropped_tail = clean_text(text, task.output)
        failure = first_failure(text, task.output, "stop" if dropped_tail else completion.finish_reason, None)
        if failure:
            draw = self.drawn(task, request.label, request.sample_index)
            attrs = "attributes: " + "; ".join(f"{d}={v}" for d, v in draw) if draw else ""
            return Rejection(request.label, failure[0], completion.text,
                             "; ".join(p for p in (failure[1], note, attrs) if p), provenance)
        return Example(text=text, label=request.label, provenance=provenance)

    def review(self, task: TaskSpec, examples: list[tuple[Example, Request]], ask: Ask) -> Review:
        """Keep everything; report each kept example's drawn attributes by request id, and value coverage."""
        draws = {example.provenance.request_id: dict(self.drawn(task, request.label, request.sample_index))
                 for example, request in examples}
        used = {d: len({draw[d] for draw in draws.values() if d in draw}) for d in self.dimensions}
        return Review(list(examples), [], {"attributes_by_request": draws, "distinct_values_used": used})


# --- answers of the setup steps (never raise) ---------------------------------------------------------


def parse_values(raw: str) -> list[str]:
    """Distinct items of a list answer: a JSON array (or an object holding one, or a cut-off array's quoted
    strings), else one item per line without bullets, numbering, quotes, markdown and chatter."""
    body = "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()
    items = _json_items(body)
    if items is None:
        items = [_clean_item(line) for line in body.splitlines()]
        items = [item for item in items if item and not item.endswith(":") and not _CHATTER.match(item)]
    seen: set[str] = set()
    usable = [i for i in items
              if filters.normalize(i) and not filters.refusal(i) and filters.word_count(i) <= MAX_VALUE_WORDS]
    return [i for i in usable if not (filters.normalize(i) in seen or seen.add(filters.normalize(i)))]


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


def parse_yes_no(raw: str) -> bool | None:
    """True for a yes, False for a no (plain or `{"answer": ...}`), None for anything else."""
    body = "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()
    try:
        value = json.loads(body)
        body = str(value.get("answer", "")) if isinstance(value, dict) else body
    except ValueError:
        pass
    words = re.sub(r"^(?:the )?answer(?: is)? ", "", filters.normalize(body)).split()
    return {"yes": True, "no": False}.get(words[0] if words else "")


def _listed(completion: Completion | None, want: int) -> tuple[str, ...]:
    if completion is None:
        return ()
    items = parse_values(completion.text)
    return tuple(items[:-1] if completion.finish_reason == "length" else items)[:want]


def _json_items(body: str) -> list[str] | None:
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    lead = body[:start].rstrip()
    if start < 0 or (lead and ("\n" in lead or not lead.endswith(":"))):
        return None  # JSON comes first, or right after one lead-in line like "Here are the values:"
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except ValueError:  # cut off mid-array: the complete quoted strings, if any
        quoted = [_clean_item(_unescape(m)) for m in _QUOTED.findall(body[start:])
                  if m.lower() not in ("items", "labels")]
        return quoted or None
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list):
        return None
    return [_clean_item(_item_text(v)) for v in value]


def _item_text(value: Any) -> str:
    if isinstance(value, dict):  # [{"value": "...", "description": "..."}]
        return ": ".join(str(v) for v in value.values() if isinstance(v, (str, int, float)))
    return value if isinstance(value, str) else str(value)


def _unescape(quoted: str) -> str:
    try:
        return json.loads(f'"{quoted}"')
    except ValueError:
        return quoted


def _clean_item(line: str) -> str:
    line = _BULLET.sub("", line.strip()).replace("**", "").replace("__", "").strip().rstrip(",;.").strip()
    while len(line) >= 2 and _QUOTES.get(line[0]) == line[-1] and not {line[0], line[-1]} & set(line[1:-1]):
        line = line[1:-1].strip()
    return " ".join(line.split())


# --- options and helpers ------------------------------------------------------------------------------


def _read_file(path: Path) -> tuple[AttributeSet, dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"attrprompt option attributes_file={str(path)!r}: no such file; give the path of the "
                          f"{ATTRIBUTES_FILE} an earlier attrprompt run wrote into its --out folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"attributes_file {path} is not valid JSON ({exc}); "
                          "regenerate it with a run without attributes_file") from None
    audit = {key: raw[key] for key in ("similar_labels", "removed", "notes") if key in raw}
    return AttributeSet.from_dict(raw, str(path)), audit


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings, got {value!r:.80}")
    return [" ".join(v.split()) for v in value]


def _names(option: str, value: Any) -> tuple[str, ...]:
    names = _strings(value, f"attrprompt option {option}")
    if len(set(names)) != len(names) or any(len(n) > 60 for n in names):
        raise ConfigError(f"attrprompt option {option}={value!r}: names must be distinct and at most 60 characters")
    return tuple(names)


def _given(attributes: Any, class_specific: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if not isinstance(attributes, Mapping):
        raise ConfigError(f"attrprompt option attributes={attributes!r} must map dimension names to value lists, "
                          "e.g. {style: [formal, casual], length: []} ([] = let the LLM generate them)")
    _names("attributes", list(attributes))
    given = {}
    for raw_dim, values in attributes.items():
        dim, listed = " ".join(raw_dim.split()), _strings(values, f"attrprompt option attributes.{raw_dim}")
        if listed and dim in class_specific:
            raise ConfigError(f"attrprompt option attributes.{dim} lists values, but {dim!r} is class-specific "
                              "(generated per label); give it [] or load fixed per-label values with attributes_file")
        given[dim] = tuple(dict.fromkeys(listed))
    return given


def _count(option: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"attrprompt option {option}={value!r} is not allowed; give an integer from 1 to {most}")
    return value


def _chosen(templates: Mapping[str, Template], names: Sequence[str]) -> tuple[Template, ...]:
    wanted = [name for name in names if name]
    missing = [name for name in wanted if name not in templates]
    if missing:
        raise ConfigError(f"templates {missing} were not loaded (got {sorted(templates)}); "
                          "load them with strategy.load_templates(task)")
    chosen = tuple(templates[name] for name in wanted)
    with_system = [t.path for t in chosen if any(role == "system" for role, _ in t.messages)]
    if len(with_system) > 1:
        raise ConfigError(f"both {with_system[0]} and {with_system[1]} have a '### system' message; "
                          "set the task's system_template to '' or remove one of them")
    return chosen


def _check_counts(task: TaskSpec, values: Mapping[str, int], what: str) -> None:
    known = [spec.name for spec in task.labels]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{what} were given for label {name!r}, which task {task.name!r} does not have; "
                              f"labels: {known}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{what}[{name!r}] is {value!r}; give a whole number of requests, 0 or more")
