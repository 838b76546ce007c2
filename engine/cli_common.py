"""What every `seedbed` command shares: the --root and --prompts options, folders that may be s3:// URIs,
`bundled:NAME` paths, and the wrapper that turns errors into one line and an exit code."""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import Callable, ParamSpec, TypeVar

import click

from engine.errors import SeedbedError
from engine.remote import is_remote

__all__ = ["INDEX_ROOT", "LOCATION", "PROMPTS", "bundled_path", "friendly", "os_error_line"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Location(click.ParamType):
    """A folder as a Path, or an s3:// URI kept as text (a Path would fold its '//' into '/')."""

    name = "path"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        return value.rstrip("/") if is_remote(value) else Path(value)


LOCATION = _Location()
INDEX_ROOT = click.option("--root", type=LOCATION, default=Path("indexes"), show_default=True, envvar="SEEDBED_INDEXES",
                          help="Folder holding indexes, or s3://bucket/prefix (credentials from AWS_* variables).")


def _use_prompts(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """--prompts DIR: the templates are read from DIR for this command (SEEDBED_PROMPTS), restored after it,
    so a command run in-process (tests, a notebook) leaves the environment as it found it."""
    if value is not None:
        if not Path(value).is_dir():
            raise click.BadParameter(f"{value} is not a folder of prompt templates; `seedbed init DIR --prompts` writes "
                                     "a copy of the bundled ones to edit")
        before = os.environ.get("SEEDBED_PROMPTS")
        os.environ["SEEDBED_PROMPTS"] = str(Path(value).resolve())
        ctx.call_on_close(lambda: os.environ.__setitem__("SEEDBED_PROMPTS", before) if before is not None
                          else os.environ.pop("SEEDBED_PROMPTS", None))
    return value


PROMPTS = click.option("--prompts", type=click.Path(path_type=Path), envvar="SEEDBED_PROMPTS", expose_value=False,
                       callback=_use_prompts, help="Folder of your own prompt templates (default: the bundled ones).")


def bundled_path(path: Path, kind: str) -> Path:
    """`bundled:NAME` -> the bundled sample corpus or task spec NAME; any other path as given."""
    text = str(path)
    if not text.startswith("bundled:"):
        return path
    from engine.resources import bundled

    folder, name = bundled(kind), text.removeprefix("bundled:")
    candidates = [folder / name] + ([folder / f"{name}.yaml"] if kind == "tasks" else [])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    available = sorted(p.stem if kind == "tasks" else p.name for p in folder.iterdir() if not p.name.startswith("."))
    raise click.BadParameter(f"no bundled {kind[:-1] if kind == 'tasks' else 'corpus'} {name!r}; "
                             f"choose one of {', '.join(available)}")


_OS_FIXES = {
    errno.ENOSPC: "free some space there (or choose another folder) and run the same command again: "
                  "answers already in the journal are not paid for again",
    errno.EDQUOT: "raise the quota or choose another folder, then run the same command again",
    errno.EROFS: "the filesystem is mounted read-only; choose a writable folder",
    errno.EACCES: "check the folder's owner and permissions, or choose another folder",
    errno.EPERM: "check the folder's owner and permissions, or choose another folder",
}


def os_error_line(exc: OSError, ctx: click.Context | None) -> str:
    """One line for an OSError: what failed, where, and the fix.

    A write to an open file (a full disk) carries no file name, so the command's own folders
    (--out, --root) say where it was writing.
    """
    what = (exc.strerror or str(exc)).rstrip(".")
    if exc.filename:
        what = f"{what}: {exc.filename}"
    elif ctx is not None:
        folder = next((ctx.params[name] for name in ("out", "root", "folder") if ctx.params.get(name) is not None), None)
        what += f" (writing under {folder})" if folder is not None else ""
    fix = _OS_FIXES.get(exc.errno or -1)
    return f"{what}; {fix}" if fix else what


def friendly(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn SeedbedErrors (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except SeedbedError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except OSError as exc:  # a path that is a file, a full disk, no permission: say which path
            click.secho(f"error: {os_error_line(exc, click.get_current_context(silent=True))}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.secho("interrupted; nothing half-written was kept (synth: re-run the same command to resume "
                        "without paying again for finished requests)", fg="yellow", err=True)
            sys.exit(130)

    return wrapper
