"""Synthesis across replicas and on Ray (local mode, 2 CPUs), against fake OpenAI-compatible servers
that count what they answer, and once against the real llama.cpp server with SmolLM2-135M.

What must hold: a `--ray` run writes the same dataset, byte for byte, as a run in one process;
every answer lands in a worker's journal shard as it arrives; killing a worker or the driver loses
only what was in flight, and the re-run pays for no answered request again; several `--base-url`
replicas share the load and a dead one is drained. Errors are one line with the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.errors import ConfigError, LLMFatalError
from engine.llm.client import OpenAIChat
from engine.llm.replicas import ReplicaPool
from engine.remote import Remote
from engine.testing.server import FakeOpenAIServer
from engine.types import SamplingParams

from conftest import index_reuters_slice, oil_earnings_task, REPO, require_small_model, write_reuters_slice

ray = pytest.importorskip("ray", reason='Ray is an extra: pip install "seedbed[ray]" (scripts/install.sh installs it)')

TASK_YAML = oil_earnings_task("ray-run", examples_per_label=12, seed=11, assign_labels=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A hash-64 index, the task spec, and the dataset a run in one process writes (the reference)."""
    folder = tmp_path_factory.mktemp("ray")
    root = index_reuters_slice(folder, 80)
    task = folder / "task.yaml"
    task.write_text(TASK_YAML, encoding="utf-8")
    with FakeOpenAIServer() as server:
        result = CliRunner().invoke(main, synth_args(task, root, folder / "reference", [server.base_url]))
        assert result.exit_code == 0, result.output
        calls = server.count
    return folder, task, root, (folder / "reference" / "dataset.jsonl").read_bytes(), calls


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the in-process tests of this module."""
    from engine.llm.distributed import connect

    connect("local", num_cpus=2)
    yield
    ray.shutdown()


def synth_args(task: Path, root: Path, out: Path, urls: list[str], *extra: str) -> list[str]:
    args = ["synth", str(task), "--index", "news", "--root", str(root), "--out", str(out), "--model", "fake-model",
            "--no-cache", "--concurrency", "4"]
    for url in urls:
        args += ["--base-url", url]
    return args + list(extra)


def prompts(server: FakeOpenAIServer) -> list[str]:
    """One key per chat request the server received (its messages: the same request has the same)."""
    return [json.dumps(body["messages"], sort_keys=True) for body in server.chat_bodies()]


def shard_answers(run: Path) -> int:
    lines = [json.loads(line) for path in (run / "journal.d").glob("*.jsonl") for line in path.read_text().splitlines() if line]
    return sum(1 for entry in lines if entry["status"] == "ok")


# --- replicas, no Ray -----------------------------------------------------------------------------------

def test_replicas_share_the_load_and_a_dead_one_is_drained():
    async def run(pool: ReplicaPool, n: int) -> list:
        try:
            return await asyncio.gather(*(pool.complete([{"role": "user", "content": f"q {i}"}], SamplingParams())
                                          for i in range(n)))
        finally:
            await pool.close()

    with FakeOpenAIServer(latency=0.05) as a, FakeOpenAIServer(latency=0.05) as b:
        pool = ReplicaPool([OpenAIChat(a.base_url, "fake-model"), OpenAIChat(b.base_url, "fake-model")])
        answers = asyncio.run(run(pool, 20))
        assert len(answers) == 20 and a.count >= 5 and b.count >= 5 and a.count + b.count == 20

        dead = "http://127.0.0.1:9/v1"  # the discard port: nothing answers
        pool = ReplicaPool([OpenAIChat(dead, "fake-model", max_retries=0), OpenAIChat(a.base_url, "fake-model")],
                           cooldown=60)
        before = a.count
        answers = asyncio.run(run(pool, 6))
        assert len(answers) == 6 and a.count - before == 6
        assert pool.answered == [0, 6] and pool.drained_until[0] > 0  # tried once, then left alone

    pool = ReplicaPool([OpenAIChat("http://127.0.0.1:9/v1", "fake-model", max_retries=0)])
    with pytest.raises(LLMFatalError, match="cannot reach"):
        asyncio.run(run(pool, 1))
    with pytest.raises(ConfigError, match="different models"):
        ReplicaPool([OpenAIChat("http://127.0.0.1:9/v1", "a"), OpenAIChat("http://127.0.0.1:9/v1", "b")])


def test_base_url_given_twice_spreads_a_run_over_both(setup, tmp_path):
    folder, task, root, reference, calls = setup
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        result = CliRunner().invoke(main, synth_args(task, root, tmp_path / "run", [a.base_url, b.base_url]))
        assert result.exit_code == 0, result.output
        assert a.count > 0 and b.count > 0 and a.count + b.count == calls
    assert (tmp_path / "run" / "dataset.jsonl").read_bytes() == reference


# --- Ray ------------------------------------------------------------------------------------------------

def test_a_ray_run_writes_the_same_dataset_with_every_answer_in_a_shard(setup, local_ray, tmp_path):
    folder, task, root, reference, calls = setup
    run = tmp_path / "run"
    with FakeOpenAIServer(latency=0.02) as a, FakeOpenAIServer(latency=0.02) as b:
        result = CliRunner().invoke(main, synth_args(task, root, run, [a.base_url, b.base_url], "--ray", "--ray-workers", "2"))
        assert result.exit_code == 0, result.output
        assert a.count + b.count == calls and a.count > 0 and b.count > 0
    assert (run / "dataset.jsonl").read_bytes() == reference
    assert shard_answers(run) == calls
    assert json.loads((run / "manifest.json").read_text())["counts"]["llm_calls"] == calls

    with FakeOpenAIServer() as again:  # re-running the finished run pays nothing
        result = CliRunner().invoke(main, synth_args(task, root, run, [again.base_url], "--ray"))
        assert result.exit_code == 0, result.output
        assert again.count == 0


def test_a_token_cap_holds_on_ray_and_a_larger_cap_continues_paying_nothing_twice(setup, local_ray, tmp_path):
    folder, task, root, reference, calls = setup
    spent = json.loads((folder / "reference" / "manifest.json").read_text())["tokens"]
    whole = spent["prompt_this_run"] + spent["completion_this_run"]
    cap = whole // 3
    run = tmp_path / "run"
    with FakeOpenAIServer(latency=0.02) as server:
        result = CliRunner().invoke(main, synth_args(task, root, run, [server.base_url], "--ray", "--max-tokens-total", str(cap)))
        assert result.exit_code == 0, result.output
        first = server.count
    manifest = json.loads((run / "manifest.json").read_text())
    assert 0 < first < calls and manifest["counts"]["unsent_over_token_or_cost_cap"] > 0
    assert manifest["tokens"]["prompt_this_run"] + manifest["tokens"]["completion_this_run"] <= cap
    with FakeOpenAIServer(latency=0.02) as server:
        result = CliRunner().invoke(main, synth_args(task, root, run, [server.base_url], "--ray"))
        assert result.exit_code == 0, result.output
        assert server.count == calls - first  # the rest, nothing twice
    assert (run / "dataset.jsonl").read_bytes() == reference


def test_concurrency_auto_on_ray_backs_off_an_overloaded_endpoint_and_writes_the_same_dataset(setup, local_ray, tmp_path):
    """An endpoint that serves 2 at once and answers 429 past that: at a fixed 32 in flight many requests
    are turned away (some fail after every retry); with auto each actor learns its own number in flight,
    far fewer are turned away, none fails, and the dataset is the one-process run's."""
    folder, task, root, reference, calls = setup
    rejected = {}
    for concurrency in ("32", "auto"):  # 16 turned away only 2-3 x auto's first burst: too close to assert on
        run = tmp_path / concurrency
        with FakeOpenAIServer(latency=0.05, capacity=2, overload_retry_after=0.05) as server:
            args = synth_args(task, root, run, [server.base_url], "--ray", "--ray-workers", "2", "--concurrency", concurrency)
            result = CliRunner().invoke(main, args)  # the last --concurrency counts
            rejected[concurrency] = server.count - shard_answers(run)  # 429s: an answered request was sent once
    assert result.exit_code == 0, result.output
    assert (run / "dataset.jsonl").read_bytes() == reference and shard_answers(run) == calls
    assert rejected["32"] > 0 and rejected["auto"] < rejected["32"] / 2, rejected


