"""TarGEN (Gupta et al., 2023): seedless, multi-step generation with a self-correction pass.

`setup` has the LLM list diverse contexts for the task's domain, then label-agnostic instance
seeds within each context, and writes both to `targen_seeds.json`. `plan_counts` grounds each
request in one (context, seed) pair and asks for an example of one label. The pair depends on the
task seed and the sample index only, so at a given sample index every label is written from the
same seed and no context carries a label signal. `review` asks the LLM (greedy) which label each
kept example fits, then keeps, relabels or drops it. Every stage request is content-addressed, so
a re-run into the same folder is answered from the journal.
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
from engine.errors import ConfigError, LLMFatalError
from engine.index.manifest import write_json_atomic
from engine.prompts import Template, combined_identity, load_template
from engine.strategies.base import (
    Ask, Review, Strategy, available_strategies, build_provenance, clean_text, derive_seed, extract_text,
    first_failure, request_id,
)
from engine.strategies.synthesizrr import ANSWER_SCHEMA
from engine.types import Completion, Example, Hit, LabelSpec, Rejection, Request, SamplingParams, TaskSpec
from engine.verify import check_labels, parse_verdict

__all__ = ["CONTEXTS", "CORRECT", "GENERATE", "SEEDS", "SEEDS_FILE", "SeedPool", "TarGEN", "parse_list"]

CONTEXTS, SEEDS, GENERATE, CORRECT = "targen/contexts", "targen/seeds", "targen/generate", "targen/correct"
SEEDS_FILE = "targen_seeds.json"
MAX_LIST_REQUESTS = 3  # per list: the first request, then follow-ups for a shortfall only
MAX_ITEMS = 50
MAX_ITEM_WORDS = 60  # a longer "item" is prose the model wrote around its list
DEFAULT_CONTEXT_HINT = "the settings, subjects or situations in which such a text is typically written"
# Greedy decoding: a verdict should not change between runs.
CORRECT_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64, seed=0)
LIST_SCHEMA: dict[str, Any] = {
    "title": "items", "type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}},
    "required": ["items"], "additionalProperties": False,
}
_NONE = "none"
_NONE_ANSWERS = {"none", "none of them", "none of the labels", "none of these", "no label", "neither"}
_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*\u2022+]\s+|\(?\d{1,3}[.)]\s+|\d{1,3}:\s+|[a-z][.)]\s+)")
_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|here (?:are|is)|let me know|i hope|note)\b", re.IGNORECASE
)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "`": "`"}


@dataclass(frozen=True)
class SeedPool:
    """The setup stage's output: contexts and, parallel to them, each context's instance seeds."""

    contexts: tuple[str, ...]
    seeds: tuple[tuple[str, ...], ...]

    def pairs(self, task_seed: int) -> tuple[tuple[int, int], ...]:
        """(context, seed) indexes in rotation order: every context once per turn, a new seed each turn."""
        rng = random.Random(derive_seed(task_seed, TarGEN.name, "pairs"))
        order = rng.sample(range(len(self.contexts)), len(self.contexts))
        seed_order = {c: rng.sample(range(len(self.seeds[c])), len(self.seeds[c])) for c in order}
        depth = max((len(seeds) for seeds in self.seeds), default=0)
        return tuple((c, seed_order[c][turn]) for turn in range(depth) for c in order if turn < len(self.seeds[c]))

    def as_dict(self) -> dict[str, Any]:
        return {"contexts": [{"context": c, "seeds": list(s)} for c, s in zip(self.contexts, self.seeds)]}


class TarGEN(Strategy):
    """Contexts -> instance seeds -> label-constrained examples -> self-correction.

    Args:
        structured_output: ask for JSON (`{"text"}`, `{"items"}`, `{"label"}`) through JSON schemas.
        contexts: how many contexts setup asks for (1..50).
        seeds_per_context: how many instance seeds setup asks for per context (1..50).
        self_correct: run the self-correction review (keep, relabel or drop each example).
        context_hint: what a context is for this task, e.g. "a film genre with an era or setting".

    Raises:
        ConfigError: an option of the wrong type or out of range.
    """

    name = "targen"
    uses_retrieval = False

    def __init__(self, structured_output: bool = False, contexts: int = 6, seeds_per_context: int = 5,
                 self_correct: bool = True, context_hint: str = DEFAULT_CONTEXT_HINT):
        self.contexts = _count_option("contexts", contexts)
        self.seeds_per_context = _count_option("seeds_per_context", seeds_per_context)
        for option, value in (("self_correct", self_correct), ("structured_output", structured_output)):
            if not isinstance(value, bool):
                raise ConfigError(f"targen option {option}={value!r} is not allowed; give true or false")
        if not isinstance(context_hint, str) or not context_hint.strip():
            raise ConfigError(f"targen option context_hint={context_hint!r} is not allowed; give a non-empty phrase, "
                              "e.g. 'a film genre with an era or setting'")
        self.structured_output, self.self_correct, self.context_hint = structured_output, self_correct, context_hint.strip()
        self.pool: SeedPool | None = None  # set by setup; plan_counts draws from it
        self._templates: dict[str, Template] = {}

    # --- templates -------------------------------------------------------------------------------

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """System + generation template (targen/generate unless the task names its own), then the stage templates."""
        main = task.template
        owner = main.split("/", 1)[0] if "/" in main else ""
        if not main or (owner != self.name and owner in available_strategies()):
            main = GENERATE
        stages = (CONTEXTS, SEEDS, CORRECT) if self.self_correct else (CONTEXTS, SEEDS)
        return tuple(name for name in (task.system_template, main) if name) + stages

    def load_templates(self, task: TaskSpec, root: Path | None = None) -> dict[str, Template]:
        """Load every template (and check the labels self-correction must tell apart); review reuses them."""
        self._check_task(task)
        self._templates = super().load_templates(task, root)
        return dict(self._templates)

    def _stage(self, task: TaskSpec, templates: Mapping[str, Template], name: str) -> tuple[Template, ...]:
        """The task's system template (if any) followed by `name`: the messages of one step."""
        wanted = [n for n in (task.system_template, name) if n]
        missing = [n for n in wanted if n not in templates]
        if missing:
            raise ConfigError(f"templates {missing} were not loaded (got {sorted(templates)}); "
                              "load them with strategy.load_templates(task)")
        chosen = tuple(templates[n] for n in wanted)
        if sum(any(role == "system" for role, _ in t.messages) for t in chosen) > 1:
            raise ConfigError(f"both {chosen[0].path} and {chosen[1].path} have a '### system' message; "
                              "set the task's system_template to '' or remove one of them")
        return chosen

    def _check_task(self, task: TaskSpec) -> None:
        if not self.self_correct:
            return
        check_labels(task, ())
        clash = [s.name for s in task.labels if filters.normalize(s.name) in _NONE_ANSWERS]
        if clash:
            raise ConfigError(f"task {task.name!r}: label {clash[0]!r} reads as self-correction's 'none' answer; "
                              "rename the label or set strategy_options.self_correct: false")

    # --- steps 1 and 2: contexts and instance seeds ------------------------------------------------

    def setup(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, workdir: Path) -> dict[str, Any]:
        """Ask for contexts, then instance seeds per context; keep them for planning and write SEEDS_FILE.

        Raises:
            LLMFatalError: no usable context or no usable seed came back (the model or endpoint is unusable).
        """
        self._check_task(task)
        self._templates = {**self._templates, **templates}
        asked = Counter[str]()
        contexts = self._collect(task, templates, ask, CONTEXTS, [{}], [self.contexts], asked)[0]
        seeds = self._collect(task, templates, ask, SEEDS, [{"context": c} for c in contexts],
                              [self.seeds_per_context] * len(contexts), asked) if contexts else []
        self.pool = SeedPool(tuple(c for c, s in zip(contexts, seeds) if s), tuple(tuple(s) for s in seeds if s))
        report = {"contexts": len(self.pool.contexts), "seeds": sum(map(len, self.pool.seeds)),
                  "contexts_asked": self.contexts, "seeds_per_context_asked": self.seeds_per_context,
                  "contexts_without_seeds": [c for c, s in zip(contexts, seeds) if not s],
                  "requests": dict(asked), "file": SEEDS_FILE}
        Path(workdir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(workdir) / SEEDS_FILE, {"task": task.name, **self.pool.as_dict(), "report": report})
        if not self.pool.contexts:
            step = SEEDS if contexts else CONTEXTS
            raise LLMFatalError(f"targen setup got no usable items from {asked[step]} {step} request(s): the answers "
                                f"failed or held no list; see {Path(workdir) / SEEDS_FILE}, check the endpoint, "
                                "or raise sampling.max_tokens")
        return report

    def _collect(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, step: str,
                 jobs: list[dict[str, str]], wants: list[int], asked: Counter) -> list[list[str]]:
        """One list per job: up to MAX_LIST_REQUESTS requests each, later ones asking for the shortfall only."""
        chosen = self._stage(task, templates, step)
        found: list[list[str]] = [[] for _ in jobs]
        for attempt in range(MAX_LIST_REQUESTS):
            open_jobs = [j for j, want in enumerate(wants) if len(found[j]) < want]
            if not open_jobs:
                break
            requests = {j: self._list_request(task, chosen, step, jobs[j], found[j], wants[j], attempt) for j in open_jobs}
            answers = ask(list(requests.values()))
            asked[step] += len(requests)
            for j, request in requests.items():
                if request.id in answers:
                    found[j] = _merge(found[j], list_items(answers[request.id]), wants[j])
        return found

    def _list_request(self, task: TaskSpec, chosen: tuple[Template, ...], step: str, job: Mapping[str, str],
                      known: list[str], want: int, attempt: int) -> Request:
        count = want - len(known)
        context = {"task_description": task.description or task.name, "output_kind": task.output.kind,
                   "context_hint": self.context_hint, "count": count, "avoid": "some" if known else "none",
                   "known": "\n".join(f"- {item}" for item in known),
                   "answer_format": "json" if self.structured_output else "text", **job}
        messages = tuple(m for t in chosen for m in t.render_from(context))
        template_id, template_sha = combined_identity(chosen)
        per_item = 40 if step == CONTEXTS else 64
        sampling = dataclasses.replace(task.sampling, max_tokens=64 + per_item * count,
                                       seed=derive_seed(task.seed, self.name, step, job.get("context", ""), attempt))
        schema = LIST_SCHEMA if self.structured_output else None
        return Request(request_id(f"{self.name}/{step}", template_sha, messages, sampling, attempt, schema),
                       label="", messages=messages, template_id=template_id, template_sha256=template_sha,
                       sampling=sampling, sample_index=attempt, json_schema=schema)

    # --- step 3: label-constrained generation ------------------------------------------------------

    def plan(self, task: TaskSpec, hits_by_label: Mapping[str, list[Hit]], templates: Mapping[str, Template]) -> list[Request]:
        """`examples_per_label` requests per label; `hits_by_label` is ignored (TarGEN is seedless)."""
        return self.plan_counts(task, {label.name: task.examples_per_label for label in task.labels}, templates)

    def plan_counts(self, task: TaskSpec, counts: Mapping[str, int], templates: Mapping[str, Template],
                    start: Mapping[str, int] | None = None, history: Sequence[Example] = ()) -> list[Request]:
        """`counts[label]` requests per label with sample indexes from `start[label]`, each grounded in
        the (context, seed) pair at that index of the pool's rotation.

        Raises:
            ConfigError: setup has not run, a label the task does not have, a negative count or start,
                or a template missing from `templates`.
        """
        if self.pool is None or not self.pool.contexts:
            raise ConfigError("targen plans from the contexts and seeds its setup stage writes; call "
                              "strategy.setup(task, templates, ask, workdir) first (seedbed synth does)")
        start = start or {}
        _check_counts(task, counts, "counts")
        _check_counts(task, start, "start")
        chosen = self._stage(task, templates, self._main_template(task))
        pairs = self.pool.pairs(task.seed)
        requests = []
        for label in task.labels:
            first = start.get(label.name, 0)
            for index in range(first, first + counts.get(label.name, 0)):
                requests.append(self._generate_request(task, label, index, chosen, pairs[index % len(pairs)]))
        return requests

    def _main_template(self, task: TaskSpec) -> str:
        return self.template_names(task)[1 if task.system_template else 0]

    def _generate_request(self, task: TaskSpec, label: LabelSpec, index: int, chosen: tuple[Template, ...],
                          pair: tuple[int, int]) -> Request:
        assert self.pool is not None
        context = {"output_kind": task.output.kind, "min_words": task.output.min_words, "max_words": task.output.max_words,
                   "label": label.name, "verbalization": label.verbalization,
                   "answer_format": "json" if self.structured_output else "text",
                   "context": self.pool.contexts[pair[0]], "instance_seed": self.pool.seeds[pair[0]][pair[1]]}
        messages = tuple(m for t in chosen for m in t.render_from(context))
        template_id, template_sha = combined_identity(chosen)
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, index))
        schema = ANSWER_SCHEMA if self.structured_output else None
        return Request(request_id(self.name, template_sha, messages, sampling, index, schema), label.name, messages,
                       template_id, template_sha, sampling, hit=None, sample_index=index, json_schema=schema)

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> Example | Rejection:
        """Clean the answer and run the per-answer filters (there is no passage to compare with)."""
        provenance = build_provenance(request, completion)
        text, note = extract_text(completion.text)
        text, dropped_tail = clean_text(text, task.output)
        failure = first_failure(text, task.output, "stop" if dropped_tail else completion.finish_reason, None)
        if failure:
            detail = "; ".join(part for part in (failure[1], note) if part)
            return Rejection(request.label, failure[0], completion.text, detail, provenance)
        return Example(text=text, label=request.label, provenance=provenance)

    # --- step 4: self-correction -------------------------------------------------------------------

    def review(self, task: TaskSpec, examples: list[tuple[Example, Request]], ask: Ask) -> Review:
        """Ask which label each example fits: keep it (its own), relabel it (another) or drop it (none,
        an unreadable answer, or a failed request) with reason `self_correction_dropped`."""
        if not self.self_correct:
            return Review(list(examples), [], {"self_correction": "off"})
        template = self._templates.get(CORRECT) or load_template(CORRECT)
        checks = [self._correct_request(task, example, template) for example, _ in examples]
        answers = ask(checks) if checks else {}
        kept, rejections, records = [], [], []
        for (example, request), check in zip(examples, checks):
            verdict, cause = _verdict(check, answers.get(check.id), task)
            records.append({"request_id": example.provenance.request_id, "label": example.label,
                            "verdict": verdict, "action": cause[0], "cause": cause[1]})
            if cause[0] == "dropped":
                rejections.append(Rejection(example.label, "self_correction_dropped", example.text,
                                            _DROP_DETAIL[cause[1]], example.provenance))
            else:
                kept.append((dataclasses.replace(example, label=verdict) if cause[0] == "relabelled" else example, request))
        return Review(kept, rejections, _review_report(records))

    def _correct_request(self, task: TaskSpec, example: Example, template: Template) -> Request:
        labels = "\n".join(f"{i}. {s.name}: {s.verbalization}" for i, s in enumerate(task.labels, start=1))
        messages = template.render_from({"output_kind": task.output.kind, "labels": labels, "label": example.label,
                                         "answer_format": "json" if self.structured_output else "text",
                                         "text": example.text.strip()})
        sampling = dataclasses.replace(CORRECT_SAMPLING, seed=derive_seed(task.seed, self.name, "correct"))
        schema = _verdict_schema(task) if self.structured_output else None
        return Request(request_id(f"{self.name}/correct", template.sha256, messages, sampling, 0, schema), example.label,
                       messages, template.id, template.sha256, sampling, json_schema=schema)


