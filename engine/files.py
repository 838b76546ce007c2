"""Small file helpers shared by every layer: atomic writes, and names that are safe as folder names.

Both atomic writes go through a temporary `.NAME.tmp-PID` beside the target, fsync it, and rename
it over the target, so a reader sees the old file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from engine.errors import ConfigError

__all__ = ["write_json_atomic", "write_atomic", "ends_with_newline", "complete_lines", "validate_name"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` to fill a temp file, fsync it, then rename it over `path` (the temp never survives)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ends_with_newline(path: Path) -> bool:
    """Whether the non-empty file `path` ends with a newline (one that does not was cut mid-line)."""
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def complete_lines(path: Path) -> int:
    """Bytes of `path` up to and including its last newline (a line still being appended is left out)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            block = handle.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


def validate_name(name: str, what: str = "index name") -> str:
    """Check a name used as a folder: letters, digits, '.', '_', '-' only; no path separators.

    Raises:
        ConfigError: the name is empty, too long or contains other characters.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in {".", ".."}:
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no '/', '\\' or spaces), e.g. 'reuters-sample'"
        )
    return name
