"""The attribute values AttrPrompt draws from: AttributeSet, its attributes.json file, and the checks of
attribute dimensions and values given as strategy options."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.files import write_json_atomic
from engine.strategies.base import derive_seed
from engine.types import TaskSpec

__all__ = ["ATTRIBUTES_FILE", "FORMAT", "NAME", "AttributeSet", "drop_removed", "given_attributes", "read_attributes",
           "string_list", "unique_names", "write_attributes"]

NAME = "attrprompt"  # the strategy's registry name, also part of every draw's seed
ATTRIBUTES_FILE = "attributes.json"
FORMAT = "seedbed-attrprompt/1"
_AUDIT_KEYS = ("similar_labels", "removed", "notes")


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
        rng = random.Random(derive_seed(task_seed, NAME, "draw", label, sample_index))
        return tuple((dim, rng.choice(values)) for dim in self.dimensions if (values := self.values(dim, label)))

    def check_labels(self, task: TaskSpec, source: str) -> None:
        """Raise ConfigError when a class-specific dimension has no values for a label of `task`."""
        for dim, by_label in self.per_label.items():
            missing = [spec.name for spec in task.labels if spec.name not in by_label]
            if missing:
                raise ConfigError(f"attributes_file {source} has no {dim!r} values for label(s) "
                                  f"{missing} of task {task.name!r}; generate a new file (drop attributes_file)")

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
        dims = string_list(raw.get("dimensions"), f"{source}: dimensions")
        per_label, shared = raw.get("class_specific"), raw.get("class_independent")
        nested = isinstance(per_label, dict) and all(isinstance(v, dict) for v in per_label.values())
        if not nested or not isinstance(shared, dict):
            raise ConfigError(f"{source}: class_specific must map dimension -> label -> values and class_independent "
                              "dimension -> values")
        if sorted(dims) != sorted([*per_label, *shared]) or set(per_label) & set(shared):
            raise ConfigError(f"{source}: dimensions {dims} must be the keys of class_specific {sorted(per_label)} "
                              f"and class_independent {sorted(shared)}, each in one of them")
        return cls(tuple(dims),
                   {d: {lab: tuple(string_list(v, f"{source}: class_specific.{d}.{lab}")) for lab, v in by.items()}
                    for d, by in per_label.items()},
                   {d: tuple(string_list(v, f"{source}: class_independent.{d}")) for d, v in shared.items()})


def drop_removed(per_label: dict[str, dict[str, tuple[str, ...]]],
                 removed: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """Drop the values the similar-label filter `removed` (dimension -> label -> records) from `per_label`.

    A label that would lose every value keeps them all instead, and leaves `removed`. Both change in place.

    Returns:
        A note per label that kept its values that way.
    """
    notes = []
    for d, by_label in removed.items():
        for lab, records in list(by_label.items()):
            gone = {r["value"] for r in records}
            kept = tuple(v for v in per_label[d][lab] if v not in gone)
            if kept:
                per_label[d][lab] = kept
            else:  # an empty list would silently drop the dimension; the class keeps its values
                del by_label[lab]
                notes.append(f"the filter found every {d!r} value of {lab!r} ambiguous; all were kept instead")
    return notes


def read_attributes(path: Path) -> tuple[AttributeSet, dict[str, Any]]:
    """The AttributeSet in an ATTRIBUTES_FILE, and its audit (similar labels, removed values, notes).

    Raises:
        ConfigError: no such file, not JSON, or not an attributes file.
    """
    if not path.is_file():
        raise ConfigError(f"attrprompt option attributes_file={str(path)!r}: no such file; give the path of the "
                          f"{ATTRIBUTES_FILE} an earlier attrprompt run wrote into its --out folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"attributes_file {path} is not valid JSON ({exc}); "
                          "regenerate it with a run without attributes_file") from None
    audit = {key: raw[key] for key in _AUDIT_KEYS if key in raw}
    return AttributeSet.from_dict(raw, str(path)), audit


def write_attributes(workdir: Path, attributes: AttributeSet, task_name: str, audit: dict[str, Any]) -> dict[str, Any]:
    """Write `attributes`, the task's name and the audit atomically to ATTRIBUTES_FILE in `workdir`.

    Returns:
        `attributes.as_dict()`.
    """
    Path(workdir).mkdir(parents=True, exist_ok=True)
    data = attributes.as_dict()
    write_json_atomic(Path(workdir) / ATTRIBUTES_FILE, {**data, "task": task_name, **audit})
    return data


def string_list(value: Any, where: str) -> list[str]:
    """`value` as a list of strings with their whitespace collapsed.

    Raises:
        ConfigError: `value` is not a list of non-empty strings (the message starts with `where`).
    """
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings, got {value!r:.80}")
    return [" ".join(v.split()) for v in value]


def unique_names(option: str, value: Any) -> tuple[str, ...]:
    """The dimension names of attrprompt option `option`: distinct, at most 60 characters each."""
    names = string_list(value, f"attrprompt option {option}")
    if len(set(names)) != len(names) or any(len(n) > 60 for n in names):
        raise ConfigError(f"attrprompt option {option}={value!r}: names must be distinct and at most 60 characters")
    return tuple(names)


def given_attributes(attributes: Any, class_specific: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Option `attributes` checked: dimension -> its distinct values (empty: the LLM generates them).

    Raises:
        ConfigError: not a mapping, bad names or values, or values given for a class-specific dimension.
    """
    if not isinstance(attributes, Mapping):
        raise ConfigError(f"attrprompt option attributes={attributes!r} must map dimension names to value lists, "
                          "e.g. {style: [formal, casual], length: []} ([] = let the LLM generate them)")
    unique_names("attributes", list(attributes))
    given = {}
    for raw_dim, values in attributes.items():
        dim, listed = " ".join(raw_dim.split()), string_list(values, f"attrprompt option attributes.{raw_dim}")
        if listed and dim in class_specific:
            raise ConfigError(f"attrprompt option attributes.{dim} lists values, but {dim!r} is class-specific "
                              "(generated per label); give it [] or load fixed per-label values with attributes_file")
        given[dim] = tuple(dict.fromkeys(listed))
    return given