def answerer_pids() -> list[int]:
    """Processes of Seedbed's Ray actors (Ray titles them ray::_Answerer...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_Answerer"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_the_actors_start_while_the_run_plans_and_touch_no_file_before_their_first_batch(setup, local_ray, tmp_path,
                                                                                         monkeypatch):
    """Starting a worker process takes seconds; `synth --ray` starts them before it plans, so the plan
    hides that wait. Started, they have not touched the run folder: they open their shards on their
    first batch, after the run has locked the folder."""
    import engine.pipeline

    folder, task, root, reference, calls = setup
    run = tmp_path / "run"
    seen: dict[str, object] = {}
    real_plan = engine.pipeline.plan

    stale = set(answerer_pids())  # an earlier test's actors may still be exiting (ray.kill does not wait)

    def started() -> int:
        return len(set(answerer_pids()) - stale)

    def planning(*args, **kwargs):
        deadline = time.monotonic() + 60
        while started() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.update(actors=started(), folder_exists=run.exists())
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(engine.pipeline, "plan", planning)
    with FakeOpenAIServer() as server:
        result = CliRunner().invoke(main, synth_args(task, root, run, [server.base_url], "--ray", "--ray-workers", "2"))
        assert result.exit_code == 0, result.output
    assert seen == {"actors": 2, "folder_exists": False}
    assert (run / "dataset.jsonl").read_bytes() == reference and shard_answers(run) == calls
    deadline = time.monotonic() + 60  # stopped at the end of the run (ray.kill returns before the process exits)
    while answerer_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not answerer_pids()


def test_a_killed_worker_is_replaced_and_only_its_requests_in_flight_are_sent_again(setup, local_ray, tmp_path):
    folder, task, root, reference, calls = setup
    killed = []
    stale = set(answerer_pids())  # an earlier test's actors still exiting are not this run's
    with FakeOpenAIServer(latency=0.3) as server:
        def kill_one() -> None:
            deadline = time.monotonic() + 120
            while server.count < calls // 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            pids = sorted(set(answerer_pids()) - stale)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        killer = threading.Thread(target=kill_one)
        killer.start()
        result = CliRunner().invoke(main, synth_args(task, root, tmp_path / "run", [server.base_url], "--ray", "--ray-workers", "2"))
        killer.join()
        assert result.exit_code == 0, result.output
        assert killed, "no worker process was found to kill"
        repeats = sum(n - 1 for n in Counter(prompts(server)).values())
    assert (tmp_path / "run" / "dataset.jsonl").read_bytes() == reference
    assert repeats <= 2  # at most the killed worker's requests in flight (4 in flight over 2 workers)


def test_a_killed_driver_resumes_and_pays_for_no_answered_request_again(setup, tmp_path):
    folder, task, root, _, _ = setup
    with FakeOpenAIServer() as server:  # the reference at this size, in one process
        result = CliRunner().invoke(main, synth_args(task, root, tmp_path / "reference", [server.base_url], "-n", "40"))
        assert result.exit_code == 0, result.output
        calls = server.count
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEEDBED_CACHE_DIR": str(tmp_path / "cache")}
    with FakeOpenAIServer(latency=0.5) as server:
        args = synth_args(task, root, run, [server.base_url], "-n", "40", "--ray", "--ray-workers", "2")
        kill_driver_after(args, env, server, calls // 4, tmp_path / "first.log")
        first = set(prompts(server))
        answered_before = shard_answers(run)
        assert 0 < answered_before < calls and not (run / "dataset.jsonl").exists()

        second = subprocess.run([sys.executable, "-c", "from engine.cli import main; main()", *args],
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        received = prompts(server)
    resent = [p for p in received[len(first):] if p in first]
    assert (run / "dataset.jsonl").read_bytes() == (tmp_path / "reference" / "dataset.jsonl").read_bytes()
    # only requests that were in flight when the driver died (4 at most) are sent again
    assert len(resent) <= 4
    assert len(received) - len(resent) == calls
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["reused_from_journal"] >= answered_before


def kill_driver_after(args: list[str], env: dict, server: FakeOpenAIServer, requests: int, log_path: Path) -> None:
    """Run `seedbed ARGS` in its own process group, SIGKILL it once `server` got `requests` requests, and wait
    until its local cluster's workers are gone."""
    with open(log_path, "wb") as log:
        driver = subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", *args],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while server.count < requests and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, log_path.read_text()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _wait_for_workers_to_go(30)
    try:  # what is left of its local cluster (Ray's own agents end by themselves within a minute)
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for_workers_to_go(seconds: float) -> None:
    """A killed driver's local cluster stops its workers; wait so they cannot answer during the re-run."""
    deadline = time.monotonic() + seconds
    while answerer_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in answerer_pids():  # left over past the deadline: not the behaviour under test
        os.kill(pid, signal.SIGKILL)


