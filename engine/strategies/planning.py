"""What strategies share to plan requests: their templates, checks of options and counts, one Request.

Every error here is a ConfigError that names the value received and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import ConfigError
from engine.prompts import Template, combined_identity
from engine.strategies.base import available_strategies, request_id
from engine.types import Hit, LabelSpec, Request, SamplingParams, TaskSpec

__all__ = ["check_counts", "check_flags", "choose_templates", "int_option", "render_request",
           "sample_indexes", "task_templates"]


def task_templates(task: TaskSpec, strategy: str, default: str) -> tuple[str, ...]:
    """The task's system template and main template, with `default` as the main template when the
    task names none or another strategy's (task specs default to `synthesizrr/refine`)."""
    main = task.template
    owner = main.split("/", 1)[0] if "/" in main else ""
    if not main or (owner != strategy and owner in available_strategies()):
        main = default
    return tuple(name for name in (task.system_template, main) if name)


def choose_templates(templates: Mapping[str, Template], names: Sequence[str]) -> tuple[Template, ...]:
    """The loaded templates called `names` (empty names skipped), in that order.

    Raises:
        ConfigError: a template was not loaded, or more than one has a system message.
    """
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


def check_counts(task: TaskSpec, values: Mapping[str, int], what: str, unit: str = "requests") -> None:
    """Check per-label `values` (what: 'counts' or 'start'): labels of the task, whole numbers of `unit`.

    Raises:
        ConfigError: a label the task does not have, or a value that is not an integer 0 or more.
    """
    known = [spec.name for spec in task.labels]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{what} were given for label {name!r}, which task {task.name!r} does not have; "
                              f"labels: {known}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            number = f"a whole number of {unit}" if unit else "a whole number"
            raise ConfigError(f"{what}[{name!r}] is {value!r}; give {number}, 0 or more")


def sample_indexes(task: TaskSpec, counts: Mapping[str, int],
                   start: Mapping[str, int] | None = None) -> list[tuple[LabelSpec, range]]:
    """Per label, in the task's order: the sample indexes of its `counts[label]` new requests, from `start[label]`.

    Raises:
        ConfigError: `counts` or `start` names a label the task does not have, or holds a negative number.
    """
    start = start or {}
    check_counts(task, counts, "counts")
    check_counts(task, start, "start")
    firsts = {label.name: start.get(label.name, 0) for label in task.labels}
    return [(label, range(firsts[label.name], firsts[label.name] + counts.get(label.name, 0))) for label in task.labels]


def int_option(strategy: str, option: str, value: Any, most: int | None) -> int:
    """`value` of an integer option from 1 to `most` (None: no upper bound).

    Raises:
        ConfigError: not an integer (booleans are not), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most is not None and value > most):
        allowed = f"1 to {most}" if most else "1 or more"
        raise ConfigError(f"{strategy} option {option}={value!r} is not allowed; give an integer from {allowed}")
    return value


def check_flags(strategy: str, **flags: Any) -> None:
    """Check that every option in `flags` is a boolean.

    Raises:
        ConfigError: the first option (in the order given) that is not true or false.
    """
    for option, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{strategy} option {option}={value!r} is not allowed; give true or false")


def render_request(
    step: str,
    label: str,
    templates: tuple[Template, ...],
    context: Mapping[str, Any],
    sampling: SamplingParams,
    sample_index: int = 0,
    schema: dict[str, Any] | None = None,
    hit: Hit | None = None,
    grounding: tuple[tuple[str, str], ...] = (),
) -> Request:
    """One Request: `templates` rendered from `context`, its id a content hash of `step` and all that
    decides the answer (messages, sampling, sample index, JSON schema)."""
    messages = tuple(message for template in templates for message in template.render_from(context))
    template_id, template_sha = combined_identity(templates)
    return Request(
        id=request_id(step, template_sha, messages, sampling, sample_index, schema),
        label=label,
        messages=messages,
        template_id=template_id,
        template_sha256=template_sha,
        sampling=sampling,
        hit=hit,
        sample_index=sample_index,
        json_schema=schema,
        grounding=grounding,
    )
