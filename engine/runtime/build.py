"""Find or build the llama.cpp `llama-server` binary that the embedded runtime runs.

No prebuilt llama.cpp binary reaches this machine (registries only), so we build one from the
`llama-cpp-python` sdist on PyPI, which vendors the whole llama.cpp tree. The build uses
`GGML_NATIVE=ON` (about 2x faster decode on CPU), so the binary only runs on the CPU model it was
built on: it is cached under a per-CPU key and never shipped.

Everything Seedbed keeps on disk for the runtime lives under `seedbed_home()`:

    bin/<cpu-key>/llama-server   the built binary (+ build.json saying how)
    logs/                        build and server logs
    models/                      assembled GGUF files and their verification stamps
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from engine.errors import RuntimeSetupError

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "RUNTIMES",
    "server_command",
    "server_available",
    "seedbed_home",
    "cpu_key",
    "find_llama_server",
    "build_llama_server",
    "ensure_llama_server",
]

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
_BINARY = "llama-server"
_VENDOR = "vendor/llama.cpp"
# The flags measured in STACK.md. The standalone llama.cpp project already defaults
# LLAMA_BUILD_TOOLS / LLAMA_BUILD_SERVER to ON, so the server target exists without extra flags.
# LLAMA_USE_PREBUILT_UI=OFF stops the build from trying to download the web UI from Hugging Face
# (no code path may need the internet); the OpenAI API does not need the UI.
_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)


def seedbed_home() -> Path:
    """Return the folder that holds Seedbed's runtime artefacts (binaries, models, logs).

    Returns:
        `$SEEDBED_HOME` if set, else `~/.cache/seedbed`. The folder may not exist yet.
    """
    env = os.environ.get("SEEDBED_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seedbed"


def _cpu_info() -> tuple[str, str]:
    """Return (model name, flags) of the first CPU in /proc/cpuinfo, or ("", "")."""
    model, flags = "", ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = " ".join(sorted(value.split()))
        if model and flags:
            break
    return model, flags


def cpu_key() -> str:
    """Return a folder-safe key for this CPU, e.g. `x86_64-amd-epyc-1a2b3c4d`.

    The model name alone can be generic ("AMD EPYC" covers several generations with different
    instruction sets), and `-march=native` follows the feature flags, so a short hash of the
    flags is part of the key.

    Returns:
        `<arch>-<slug of the CPU model name>-<8 hex of the flags hash>`.
    """
    model, flags = _cpu_info()
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "unknown-cpu"
    digest = hashlib.sha256(flags.encode()).hexdigest()[:8]
    return f"{platform.machine() or 'unknown'}-{slug}-{digest}"


def _cached_binary() -> Path:
    return seedbed_home() / "bin" / cpu_key() / _BINARY


def find_llama_server() -> Path | None:
    """Find a usable llama-server binary without building anything.

    Looks, in order, at `$SEEDBED_LLAMA_SERVER`, the cached build for this CPU
    (`seedbed_home()/bin/<cpu-key>/llama-server`), then `llama-server` on PATH.

    Returns:
        The binary's path, or None if none is found.

    Raises:
        RuntimeSetupError: `$SEEDBED_LLAMA_SERVER` is set but is not an executable file (an
            explicit setting that is wrong should not silently fall through to another binary).
    """
    env = os.environ.get("SEEDBED_LLAMA_SERVER")
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RuntimeSetupError(
                f"SEEDBED_LLAMA_SERVER={env!r} is not an executable file. Point it at a "
                "llama-server binary, or unset it to use the cached build "
                "(`seedbed setup --native` builds one)."
            )
        return path
    cached = _cached_binary()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which(_BINARY)
    return Path(on_path) if on_path else None


def ensure_llama_server(build: bool = True) -> Path:
    """Return a llama-server binary, building it if none is found and `build` is true.

    Args:
        build: build from source (about 6 min on 2 cores) when no binary is found.

    Returns:
        The binary's path.

    Raises:
        RuntimeSetupError: none found and `build` is false, or the build failed.
    """
    found = find_llama_server()
    if found is not None:
        return found
    if not build:
        raise RuntimeSetupError(
            f"No llama-server binary found (looked at $SEEDBED_LLAMA_SERVER, {_cached_binary()}, "
            "and PATH). Build one with `seedbed setup --native` (about 6 min on 2 cores), or set "
            "SEEDBED_LLAMA_SERVER to an existing binary."
        )
    return build_llama_server()


RUNTIMES = ("auto", "native", "prebuilt")


def _runtime_choice() -> str:
    choice = os.environ.get("SEEDBED_RUNTIME", "auto").strip().lower() or "auto"
    if choice not in RUNTIMES:
        raise RuntimeSetupError(
            f"SEEDBED_RUNTIME={choice!r} is not a runtime. Use one of {', '.join(RUNTIMES)} "
            "(auto: the native build when present, else the prebuilt wheel), or unset it.")
    return choice


def server_command(build: bool = False) -> list[str]:
    """The command that starts a llama.cpp server; llama-server's flags follow it.

    `$SEEDBED_RUNTIME` chooses: `native` (a llama-server binary, see `find_llama_server`),
    `prebuilt` (the xllamacpp wheel), or `auto` (default): the native binary when one is found, as
    it evaluates prompts faster, else the prebuilt runtime, else (with `build`) a native build.

    Args:
        build: build the native server when the choice needs it and none is found (about 6 min).

    Returns:
        argv without the server flags: `[binary]` or `[python, -m, engine.runtime.prebuilt]`.

    Raises:
        RuntimeSetupError: the chosen runtime is not available (and may not be built), or
            `$SEEDBED_RUNTIME` is not a runtime.
    """
    from engine.runtime import prebuilt

    choice = _runtime_choice()
    if choice != "prebuilt":
        found = find_llama_server()
        if found is not None:
            return [str(found)]
    if choice != "native" and prebuilt.available():
        return prebuilt.command()
    if choice == "prebuilt":
        raise RuntimeSetupError(
            "SEEDBED_RUNTIME=prebuilt but the xllamacpp wheel is not installed. Install it "
            "(`pip install xllamacpp`, a Seedbed dependency), or unset SEEDBED_RUNTIME.")
    if build:
        return [str(build_llama_server())]
    raise RuntimeSetupError(
        f"No llama.cpp server found (looked at $SEEDBED_LLAMA_SERVER, {_cached_binary()}, PATH and "
        "the xllamacpp wheel). Install Seedbed's dependencies (xllamacpp is one), build the native "
        "server with `seedbed setup --native` (about 6 min on 2 cores), or set SEEDBED_LLAMA_SERVER.")


def server_available() -> bool:
    """True if `server_command()` would find a runtime without building one."""
    try:
        server_command(build=False)
    except RuntimeSetupError:
        return False
    return True


def build_llama_server(jobs: int | None = None) -> Path:
    """Build llama-server for this CPU from the llama-cpp-python sdist and cache it.

    The sdist is downloaded with pip unless `$SEEDBED_LLAMA_SDIST` names a local copy.

    Args:
        jobs: parallel compile jobs; defaults to the number of CPUs.

    Returns:
        The path of the cached binary, `seedbed_home()/bin/<cpu-key>/llama-server`.

    Raises:
        RuntimeSetupError: the download, configure or build failed; the message names the log.
    """
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeSetupError(
                f"Building llama-server needs `{tool}` on PATH and it is missing. Install it "
                "(Debian: `apt-get install cmake build-essential`) and retry."
            )
    log = seedbed_home() / "logs" / f"build-llama-server-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="seedbed-build-") as tmp:
        sdist = _fetch_sdist(Path(tmp), log)
        source = _extract_llama_cpp(sdist, Path(tmp) / "src")
        build_dir = Path(tmp) / "build"
        _run_logged(["cmake", "-S", str(source), "-B", str(build_dir), *_CMAKE_FLAGS], log)
        _run_logged(
            ["cmake", "--build", str(build_dir), "--target", _BINARY,
             "-j", str(jobs or os.cpu_count() or 2)],
            log, show_percent="building llama-server",
        )
        built = build_dir / "bin" / _BINARY
        if not built.is_file():
            raise RuntimeSetupError(f"The build finished but {built} is missing; see the log {log}.")
        dest = _install_binary(built)
    _write_build_info(dest, time.monotonic() - started)
    return dest


def _fetch_sdist(tmp: Path, log: Path) -> Path:
    """Return a local llama-cpp-python sdist: `$SEEDBED_LLAMA_SDIST`, or one pip downloads."""
    env = os.environ.get("SEEDBED_LLAMA_SDIST")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise RuntimeSetupError(
                f"SEEDBED_LLAMA_SDIST={env!r} is not a file. Point it at "
                f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz, or unset it to download."
            )
        return path
    dl = tmp / "sdist"
    _run_logged(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
         "--dest", str(dl), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
        log,
    )
    found = sorted(dl.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise RuntimeSetupError(f"pip download left no llama-cpp-python sdist in {dl}; see {log}.")
    return found[0]


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract only `vendor/llama.cpp` from the sdist (the rest is Python bindings)."""
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if f"/{_VENDOR}/" in m.name]
            if not members:
                raise RuntimeSetupError(
                    f"{sdist} holds no {_VENDOR}/ folder; it is not a llama-cpp-python sdist. "
                    "Unset SEEDBED_LLAMA_SDIST or point it at the right file."
                )
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise RuntimeSetupError(f"Cannot extract {sdist}: {exc}. Delete it and retry.") from exc
    top = members[0].name.split("/", 1)[0]
    return dest / top / _VENDOR


