"""Prompt templates as data: a YAML front matter plus chat messages, rendered by safe substitution.

A template file looks like this::

    ---
    id: synthesizrr/refine
    description: what the template is for
    variables: [output_kind, passage]
    choices:                      # optional: a variable whose value picks a fixed snippet
      answer_format:
        text: Answer with only the {{output_kind}}.
        json: 'Answer with only a JSON object {"text": "..."}.'
    ---
    ### user
    Write one {{output_kind}}. {{answer_format}}

    Passage:
    {{passage}}

`### system`, `### user` and `### assistant` lines start messages. `{{name}}` is replaced by the
value given for `name` in a single pass, so a value that itself contains `{{...}}`, `{...}` or `$`
comes through literally: passages are data. There is no logic, no expressions, no filters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError

__all__ = [
    "ROLES",
    "Template",
    "default_prompts_dir",
    "load_template",
    "parse_template",
    "combined_identity",
]

ROLES = ("system", "user", "assistant")
_FRONT_KEYS = {"id", "description", "variables", "choices"}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\{\{\s*(" + _NAME + r")\s*\}\}")
_ANY_BRACES = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_HEADING = re.compile(r"^###\s+(system|user|assistant)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Template:
    """A parsed prompt template; `sha256` is the hash of the file's bytes."""

    id: str
    description: str
    variables: tuple[str, ...]
    messages: tuple[tuple[str, str], ...]
    choices: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    sha256: str
    path: str

    def render(self, **values: Any) -> tuple[tuple[str, str], ...]:
        """Substitute every declared variable and return the chat messages as (role, content).

        Raises:
            ConfigError: a declared variable is missing, an undeclared one is given, or a
                choice variable gets a value that is not one of its options.
        """
        undeclared = sorted(set(values) - set(self.variables))
        if undeclared:
            raise ConfigError(
                f"template {self.path} got undeclared variable(s) {undeclared}; it declares "
                f"{list(self.variables)}: add them to its `variables:` list or stop passing them"
            )
        return self.render_from(values)

    def render_from(self, context: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """Like `render`, but takes the declared variables from a larger context and ignores the rest.

        Strategies use this: they offer a fixed set of variables, and a template uses a subset.
        """
        missing = [name for name in self.variables if name not in context]
        if missing:
            raise ConfigError(
                f"template {self.path} needs variable(s) {missing} but only "
                f"{sorted(context)} were given; remove them from the template or provide them"
            )
        values = {name: _as_text(self, name, context[name]) for name in self.variables}
        snippets = {name: _pick_choice(self, name, values[name], dict(options)) for name, options in self.choices}
        return tuple((role, _substitute(body, snippets, values)) for role, body in self.messages)


def _as_text(template: Template, name: str, value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(
        f"template {template.path}: variable {name!r} got a {type(value).__name__} ({value!r:.60}); "
        "pass a string or a number"
    )


def _pick_choice(template: Template, name: str, key: str, options: dict[str, str]) -> str:
    if key not in options:
        raise ConfigError(
            f"template {template.path}: variable {name!r} got {key!r}; allowed: {sorted(options)}"
        )
    return options[key]


def _substitute(body: str, snippets: Mapping[str, str], values: Mapping[str, str]) -> str:
    # Pass 1 inlines choice snippets: template text, never data. Pass 2 is the only pass that
    # inserts data, and it is a single regex pass, so a value is never expanded again.
    inlined = _PLACEHOLDER.sub(lambda m: snippets.get(m.group(1), m.group(0)), body)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], inlined)


def default_prompts_dir() -> Path:
    """`SEEDBED_PROMPTS` when set, else the bundled templates (the wheel's copy or the checkout's `prompts/`)."""
    from engine.resources import prompts_dir

    return prompts_dir()


def load_template(name_or_path: str | Path, root: Path | None = None) -> Template:
    """Load a template by name (`synthesizrr/refine` -> `<root>/synthesizrr/refine.md`) or by path.

    Args:
        name_or_path: a template name relative to `root`, or a path to a `.md` file.
        root: the prompts folder; defaults to `default_prompts_dir()`.

    Raises:
        ConfigError: the file does not exist or is not a valid template.
    """
    path = _resolve(name_or_path, root if root is not None else default_prompts_dir())
    return parse_template(path.read_bytes(), str(path))


