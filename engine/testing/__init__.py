"""Test doubles and helpers for testing your own Seedbed pipelines, offline.

Everything here is what Seedbed's own suite uses, exported in one public place:

- `ScriptedLLM`: a deterministic chat LLM in the process (a queue of answers, a `respond`
  callable, or a default answer built from the prompt's passage); records every call.
- `FakeOpenAIServer` with `Fault`: a real OpenAI-compatible HTTP server on loopback that answers
  like `ScriptedLLM` and misbehaves on cue (429s, timeouts, dropped connections, 5xx, slow or
  rejected overload), for testing retries, budgets and resume through the real client.
- `local_llm()`: the embedded llama.cpp server with the small SmolLM2-135M model (98 MB, built
  and installed by `seedbed setup --model smollm2-135m`), as a context manager yielding a client,
  for integration tests against a real model.

Where they live: `fake.py` (ScriptedLLM), `server.py` with `faults.py` (FakeOpenAIServer, Fault);
`local_llm` starts `engine.runtime`'s server. The kit imports nothing above the client and the
runtime, so the CLI's `--fake` (engine.llm.endpoint) can use it too.

Testing a task spec offline, e.g. in your project's tests::

    from engine.config import load_task
    from engine.index.reader import Index
    from engine.pipeline import SynthOptions, synthesize
    from engine.testing import ScriptedLLM

    def test_my_task_makes_every_label(tmp_path):
        task = load_task("task.yaml")
        llm = ScriptedLLM()                       # or ScriptedLLM(respond=lambda messages: "...")
        result = synthesize(task, Index.open("sample", "indexes"), llm, SynthOptions(out=tmp_path / "run"))
        assert all(n == task.examples_per_label for n in result.kept.values())
        assert len(llm.calls) == result.calls
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from engine.testing.fake import ScriptedCall, ScriptedLLM, default_answer
from engine.testing.server import FakeOpenAIServer, Fault, read_request_log

__all__ = ["ScriptedLLM", "ScriptedCall", "default_answer", "FakeOpenAIServer", "Fault", "read_request_log",
           "local_llm", "TEST_MODEL"]

from engine.runtime.catalog import TEST_MODEL  # noqa: E402 (the small model the integration tests use)


@contextmanager
def local_llm(model: str = TEST_MODEL, parallel: int = 2, timeout: float = 120.0) -> Iterator[object]:
    """Start the embedded llama-server with `model` (already built and installed: no build, no
    download here) and yield an `OpenAIChat` client for it; the server stops on exit.

    Raises:
        RuntimeSetupError: llama-server is not built or the model is not installed and verified
            (the message names `seedbed setup --model ...`).
    """
    from engine.llm.client import OpenAIChat
    from engine.runtime.server import LocalServer, ServerConfig

    with LocalServer.from_catalog(model, ServerConfig(parallel=parallel), install=False, build=False) as server:
        yield OpenAIChat(server.base_url, server.model, api_key=server.api_key, timeout=timeout)
