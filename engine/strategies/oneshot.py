"""One formatting example, several examples per call, self-reference (Lee et al., 2023, "Making Large
Language Models Better Data Creators").

A single JSON formatting example (`strategy_options.example`) defines the task: its `label_field`
holds the label, every other key is content. Each request targets one label and asks for up to
`per_call` new examples of it as a JSON array of objects with exactly the example's keys, so label
spaces with no meaning in words (yes/no, A-D, 1-5) work. A label's first requests show the
formatting example; once the run has kept examples of that label, later requests show `references`
of them instead (self-reference): drawn at random, or the most diverse / most similar set by
embedding. The draw is seeded from (task seed, label, sample index) over the examples kept so far,
so a resumed run plans the same requests.

Example.text is the content: the one content field's string, or, with several content fields, a
JSON object of them with sorted keys (`json.dumps(fields, sort_keys=True, ensure_ascii=False)`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine import filters
from engine.embed import DEFAULT_EMBEDDER, get_embedder
from engine.errors import ConfigError
from engine.prompts import Template, combined_identity
from engine.strategies.base import (
    Strategy,
    available_strategies,
    build_provenance,
    derive_seed,
    first_failure,
    request_id,
)
from engine.strategies.fewgen import _templates
from engine.types import Completion, Example, Hit, LabelSpec, Provenance, Rejection, Request, TaskSpec

__all__ = ["DEFAULT_TEMPLATE", "SELF_REFERENCE_MODES", "OneShot", "example_text", "read_objects"]

DEFAULT_TEMPLATE = "oneshot/generate"
SELF_REFERENCE_MODES = ("random", "diverse", "similar", "none")
MAX_PER_CALL = 20
MAX_REFERENCES = 10
_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_WRAPPER = re.compile(r'\{\s*"examples"\s*:\s*\[')
_NEXT_OBJECT = re.compile(r"\}\s*,?\s*\{")
_DECODER = json.JSONDecoder()
_CUT = ("truncated", "the server stopped at max_tokens inside this object; raise max_tokens or lower per_call")


class OneShot(Strategy):
    """Generation from one formatting example, with self-reference.

    Args:
        example: the formatting example, a JSON object with `label_field` and at least one content key.
        label_field: the example's key that holds the label (its value must name one of the task's labels).
        per_call: examples asked for per request (1..20).
        self_reference: how later requests pick earlier examples to show: random, diverse, similar,
            or none (always show the formatting example).
        references: earlier examples shown per self-reference request (1..10).
        embedder: embedder name for diverse/similar (see engine.embed.get_embedder).
        rounds_of: at most this many requests per label in one planning round, so later requests
            can reference the earlier ones' examples (None: a label's whole shortfall at once).
        structured_output: ask for `{"examples": [...]}` through a JSON schema.

    Raises:
        ConfigError: an option is missing or invalid (the message names it).
    """

    name = "oneshot"
    uses_retrieval = False

    def __init__(self, example: Mapping[str, Any] | None = None, label_field: str = "label", per_call: int = 5,
                 self_reference: str = "random", references: int = 3, embedder: str = DEFAULT_EMBEDDER,
                 rounds_of: int | None = None, structured_output: bool = False):
        if not isinstance(label_field, str) or not label_field:
            raise ConfigError(f"oneshot option label_field={label_field!r}; give the example's label key, e.g. answer")
        self.label_field = label_field
        self.example = _check_example(example, label_field)
        self.fields = tuple(key for key in self.example if key != label_field)
        self.per_call = _check_int("per_call", per_call, MAX_PER_CALL)
        self.references = _check_int("references", references, MAX_REFERENCES)
        self.rounds_of = None if rounds_of is None else _check_int("rounds_of", rounds_of, None)
        if self_reference not in SELF_REFERENCE_MODES:
            raise ConfigError(
                f"oneshot option self_reference={self_reference!r}; use one of {list(SELF_REFERENCE_MODES)}"
            )
        if not isinstance(embedder, str) or not embedder.strip():
            raise ConfigError(f"oneshot option embedder={embedder!r}; give a name, e.g. {DEFAULT_EMBEDDER!r}")
        self.self_reference, self.embedder_name = self_reference, embedder
        self.structured_output = bool(structured_output)
        self._embedder = None
        self._shown: dict[str, tuple[str, ...]] = {}  # request id -> contents it showed (for copy checks)

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """The system template and the task's template, or `oneshot/generate` when the task names
        another strategy's template (task specs default to `synthesizrr/refine`)."""
        main = task.template
        owner = main.split("/", 1)[0] if "/" in main else ""
        if not main or (owner != self.name and owner in available_strategies()):
            main = DEFAULT_TEMPLATE
        return tuple(name for name in (task.system_template, main) if name)

    def setup(self, task, templates, ask, workdir) -> dict[str, Any]:
        """Check the example against the task and load the embedder now, before any LLM call."""
        self._label_values(task)
        if self.self_reference in ("diverse", "similar"):
            self._embed()
        return {"self_reference": self.self_reference, "embedder": self._embedder.id if self._embedder else None}

    def plan(self, task: TaskSpec, hits_by_label: Mapping[str, list[Hit]],
             templates: Mapping[str, Template]) -> list[Request]:
        """Requests for `examples_per_label` examples of every label; `hits_by_label` is ignored."""
        return self.plan_counts(task, {label.name: task.examples_per_label for label in task.labels}, templates)

    def plan_counts(self, task: TaskSpec, counts: Mapping[str, int], templates: Mapping[str, Template],
                    start: Mapping[str, int] | None = None, history: Sequence[Example] = ()) -> list[Request]:
        """Requests for `counts[label]` more EXAMPLES per label: ceil(count / per_call) requests (at
        most `rounds_of`), sample indexes from start[label]; `history` feeds self-reference.

        Raises:
            ConfigError: an unknown label, a negative count or start, a missing template, or an
                example label the task does not have.
        """
        start = start or {}
        _check_counts(task, counts, "counts")
        _check_counts(task, start, "start")
        values = self._label_values(task)
        chosen = _templates(self, task, templates)
        identity = combined_identity(chosen)
        requests: list[Request] = []
        for label in task.labels:
            sizes = self._batch_sizes(counts.get(label.name, 0))
            pool = self._pool(history, label.name, values) if sizes and self.self_reference != "none" else []
            vectors = self._vectors(pool)
            first = start.get(label.name, 0)
            for offset, size in enumerate(sizes):
                shown = self._draw(task, label.name, first + offset, pool, vectors)
                requests.append(self._request(task, label, values, first + offset, size, shown, chosen, identity))
        return requests

    def references_for(self, task: TaskSpec, label: str, sample_index: int,
                       history: Sequence[Example]) -> tuple[dict, ...]:
        """The objects request `sample_index` of `label` shows, given the examples kept so far."""
        pool = self._pool(history, label, self._label_values(task)) if self.self_reference != "none" else []
        return tuple(obj for obj, _ in self._draw(task, label, sample_index, pool, self._vectors(pool)))

    def _batch_sizes(self, wanted: int) -> list[int]:
        full, rest = divmod(wanted, self.per_call)
        sizes = [self.per_call] * full + ([rest] if rest else [])
        return sizes[: self.rounds_of] if self.rounds_of else sizes

    def _pool(self, history: Sequence[Example], label: str, values: Mapping[str, Any]) -> list[tuple[dict, str]]:
        pool = []
        for example in history:
            obj = self._object_of(example, values) if example.label == label else None
            if obj is not None:
                pool.append((obj, _content(obj, self.fields)))
        return pool

    def _object_of(self, example: Example, values: Mapping[str, Any]) -> dict | None:
        if len(self.fields) == 1:
            content: Any = {self.fields[0]: example.text}
        else:
            try:
                content = json.loads(example.text)
            except ValueError:
                return None
            if not isinstance(content, dict) or set(content) != set(self.fields):
                return None
        return {key: values[example.label] if key == self.label_field else content[key] for key in self.example}

    def _draw(self, task, label, sample_index, pool, vectors) -> tuple[tuple[dict, str], ...]:
        if not pool:
            return ((self.example, _content(self.example, self.fields)),)
        k = min(self.references, len(pool))
        rng = random.Random(derive_seed(task.seed, self.name, "references", label, sample_index))
        if vectors is None:
            picks = rng.sample(range(len(pool)), k)
        else:
            picks = _by_embedding(vectors, rng.randrange(len(pool)), k, similar=self.self_reference == "similar")
        return tuple(pool[i] for i in picks)

    def _vectors(self, pool: list[tuple[dict, str]]) -> np.ndarray | None:
        if not pool or self.self_reference not in ("diverse", "similar"):
            return None
        return np.asarray(self._embed().encode([content for _, content in pool]), dtype=np.float32)

    def _embed(self):
        if self._embedder is None:
            self._embedder = get_embedder(self.embedder_name)
        return self._embedder

    def _request(self, task, label: LabelSpec, values, sample_index, size, shown, templates, identity) -> Request:
        template_id, template_sha = identity
        context = self._context(task, label, values[label.name], size, shown)
        messages = tuple(message for template in templates for message in template.render_from(context))
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, sample_index))
        schema = self._schema(values, size) if self.structured_output else None
        rid = request_id(self.name, template_sha, messages, sampling, sample_index, schema)
        self._shown[rid] = tuple(content for _, content in shown)
        return Request(id=rid, label=label.name, messages=messages, template_id=template_id,
                       template_sha256=template_sha, sampling=sampling, hit=None, sample_index=sample_index,
                       json_schema=schema)

    def _context(self, task: TaskSpec, label: LabelSpec, value: Any, size: int, shown) -> dict[str, Any]:
        # Every variable a oneshot template may use; a template declares the subset it needs.
        plain = label.verbalization.strip().casefold() == label.name.strip().casefold()
        return {
            "task_description": task.description or task.output.kind,
            "output_kind": task.output.kind,
            "min_words": task.output.min_words,
            "max_words": task.output.max_words,
            "count": size,
            "fields": ", ".join(json.dumps(key, ensure_ascii=False) for key in self.example),
            "label_field": self.label_field,
            "label_value": json.dumps(value, ensure_ascii=False),
            "verbalization": label.verbalization,
            "meaning": "bare" if plain else "described",
            "reference_kind": "format" if shown[0][0] is self.example else "self",
            "references": "\n".join(json.dumps(obj, ensure_ascii=False) for obj, _ in shown),
            "answer_format": "json" if self.structured_output else "text",
        }

    def _schema(self, values: Mapping[str, Any], count: int) -> dict[str, Any]:
        label = {"type": _SCHEMA_TYPES[type(self.example[self.label_field])], "enum": list(values.values())}
        properties = {key: label if key == self.label_field else _schema_of(value)
                      for key, value in self.example.items()}
        item = {"type": "object", "properties": properties, "required": list(self.example),
                "additionalProperties": False}
        # An object at the root, because strict JSON-schema endpoints (OpenAI) refuse a root array.
        examples = {"type": "array", "items": item, "minItems": count, "maxItems": count}
        return {"title": "examples", "type": "object", "properties": {"examples": examples},
                "required": ["examples"], "additionalProperties": False}

    def _label_values(self, task: TaskSpec) -> dict[str, Any]:
        """{label name: the label as the example's JSON type}; checks the example's own label."""
        names = [spec.name for spec in task.labels]
        own = _label_text(self.example[self.label_field])
        if own not in names:
            raise ConfigError(f"oneshot example has {self.label_field}={self.example[self.label_field]!r}, which task "
                              f"{task.name!r} does not have; labels: {names}; make the example use one of them")
        return {name: _typed(name, self.example[self.label_field], self.label_field) for name in names}

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> list[Example | Rejection]:
        """Read the JSON array and judge every object: format, label, filters, copies. Never raises."""
        provenance = build_provenance(request, completion)
        items, broken = read_objects(completion.text)
        if not items and not broken and not re.search(r"[\[{]", completion.text):
            reason = filters.refusal(completion.text) or "bad_format"
            return [Rejection(request.label, reason, completion.text,
                              "no JSON array or object in the answer; the prompt asks for a JSON array", provenance)]
        results = [self._judge(item, request, task, provenance) for item in items]
        for number, fragment in enumerate(broken, start=1):
            cut = number == len(broken) and completion.finish_reason == "length"
            reason, detail = _CUT if cut else ("bad_format", "not valid JSON")
            results.append(Rejection(request.label, reason, fragment, detail, provenance))
        empty = Rejection(request.label, "empty", completion.text, "the answer is an empty list", provenance)
        return results or [empty]

    def _judge(self, item: Any, request: Request, task: TaskSpec, provenance: Provenance) -> Example | Rejection:
        raw = json.dumps(item, ensure_ascii=False)
        problem = self._format_problem(item)
        if problem:
            return Rejection(request.label, problem[0], raw, problem[1], provenance)
        label = _label_name(item[self.label_field], task)
        if label is None:
            names = [spec.name for spec in task.labels]
            detail = f"{self.label_field}={item[self.label_field]!r} is not one of the task's labels {names}"
            return Rejection(request.label, "unknown_label", raw, detail, provenance)
        fields = {key: item[key].strip() if isinstance(item[key], str) else item[key] for key in self.fields}
        content = _content(fields, self.fields)
        failure = first_failure(content, task.output, "stop", None) or self._copied(content, request.id)
        if failure:
            return Rejection(label, failure[0], raw, failure[1], provenance)
        return Example(text=example_text(fields), label=label, provenance=provenance)

    def _format_problem(self, item: Any) -> tuple[str, str] | None:
        expected = list(self.example)
        if not isinstance(item, dict):
            return "bad_format", f"a list item is {_kind(item)}, not a JSON object with the keys {expected}"
        missing = [key for key in expected if key not in item]
        extra = [key for key in item if key not in self.example]
        if missing or extra:
            return "bad_format", f"missing keys {missing}, unexpected keys {extra}; each object needs {expected}"
        for key in self.fields:
            if _kind(item[key]) != _kind(self.example[key]):
                return "bad_format", (f"field {key!r} is {_kind(item[key])}; "
                                      f"the formatting example has {_kind(self.example[key])}")
            if isinstance(item[key], str) and not item[key].strip():
                return "empty", f"field {key!r} is empty"
        return None

    def _copied(self, content: str, rid: str) -> tuple[str, str] | None:
        # Small models often hand back the example they were shown, or change one word of it.
        example = _content(self.example, self.fields)
        shown_texts = [("copy_of_example", example)] + [("copy_of_reference", s) for s in self._shown.get(rid, ())]
        for reason, shown in shown_texts:
            if filters.copy_of_passage(content, shown) or filters.normalize(content) == filters.normalize(shown):
                return reason, f"copy rate {filters.copy_rate(content, shown):.2f} of an example the prompt showed"
        return None