_DROP_DETAIL = {
    "none": "self-correction found that the text fits none of the labels",
    "unreadable": "self-correction's answer named no single label",
    "failed": "the self-correction request failed after retries; a re-run retries it",
}


def _verdict(check: Request, completion: Completion | None, task: TaskSpec) -> tuple[str | None, tuple[str, str]]:
    """(label named or None, (action, cause)); never raises."""
    if completion is None:
        return None, ("dropped", "failed")
    if _says_none(completion.text):
        return None, ("dropped", "none")
    verdict = parse_verdict(check, completion, task)
    if verdict is None:
        return None, ("dropped", "unreadable")
    return verdict, (("kept", "fits") if verdict == check.label else ("relabelled", "fits_other"))


def _says_none(raw: str) -> bool:
    body = "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()
    try:
        value = json.loads(body)
        body = value["label"] if isinstance(value, dict) and isinstance(value.get("label"), str) else body
    except ValueError:
        pass
    first = next((filters.normalize(line) for line in body.splitlines() if filters.normalize(line)), "")
    first = re.sub(r"^(?:the )?(?:label|answer|verdict)(?: is)? ", "", first)
    return first in _NONE_ANSWERS or first.startswith(("none ", "neither "))


def _verdict_schema(task: TaskSpec) -> dict[str, Any]:
    enum = [spec.name for spec in task.labels] + [_NONE]
    return {"title": "verdict", "type": "object", "properties": {"label": {"type": "string", "enum": enum}},
            "required": ["label"], "additionalProperties": False}


