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
import logging
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine import filters
from engine.embed import DEFAULT_EMBEDDER, get_embedder
from engine.errors import ConfigError
from engine.prompts import Template
from engine.strategies.answers import read_objects  # also exported from here
from engine.strategies.base import LabelOnlyStrategy, build_provenance, copied, derive_seed, first_failure
from engine.strategies.oneshot_format import (
    check_example, content, example_text, examples_schema, format_problem, label_name, label_values,
)
from engine.strategies.planning import check_counts, choose_templates, int_option, render_request, task_templates
from engine.types import Completion, Example, LabelSpec, Provenance, Rejection, Request, TaskSpec

__all__ = ["DEFAULT_TEMPLATE", "SELF_REFERENCE_MODES", "OneShot", "example_text", "read_objects"]

DEFAULT_TEMPLATE = "oneshot/generate"
SELF_REFERENCE_MODES = ("random", "diverse", "similar", "none")
MAX_PER_CALL = 20
MAX_REFERENCES = 10
log = logging.getLogger(__name__)
TOKENS_PER_WORD = 1.5  # English words per BPE token, rounded up for names and numbers
JSON_TOKENS_PER_OBJECT = 20  # braces, keys, quotes and the label field of one object
_CUT = ("truncated", "the server stopped at max_tokens inside this object; raise max_tokens or lower per_call")