def _resolve(name_or_path: str | Path, root: Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".md" and candidate.is_file():
        return candidate
    by_name = root / f"{name_or_path}.md"
    if by_name.is_file():
        return by_name
    known = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.md")) if root.is_dir() else []
    raise ConfigError(
        f"no prompt template {str(name_or_path)!r}: looked for {by_name}; templates under {root}: "
        f"{known or 'none'}; give a known name or a path to a .md file"
    )


def parse_template(data: bytes, path: str = "<string>") -> Template:
    """Parse template file bytes; `path` is only used in error messages and `Template.path`.

    Raises:
        ConfigError: bad front matter, no messages, or a placeholder that is malformed or undeclared.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"template {path} is not UTF-8 ({exc}); save it as UTF-8") from exc
    front, body = _split_front_matter(text, path)
    meta = _parse_meta(front, path)
    messages = _parse_messages(body, path)
    choices = _parse_choices(meta.get("choices"), meta["variables"], path)
    _check_placeholders(path, meta["variables"], messages, choices)
    return Template(
        id=meta["id"],
        description=str(meta.get("description", "")).strip(),
        variables=meta["variables"],
        messages=messages,
        choices=tuple((name, tuple(options.items())) for name, options in choices.items()),
        sha256=hashlib.sha256(data).hexdigest(),
        path=path,
    )


def _split_front_matter(text: str, path: str) -> tuple[str, str]:
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        raise ConfigError(f"template {path} must start with a '---' line opening its YAML front matter")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1 :])
    raise ConfigError(f"template {path}: front matter is never closed; add a '---' line after it")


def _parse_meta(front: str, path: str) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"template {path}: front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"template {path}: front matter must be a mapping, got {type(meta).__name__}")
    unknown = sorted(set(meta) - _FRONT_KEYS)
    if unknown:
        raise ConfigError(f"template {path}: unknown front matter key(s) {unknown}; allowed: {sorted(_FRONT_KEYS)}")
    if not isinstance(meta.get("id"), str) or not meta["id"].strip():
        raise ConfigError(f"template {path}: front matter needs `id:` (a non-empty string), got {meta.get('id')!r}")
    variables = meta.get("variables", [])
    if not isinstance(variables, list) or not all(isinstance(v, str) and re.fullmatch(_NAME, v) for v in variables):
        raise ConfigError(
            f"template {path}: `variables:` must be a list of identifiers like [label, passage], got {variables!r}"
        )
    if len(set(variables)) != len(variables):
        raise ConfigError(f"template {path}: `variables:` lists a name twice: {variables!r}")
    return {**meta, "id": meta["id"].strip(), "variables": tuple(variables)}


def _parse_messages(body: str, path: str) -> tuple[tuple[str, str], ...]:
    messages: list[tuple[str, list[str]]] = []
    for number, line in enumerate(body.split("\n"), start=1):
        heading = _HEADING.match(line.strip())
        if heading:
            messages.append((heading.group(1).lower(), []))
        elif messages:
            messages[-1][1].append(line)
        elif line.strip():
            raise ConfigError(
                f"template {path}: text before the first message heading (body line {number}: "
                f"{line.strip()[:40]!r}); start each message with '### system', '### user' or '### assistant'"
            )
    if not messages:
        raise ConfigError(f"template {path} has no messages; add a '### user' line followed by the prompt")
    result = tuple((role, "\n".join(lines).strip("\n").rstrip()) for role, lines in messages)
    empty = [role for role, content in result if not content.strip()]
    if empty:
        raise ConfigError(f"template {path} has an empty '### {empty[0]}' message; write its text or remove it")
    return result


def _parse_choices(raw: Any, variables: tuple[str, ...], path: str) -> dict[str, dict[str, str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"template {path}: `choices:` must map a variable to {{option: text}}, got {raw!r}")
    choices: dict[str, dict[str, str]] = {}
    for name, options in raw.items():
        if name not in variables:
            raise ConfigError(f"template {path}: choice {name!r} is not in `variables:` {list(variables)}; declare it")
        if not isinstance(options, dict) or not options or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in options.items()
        ):
            raise ConfigError(f"template {path}: choice {name!r} must map option names to text, got {options!r}")
        choices[name] = {key: value.strip() for key, value in options.items()}
    return choices


def _check_placeholders(
    path: str,
    variables: tuple[str, ...],
    messages: tuple[tuple[str, str], ...],
    choices: Mapping[str, Mapping[str, str]],
) -> None:
    texts = [content for _, content in messages]
    snippets = [text for options in choices.values() for text in options.values()]
    used: set[str] = set()
    for text in texts + snippets:
        for raw in _ANY_BRACES.findall(text):
            match = _PLACEHOLDER.fullmatch(raw)
            if match is None:
                raise ConfigError(
                    f"template {path}: {raw[:40]!r} is not a placeholder; only {{{{name}}}} with a declared "
                    "variable is allowed (no expressions, filters or {% logic %})"
                )
            if match.group(1) not in variables:
                raise ConfigError(
                    f"template {path} uses undeclared variable {match.group(1)!r}; add it to `variables:` "
                    f"{list(variables)}"
                )
            used.add(match.group(1))
    for snippet in snippets:
        nested = set(_PLACEHOLDER.findall(snippet)) & set(choices)
        if nested:
            raise ConfigError(f"template {path}: a choice snippet uses another choice {sorted(nested)}; inline it")
    unused = [name for name in variables if name not in used]
    if unused:
        raise ConfigError(f"template {path} declares variable(s) {unused} but never uses them; remove or use them")


def combined_identity(templates: tuple[Template, ...]) -> tuple[str, str]:
    """One (id, sha256) for the prompt made of several templates, e.g. system + refine.

    A single template keeps its own id and file hash, so provenance points straight at the file.
    """
    if len(templates) == 1:
        return templates[0].id, templates[0].sha256
    joined = "\n".join(f"{t.id}:{t.sha256}" for t in templates)
    return "+".join(t.id for t in templates), hashlib.sha256(joined.encode("utf-8")).hexdigest()