def _review_report(records: list[dict[str, Any]]) -> dict[str, Any]:
    actions = Counter(r["action"] for r in records)
    moves = Counter(f"{r['label']}->{r['verdict']}" for r in records if r["action"] == "relabelled")
    dropped = Counter(r["cause"] for r in records if r["action"] == "dropped")
    return {"self_correction": "on", "checked": len(records), "kept": actions["kept"],
            "relabelled": actions["relabelled"], "relabelled_by_pair": dict(sorted(moves.items())),
            "dropped": actions["dropped"], "dropped_by_cause": dict(sorted(dropped.items())), "examples": records}


# --- list answers -----------------------------------------------------------------------------------


def parse_list(raw: str) -> list[str]:
    """The items of a list answer, never raising: a JSON array (or an object holding one, or a cut-off
    array's quoted strings), else one item per line with bullets, numbering, quotes, markdown,
    headings and chatter ('Here are 5 contexts:') removed. Items are not yet deduplicated."""
    body = "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()
    items = _json_items(body)
    if not items:
        items = [_clean_item(line) for line in body.splitlines()]
        items = [item for item in items if item and not item.endswith(":") and not _CHATTER.match(item)]
    return [item for item in items if _usable(item)]


def list_items(completion: Completion) -> list[str]:
    """`parse_list` of an answer; a cut-off answer (finish_reason 'length') loses its last, partial item."""
    items = parse_list(completion.text)
    return items[:-1] if completion.finish_reason == "length" else items


