"""OneShot's formatting example: its checks, the JSON types and schema it implies, label values, and
how an answer's object maps to Example.text.

The example is a JSON object: `label_field` holds the label, every other key is content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import ConfigError
from engine.types import TaskSpec

__all__ = ["check_example", "content", "example_text", "examples_schema", "format_problem", "kind", "label_name",
           "label_values"]

_SCHEMA_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def example_text(fields: Mapping[str, Any]) -> str:
    """Example.text for an example's content fields: the one string, else sorted-key JSON."""
    if len(fields) == 1:
        (value,) = fields.values()
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return json.dumps(dict(fields), sort_keys=True, ensure_ascii=False)


def content(obj: Mapping[str, Any], fields: Sequence[str]) -> str:
    """What filters, copy checks and embeddings read: the content values of `obj`, one per line."""
    return "\n".join(obj[k] if isinstance(obj[k], str) else json.dumps(obj[k], ensure_ascii=False) for k in fields)


def kind(value: Any) -> str:
    """The JSON kind of `value` in words ('a string', 'a number', ...; 'null' for anything else)."""
    if isinstance(value, bool):
        return "a boolean"
    kinds = {str: "a string", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return kinds.get(type(value), "null")


def check_example(example: Any, label_field: str) -> dict[str, Any]:
    """The formatting example as a dict, checked.

    Raises:
        ConfigError: not an object with string keys, no `label_field` or no content key, or a value
            of no usable JSON kind (the label: a string, number or boolean).
    """
    if not isinstance(example, Mapping) or not all(isinstance(key, str) for key in example):
        raise ConfigError("oneshot needs strategy_options.example: one JSON object that shows the format, e.g. "
                          f'{{"text": "...", "{label_field}": "yes"}}; got {example!r:.80}')
    if label_field not in example or len(example) < 2:
        raise ConfigError(f"oneshot example {dict(example)!r:.120} needs the label key {label_field!r} (option "
                          "label_field) and at least one content key")
    odd = [k for k, v in example.items() if kind(v) == "null" or (k == label_field and _label_text(v) is None)]
    if odd:
        raise ConfigError(f"oneshot example keys {odd} hold an unusable value; use strings, numbers, booleans, "
                          "lists or objects (the label: a string, number or boolean)")
    return dict(example)


def label_values(example: Mapping[str, Any], label_field: str, task: TaskSpec) -> dict[str, Any]:
    """{label name: the label as the example's JSON type}; checks the example's own label.

    Raises:
        ConfigError: the example's label is not one of the task's, or a label cannot take its JSON type.
    """
    names = [spec.name for spec in task.labels]
    own = _label_text(example[label_field])
    if own not in names:
        raise ConfigError(f"oneshot example has {label_field}={example[label_field]!r}, which task "
                          f"{task.name!r} does not have; labels: {names}; make the example use one of them")
    return {name: _typed(name, example[label_field], label_field) for name in names}


def label_name(value: Any, task: TaskSpec) -> str | None:
    """The task's label an answer's label value names (exactly, else by a unique case-folded match), or None."""
    text = _label_text(value)
    names = [spec.name for spec in task.labels]
    if text is None or text in names:
        return text
    folded = [name for name in names if name.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


def examples_schema(example: Mapping[str, Any], label_field: str, values: Mapping[str, Any],
                    count: int) -> dict[str, Any]:
    """The JSON schema of an answer of `count` objects shaped like `example`, labels limited to `values`."""
    label = {"type": _SCHEMA_TYPES[type(example[label_field])], "enum": list(values.values())}
    properties = {key: label if key == label_field else _schema_of(value) for key, value in example.items()}
    item = {"type": "object", "properties": properties, "required": list(example), "additionalProperties": False}
    # An object at the root, because strict JSON-schema endpoints (OpenAI) refuse a root array.
    examples = {"type": "array", "items": item, "minItems": count, "maxItems": count}
    return {"title": "examples", "type": "object", "properties": {"examples": examples},
            "required": ["examples"], "additionalProperties": False}


def format_problem(example: Mapping[str, Any], fields: Sequence[str], item: Any) -> tuple[str, str] | None:
    """(reason, detail) when an answer's `item` is not shaped like `example` (content `fields`), else None."""
    expected = list(example)
    if not isinstance(item, dict):
        return "bad_format", f"a list item is {kind(item)}, not a JSON object with the keys {expected}"
    missing = [key for key in expected if key not in item]
    extra = [key for key in item if key not in example]
    if missing or extra:
        return "bad_format", f"missing keys {missing}, unexpected keys {extra}; each object needs {expected}"
    for key in fields:
        if kind(item[key]) != kind(example[key]):
            return "bad_format", f"field {key!r} is {kind(item[key])}; the formatting example has {kind(example[key])}"
        if isinstance(item[key], str) and not item[key].strip():
            return "empty", f"field {key!r} is empty"
    return None


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


def _typed(name: str, like: Any, field: str) -> Any:
    try:
        if isinstance(like, bool):
            return {"true": True, "false": False}[name.lower()]
        return name if isinstance(like, str) else type(like)(name)
    except (KeyError, ValueError):
        raise ConfigError(f"oneshot example's {field} is {kind(like)}, but label {name!r} cannot be one; "
                          "write the example's label as a string") from None