# --- reading answers ---------------------------------------------------------------------------


def read_objects(raw: str) -> tuple[list[Any], list[str]]:
    """The items of the JSON array in a model answer, tolerating fences, text around it, a
    `{"examples": [...]}` wrapper, one object per line, and a cut-off or broken object.

    Returns:
        (decoded items, text fragments that were not valid JSON, in answer order).
    """
    body = "\n".join(line for line in raw.splitlines() if not _FENCE.match(line))
    starts = [i for i in (body.find("["), body.find("{")) if i >= 0]
    if not starts:
        return [], []
    start = min(starts)
    try:
        value, _ = _DECODER.raw_decode(body, start)
    except ValueError:
        value = None
    if isinstance(value, list):
        return value, []
    if isinstance(value, dict) and set(value) == {"examples"} and isinstance(value["examples"], list):
        return value["examples"], []
    wrapper = _WRAPPER.match(body, start)
    items, broken = _scan(body, wrapper.end() if wrapper else start + (body[start] == "["))
    return (items, broken) if items or broken or value is not None else ([], [body[start:].strip()])


def _scan(body: str, pos: int) -> tuple[list[Any], list[str]]:
    items, broken = [], []
    while (at := body.find("{", pos)) >= 0:
        try:
            value, pos = _DECODER.raw_decode(body, at)
            items.append(value)
        except ValueError:
            following = _NEXT_OBJECT.search(body, at + 1)
            if following is None:
                broken.append(body[at:].strip())
                break
            broken.append(body[at:following.start() + 1].strip())
            pos = following.end() - 1
    return items, broken


