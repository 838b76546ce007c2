"""Faults of the machine: a full disk, a read-only disk, an index writer killed mid-way, a llama-server
killed again and again. Each ends in a one-line error or a successful resume; what was there before
still opens, and nothing half-written sits under a final name.

The disks are real: a small tmpfs mounted by the test (skipped, with the reason, where this process
may not mount).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import oil_earnings_task, REPO, require_small_model, write_reuters_slice
from engine.cli import main
from engine.embed import HashEmbedder
from engine.index.reader import Index

TASK_YAML = oil_earnings_task("faults", examples_per_label=6, seed=5, assign_labels=False)
FINAL_NAMES = ("dataset.parquet", "dataset.jsonl", "manifest.json", "rejected.jsonl", "README.md")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *needles: str) -> str:
    """The command failed with exit code 1, ending in one `error:` line (its progress bars aside)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    message = errors[0]
    for needle in needles:
        assert needle.lower() in message.lower(), message
    return message


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    root = folder / "indexes"
    corpus = write_reuters_slice(folder / "reuters.jsonl", 80)
    assert invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root).exit_code == 0
    task = folder / "task.yaml"
    task.write_text(TASK_YAML, encoding="utf-8")
    return root, task


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk, unmounted afterwards; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); needs root or CAP_SYS_ADMIN")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` until only about `leave` bytes are free; returns the filler file."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def intact_or_absent(run: Path) -> None:
    """Every final name in `run` is a whole file (it parses) or is not there; no temp file is left."""
    if (run / "dataset.parquet").exists():
        pl.read_parquet(run / "dataset.parquet")
    if (run / "manifest.json").exists():
        json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    if (run / "dataset.jsonl").exists():
        [json.loads(line) for line in (run / "dataset.jsonl").read_text(encoding="utf-8").splitlines()]
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name], sorted(p.name for p in run.iterdir())


def test_a_full_disk_stops_the_run_with_one_line_and_a_rerun_resumes(built, small_disk):
    root, task = built
    run = small_disk / "run"
    filler = fill(small_disk, 6_000)  # the journal starts; the dataset files do not fit
    full = invoke("synth", task, "--index", "news", "--root", root, "--out", run, "--fake")
    one_line_error(full, "no space left", str(run), "free some space", "not paid for again")
    intact_or_absent(run)
    filler.unlink()
    again = invoke("synth", task, "--index", "news", "--root", root, "--out", run, "--fake")
    assert again.exit_code == 0, again.output
    assert "kept 12 examples" in again.output
    assert len(pl.read_parquet(run / "dataset.parquet")) == 12
    intact_or_absent(run)


def test_a_read_only_disk_is_one_line_and_the_previous_dataset_still_opens(built, small_disk):
    root, task = built
    run = small_disk / "run"
    assert invoke("synth", task, "--index", "news", "--root", root, "--out", run, "--fake").exit_code == 0
    before = pl.read_parquet(run / "dataset.parquet")
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)]).returncode == 0
    bigger = invoke("synth", task, "--index", "news", "--root", root, "--out", run, "--fake", "-n", "9", "--fresh")
    one_line_error(bigger, "read-only file system", str(run), "choose a writable folder")
    assert pl.read_parquet(run / "dataset.parquet").equals(before)
    intact_or_absent(run)


def test_an_index_on_a_read_only_disk_refuses_add_and_still_opens(built, small_disk, tmp_path):
    corpus = write_reuters_slice(tmp_path / "few.jsonl", 20)
    root = small_disk / "indexes"
    assert invoke("index", corpus, "--name", "few", "--embedder", "hash-64", "--root", root).exit_code == 0
    count = len(Index.open("few", root, embedder=HashEmbedder(64)))
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)]).returncode == 0
    more = write_reuters_slice(tmp_path / "more.jsonl", 40, 20)
    one_line_error(invoke("index", more, "--name", "few", "--add", "--embedder", "hash-64", "--root", root), "read-only file system", str(root), "choose a writable folder")
    assert len(Index.open("few", root, embedder=HashEmbedder(64))) == count