def test_ray_errors_are_one_line_with_the_fix(setup, tmp_path, monkeypatch):
    folder, task, root, reference, calls = setup
    result = CliRunner().invoke(main, ["synth", str(task), "--index", "news", "--root", str(root), "--out",
                                       str(tmp_path / "a"), "--fake", "--ray"])
    assert result.exit_code != 0 and "--ray give --base-url" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, synth_args(task, root, tmp_path / "b", ["http://127.0.0.1:9/v1"], "--ray", "127.0.0.1:1"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    with FakeOpenAIServer() as server:
        result = CliRunner().invoke(main, synth_args(task, root, tmp_path / "c", [server.base_url], "--ray", "127.0.0.1:1"))
    assert result.exit_code != 0 and "cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    assert "ray start --head" in result.output and not (tmp_path / "c" / "dataset.jsonl").exists()
    result = CliRunner().invoke(main, ["synth", str(task), "--index", "news", "--root", str(root), "--out",
                                       str(tmp_path / "d"), "--ray", "10.0.0.1:6379"])
    assert result.exit_code != 0 and "cluster's workers cannot reach" in result.output

    from engine.llm import distributed

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r'pip install "seedbed\[ray\]"'):
        distributed.ray_module()


def test_a_ray_run_against_the_real_llama_server(setup, tmp_path):
    require_small_model()
    folder, _, root, reference, calls = setup
    task = tmp_path / "task.yaml"  # SmolLM2-135M rarely keeps a headline to 14 words: room for its answers
    task.write_text(TASK_YAML.replace("max_words: 14", "max_words: 40"), encoding="utf-8")
    run = tmp_path / "run"
    args = ["synth", str(task), "--index", "news", "--root", str(root), "--out", str(run), "--model", "smollm2-135m",
            "--no-cache", "-n", "3", "--ray", "--ray-workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEEDBED_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", "from engine.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["counts"]["llm_calls"] >= 6 and shard_answers(run) == manifest["counts"]["llm_calls"]
    assert manifest["counts"]["kept"] >= 1


# --- indexing on Ray ------------------------------------------------------------------------------------

def test_an_index_built_on_ray_is_the_local_build_row_for_row(tmp_path, local_ray):
    from engine.embed import HashEmbedder
    from engine.index import store
    from engine.index.reader import Index

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_reuters_slice(corpus / "a.jsonl", 60)
    write_reuters_slice(corpus / "b.jsonl", 90, start=40)  # 20 documents again: duplicates across files
    copies = (corpus / "b.jsonl").read_text().splitlines(keepends=True)[:3]  # in a and b already, one twice in c
    new = write_reuters_slice(tmp_path / "new.jsonl", 100, start=95).read_text()
    (corpus / "c.jsonl").write_text(copies[0] + new + copies[0] + copies[2])
    root = tmp_path / "indexes"
    for name, extra in (("local", []), ("onray", ["--ray", "--ray-workers", "2"])):
        result = CliRunner().invoke(main, ["index", str(corpus), "--name", name, "--embedder", "hash-64", "--root", str(root), *extra])
        assert result.exit_code == 0, result.output
    local, onray = (json.loads((root / name / "manifest.json").read_text()) for name in ("local", "onray"))
    assert onray["passages"] == local["passages"] and onray["corpus_fingerprint"] == local["corpus_fingerprint"]
    for key in ("documents", "duplicates", "empty_documents", "too_short"):
        assert onray["sources"][0][key] == local["sources"][0][key], key
    assert local["sources"][0]["duplicates"] >= 20 + 3  # across files, within c, and of both a and b
    a = Index.open("local", root, embedder=HashEmbedder(64))
    b = Index.open("onray", root, embedder=HashEmbedder(64))
    for query in ("oil prices OPEC", "quarterly net profit", "wheat exports", "central bank interest rates"):
        for mode in ("dense", "bm25", "hybrid"):
            assert [h.passage.id for h in a.search(query, k=10, mode=mode)] == \
                   [h.passage.id for h in b.search(query, k=10, mode=mode)], (query, mode)

    more = tmp_path / "more.jsonl"  # --add: 30 documents already indexed, 50 new ones
    write_reuters_slice(more, 140, start=60)
    for name, extra in (("local", []), ("onray", ["--ray", "--ray-workers", "2"])):
        result = CliRunner().invoke(main, ["index", str(more), "--name", name, "--embedder", "hash-64", "--root", str(root),
                                           "--add", *extra])
        assert result.exit_code == 0, result.output
    local, onray = (json.loads((root / name / "manifest.json").read_text()) for name in ("local", "onray"))
    assert onray["passages"] == local["passages"] > a.manifest.passages
    assert onray["corpus_fingerprint"] == local["corpus_fingerprint"] != a.manifest.corpus_fingerprint
    assert onray["sources"][1]["added"] == local["sources"][1]["added"] > 0
    assert onray["sources"][1]["duplicates"] == local["sources"][1]["duplicates"] > 0
    a = Index.open("local", root, embedder=HashEmbedder(64))
    b = Index.open("onray", root, embedder=HashEmbedder(64))
    assert a.passages["id"].to_list() == b.passages["id"].to_list()  # row for row
    scan = store.open_table(root / "onray").search().select(["row"]).limit(None).to_arrow().column("row").to_pylist()
    assert scan == list(range(onray["passages"]))  # written in row order: FAISS and BM25 read it a batch at a time
    for query in ("oil prices OPEC", "quarterly net profit"):
        assert [h.passage.id for h in a.search(query, k=10)] == [h.passage.id for h in b.search(query, k=10)], query


def test_a_ray_build_writes_its_table_in_row_order_in_many_small_batches_and_reports_progress(tmp_path, local_ray):
    """Batches of 8 over 2 embedding actors finish out of order; the table must still be written in row
    order, or the builder's FAISS and BM25 passes would have to read the whole table to sort it."""
    from engine.corpus import CorpusOptions
    from engine.index import store
    from engine.index.distributed import fill_on_ray

    corpus, work = tmp_path / "corpus", tmp_path / "work"
    corpus.mkdir()
    work.mkdir()
    for i in range(4):
        write_reuters_slice(corpus / f"{i}.jsonl", 40 * (i + 1), start=40 * i)
    calls = []
    written, _, stats = fill_on_ray(work, corpus, CorpusOptions(), "hash-64", 64, address=None, workers=2, batch_size=8,
                                    progress=lambda passages, documents: calls.append((passages, documents)))
    rows = store.open_table(work).search().select(["row"]).limit(None).to_arrow().column("row").to_pylist()
    assert written > 150 and rows == list(range(written))
    # the bar moves as the actors embed (polled twice a second) and ends at the totals, never past them
    assert calls[-1] == (written, stats.documents) and calls == sorted(calls)


def bucket_answers(bucket: str, prefix: str) -> int:
    """Answers ("ok" lines) in the worker shards under s3://bucket/prefix/journal.d/."""
    remote = Remote.connect(f"s3://{bucket}/{prefix}/journal.d")
    lines = [line for rel in remote.list_files() for line in remote.read_bytes(rel).decode().splitlines() if line]
    return sum(1 for line in lines if json.loads(line)["status"] == "ok")


def test_a_ray_run_on_s3_has_its_workers_answers_in_the_bucket_when_the_driver_is_killed(setup, bucket, tmp_path):
    """With the run folder on S3 the workers upload their shards to the bucket themselves (the driver of a
    cluster cannot read a worker node's disk): killed before it uploaded anything, its answers are in the
    bucket, and a re-run on a machine with no local copy pays only for what was in flight or not yet uploaded."""
    folder, task, root, _, _ = setup
    with FakeOpenAIServer() as server:  # the reference at this size, in one process
        result = CliRunner().invoke(main, synth_args(task, root, tmp_path / "reference", [server.base_url], "-n", "40"))
        assert result.exit_code == 0, result.output
        calls = server.count
    out = f"s3://{bucket}/runs/ray"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEEDBED_CACHE_DIR": str(tmp_path / "cache")}
    with FakeOpenAIServer(latency=0.5) as server:
        args = synth_args(task, root, Path("unused"), [server.base_url], "-n", "40", "--ray", "--ray-workers", "2")
        args[args.index("--out") + 1] = out
        kill_driver_after(args, {**env, "SEEDBED_REMOTE_CACHE_DIR": str(tmp_path / "machine-a")}, server, calls // 3,
                          tmp_path / "first.log")
        first = set(prompts(server))
        in_bucket = bucket_answers(bucket, "runs/ray")
        # every answer but those of the last upload interval (8 a second here: 4 in flight, 0.5 s each)
        assert len(first) - 12 <= in_bucket <= len(first) < calls

        second = subprocess.run([sys.executable, "-c", "from engine.cli import main; main()", *args],
                                env={**env, "SEEDBED_REMOTE_CACHE_DIR": str(tmp_path / "machine-b")},
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        received = prompts(server)
    resent = [p for p in received[len(first):] if p in first]
    assert len(resent) == len(first) - in_bucket  # exactly the answers the bucket did not hold
    assert len(received) - len(resent) == calls
    written = Remote.connect(out).read_bytes("dataset.jsonl")
    assert written == (tmp_path / "reference" / "dataset.jsonl").read_bytes()
    # the finished run's workers closed their shards: every line is in the bucket, no local copy is left
    assert (tmp_path / "machine-b" / "shards").is_dir() and not list((tmp_path / "machine-b" / "shards").rglob("*.jsonl"))