_PERCENT = re.compile(rb"^\[\s*(\d+)%\]")


def _run_logged(cmd: list[str], log: Path, show_percent: str = "") -> None:
    """Run `cmd`, appending its output to `log`; raise naming the log if it fails.

    With `show_percent`, cmake's `[ NN%]` lines drive a progress bar (a build takes minutes).
    """
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise RuntimeSetupError(f"Cannot run {cmd[0]!r}: {exc}. Log: {log}") from exc
        bar = _percent_bar(show_percent)
        for line in proc.stdout:
            out.write(line)
            match = _PERCENT.match(line)
            if bar is not None and match:
                bar.update(int(match.group(1)) - bar.n)
        rc = proc.wait()
        if bar is not None:
            bar.close()
    if rc != 0:
        raise RuntimeSetupError(
            f"Building llama-server failed: `{' '.join(cmd[:4])} ...` exited with {rc}. "
            f"The full output is in {log}; fix the cause shown at its end and retry."
        )


def _percent_bar(desc: str):
    if not desc:
        return None
    from tqdm import tqdm  # imported late: importing engine must stay cheap

    return tqdm(total=100, desc=desc, unit="%", file=sys.stderr, dynamic_ncols=True)


def _install_binary(built: Path) -> Path:
    """Copy the binary into the cache atomically, so a half-copied file is never found."""
    dest = _cached_binary()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{_BINARY}.{os.getpid()}.tmp")
    shutil.copy2(built, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, dest)
    return dest


def _write_build_info(binary: Path, seconds: float) -> None:
    model, _ = _cpu_info()
    info = {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "cpu_model": model,
        "cpu_key": cpu_key(),
        "cmake_flags": list(_CMAKE_FLAGS),
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (binary.parent / "build.json").write_text(json.dumps(info, indent=2) + "\n")