class OneShot(LabelOnlyStrategy):
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

    def __init__(self, example: Mapping[str, Any] | None = None, label_field: str = "label", per_call: int = 5,
                 self_reference: str = "random", references: int = 3, embedder: str = DEFAULT_EMBEDDER,
                 rounds_of: int | None = None, structured_output: bool = False):
        if not isinstance(label_field, str) or not label_field:
            raise ConfigError(f"oneshot option label_field={label_field!r}; give the example's label key, e.g. answer")
        self.label_field = label_field
        self.example = check_example(example, label_field)
        self.fields = tuple(key for key in self.example if key != label_field)
        self.per_call = int_option(self.name, "per_call", per_call, MAX_PER_CALL)
        self.references = int_option(self.name, "references", references, MAX_REFERENCES)
        self.rounds_of = None if rounds_of is None else int_option(self.name, "rounds_of", rounds_of, None)
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
        return task_templates(task, self.name, DEFAULT_TEMPLATE)

    def setup(self, task, templates, ask, workdir) -> dict[str, Any]:
        """Check the example against the task and load the embedder now, before any LLM call."""
        self._label_values(task)
        # One call answers `per_call` examples, so max_tokens is for all of them; too small truncates most calls.
        need = self.per_call * (round(task.output.max_words * TOKENS_PER_WORD) + JSON_TOKENS_PER_OBJECT)
        if task.sampling.max_tokens < need:
            log.warning("oneshot: sampling.max_tokens=%d is for one call of %d examples of up to %d words, which can "
                        "take about %d tokens; raise sampling.max_tokens to %d or lower strategy_options.per_call, "
                        "or most answers end cut off (rejection 'truncated')", task.sampling.max_tokens,
                        self.per_call, task.output.max_words, need, need)
        if self.self_reference in ("diverse", "similar"):
            self._embed()
        return {"self_reference": self.self_reference, "embedder": self._embedder.id if self._embedder else None}

    def plan_counts(self, task: TaskSpec, counts: Mapping[str, int], templates: Mapping[str, Template],
                    start: Mapping[str, int] | None = None, history: Sequence[Example] = ()) -> list[Request]:
        """Requests for `counts[label]` more EXAMPLES per label: ceil(count / per_call) requests (at
        most `rounds_of`), sample indexes from start[label]; `history` feeds self-reference.

        Raises:
            ConfigError: an unknown label, a negative count or start, a missing template, or an
                example label the task does not have.
        """
        start = start or {}
        check_counts(task, counts, "counts", unit="")
        check_counts(task, start, "start", unit="")
        values = self._label_values(task)
        chosen = choose_templates(templates, self.template_names(task))
        requests: list[Request] = []
        for label in task.labels:
            sizes = self._batch_sizes(counts.get(label.name, 0))
            pool = self._pool(history, label.name, values) if sizes and self.self_reference != "none" else []
            vectors = self._vectors(pool)
            first = start.get(label.name, 0)
            for offset, size in enumerate(sizes):
                shown = self._draw(task, label.name, first + offset, pool, vectors)
                requests.append(self._request(task, label, values, first + offset, size, shown, chosen))
        return requests

    def references_for(self, task: TaskSpec, label: str, sample_index: int,
                       history: Sequence[Example]) -> tuple[dict, ...]:
        """The objects request `sample_index` of `label` shows, given the examples kept so far."""
        pool = self._pool(history, label, self._label_values(task)) if self.self_reference != "none" else []
        return tuple(obj for obj, _ in self._draw(task, label, sample_index, pool, self._vectors(pool)))

    def planned_rounds(self, task: TaskSpec) -> int:
        """With `rounds_of`, a label's requests are spread over ceil(requests / rounds_of) rounds."""
        requests = -(-task.gathered_per_label // self.per_call)
        return max(1, -(-requests // self.rounds_of)) if self.rounds_of else 1

    def _batch_sizes(self, wanted: int) -> list[int]:
        full, rest = divmod(wanted, self.per_call)
        sizes = [self.per_call] * full + ([rest] if rest else [])
        return sizes[: self.rounds_of] if self.rounds_of else sizes

    def _pool(self, history: Sequence[Example], label: str, values: Mapping[str, Any]) -> list[tuple[dict, str]]:
        pool = []
        for example in history:
            obj = self._object_of(example, values) if example.label == label else None
            if obj is not None:
                pool.append((obj, content(obj, self.fields)))
        return pool

    def _object_of(self, example: Example, values: Mapping[str, Any]) -> dict | None:
        if len(self.fields) == 1:
            fields: Any = {self.fields[0]: example.text}
        else:
            try:
                fields = json.loads(example.text)
            except ValueError:
                return None
            if not isinstance(fields, dict) or set(fields) != set(self.fields):
                return None
        return {key: values[example.label] if key == self.label_field else fields[key] for key in self.example}

    def _draw(self, task, label, sample_index, pool, vectors) -> tuple[tuple[dict, str], ...]:
        if not pool:
            return ((self.example, content(self.example, self.fields)),)
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
        return np.asarray(self._embed().encode([text for _, text in pool]), dtype=np.float32)

    def _embed(self):
        if self._embedder is None:
            self._embedder = get_embedder(self.embedder_name)
        return self._embedder

    def _request(self, task, label: LabelSpec, values, sample_index, size, shown, templates) -> Request:
        context = self._context(task, label, values[label.name], size, shown)
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, sample_index))
        schema = examples_schema(self.example, self.label_field, values, size) if self.structured_output else None
        request = render_request(self.name, label.name, templates, context, sampling, sample_index, schema)
        self._shown[request.id] = tuple(text for _, text in shown)
        return request

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

    def _label_values(self, task: TaskSpec) -> dict[str, Any]:
        """{label name: the label as the example's JSON type}; checks the example's own label."""
        return label_values(self.example, self.label_field, task)

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
        problem = format_problem(self.example, self.fields, item)
        if problem:
            return Rejection(request.label, problem[0], raw, problem[1], provenance)
        label = label_name(item[self.label_field], task)
        if label is None:
            names = [spec.name for spec in task.labels]
            detail = f"{self.label_field}={item[self.label_field]!r} is not one of the task's labels {names}"
            return Rejection(request.label, "unknown_label", raw, detail, provenance)
        fields = {key: item[key].strip() if isinstance(item[key], str) else item[key] for key in self.fields}
        text = content(fields, self.fields)
        failure = first_failure(text, task.output, "stop", None) or self._copied(text, request.id)
        if failure:
            return Rejection(label, failure[0], raw, failure[1], provenance)
        return Example(text=example_text(fields), label=label, provenance=provenance)

    def _copied(self, text: str, rid: str) -> tuple[str, str] | None:
        # Small models often hand back the example they were shown, or change one word of it.
        example = content(self.example, self.fields)
        shown_texts = [("copy_of_example", example)] + [("copy_of_reference", s) for s in self._shown.get(rid, ())]
        for reason, shown in shown_texts:
            if copied(text, shown):
                return reason, f"copy rate {filters.copy_rate(text, shown):.2f} of an example the prompt showed"
        return None


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
