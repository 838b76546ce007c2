"""Shared fixtures and helpers: slices of the bundled Reuters sample, one read-only hash-embedder index, a crashing LLM, a bucket on moto's S3 server."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.errors import LLMFatalError
from engine.testing import ScriptedLLM

REPO = Path(__file__).resolve().parents[1]
REUTERS = REPO / "corpora" / "reuters-sample" / "reuters_sample.jsonl"


def write_reuters_slice(path: Path, stop: int, start: int = 0) -> Path:
    """Write Reuters sample documents [start, stop) as a JSONL corpus at `path`."""
    lines = REUTERS.read_text(encoding="utf-8").splitlines(keepends=True)[start:stop]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def oil_earnings_task(name: str, examples_per_label: int, seed: int, assign_labels: bool = True) -> str:
    """The two-label headline task (Oil, Earnings) the CLI, resume, fault, concurrency and Ray tests run on
    a Reuters slice, as YAML. `assign_labels=False` for a hash-64 index, whose vectors carry little meaning."""
    assignment = "  assign_labels: false\n" if not assign_labels else ""
    return (f"name: {name}\noutput:\n  kind: news headline\n  min_words: 4\n  max_words: 14\n"
            f"examples_per_label: {examples_per_label}\nlabels:\n"
            "  - name: Oil\n    verbalization: crude oil prices, OPEC and oil production\n"
            "  - name: Earnings\n    verbalization: company quarterly earnings, profits and dividends\n"
            f"retrieval:\n  min_similarity: 0.1\n{assignment}seed: {seed}\n")


def index_reuters_slice(folder: Path, documents: int, name: str = "news") -> Path:
    """The first `documents` Reuters sample stories indexed as `name` with the hash-64 embedder through
    `seedbed index`, under `folder/indexes`; returns that root."""
    from click.testing import CliRunner

    from engine.cli import main

    corpus = write_reuters_slice(folder / "reuters.jsonl", documents)
    root = folder / "indexes"
    result = CliRunner().invoke(main, ["index", str(corpus), "--name", name, "--embedder", "hash-64", "--root", str(root)])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def reuters_slice(tmp_path):
    """Factory: reuters_slice(stop, start=0, name='corpus.jsonl') -> path of a real JSONL corpus."""

    def make(stop: int, start: int = 0, name: str = "corpus.jsonl") -> Path:
        return write_reuters_slice(tmp_path / name, stop, start)

    return make


@dataclass(frozen=True)
class BuiltIndex:
    root: Path
    name: str
    index: object  # engine.index.reader.Index, opened with a HashEmbedder


@pytest.fixture(scope="session")
def hash_index(tmp_path_factory) -> BuiltIndex:
    """One index of the first 150 Reuters documents (hash-64 embedder), shared read-only."""
    from engine.embed import HashEmbedder
    from engine.index.builder import build_index
    from engine.index.reader import Index

    folder = tmp_path_factory.mktemp("hash-index")
    corpus = write_reuters_slice(folder / "reuters.jsonl", 150)
    build_index(corpus, "reuters", HashEmbedder(64), root=folder / "indexes")
    return BuiltIndex(folder / "indexes", "reuters", Index.open("reuters", folder / "indexes", embedder=HashEmbedder(64)))


@pytest.fixture(autouse=True)
def private_llm_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own shared-LLM-cache folder: no test sees another's (or the user's) answers."""
    monkeypatch.setenv("SEEDBED_CACHE_DIR", str(tmp_path_factory.mktemp("llm-cache")))


def require_small_model() -> None:
    """Skip the calling test unless llama-server and SmolLM2 are ready; with SEEDBED_REQUIRE_INTEGRATION, fail it."""
    from engine.runtime.build import server_available
    from engine.runtime.catalog import TEST_MODEL
    from engine.runtime.local import model_status

    if server_available() and model_status(TEST_MODEL).verified:
        return
    message = "llama-server or SmolLM2 missing: run `seedbed setup --model smollm2-135m` (scripts/test.sh does)"
    if os.environ.get("SEEDBED_REQUIRE_INTEGRATION"):
        pytest.fail(message)
    pytest.skip(message)


class CrashingLLM(ScriptedLLM):
    """Answers like ScriptedLLM, then fails for good after `survive` calls (the endpoint went away)."""

    def __init__(self, survive: int):
        super().__init__()
        self.survive = survive

    async def complete(self, messages, params, json_schema=None):
        if len(self.calls) >= self.survive:
            raise LLMFatalError("the endpoint went away")
        return await super().complete(messages, params, json_schema)


S3_SECRET = "seedbed-test-secret-d41d8cd9"


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3 server on loopback (the dev extra), for the tests of indexes and runs on S3."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    server.stop()


def s3_filesystem(endpoint: str):
    from pyarrow.fs import S3FileSystem

    return S3FileSystem(access_key="seedbed-test-key", secret_key=S3_SECRET, endpoint_override=endpoint.removeprefix("http://"),
                        scheme="http", region="us-east-1", allow_bucket_creation=True)


@pytest.fixture
def bucket(endpoint, monkeypatch, tmp_path):
    """A fresh bucket on the loopback server, the AWS_* environment pointing at it, and a private local cache."""
    for name, value in {"AWS_ACCESS_KEY_ID": "seedbed-test-key", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEEDBED_REMOTE_CACHE_DIR", str(tmp_path / "remote-cache"))
    name = f"seedbed-{uuid.uuid4().hex[:12]}"
    s3_filesystem(endpoint).create_dir(name)
    return name