def test_an_index_add_killed_midway_leaves_the_old_index_and_a_rerun_adds(built, tmp_path):
    corpus = write_reuters_slice(tmp_path / "base.jsonl", 40)
    root = tmp_path / "indexes"
    assert invoke("index", corpus, "--name", "news", "--embedder", "hash-64", "--root", root).exit_code == 0
    before = len(Index.open("news", root, embedder=HashEmbedder(64)))
    more = write_reuters_slice(tmp_path / "more.jsonl", 2000, 40)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    add = [sys.executable, "-c", "from engine.cli import main; main()", "index", str(more), "--name", "news", "--add",
           "--embedder", "hash-64", "--root", str(root)]
    writer = subprocess.Popen(add, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(root.glob(".news.tmp-*")) and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.poll() is None, "the --add finished before it could be killed; give it a larger corpus"
    time.sleep(0.3)  # well into the copy or the embedding
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    index = Index.open("news", root, embedder=HashEmbedder(64))  # opening also clears the dead build's folder
    assert len(index) == before
    assert index.search("oil prices", k=3)
    assert not list(root.glob(".news.tmp-*")) and not list(root.glob(".news.old-*"))
    again = subprocess.run(add, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(Index.open("news", root, embedder=HashEmbedder(64))) > before


def _llama_children(parent: int) -> list[int]:
    """Pids of the llama.cpp servers whose parent is `parent` (read from /proc): a native
    `llama-server`, or the prebuilt runtime's `python -m engine.runtime.prebuilt`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and (name.startswith("llama-server") or b"engine.runtime.prebuilt" in command):
            found.append(int(stat.parent.name))
    return found


@pytest.mark.integration
def test_the_embedded_server_killed_again_and_again_restarts_then_stops_with_one_line_and_resumes(built, tmp_path):
    """SIGKILL llama-server four times during a run: three restarts, then a one-line error; re-running pays only the rest."""
    from engine.runtime.catalog import TEST_MODEL
    from engine.runtime.supervise import MAX_RESTARTS

    require_small_model()
    root, task = built
    run = tmp_path / "run"
    args = [sys.executable, "-c", "from engine.cli import main; main()", "synth", str(task), "--index", "news",
            "--root", str(root), "--out", str(run), "--model", TEST_MODEL, "-n", "12", "--concurrency", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[int] = []
    answered_at_kill = 0
    deadline = time.monotonic() + 480
    while len(killed) <= MAX_RESTARTS and first.poll() is None and time.monotonic() < deadline:
        alive = [pid for pid in _llama_children(first.pid) if pid not in killed]
        journal = run / "journal.jsonl"
        # answers only: a killed server's failed requests are journalled too, and killing its restart
        # while it starts is another error path (the restart itself failing)
        answered = journal.read_text(encoding="utf-8").count('"status": "ok"') if journal.exists() else 0
        if alive and answered > answered_at_kill:  # this server (or its restart) is answering: kill it mid-run
            os.kill(alive[0], signal.SIGKILL)
            killed.append(alive[0])
            answered_at_kill = answered
        time.sleep(0.05)
    out, err = first.communicate(timeout=300)
    assert len(killed) == MAX_RESTARTS + 1, f"the run ended after {len(killed)} kills; give it more requests\n{err}"
    assert first.returncode == 1, err
    assert "Traceback" not in err
    error = [line for line in err.splitlines() if "error:" in line]
    assert len(error) == 1 and f"llama-server died {MAX_RESTARTS + 1} times" in error[0] and "log" in error[0], err
    assert err.count("restarting it") == MAX_RESTARTS
    journaled = {json.loads(line)["request_id"] for line in (run / "journal.jsonl").read_text().splitlines()
                 if json.loads(line)["status"] == "ok"}
    assert journaled and not (run / "dataset.parquet").exists()
    assert not _llama_children(first.pid)

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["reused_from_journal"] >= len(journaled)  # nothing answered before is paid again
    assert len(pl.read_parquet(run / "dataset.parquet")) == manifest["counts"]["kept"] > 0
    intact_or_absent(run)
