"""The embedded llama-server: start it on loopback for one model, health-check it, and make sure it
never outlives Seedbed (context exit, stop(), atexit, SIGTERM, and the kernel's parent-death signal).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.errors import ConfigError, RuntimeSetupError
from engine.runtime.build import seedbed_home, server_command
from engine.runtime.catalog import DEFAULT_MODEL
from engine.runtime.local import ensure_model

__all__ = ["LocalServer", "ServerConfig", "free_port"]

log = logging.getLogger(__name__)


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
    ctx_per_slot: int = 4096
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
# Killed by a CPU fault while starting: on some virtual machines (Firecracker, seen here) the CPU
# reports AMX but its first tile instruction faults inside llama.cpp's repacked (AMX) kernels, which
# a native build (GGML_NATIVE) compiles in; llama.cpp's own switch, LLAMA_ARG_REPACK=false, keeps
# them out. Binaries that crashed so run with it for the rest of the process.
_CPU_FAULTS = (-signal.SIGSEGV, -signal.SIGILL)
_NO_REPACK: set[tuple[str, ...]] = set()
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
                 *, binary: Path | Sequence[str] | None = None, log_path: Path | None = None) -> None:
        """Prepare (not start) a server.

        Args:
            model_path: the GGUF file.
            alias: the model name clients send (`-a`).
            config: how to run it.
            binary: a llama-server binary, or a command prefix that takes llama-server's flags
                (`engine.runtime.prebuilt.command()`); None chooses at start (`server_command`,
                never builds).
            log_path: where stdout/stderr go; default `seedbed_home()/logs/llama-server-ALIAS-PORT.log`.
        """
        self.model_path = Path(model_path)
        self.alias = alias
        self.config = config
        self._binary = [str(binary)] if isinstance(binary, (str, Path)) else (list(binary) if binary else None)
        self._log_path = log_path
        self._port = config.port
        self._proc: subprocess.Popen[bytes] | None = None
        self._exit_code: int | None = None  # of the last start that failed
        self._repack_off = False
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
            build: build the native llama-server if no runtime is found (about 6 min on 2 cores;
                never needed where the prebuilt xllamacpp wheel is installed).

        Returns:
            An unstarted LocalServer.

        Raises:
            ConfigError: unknown model name.
            RuntimeSetupError: the model or binary is missing and may not be prepared, or preparing failed.
        """
        path = ensure_model(name, install=install)
        return cls(path, name, config, binary=server_command(build=build))

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

    def _command(self, binary: list[str]) -> list[str]:
        cfg = self.config
        return [*binary, "-m", str(self.model_path), "-a", self.alias,
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
        binary = self._binary or server_command(build=False)
        auto_port = self._port is None
        for attempt in range(3):
            if auto_port and (self._port is None or attempt > 0):
                self._port = free_port()
            try:
                self._spawn(binary)
                self._wait_ready()
                return self
            except RuntimeSetupError:
                if attempt < 2 and self._without_repacking(binary):
                    continue
                # Another process may grab the free port before llama-server binds it; retry then.
                if not (auto_port and attempt < 2 and "couldn't bind" in self._log_tail()):
                    raise
        raise AssertionError("unreachable")

    def _without_repacking(self, binary: list[str]) -> bool:
        """After a CPU fault at start, mark `binary` to run with weight repacking off; False if it already did."""
        if self._exit_code not in _CPU_FAULTS or tuple(binary) in _NO_REPACK or "LLAMA_ARG_REPACK" in os.environ:
            return False
        _NO_REPACK.add(tuple(binary))
        log.warning("llama-server was killed by signal %d while starting (log: %s): its CPU's repacked kernels "
                    "(AMX on some virtual machines) fault here; starting it again with weight repacking off "
                    "(LLAMA_ARG_REPACK=false)",
                    -self._exit_code, self.log_path)
        return True

    def _spawn(self, binary: list[str]) -> None:
        self._exit_code, self._repack_off = None, tuple(binary) in _NO_REPACK
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _prune_logs(self.log_path.parent)
        # Append, so a restart keeps the log of the crash that caused it; the child keeps its
        # own copy of the fd, so ours can close at once.
        with self.log_path.open("ab") as log:
            popen = functools.partial(
                subprocess.Popen, self._command(binary), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent_hook(),
                # The key goes by environment, not argv, which any local user can read in `ps`.
                env={**os.environ, "LLAMA_API_KEY": self.api_key,
                     **({"LLAMA_ARG_REPACK": "false"} if self._repack_off else {})},
            )
            try:
                self._proc = _spawn_in_long_lived_thread(popen)
            except OSError as exc:
                raise RuntimeSetupError(
                    f"Cannot run llama-server {' '.join(binary)}: {exc}. Point SEEDBED_LLAMA_SERVER at a "
                    "working binary, or unset it to use the cached native build or the prebuilt xllamacpp runtime.") from exc
        _install_exit_hooks()
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll() if self._proc else -1
            if code is not None:
                self._exit_code = code
                self.stop()
                raise RuntimeSetupError(
                    f"llama-server exited with code {code} while starting {self.model_path.name}"
                    f"{' with weight repacking off' if self._repack_off else ''}. Log {self.log_path} ends with:\n{self._log_tail()}")
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

    def process_running(self) -> bool:
        """True while the process has not exited (cheap: no HTTP request)."""
        return self._proc is not None and self._proc.poll() is None

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
