"""The `seedbed` command line: every bad input is one `error: ...` line on stderr with exit code 1,
no traceback and nothing half-written; and the happy path index -> search -> synth --fake."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.llm import client

from conftest import oil_earnings_task, REPO, write_reuters_slice

TASK_YAML = oil_earnings_task("cli-topics", examples_per_label=2, seed=3)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_clean_error(result, *fragments: str) -> str:
    """Exit 1 through our error handler, one `error:` line (the last one), no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an unhandled exception
    assert "Traceback" not in result.output
    lines = result.stderr.rstrip("\n").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert result.stdout == ""
    return errors[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small hash-64 index built through the CLI, and a task spec for it."""
    folder = tmp_path_factory.mktemp("cli")
    corpus = write_reuters_slice(folder / "reuters.jsonl", 60)
    root = folder / "indexes"
    result = invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root)
    assert result.exit_code == 0, result.output
    task = folder / "task.yaml"
    task.write_text(TASK_YAML, encoding="utf-8")
    return root, task, result


# --- happy path ------------------------------------------------------------------------------------


def test_index_prints_a_summary(built):
    root, _, result = built
    assert result.stdout.startswith("index 'news': ")
    assert "passages (" in result.stdout and "dense=flat" in result.stdout and str(root / "news") in result.stdout
    assert (root / "news" / "manifest.json").is_file()
    listed = invoke("indexes", "--root", root)
    assert listed.exit_code == 0 and listed.stdout.startswith("news ") and "hash-64 (64-d)" in listed.stdout


def test_rebuild_dense_redoes_the_graph_and_a_missing_index_is_one_error_line(tmp_path, monkeypatch):
    from engine.index import dense

    monkeypatch.setattr(dense, "FLAT_MAX", 20)
    monkeypatch.setattr(dense, "HNSW_M", 8)
    root = tmp_path / "indexes"
    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 30)
    assert invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root).exit_code == 0
    assert "dense=hnsw (M 8, efConstruction" in invoke("indexes", "--root", root).stdout
    monkeypatch.setattr(dense, "HNSW_M", 12)
    result = invoke("rebuild-dense", "news", "--root", root)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("index 'news': dense=hnsw, M 12, efConstruction ")
    assert "dense=hnsw (M 12, efConstruction" in invoke("indexes", "--root", root).stdout
    assert_clean_error(invoke("rebuild-dense", "nope", "--root", root), "'nope'", "seedbed index")
    assert entries(root) == ["news"]


def test_search_json(built):
    root, _, _ = built
    result = invoke("search", "news", "crude oil prices OPEC", "--json", "-k", "4", "--root", root)
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert set(hits[0]) == {"rank", "score", "cosine", "id", "source", "text"}
    assert hits[0]["source"].startswith("reuters.jsonl:")
    assert any("oil" in h["text"].lower() for h in hits)
    table = invoke("search", "news", "crude oil prices OPEC", "-k", "2", "--mode", "bm25", "--root", root)
    assert table.exit_code == 0 and table.stdout.lstrip().startswith("1 ")


def test_synth_fake_writes_the_dataset_and_prints_the_summary(built, tmp_path):
    root, task, _ = built
    out = tmp_path / "out"
    result = invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root)
    assert result.exit_code == 0, result.output
    assert "kept 4 examples (Oil 2, Earnings 2)" in result.stdout
    assert "LLM calls 4 (+0 reused from the journal, +0 from the cache)" in result.stdout
    assert "task 'cli-topics': 2 labels x 2 examples" in result.stderr and "fake:scripted" in result.stderr
    assert {"dataset.parquet", "dataset.jsonl", "rejected.jsonl", "manifest.json"} <= set(entries(out))
    rows = [json.loads(line) for line in (out / "dataset.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["label"] for r in rows) == ["Earnings", "Earnings", "Oil", "Oil"]
    again = invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root)
    assert again.exit_code == 0 and "LLM calls 0 (+4 reused from the journal, +0 from the cache)" in again.stdout
    override = invoke("synth", task, "--index", "news", "--out", tmp_path / "n1", "--fake", "-n", "1", "--root", root)
    assert override.exit_code == 0 and "kept 2 examples" in override.stdout


def test_cache_info_and_clear(tmp_path):
    from engine.cache import LLMCache
    from engine.types import Completion

    with LLMCache() as cache:  # SEEDBED_CACHE_DIR points at a per-test folder (conftest)
        cache.put("k", Completion(text="hello", model="m"))
    info = invoke("cache", "info")
    assert info.exit_code == 0 and "1 answers" in info.stdout and "answers.sqlite" in info.stdout
    cleared = invoke("cache", "clear", "--yes")
    assert cleared.exit_code == 0 and "deleted 1 cached answers" in cleared.stdout
    assert "0 answers" in invoke("cache", "info").stdout


def test_caps_need_prices(built, tmp_path):
    root, task, _ = built
    result = invoke("synth", task, "--index", "news", "--out", tmp_path / "o", "--fake", "--root", root, "--max-cost", "1")
    assert_clean_error(result, "--max-cost needs prices", "--price-in")
    half = invoke("synth", task, "--index", "news", "--out", tmp_path / "o", "--fake", "--root", root, "--price-in", "1")
    assert half.exit_code != 0 and "--price-out" in half.output


# --- index errors ----------------------------------------------------------------------------------


def test_missing_corpus(tmp_path):
    root = tmp_path / "indexes"
    result = invoke("index", tmp_path / "nope.jsonl", "--name", "n", "--embedder", "hash-64", "--root", root)
    assert_clean_error(result, f"corpus path {tmp_path / 'nope.jsonl'} does not exist")
    assert entries(root) == []


def test_unknown_format(tmp_path):
    corpus = tmp_path / "notes.docx"
    corpus.write_bytes(b"PK\x03\x04")
    root = tmp_path / "indexes"
    assert_clean_error(invoke("index", corpus, "--name", "n", "--embedder", "hash-64", "--root", root),
                       "unknown corpus format '.docx'")
    assert entries(root) == []


def test_csv_without_the_text_column(tmp_path):
    corpus = tmp_path / "c.csv"
    corpus.write_text("title,body\nOil rises,Crude prices rose two dollars on Monday in heavy trading\n", encoding="utf-8")
    root = tmp_path / "indexes"
    assert_clean_error(invoke("index", corpus, "--name", "n", "--embedder", "hash-64", "--root", root),
                       "no column 'text'; columns: title, body", "--text-field")
    assert entries(root) == []
    ok = invoke("index", corpus, "--name", "n", "--embedder", "hash-64", "--root", root, "--text-field", "title,body")
    assert ok.exit_code == 0, ok.output


def test_undecodable_bytes(tmp_path):
    corpus = tmp_path / "latin.jsonl"
    rows = [json.dumps({"text": f"Row {i} talks about the coffee markets in Brazil and Colombia"}) for i in range(3)]
    rows.append(json.dumps({"text": "Caf\u00e9 owners complained about coffee prices again this year"}, ensure_ascii=False))
    corpus.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    root = tmp_path / "indexes"
    assert_clean_error(invoke("index", corpus, "--name", "n", "--embedder", "hash-64", "--root", root),
                       f"{corpus}:4: bytes that are not UTF-8")
    assert entries(root) == []


def test_empty_corpus(tmp_path):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text('{"text": ""}\n', encoding="utf-8")
    root = tmp_path / "indexes"
    assert_clean_error(invoke("index", corpus, "--name", "n", "--embedder", "hash-64", "--root", root), "yielded no passages")
    assert entries(root) == []


@pytest.mark.parametrize("name", ["a/b", "../up", ".."])
def test_index_name_with_a_path_separator(tmp_path, name):
    corpus = write_reuters_slice(tmp_path / "c.jsonl", 3)
    root = tmp_path / "indexes"
    assert_clean_error(invoke("index", corpus, "--name", name, "--embedder", "hash-64", "--root", root),
                       f"invalid index name {name!r}")
    assert entries(root) == [] and entries(tmp_path) == ["c.jsonl"]


def test_existing_index_without_add_or_force(built, tmp_path):
    root, _, _ = built
    corpus = write_reuters_slice(tmp_path / "c.jsonl", 3)
    before = (root / "news" / "manifest.json").read_bytes()
    assert_clean_error(invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root),
                       "already exists", "--add", "--force")
    assert (root / "news" / "manifest.json").read_bytes() == before


def test_unknown_embedder(tmp_path):
    corpus = write_reuters_slice(tmp_path / "c.jsonl", 3)
    root = tmp_path / "indexes"
    assert_clean_error(invoke("index", corpus, "--name", "n", "--embedder", "no-such-model", "--root", root),
                       "unknown embedder 'no-such-model'")
    assert entries(root) == []


# --- search errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_an_empty_search_query_is_a_clear_error(built, query):
    root, _, _ = built
    assert_clean_error(invoke("search", "news", query, "--root", root), "search query is empty", "words to search for")


def test_searching_a_missing_index(built):
    root, _, _ = built
    assert_clean_error(invoke("search", "nope", "oil", "--root", root), "no index named 'nope'", "existing: news")


def test_searching_with_a_bad_index_name(built):
    root, _, _ = built
    assert_clean_error(invoke("search", "../news", "oil", "--root", root), "invalid index name '../news'")


# --- synth errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replace", "by", "fragments"),
    [
        ("examples_per_label", "exmaples_per_label", ("unknown key 'exmaples_per_label'", "did you mean 'examples_per_label'?")),
        ("    verbalization: crude", "    verbalisation: crude", ("unknown key 'labels[0].verbalisation'",)),
        ("min_words: 4", "min_words: four", ("output.min_words must be an integer, got 'four'",)),
    ],
)
def test_task_spec_mistakes(built, tmp_path, replace, by, fragments):
    root, _, _ = built
    task = tmp_path / "task.yaml"
    task.write_text(TASK_YAML.replace(replace, by), encoding="utf-8")
    out = tmp_path / "out"
    line = assert_clean_error(invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root), *fragments)
    assert str(task) in line
    assert not out.exists()


def test_task_spec_with_invalid_yaml(built, tmp_path):
    root, _, _ = built
    task = tmp_path / "task.yaml"
    task.write_text("name: [unclosed\nlabels: x\n", encoding="utf-8")
    result = invoke("synth", task, "--index", "news", "--out", tmp_path / "out", "--fake", "--root", root)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(f"error: task spec {task}:2:7 is not valid YAML")
    assert len(result.stderr.strip().splitlines()) == 1  # one line, file:line:column
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_synth_from_a_missing_index(built, tmp_path):
    root, task, _ = built
    out = tmp_path / "out"
    assert_clean_error(invoke("synth", task, "--index", "nope", "--out", out, "--fake", "--root", root), "no index named 'nope'")
    assert not out.exists()


def test_base_url_without_model(built, tmp_path):
    root, task, _ = built
    result = invoke("synth", task, "--index", "news", "--out", tmp_path / "out", "--root", root,
                    "--base-url", "http://127.0.0.1:9/v1")
    assert_clean_error(result, "--base-url http://127.0.0.1:9/v1 needs --model")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def quick_retries(monkeypatch):
    """The real client and its retry count, with millisecond backoff (the default waits ~5 s in all)."""

    class QuickChat(client.OpenAIChat):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("backoff", 0.001)
            kwargs.setdefault("max_backoff", 0.005)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(client, "OpenAIChat", QuickChat)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_names_the_url(built, tmp_path, quick_retries):
    root, task, _ = built
    url = f"http://127.0.0.1:{closed_port()}/v1"
    out = tmp_path / "out"
    result = invoke("synth", task, "--index", "news", "--out", out, "--root", root, "--base-url", url, "--model", "x")
    assert_clean_error(result, f"cannot reach the LLM endpoint at {url}", "is the server running?")
    assert not out.exists()


class _Garbage(BaseHTTPRequestHandler):
    """An endpoint that answers 200 with junk; `server.mode` says which junk."""

    def log_message(self, *args):
        pass

    def _send(self, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.server.mode == "models-not-json":
            return self._send("<html>welcome to my web site</html>", "text/html")
        self._send(json.dumps({"object": "list", "data": [{"id": "x", "object": "model", "created": 0, "owned_by": "t"}]}),
                   "application/json")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts += 1
        if self.server.mode == "no-choices":
            return self._send(json.dumps({"id": "1", "object": "chat.completion"}), "application/json")
        self._send("<html>not a chat completion</html>", "text/html")


@pytest.fixture
def garbage_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    server.mode, server.posts = "not-json", 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["not-json", "no-choices"])
def test_an_endpoint_answering_garbage_counts_every_request_as_failed(built, tmp_path, quick_retries, garbage_server, mode):
    root, task, _ = built
    garbage_server.mode = mode
    url = f"http://127.0.0.1:{garbage_server.server_port}/v1"
    out = tmp_path / "out"
    result = invoke("synth", task, "--index", "news", "--out", out, "--root", root, "--base-url", url, "--model", "x",
                    "--concurrency", "2")
    # Garbage answers are transient failures: the run finishes, writes what it has (nothing), says so in the
    # summary and ends with one error line and exit code 1; failed requests get no top-up passages.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == 1
    assert "kept 0 examples (Oil 0, Earnings 0)" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    assert counts["kept"] == 0 and counts["failed"] == counts["requests"] == counts["llm_calls"] == 4
    assert counts["rounds"] == 1
    assert f"failed {counts['failed']} requests after retries" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: 4 requests failed after retries")
    assert garbage_server.posts == counts["llm_calls"] * 5  # the first try and 4 retries each
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {e["status"] for e in journal} == {"failed"}
    assert "not an OpenAI chat response" in journal[0]["error"]


def test_a_broken_endpoint_stops_the_run_early(built, tmp_path, quick_retries, garbage_server):
    root, task, _ = built
    # 6 per label needs more passages than label assignment finds on hash-64 vectors: turn it off
    task = tmp_path / "task.yaml"
    task.write_text(TASK_YAML.replace("  min_similarity: 0.1\n", "  min_similarity: 0.1\n  assign_labels: false\n"), encoding="utf-8")
    url = f"http://127.0.0.1:{garbage_server.server_port}/v1"
    result = invoke("synth", task, "--index", "news", "--out", tmp_path / "out", "--root", root, "--base-url", url,
                    "--model", "x", "-n", "6", "--concurrency", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the first 8 requests all failed" in result.stderr
    assert garbage_server.posts == 8 * 5  # stopped after 8 of the 12 requests


def test_an_endpoint_whose_models_route_answers_html_is_a_clean_error(built, tmp_path, quick_retries, garbage_server):
    root, task, _ = built
    garbage_server.mode = "models-not-json"
    url = f"http://127.0.0.1:{garbage_server.server_port}/v1"
    out = tmp_path / "out"
    result = invoke("synth", task, "--index", "news", "--out", out, "--root", root, "--base-url", url, "--model", "x")
    assert_clean_error(result, url)
    assert not out.exists()


# --- a real process --------------------------------------------------------------------------------


def test_a_real_process_prints_one_line_and_exits_1(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "index", str(tmp_path / "missing.csv"), "--name", "x",
         "--embedder", "hash-64", "--root", str(tmp_path / "indexes")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: corpus path {tmp_path / 'missing.csv'} does not exist; pass a .jsonl, "
                                        ".csv, .parquet, .txt file or a folder"]
    assert not (tmp_path / "indexes").exists()


# --- problems caught before any model loads or file is written ----------------------------------


@pytest.mark.parametrize("name, content", [("bad.parquet", b"not parquet at all"), ("bad.jsonl.gz", b"not gzip")])
def test_a_corrupt_corpus_file_is_a_clean_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    root = tmp_path / "indexes"
    result = invoke("index", tmp_path / name, "--name", "x", "--embedder", "hash-64", "--root", root)
    assert_clean_error(result, name)
    assert entries(root) == []


@pytest.mark.parametrize("extra, fragment", [
    ("strategy: bogus\n", "unknown strategy 'bogus'"),
    ("strategy_options: {structured_output: true}\n", "strategy_options.structured_output"),
    ("template: no/such-template\n", "no/such-template"),
])
def test_spec_problems_leave_the_out_folder_untouched(built, tmp_path, extra, fragment):
    root, task, _ = built
    bad = tmp_path / "task.yaml"
    bad.write_text(task.read_text(encoding="utf-8") + extra, encoding="utf-8")
    out = tmp_path / "out"
    assert_clean_error(invoke("synth", bad, "--index", "news", "--out", out, "--fake", "--root", root), fragment)
    assert not out.exists()
    # the corrected command then runs into the same folder without --fresh
    assert invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root).exit_code == 0


def test_out_that_is_a_file_is_a_clean_error(built, tmp_path):
    root, task, _ = built
    (tmp_path / "out").write_text("x")
    assert_clean_error(invoke("synth", task, "--index", "news", "--out", tmp_path / "out", "--fake", "--root", root),
                       "is a file")


def test_a_folder_that_is_not_an_index_is_not_replaced(tmp_path):
    corpus = write_reuters_slice(tmp_path / "reuters.jsonl", 10)
    root = tmp_path / "indexes"
    (root / "news").mkdir(parents=True)
    (root / "news" / "mine.txt").write_text("user data")
    result = invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root)
    assert_clean_error(result, "not a Seedbed index")
    assert (root / "news" / "mine.txt").read_text() == "user data"


def test_setup_with_an_unknown_model_fails_before_building():
    assert_clean_error(invoke("setup", "--model", "no-such-model"), "no-such-model")


def test_setup_names_the_runtime_and_builds_nothing_where_the_prebuilt_wheel_serves(monkeypatch, tmp_path):
    from engine.runtime import build

    monkeypatch.setenv("SEEDBED_RUNTIME", "prebuilt")
    monkeypatch.setattr(build, "build_llama_server", lambda *a, **k: pytest.fail("setup built llama-server"))
    result = invoke("setup", "--model", "smollm2-135m")
    if "not installed" in result.output:
        pytest.skip("SmolLM2 is not installed here")
    assert result.exit_code == 0, result.output
    assert "llama.cpp runtime: prebuilt (xllamacpp 2026." in result.stdout
    assert "seedbed setup --native" in result.stdout


def test_setup_with_a_runtime_that_is_not_one_fails_cleanly(monkeypatch):
    monkeypatch.setenv("SEEDBED_RUNTIME", "gpu")
    assert_clean_error(invoke("setup", "--model", "smollm2-135m"), "SEEDBED_RUNTIME='gpu'", "auto, native, prebuilt")


def test_adaptive_concurrency_against_a_throttling_endpoint(built, tmp_path):
    from engine.testing import FakeOpenAIServer

    root, task, _ = built
    out = tmp_path / "out"
    with FakeOpenAIServer(capacity=2, overload_retry_after=0.05, latency=0.02) as server:
        result = invoke("synth", task, "--index", "news", "--out", out, "--root", root, "--base-url", server.base_url,
                        "--model", "fake-model", "--concurrency", "auto", "--no-structured")
    assert result.exit_code == 0, result.output
    assert "kept 4 examples" in result.stdout and "concurrency auto(1..32" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["options"]["concurrency"].startswith("auto(") and manifest["counts"]["failed"] == 0
    bad = invoke("synth", task, "--index", "news", "--out", tmp_path / "o2", "--root", root, "--fake", "--concurrency", "many")
    assert_clean_error(bad, "concurrency", "'many'", "auto")


def test_prompt_tokens_the_server_took_from_its_prefix_cache_are_counted(built, tmp_path):
    import polars as pl

    from engine.testing import FakeOpenAIServer

    root, task, _ = built
    out = tmp_path / "out"
    with FakeOpenAIServer(prefix_cache=4) as server:
        result = invoke("synth", task, "--index", "news", "--out", out, "--root", root, "--base-url", server.base_url,
                        "--model", "fake-model", "--concurrency", "1", "--no-structured")
    assert result.exit_code == 0, result.output
    tokens = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["tokens"]
    rows = pl.read_parquet(out / "dataset.parquet")
    assert tokens["answers_reporting_cache"] == 4 and tokens["prompt_cached_this_run"] > 0
    assert tokens["prompt_evaluated_this_run"] == tokens["prompt_this_run"] - tokens["prompt_cached_this_run"]
    assert tokens["prompt_cached_kept_examples"] == rows["cached_tokens"].sum() > 0
    assert 0 < tokens["prompt_evaluated_share"] < 1
    assert f"({tokens['prompt_cached_this_run']} of them from the server's prefix cache)" in result.stdout
    assert "tokens per kept example" in result.stdout


def test_resume_needs_a_run_to_continue(built, tmp_path):
    root, task, _ = built
    out = tmp_path / "out"
    missing = invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root, "--resume")
    assert_clean_error(missing, "--resume", "no run to continue")
    assert invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root).exit_code == 0
    resumed = invoke("synth", task, "--index", "news", "--out", out, "--fake", "--root", root, "--resume")
    assert resumed.exit_code == 0 and "LLM calls 0 (+4 reused from the journal" in resumed.stdout