def _json_items(body: str) -> list[str] | None:
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    lead = body[:start].rstrip()
    if start < 0 or (lead and ("\n" in lead or not lead.endswith(":"))):
        return None  # JSON comes first, or right after one lead-in line like "Here are the contexts:"
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except ValueError:  # cut off mid-array: take the complete quoted strings
        return [_clean_item(_unescape(m)) for m in _QUOTED.findall(body[start:]) if m.lower() != "items"]
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list):
        return None
    return [_clean_item(_item_text(v)) for v in value]


def _unescape(quoted: str) -> str:
    try:
        return json.loads(f'"{quoted}"')
    except ValueError:
        return quoted


def _item_text(value: Any) -> str:
    if isinstance(value, dict):  # [{"context": "...", "description": "..."}]
        return ": ".join(str(v) for v in value.values() if isinstance(v, (str, int, float)))
    return value if isinstance(value, str) else ""


def _clean_item(line: str) -> str:
    line = _BULLET.sub("", line.strip()).replace("**", "").replace("__", "").strip().rstrip(",;").strip()
    while len(line) >= 2 and _QUOTES.get(line[0]) == line[-1] and not {line[0], line[-1]} & set(line[1:-1]):
        line = line[1:-1].strip()
    return " ".join(line.split())


def _usable(item: str) -> bool:
    return bool(filters.normalize(item)) and not filters.refusal(item) and filters.word_count(item) <= MAX_ITEM_WORDS


def _merge(found: list[str], new: list[str], want: int) -> list[str]:
    seen = {filters.normalize(item) for item in found}
    merged = list(found)
    for item in new:
        key = filters.normalize(item)
        if key not in seen and len(merged) < want:
            seen.add(key)
            merged.append(item)
    return merged


def _count_option(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ITEMS:
        raise ConfigError(f"targen option {option}={value!r} is not allowed; give an integer from 1 to {MAX_ITEMS}")
    return value


def _check_counts(task: TaskSpec, values: Mapping[str, int], what: str) -> None:
    known = [spec.name for spec in task.labels]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{what} were given for label {name!r}, which task {task.name!r} does not have; labels: {known}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{what}[{name!r}] is {value!r}; give a whole number of requests, 0 or more")
