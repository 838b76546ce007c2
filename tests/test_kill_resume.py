"""A real `seedbed synth --fake` process killed with SIGKILL at several points, then resumed with the
same command: the resumed run pays only for what the journal lacks, no request is answered twice,
the dataset is byte-identical to an uninterrupted run's, a killed run leaves no dataset file behind
and its lock does not block the resume.

The fake answers slowly (SEEDBED_FAKE_DELAY) so the test can watch the journal and kill on cue.
"""

from __future__ import annotations

import asyncio
import fcntl
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

from engine.cli import main

from conftest import index_reuters_slice, oil_earnings_task, REPO

TASK_YAML = oil_earnings_task("kill-resume", examples_per_label=5, seed=5, assign_labels=False)
DELAY = 0.25  # seconds per fake call while a run waits to be killed
DATASET_FILES = ("dataset.parquet", "dataset.jsonl", "rejected.jsonl", "manifest.json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A hash-64 index, the task spec, and an uninterrupted reference run (in process)."""
    folder = tmp_path_factory.mktemp("kill-resume")
    root = index_reuters_slice(folder, 60)
    task = folder / "task.yaml"
    task.write_text(TASK_YAML, encoding="utf-8")
    reference = folder / "reference"
    result = CliRunner().invoke(main, synth_args(task, root, reference, concurrency=2),
                                env={"SEEDBED_CACHE_DIR": str(folder / "llm-cache")})
    assert result.exit_code == 0, result.output
    counts = manifest_counts(reference)
    assert counts["reused_from_journal"] == 0 and counts["llm_calls"] >= 8
    return task, root, reference, counts["llm_calls"]


def synth_args(task: Path, root: Path, out: Path, concurrency: int) -> list[str]:
    return ["synth", str(task), "--index", "news", "--root", str(root), "--out", str(out), "--fake",
            "--concurrency", str(concurrency)]


def start_synth(args: list[str], folder: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "SEEDBED_FAKE_DELAY": str(delay), "SEEDBED_CACHE_DIR": str(folder / "llm-cache"),
           "PYTHONPATH": str(REPO)}
    log = open(folder / f"synth-{time.monotonic_ns()}.log", "wb")
    with log:
        return subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", *args], cwd=folder,
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def journal_lines(out: Path) -> int:
    path = out / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def lock_is_free(out: Path) -> bool:
    """Can another process take the run's lock now? (Released at once if taken.)"""
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def kill_after(process: subprocess.Popen, out: Path, lines: int, timeout: float = 120.0) -> bool:
    """SIGKILL the run once its journal holds `lines` lines; returns whether its lock was held meanwhile."""
    deadline = time.monotonic() + timeout
    while journal_lines(out) < lines:
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before {lines} journal lines"
        assert time.monotonic() < deadline, f"no {lines} journal lines after {timeout}s"
        time.sleep(0.01)
    locked = (out / ".lock").exists() and not lock_is_free(out)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return locked


def journal_answers(out: Path) -> list[str]:
    """Request ids of every ok line in the journal (a torn last line is skipped)."""
    ids = []
    for line in (out / "journal.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("status") == "ok":
            ids.append(entry["request_id"])
    return ids


def manifest_counts(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["counts"]


@pytest.mark.parametrize("where", ["first answer", "half", "all but one"])
def test_a_killed_run_resumes_paying_only_for_what_the_journal_lacks(setup, tmp_path, where):
    task, root, reference, total = setup
    out = tmp_path / "out"
    # One request in flight makes "all but one" exact; two in flight lose two answers at a time.
    lines, concurrency = {"first answer": (1, 2), "half": (total // 2, 2), "all but one": (total - 1, 1)}[where]
    args = synth_args(task, root, out, concurrency)

    held = kill_after(start_synth(args, tmp_path, DELAY), out, lines)

    assert held, "the live run did not hold its lock"
    assert lock_is_free(out), "the lock of a killed run still blocks"
    assert not [name for name in os.listdir(out) if name in DATASET_FILES or ".tmp-" in name]  # nothing half-written
    journalled = set(journal_answers(out))
    assert lines <= len(journalled) < total
    print(f"killed after {len(journalled)} of {total} answers")

    resumed = start_synth(args, tmp_path, 0.0)
    assert resumed.wait(timeout=120) == 0
    counts = manifest_counts(out)
    assert counts["llm_calls"] == total - len(journalled)
    assert counts["reused_from_journal"] == len(journalled)
    answered = journal_answers(out)
    assert len(answered) == len(set(answered)) == total  # no request answered twice
    assert (out / "dataset.jsonl").read_bytes() == (reference / "dataset.jsonl").read_bytes()
    assert pl.read_parquet(out / "dataset.parquet").equals(pl.read_parquet(reference / "dataset.parquet"))


def test_the_fake_delay_comes_from_the_environment_and_a_bad_one_is_a_config_error(monkeypatch):
    from engine.errors import ConfigError
    from engine.llm.endpoint import EndpointSettings, open_llm
    from engine.types import SamplingParams

    monkeypatch.setenv("SEEDBED_FAKE_DELAY", "0.2")
    with open_llm(EndpointSettings(fake=True)) as llm:
        started = time.monotonic()
        asyncio.run(llm.complete([{"role": "user", "content": "Passage:\nOPEC cut output"}], SamplingParams()))
        assert time.monotonic() - started >= 0.2  # a sleep lasts at least its time, so this cannot flake
    for bad in ("soon", "-1", "nan", "120"):
        monkeypatch.setenv("SEEDBED_FAKE_DELAY", bad)
        with pytest.raises(ConfigError, match="SEEDBED_FAKE_DELAY"):
            with open_llm(EndpointSettings(fake=True)):
                pass
