"""The prebuilt llama.cpp runtime: llama-server's OpenAI-compatible HTTP API from the `xllamacpp` wheel.

`xllamacpp` is a manylinux/macOS wheel on PyPI holding a recent llama.cpp server, so a fresh
machine serves the local model at once instead of compiling llama-server for about 6 minutes.
Its CPU wheels are built for every x86-64 CPU rather than this one, so prompt processing is
slower than a native build (measured in `benchmarks/bench_runtime.py`); `seedbed setup --native`
adds the native build, and Seedbed uses it whenever it is present.

`LocalServer` runs this module as a child process with the llama-server flags it passes to a
native binary (`python -m engine.runtime.prebuilt -m MODEL -a ALIAS --port N ...`), so supervision,
restarts, logs and cleanup are the same for both runtimes. The API key comes by environment
(`LLAMA_API_KEY`), as for llama-server. The process serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import signal
import sys
import threading

__all__ = ["available", "command", "version"]

_DIST = "xllamacpp"


def available() -> bool:
    """True if the `xllamacpp` wheel is installed (it is a Seedbed dependency on Linux x86-64 and macOS)."""
    return importlib.util.find_spec(_DIST) is not None


def version() -> str:
    """The installed xllamacpp version, or "" if it is not installed."""
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        return ""


def command() -> list[str]:
    """The command prefix that starts this runtime; llama-server's flags follow it."""
    return [sys.executable, "-m", "engine.runtime.prebuilt"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, naming the flag and the fix
        sys.stderr.write(f"prebuilt llama.cpp runtime: {message}. It takes the flags Seedbed passes "
                         "(-m -a --host --port -t -c -np -cram); for other llama-server flags build "
                         "the native server with `seedbed setup --native`.\n")
        raise SystemExit(2)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m engine.runtime.prebuilt", add_help=False, allow_abbrev=False)
    parser.add_argument("-m", dest="model", required=True)
    parser.add_argument("-a", dest="alias", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-t", dest="threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("-c", dest="ctx", type=int, default=4096)
    parser.add_argument("-np", dest="parallel", type=int, default=1)
    parser.add_argument("-cram", dest="cache_ram_mib", type=int, default=2048)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cache_ram_mib = args.cache_ram_mib
    key = os.environ.get("LLAMA_API_KEY")
    if key:
        params.api_keys = [key]

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = xllamacpp.Server(params)  # loads the model and starts the HTTP threads
    except RuntimeError as exc:  # llama.cpp has logged why (e.g. "couldn't bind"); the log says it
        sys.stderr.write(f"prebuilt llama.cpp runtime: {exc}\n")
        return 1
    sys.stderr.write(f"prebuilt llama.cpp runtime (xllamacpp {version()}) serving {args.alias} "
                     f"on {server.listening_address}\n")
    sys.stderr.flush()
    while not stop.wait(1.0):
        pass
    del server  # stops the HTTP server and the main loop
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