def example_text(fields: Mapping[str, Any]) -> str:
    """Example.text for an example's content fields: the one string, else sorted-key JSON."""
    if len(fields) == 1:
        (value,) = fields.values()
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return json.dumps(dict(fields), sort_keys=True, ensure_ascii=False)


def _content(obj: Mapping[str, Any], fields: Sequence[str]) -> str:
    # What filters, copy checks and embeddings read: the content values, one per line.
    return "\n".join(obj[k] if isinstance(obj[k], str) else json.dumps(obj[k], ensure_ascii=False) for k in fields)


def _by_embedding(vectors: np.ndarray, anchor: int, k: int, similar: bool) -> list[int]:
    """From `anchor`: its k-1 nearest (similar), or greedily the least similar to all chosen (diverse)."""
    to_anchor = np.round(vectors @ vectors[anchor], 6)  # rounded so ties break by index on every machine
    chosen, closest = [anchor], to_anchor.copy()
    while len(chosen) < k:
        rest = [i for i in range(len(vectors)) if i not in chosen]
        best = max(rest, key=lambda i: (to_anchor[i], -i)) if similar else min(rest, key=lambda i: (closest[i], i))
        chosen.append(best)
        closest = np.maximum(closest, np.round(vectors @ vectors[best], 6))
    return chosen


