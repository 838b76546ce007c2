"""Load and validate task specs (YAML or TOML); unknown keys are errors, never ignored."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError
from engine.files import validate_name
from engine.types import LabelSpec, OutputSpec, QualityParams, RetrievalParams, SamplingParams, TaskSpec

__all__ = ["load_task", "parse_task", "task_to_dict"]

_TOP_KEYS = {
    "name", "description", "labels", "output", "examples_per_label", "strategy",
    "template", "system_template", "sampling", "retrieval", "seed", "strategy_options", "verify",
    "fallback", "fallback_options", "quality",
}
FALLBACKS = ("attrprompt", "fewgen")
_VERIFY_POLICIES = ("drop", "relabel", "keep")
_GROUNDING_POLICIES = ("drop", "flag", "off")
_LABEL_KEYS = {"name", "verbalization", "seeds", "queries"}


def load_task(path: str | Path) -> TaskSpec:
    """Read a task spec from a .yaml/.yml/.toml file.

    Raises:
        ConfigError: missing file, unknown extension, syntax error, or an invalid field.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"task spec {path} does not exist; pass a .yaml or .toml file, e.g. benchmarks/tasks/ag_news.yaml")
    text = _read_text(path)
    suffix = path.suffix.lower()
    try:
        if suffix in {".yaml", ".yml"}:
            raw = yaml.safe_load(text)
        elif suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            raise ConfigError(f"task spec {path}: unknown extension {suffix!r}; use .yaml, .yml or .toml")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"task spec {path}{where} is not valid YAML: {problem}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"task spec {path} is not valid TOML: {exc}") from None
    return parse_task(raw, source=str(path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"task spec {path} is not UTF-8 (byte {exc.start}); save it as UTF-8") from None


def parse_task(raw: Any, source: str = "<task>") -> TaskSpec:
    """Build a TaskSpec from a parsed mapping, checking every key and value.

    Raises:
        ConfigError: naming the source, the field path, the value and what is allowed.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a task spec must be a mapping of keys, got {type(raw).__name__}")
    _check_keys(raw, _TOP_KEYS, source, "")
    for required in ("name", "labels", "output"):
        if required not in raw:
            raise ConfigError(f"{source}: missing required key '{required}'")
    labels = _parse_labels(raw["labels"], source)
    sampling = _parse_sampling(raw.get("sampling", {}), source)
    retrieval = _parse_section(raw.get("retrieval", {}), RetrievalParams, source, "retrieval")
    _check_retrieval(retrieval, source)
    _check_sampling(sampling, source)
    output = _parse_output(raw["output"], source)
    quality = _parse_section(raw.get("quality", {}), QualityParams, source, "quality")
    _check_quality(quality, source)
    task = TaskSpec(
        name=validate_name(str(raw["name"]), "task name"),
        labels=labels,
        output=output,
        examples_per_label=_positive_int(raw.get("examples_per_label", 10), source, "examples_per_label"),
        strategy=str(raw.get("strategy", "synthesizrr")),
        template=str(raw.get("template", "synthesizrr/refine")),
        system_template=str(raw.get("system_template", "system")),
        sampling=sampling,
        retrieval=retrieval,
        seed=_int(raw.get("seed", 0), source, "seed"),
        description=str(raw.get("description", "")),
        strategy_options=_strategy_options(raw.get("strategy_options", {}), source),
        verify=_verify_policy(raw.get("verify", False), source),
        fallback=_fallback(raw.get("fallback"), source),
        fallback_options=_strategy_options(raw.get("fallback_options", {}), source, "fallback_options"),
        quality=quality,
    )
    return task


def _fallback(raw: Any, source: str) -> str:
    """`fallback: attrprompt | fewgen | none` (absent or none: unsupported labels stop the run)."""
    if raw is None or raw is False or raw == "none":
        return ""
    if isinstance(raw, str) and raw in FALLBACKS:
        return raw
    raise ConfigError(f"{source}: fallback={raw!r}; use one of {', '.join(FALLBACKS)} or none")


def _strategy_options(raw: Any, source: str, where: str = "strategy_options") -> dict[str, Any]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{source}: {where} must be a mapping of option names to values, e.g. {{shots: 4}}")
    return dict(raw)


def _verify_policy(raw: Any, source: str) -> str:
    """`verify: true` means the drop policy; a policy name picks it; false/absent turns it off."""
    if raw is True:
        return "drop"
    if raw is False or raw is None:
        return ""
    if isinstance(raw, str) and raw in _VERIFY_POLICIES:
        return raw
    raise ConfigError(f"{source}: verify={raw!r}; use true (= drop), false, or one of {', '.join(_VERIFY_POLICIES)}")


def _check_keys(mapping: dict, allowed: set[str], source: str, where: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key '{where}{key}'{hint}; allowed keys: {', '.join(sorted(allowed))}"
            )


def _parse_labels(raw: Any, source: str) -> tuple[LabelSpec, ...]:
    if isinstance(raw, dict):  # `labels: {World: "verbalization", ...}` or name -> mapping
        raw = [{"name": k, **(v if isinstance(v, dict) else {"verbalization": v})} for k, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: 'labels' must be a non-empty list of {{name, verbalization, seeds}}")
    labels, seen = [], set()
    for i, item in enumerate(raw):
        where = f"labels[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: labels[{i}] must be a mapping with name and verbalization, got {item!r}")
        _check_keys(item, _LABEL_KEYS, source, where)
        for key in ("name", "verbalization"):
            if key in item and not isinstance(item[key], (str, int, float)) or isinstance(item.get(key), bool):
                raise ConfigError(f"{source}: {where}{key} must be a string, got {item[key]!r}")
        name = str(item.get("name", "")).strip()
        verbal = str(item.get("verbalization", "")).strip()
        if not name or not verbal:
            raise ConfigError(f"{source}: labels[{i}] needs a non-empty 'name' and 'verbalization', got {item!r}")
        if name in seen:
            raise ConfigError(f"{source}: label {name!r} appears twice in 'labels'; label names must be unique")
        seen.add(name)
        seeds, queries = (_strings(item.get(key), source, where + key) for key in ("seeds", "queries"))
        labels.append(LabelSpec(name=name, verbalization=verbal, seeds=seeds, queries=queries))
    return tuple(labels)


def _strings(raw: Any, source: str, where: str) -> tuple[str, ...]:
    items = raw or []
    if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
        raise ConfigError(f"{source}: {where} must be a list of non-empty strings, got {raw!r}")
    return tuple(s.strip() for s in items)


def _parse_output(raw: Any, source: str) -> OutputSpec:
    if isinstance(raw, str):
        raw = {"kind": raw}
    if isinstance(raw, dict) and "kind" in raw and not isinstance(raw["kind"], str):
        raise ConfigError(f"{source}: output.kind must be a string, got {raw['kind']!r}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'output' must be a mapping like {{kind: news headline, max_words: 20}}")
    out = _parse_section(raw, OutputSpec, source, "output")
    if not out.kind.strip():
        raise ConfigError(f"{source}: output.kind must say what to write, e.g. 'news headline'")
    if not 1 <= out.min_words <= out.max_words:
        raise ConfigError(
            f"{source}: output.min_words={out.min_words} and max_words={out.max_words} must satisfy 1 <= min <= max"
        )
    return out


def _parse_section(raw: Any, cls: type, source: str, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {raw!r}")
    kinds = {f.name: (type(f.default) if f.default is not MISSING else str) for f in fields(cls)}
    _check_keys(raw, set(kinds), source, f"{where}.")
    values = {key: _coerce(value, kinds[key], source, f"{where}.{key}") for key, value in raw.items()}
    if cls is OutputSpec:
        values.setdefault("kind", "")
    return cls(**values)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(value: Any, typ: type, source: str, where: str):
    wanted = _TYPE_NAMES.get(typ, typ.__name__)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {where} must be {wanted}, got {value!r}")
        return value
    if isinstance(value, bool) or (typ is str and not isinstance(value, str)):
        raise ConfigError(f"{source}: {where} must be {wanted}, got {value!r}")
    try:
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {where} must be {wanted}, got {value!r}") from None


def _int(value: Any, source: str, where: str) -> int:
    return _coerce(value, int, source, where)


def _positive_int(value: Any, source: str, where: str) -> int:
    number = _int(value, source, where)
    if number < 1:
        raise ConfigError(f"{source}: {where} must be at least 1, got {value!r}")
    return number


# Request fields that sampling.extra may not set: sampling's own fields, and those the client sets or that
# change what an answer is.
_SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)} - {"extra"}
_NOT_EXTRA = _SAMPLING_FIELDS | {"model", "messages", "stream", "n", "response_format", "tools", "tool_choice", "logprobs",
                                 "stop", "extra"}


def _parse_sampling(raw: Any, source: str) -> SamplingParams:
    """`sampling`, with `extra`: server-specific parameters sent as they are (e.g. min_p: 0.05)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'sampling' must be a mapping, got {raw!r}")
    extra = raw.get("extra", {})
    if not isinstance(extra, dict):
        raise ConfigError(f"{source}: sampling.extra must be a mapping of parameter names to values "
                          f"(e.g. extra: {{min_p: 0.05}}), got {extra!r}")
    for name, value in extra.items():
        if not isinstance(name, str) or name in _NOT_EXTRA:
            raise ConfigError(f"{source}: sampling.extra.{name} cannot be set there; "
                              + (f"use sampling.{name}" if name in _SAMPLING_FIELDS else "Seedbed sets it itself"))
        if value is not None and not isinstance(value, (int, float, str, bool)):
            raise ConfigError(f"{source}: sampling.extra.{name} must be a number, string or true/false, got {value!r}")
    params = _parse_section({k: v for k, v in raw.items() if k != "extra"}, SamplingParams, source, "sampling")
    return replace(params, extra=tuple(sorted(extra.items())))


def _check_sampling(s: SamplingParams, source: str) -> None:
    if not 0.0 <= s.temperature <= 2.0:
        raise ConfigError(f"{source}: sampling.temperature={s.temperature} must be between 0 and 2")
    if not 0.0 < s.top_p <= 1.0:
        raise ConfigError(f"{source}: sampling.top_p={s.top_p} must be above 0 and at most 1")
    if s.max_tokens < 1:
        raise ConfigError(f"{source}: sampling.max_tokens={s.max_tokens} must be at least 1 (e.g. 128)")


def _check_retrieval(r: RetrievalParams, source: str) -> None:
    if not -1.0 <= r.min_similarity < r.max_similarity <= 1.0:
        raise ConfigError(
            f"{source}: retrieval.min_similarity={r.min_similarity} and max_similarity={r.max_similarity} "
            "must satisfy -1 <= min < max <= 1 (paper defaults: 0.4 and 0.9)"
        )
    if r.mode not in {"dense", "bm25", "hybrid"}:
        raise ConfigError(f"{source}: retrieval.mode={r.mode!r}; use dense, bm25 or hybrid")
    if not 0.0 <= r.mmr_lambda <= 1.0:
        raise ConfigError(f"{source}: retrieval.mmr_lambda={r.mmr_lambda} must be between 0 and 1")
    if r.mmr_relevance not in ("cosine", "margin", "both"):
        raise ConfigError(f"{source}: retrieval.mmr_relevance={r.mmr_relevance!r}; use cosine, margin or both")
    if r.max_reuse < 1 or r.candidates < 1:
        raise ConfigError(f"{source}: retrieval.max_reuse and retrieval.candidates must be at least 1")
    if not -1.0 <= r.label_margin <= 1.0:
        raise ConfigError(f"{source}: retrieval.label_margin={r.label_margin} must be between -1 and 1 (default 0.05)")
    if r.passage_tokens < 16:
        raise ConfigError(f"{source}: retrieval.passage_tokens={r.passage_tokens} must be at least 16 (the paper uses 400)")
    if not 0.0 <= r.relax_limit <= 1.0:
        raise ConfigError(f"{source}: retrieval.relax_limit={r.relax_limit} must be between 0 (never relax, the default) and 1")


def _check_quality(q: QualityParams, source: str) -> None:
    if not 0.0 <= q.near_duplicate <= 1.0:
        raise ConfigError(f"{source}: quality.near_duplicate={q.near_duplicate} must be between 0 (off, the default) and 1 "
                          "(0.7 recommended)")
    if not 0.0 <= q.confidence_keep <= 1.0:
        raise ConfigError(f"{source}: quality.confidence_keep={q.confidence_keep} must be between 0 (off, the default) "
                          "and 1 (the SynthesizRR paper keeps 0.83)")
    if not 0.0 <= q.stock_phrases < 1.0:
        raise ConfigError(f"{source}: quality.stock_phrases={q.stock_phrases} must be at least 0 (off, the default) and "
                          "below 1 (the share of an example's 4-word phrases that 2 kept examples already use; 0.04-0.05 "
                          "keeps all but 1 or 2 of 242 human reviews)")
    if q.grounding not in _GROUNDING_POLICIES:
        raise ConfigError(f"{source}: quality.grounding={q.grounding!r}; use one of {', '.join(_GROUNDING_POLICIES)}")


def task_to_dict(task: TaskSpec) -> dict[str, Any]:
    """A JSON-ready dict of a task spec (for manifests and fingerprints)."""
    from dataclasses import asdict

    raw = asdict(task)
    for label in raw["labels"]:  # a spec without retrieval queries keeps the fingerprint it had before they existed
        if not label["queries"]:
            del label["queries"]
    if not raw["quality"]["stock_phrases"]:  # and one without the stock-phrase filter, too
        del raw["quality"]["stock_phrases"]
    if task.sampling.extra:  # a mapping, as the spec writes it; none: the fingerprint it had before extra existed
        raw["sampling"]["extra"] = dict(task.sampling.extra)
    else:
        del raw["sampling"]["extra"]
    return raw
