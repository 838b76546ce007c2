"""Several runs at once: two synth processes sharing one LLM cache with a reader beside them, two index
writers on one index, and one adaptive limit shared by runs in separate threads and event loops."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import index_reuters_slice, oil_earnings_task, REPO, write_reuters_slice
from engine.cli import main
from engine.index.reader import Index
from engine.llm.adaptive import AdaptiveLimit
from engine.llm.client import OpenAIChat
from engine.llm.runner import run_requests
from engine.testing import FakeOpenAIServer
from engine.types import Completion, Request, SamplingParams

TASK_YAML = oil_earnings_task("concurrent", examples_per_label=8, seed=3, assign_labels=False)


def cli(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """`seedbed ARGS` in a real process (its own interpreter, as a user would start it)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", *args],
                            env=full_env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concurrent")
    root = index_reuters_slice(folder, 80)
    task = folder / "task.yaml"
    task.write_text(TASK_YAML, encoding="utf-8")
    return folder, root, task


def test_two_synth_processes_share_one_cache_while_a_third_reads_it(built, tmp_path):
    folder, root, task = built
    cache_dir = tmp_path / "llm-cache"
    env = {"SEEDBED_CACHE_DIR": str(cache_dir)}
    with FakeOpenAIServer(latency=0.05) as server:
        runs = []
        for name, seed in (("a", "3"), ("b", "4")):
            spec = tmp_path / f"task-{name}.yaml"
            spec.write_text(TASK_YAML.replace("seed: 3", f"seed: {seed}"), encoding="utf-8")
            runs.append(cli("synth", str(spec), "--index", "news", "--root", str(root), "--out", str(tmp_path / name),
                            "--base-url", server.base_url, "--model", server.model, "--concurrency", "4",
                            "--no-structured", env=env, log=tmp_path / f"{name}.log"))
        readings = []
        while any(run.poll() is None for run in runs):
            reader = subprocess.run([sys.executable, "-c", "from engine.cli import main; main()", "cache", "info"],
                                    env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True)
            readings.append(reader)
        codes = [run.wait() for run in runs]
    logs = [(tmp_path / f"{name}.log").read_text(encoding="utf-8") for name in ("a", "b")]
    assert codes == [0, 0], logs
    assert readings and all(r.returncode == 0 for r in readings), [r.stderr for r in readings if r.returncode]
    everything = "".join(logs) + "".join(r.stdout + r.stderr for r in readings)
    assert "locked" not in everything.lower()
    answered = set()
    for name in ("a", "b"):
        lines = (tmp_path / name / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        entries = [json.loads(line) for line in lines]  # every journaled answer is readable
        assert entries and all(e["status"] == "ok" and e["completion"]["text"] for e in entries)
        answered |= {e["request_id"] for e in entries}
    with sqlite3.connect(next(cache_dir.glob("*.sqlite*"))) as db:
        rows = db.execute("SELECT completion FROM answers").fetchall()
    assert len(rows) == len(answered)  # every answer paid for by either run is in the shared cache
    assert all(Completion(**json.loads(row[0])).text for row in rows)


def test_a_second_index_writer_is_refused_and_the_index_still_opens(built, tmp_path):
    folder, root, _ = built
    extra = write_reuters_slice(tmp_path / "more.jsonl", 120, 80)
    before = len(Index.open("news", root, embedder=_hash()))
    # another process is adding to the index: it holds the writer lock for as long as it runs
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from engine.index.builder import writer_lock\n"
        f"with writer_lock(Path({str(root)!r}), 'news'):\n    print('held', flush=True); time.sleep(60)")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = CliRunner().invoke(main, ["index", str(extra), "--name", "news", "--add", "--embedder", "hash-64",
                                           "--root", str(root)])
    finally:
        holder.kill()
        holder.wait()
    assert second.exit_code != 0
    message = second.output
    assert "index 'news'" in message and "another process" in message and f"pid {holder.pid}" in message
    assert "Traceback" not in message
    assert len(Index.open("news", root, embedder=_hash())) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".news.tmp")]
    # once the holder is gone (killed: the lock dies with it), the same command works
    again = CliRunner().invoke(main, ["index", str(extra), "--name", "news", "--add", "--embedder", "hash-64",
                                      "--root", str(root)])
    assert again.exit_code == 0, again.output
    assert len(Index.open("news", root, embedder=_hash())) > before


def test_two_racing_index_adds_never_lose_a_passage(built, tmp_path):
    folder, root, _ = built
    corpora = [write_reuters_slice(tmp_path / f"race-{n}.jsonl", 200 + 40 * n, 160 + 40 * n) for n in range(2)]
    before = len(Index.open("news", root, embedder=_hash()))
    racers = [cli("index", str(c), "--name", "news", "--add", "--embedder", "hash-64", "--root", str(root),
                  log=tmp_path / f"race-{n}.log") for n, c in enumerate(corpora)]
    codes = [r.wait(timeout=300) for r in racers]
    logs = [(tmp_path / f"race-{n}.log").read_text(encoding="utf-8") for n in range(2)]
    assert 0 in codes, logs
    for code, log in zip(codes, logs):  # the loser, if they overlapped, was told why
        assert code == 0 or ("another process" in log and "Traceback" not in log), log
    index = Index.open("news", root, embedder=_hash())
    added = [int(n) for log in logs for n in re.findall(r"\((\d+) added", log)]
    assert len(index) == before + sum(added)  # the winner's passages all there; nothing half-written


def test_one_adaptive_limit_shared_by_runs_in_two_threads_bounds_their_total():
    limit = AdaptiveLimit(start=2, max=5, tolerance=100.0)
    delivered: dict[str, list] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def requests(tag: str) -> list[Request]:
        return [Request(id=f"{tag}{i}", label="L", messages=(("user", f"prompt {tag} {i}"),), template_id="t",
                        template_sha256="s", sampling=SamplingParams(seed=i)) for i in range(40)]

    def run(tag: str, base_url: str, model: str) -> None:
        async def go() -> None:  # each thread has its own event loop and its own client
            async with OpenAIChat(base_url, model, max_retries=6, backoff=0.01, on_retry=limit.on_retry) as llm:
                await run_requests(llm, requests(tag), concurrency=limit,
                                   on_result=lambda r, c: delivered[tag].append(c))
        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    with FakeOpenAIServer(latency=0.02) as server:
        threads = [threading.Thread(target=run, args=(tag, server.base_url, server.model)) for tag in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert all(len(items) == 40 and all(isinstance(c, Completion) for c in items) for items in delivered.values())
    assert limit.in_flight == 0
    assert server.max_in_flight <= limit.peak  # together, never more in flight than the shared limit allowed
    assert server.count == 80  # nothing sent twice


def _hash():
    from engine.embed import HashEmbedder

    return HashEmbedder(64)
