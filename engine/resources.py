"""Where the bundled data lives: prompt templates, example task specs and sample corpora.

The repository keeps them at its top level (`prompts/`, `benchmarks/tasks/`, `corpora/`), the single
source of what is shipped; the wheel carries copies under `engine/_bundled/` (see pyproject.toml).
An installed wheel finds its copies, an editable checkout finds the repository's folders. The
user's own templates come first: `SEEDBED_PROMPTS` (or `--prompts DIR`) names a folder of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import RuntimeSetupError

__all__ = ["KINDS", "bundled", "prompts_dir"]

_PACKAGE = Path(__file__).resolve().parent
_IN_REPO = {"prompts": "prompts", "tasks": "benchmarks/tasks", "corpora": "corpora"}
KINDS = tuple(_IN_REPO)


def bundled(kind: str) -> Path:
    """The folder of bundled `kind` data ('prompts', 'tasks' or 'corpora').

    Raises:
        RuntimeSetupError: neither the wheel's copy nor a checkout's folder exists.
    """
    wheel = _PACKAGE / "_bundled" / kind
    if wheel.is_dir():
        return wheel
    repo = _PACKAGE.parent / _IN_REPO[kind]
    if repo.is_dir():
        return repo
    raise RuntimeSetupError(f"the bundled {kind} are missing from this install (looked in {wheel} and {repo}); "
                            "reinstall seedbed (`pip install --force-reinstall seedbed`)")


def prompts_dir() -> Path:
    """`SEEDBED_PROMPTS` when set, else the bundled templates."""
    own = os.environ.get("SEEDBED_PROMPTS")
    return Path(own) if own else bundled("prompts")