# --- labels, types and options -------------------------------------------------------------------

_SCHEMA_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    kinds = {str: "a string", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return kinds.get(type(value), "null")


def _schema_of(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {"type": "array", "items": _schema_of(value[0]) if value else {"type": "string"}}
    if isinstance(value, dict):
        return {"type": "object", "properties": {k: _schema_of(v) for k, v in value.items()},
                "required": list(value), "additionalProperties": False}
    return {"type": _SCHEMA_TYPES[type(value)]}


def _label_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else str(value)
    return None


def _label_name(value: Any, task: TaskSpec) -> str | None:
    text = _label_text(value)
    names = [spec.name for spec in task.labels]
    if text is None or text in names:
        return text
    folded = [name for name in names if name.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


def _typed(name: str, like: Any, field: str) -> Any:
    try:
        if isinstance(like, bool):
            return {"true": True, "false": False}[name.lower()]
        return name if isinstance(like, str) else type(like)(name)
    except (KeyError, ValueError):
        raise ConfigError(f"oneshot example's {field} is {_kind(like)}, but label {name!r} cannot be one; "
                          "write the example's label as a string") from None


def _check_example(example: Any, label_field: str) -> dict[str, Any]:
    if not isinstance(example, Mapping) or not all(isinstance(key, str) for key in example):
        raise ConfigError("oneshot needs strategy_options.example: one JSON object that shows the format, e.g. "
                          f'{{"text": "...", "{label_field}": "yes"}}; got {example!r:.80}')
    if label_field not in example or len(example) < 2:
        raise ConfigError(f"oneshot example {dict(example)!r:.120} needs the label key {label_field!r} (option "
                          "label_field) and at least one content key")
    odd = [k for k, v in example.items() if _kind(v) == "null" or (k == label_field and _label_text(v) is None)]
    if odd:
        raise ConfigError(f"oneshot example keys {odd} hold an unusable value; use strings, numbers, booleans, "
                          "lists or objects (the label: a string, number or boolean)")
    return dict(example)


def _check_int(option: str, value: Any, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high is not None and value > high):
        allowed = f"1 to {high}" if high else "1 or more"
        raise ConfigError(f"oneshot option {option}={value!r} is not allowed; give an integer from {allowed}")
    return value


def _check_counts(task: TaskSpec, values: Mapping[str, int], what: str) -> None:
    known = [spec.name for spec in task.labels]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(
                f"{what} were given for label {name!r}, which task {task.name!r} does not have; labels: {known}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{what}[{name!r}] is {value!r}; give a whole number, 0 or more")

