"""Label verification: an LLM judge names the label each synthetic example fits; a policy acts on it.

Usable after any strategy, and pure: `plan_verification` builds Requests (the pipeline sends them
through its runner and journal like any other), `parse_verdict` reads one answer into a label
name or None, and `apply_policy` keeps, drops or relabels examples and measures agreement.
The judge never sees the label an example was generated for.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import filters
from engine.errors import ConfigError
from engine.prompts import Template
from engine.ids import derive_seed, request_id
from engine.types import Completion, Example, Rejection, Request, SamplingParams, TaskSpec

__all__ = [
    "POLICIES", "JUDGE_TEMPLATE", "JUDGE_SAMPLING", "LabelCounts", "VerdictRecord", "VerificationResult",
    "verdict_schema", "plan_verification", "parse_verdict", "apply_policy",
]

POLICIES = ("drop", "relabel", "keep")
JUDGE_TEMPLATE = "verify/judge"
# Greedy decoding: a verdict should not change between runs. Room for a long label name in JSON.
JUDGE_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64, seed=0)
_NAMESPACE = "verify"  # request ids of judge calls never collide with a strategy's
_PREFIX = re.compile(
    r"^\s*(?:the\s+)?(?:final\s+|best\s+)?(?:label|answer|category|class|verdict)\b(?:\s+is)?\s*[:=\-]?\s*", re.IGNORECASE
)
_NUMBERING = re.compile(r"^\s*\(?\d{1,3}[.)]\s+(?=\S)")
_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_JSON_LABEL = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)')
_NEGATIONS = frozenset({"not", "no", "neither", "nor", "never", "t"})  # "isn't" normalises to "isn t"


@dataclass(frozen=True)
class LabelCounts:
    """Verdicts on the examples generated for one label."""

    examples: int = 0
    readable: int = 0
    agreed: int = 0

    @property
    def unreadable(self) -> int:
        return self.examples - self.readable


@dataclass(frozen=True)
class VerdictRecord:
    """What happened to one example: `request_id` is the example's own (generation) request id."""

    request_id: str
    original_label: str
    verdict: str | None
    action: str  # "kept", "relabelled" or "dropped"
    reason: str = ""  # "" when kept as is, else "label_disagreement" or "unreadable_verdict"


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of a policy over judged examples.

    `kept` holds the examples to write (relabelled ones carry the judge's label), in input order;
    `records` is parallel to the input examples. `agreement[label]` is the share of readable
    verdicts on that label's examples that named it (labels with no readable verdict are absent);
    `confusion[original][verdict]` counts readable verdicts.
    """

    policy: str
    kept: tuple[Example, ...]
    rejections: tuple[Rejection, ...]
    records: tuple[VerdictRecord, ...]
    agreement: dict[str, float]
    counts: dict[str, LabelCounts]
    confusion: dict[str, dict[str, int]]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for a run manifest."""
        actions = Counter(record.action for record in self.records)
        return {
            "policy": self.policy,
            "agreement": {label: round(share, 4) for label, share in self.agreement.items()},
            "counts": {label: {**dataclasses.asdict(c), "unreadable": c.unreadable} for label, c in self.counts.items()},
            "confusion": self.confusion,
            "actions": {action: actions.get(action, 0) for action in ("kept", "relabelled", "dropped")},
        }


def verdict_schema(task: TaskSpec) -> dict[str, Any]:
    """The JSON schema of a structured verdict: `{"label": <one of the task's label names>}`."""
    enum = [spec.name for spec in task.labels]
    return {"title": "verdict", "type": "object", "properties": {"label": {"type": "string", "enum": enum}},
            "required": ["label"], "additionalProperties": False}


def plan_verification(
    task: TaskSpec,
    examples: Sequence[Example],
    template: Template,
    structured_output: bool = False,
    sampling: SamplingParams | None = None,
) -> list[Request]:
    """One judge request per example, in order; `Request.label` is the example's label.

    Args:
        task: gives every label's name and verbalization, and the output kind.
        examples: the examples to judge.
        template: the judge template (`load_template(JUDGE_TEMPLATE)`); it brings its own system message.
        structured_output: ask for `{"label": ...}` through a JSON schema whose enum is the label names.
        sampling: defaults to JUDGE_SAMPLING (greedy) with a seed derived from the task seed.

    Raises:
        ConfigError: an example's label is not one of the task's, or two label names read the same.
    """
    check_labels(task, examples)
    sampling = sampling or dataclasses.replace(JUDGE_SAMPLING, seed=derive_seed(task.seed, _NAMESPACE))
    schema = verdict_schema(task) if structured_output else None
    base = {
        "task_name": task.name,
        "task_description": task.description,
        "output_kind": task.output.kind,
        "labels": _label_list(task),
        "answer_format": "json" if structured_output else "text",
    }
    requests = []
    for example in examples:
        messages = template.render_from({**base, "text": example.text.strip()})
        rid = request_id(_NAMESPACE, template.sha256, messages, sampling, 0, schema)
        requests.append(Request(rid, example.label, messages, template.id, template.sha256, sampling, json_schema=schema))
    return requests


def _label_list(task: TaskSpec) -> str:
    lines = []
    for number, spec in enumerate(task.labels, start=1):
        same = filters.normalize(spec.verbalization) in ("", filters.normalize(spec.name))
        lines.append(f"{number}. {spec.name}" if same else f"{number}. {spec.name}: {spec.verbalization}")
    return "\n".join(lines)


def check_labels(task: TaskSpec, examples: Sequence[Example]) -> None:
    names = [spec.name for spec in task.labels]
    seen: dict[str, str] = {}
    for name in names:
        key = filters.normalize(name)
        if key in seen or not key:
            clash = f"labels {seen[key]!r} and {name!r} read the same" if key else f"label {name!r} has no letters or digits"
            raise ConfigError(f"task {task.name!r}: {clash} to the judge; give labels names that differ in letters or digits")
        seen[key] = name
    unknown = sorted({example.label for example in examples} - set(names))
    if unknown:
        raise ConfigError(f"examples carry label(s) {unknown} that task {task.name!r} does not have; labels: {names}")


def parse_verdict(request: Request, completion: Completion, task: TaskSpec) -> str | None:
    """The task label the judge named, or None when its answer names no single label.

    Reads a JSON `{"label": ...}` answer (broken JSON too), a bare label name in any case, with
    quotes, markdown or punctuation around it, "Label: X", the label's number in the list, a
    verbalization, or an answer that mentions exactly one label. Never raises.

    `request` is unused today (kept for symmetry with Strategy.parse); `task` gives the labels.
    """
    answer = _json_label(completion.text)
    if not answer.strip() or filters.refusal(answer):
        return None
    names = [spec.name for spec in task.labels]
    lines = [line for line in answer.splitlines() if filters.normalize(line)]
    if not lines:
        return None
    for candidate in (answer, lines[0]):
        exact = _exact(candidate, task, names)
        if exact:
            return exact
    for scope in (lines[0], answer):
        mentioned = _mentions(filters.normalize(_PREFIX.sub("", scope)), names)
        if mentioned:
            return mentioned[0] if len(mentioned) == 1 else None
    return None


def _json_label(raw: str) -> str:
    body = "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()
    if not body.startswith("{"):
        return raw
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        return value["label"]
    match = _JSON_LABEL.search(body)
    return match.group(1) if match else raw


def _exact(candidate: str, task: TaskSpec, names: list[str]) -> str | None:
    by_name = {filters.normalize(name): name for name in names}
    meanings = [(filters.normalize(spec.verbalization), spec.name) for spec in task.labels]
    repeated = Counter(key for key, _ in meanings)
    by_meaning = {key: name for key, name in meanings if repeated[key] == 1}  # an ambiguous meaning names nothing
    numeric = any(key.isdigit() for key in by_name)
    for text in (candidate, _NUMBERING.sub("", _PREFIX.sub("", candidate))):
        key = filters.normalize(text)
        if key in by_name:
            return by_name[key]
        if key.isdigit() and not numeric and 1 <= int(key) <= len(names):
            return names[int(key) - 1]
        if key in by_meaning:
            return by_meaning[key]
    return None


def _mentions(text: str, names: list[str]) -> list[str]:
    words = text.split()
    found = []
    for name in names:
        key = filters.normalize(name).split()
        hits = [i for i in range(len(words) - len(key) + 1) if key and words[i : i + len(key)] == key]
        if any(i == 0 or words[i - 1] not in _NEGATIONS for i in hits):
            found.append(name)
    # "Sports" inside a mention of "Sports Business" is not a second label.
    padded = {name: f" {filters.normalize(name)} " for name in found}
    return [name for name in found if not any(o != name and padded[name] in padded[o] for o in found)]


def apply_policy(examples: Sequence[Example], verdicts: Sequence[str | None], policy: str) -> VerificationResult:
    """Act on the judge's verdicts (parallel to `examples`) and measure agreement per label.

    Policies: `drop` keeps only examples whose verdict equals their label; `relabel` gives each
    example the judge's label (unreadable verdicts are dropped); `keep` keeps everything and only
    reports. Dropped examples become Rejections with reason `label_disagreement` or
    `unreadable_verdict`, their text as `raw` and their provenance.

    Raises:
        ConfigError: an unknown policy, or `verdicts` not the same length as `examples`.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown verification policy {policy!r}; choose one of {list(POLICIES)}")
    if len(examples) != len(verdicts):
        raise ConfigError(
            f"got {len(examples)} examples but {len(verdicts)} verdicts; pass one verdict (or None) per example, in order"
        )
    kept: list[Example] = []
    rejections: list[Rejection] = []
    records: list[VerdictRecord] = []
    for example, verdict in zip(examples, verdicts):
        record = _decide(example, verdict, policy)
        records.append(record)
        if record.action == "dropped":
            detail = ("the judge's answer named no single label" if verdict is None
                      else f"generated as {example.label!r}, the judge labelled it {verdict!r}")
            rejections.append(Rejection(example.label, record.reason, example.text, detail, example.provenance))
        else:
            kept.append(example if record.action == "kept" else dataclasses.replace(example, label=verdict))
    counts, confusion = _tally(examples, verdicts)
    agreement = {label: c.agreed / c.readable for label, c in counts.items() if c.readable}
    return VerificationResult(policy, tuple(kept), tuple(rejections), tuple(records), agreement, counts, confusion)


def _decide(example: Example, verdict: str | None, policy: str) -> VerdictRecord:
    def record(action: str, reason: str = "") -> VerdictRecord:
        return VerdictRecord(example.provenance.request_id, example.label, verdict, action, reason)

    if policy == "keep" or verdict == example.label:
        return record("kept")
    if verdict is None:
        return record("dropped", "unreadable_verdict")
    if policy == "relabel":
        return record("relabelled")
    return record("dropped", "label_disagreement")


def _tally(
    examples: Sequence[Example], verdicts: Sequence[str | None]
) -> tuple[dict[str, LabelCounts], dict[str, dict[str, int]]]:
    totals, readable, agreed = Counter[str](), Counter[str](), Counter[str]()
    confusion: dict[str, Counter[str]] = {}
    for example, verdict in zip(examples, verdicts):
        totals[example.label] += 1
        confusion.setdefault(example.label, Counter())
        if verdict is not None:
            readable[example.label] += 1
            agreed[example.label] += verdict == example.label
            confusion[example.label][verdict] += 1
    counts = {label: LabelCounts(totals[label], readable[label], agreed[label]) for label in totals}
    return counts, {label: dict(pairs) for label, pairs in confusion.items()}
