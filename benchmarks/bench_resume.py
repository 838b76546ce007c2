"""Kill a synthesis at about half its requests, resume it, and count what the resume paid for.

Three real `seedbed synth` processes on a small hash-64 index: an uninterrupted reference run, a
run killed with SIGKILL once its journal holds `--kill-at` of the reference's answers, and the
same command again. The LLM is the loopback FakeOpenAIServer (real client, real sockets), which
counts every chat request it receives, so calls are measured at the endpoint, not reported by the
run; `--llm fake` uses the in-process scripted LLM instead (calls from the run manifest).

Prints the resumed run's LLM calls / the requests the journal lacked (target 1.0), the answers
lost in flight at the kill (at most --concurrency), and whether the resumed dataset.jsonl is
byte-identical to the reference's. Bounded: about 30 s on 2 cores.

Usage: python benchmarks/bench_resume.py [--per-label 10] [--latency 0.1] [--concurrency 4] [--kill-at 0.5]
       [--llm server|fake] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

from engine.embed import HashEmbedder
from engine.index.builder import build_index

REPO = Path(__file__).resolve().parents[1]
REUTERS = REPO / "corpora" / "reuters-sample" / "reuters_sample.jsonl"
RESULTS = Path(__file__).parent / "results"
LABELS = {
    "Oil": "crude oil prices, OPEC and oil production",
    "Earnings": "company quarterly earnings, profits and dividends",
    "Grain": "wheat, corn and grain harvests, exports and prices",
    "Currency": "foreign exchange, the dollar, yen and central banks",
}


def write_task(path: Path, per_label: int) -> None:
    labels = "".join(f"  - name: {name}\n    verbalization: {text}\n" for name, text in LABELS.items())
    path.write_text(f"name: bench-resume\noutput:\n  kind: news headline\n  min_words: 4\n  max_words: 14\n"
                    f"examples_per_label: {per_label}\nlabels:\n{labels}retrieval:\n  min_similarity: 0.1\n"
                    f"  max_reuse: 4\nseed: 7\n", encoding="utf-8")


def build(folder: Path, documents: int) -> Path:
    corpus = folder / "reuters.jsonl"
    corpus.write_text("".join(REUTERS.read_text(encoding="utf-8").splitlines(keepends=True)[:documents]), encoding="utf-8")
    build_index(corpus, "news", HashEmbedder(64), root=folder / "indexes")
    return folder / "indexes"


class Synth:
    """Starts `seedbed synth` processes for one task, index and LLM."""

    def __init__(self, folder: Path, task: Path, root: Path, concurrency: int, llm_args: list[str], env: dict):
        self.folder, self.env = folder, {**os.environ, **env, "SEEDBED_CACHE_DIR": str(folder / "llm-cache")}
        self.base = ["synth", str(task), "--index", "news", "--root", str(root), "--concurrency", str(concurrency),
                     "--no-cache", *llm_args]

    def start(self, out: Path) -> subprocess.Popen:
        with open(self.folder / f"{out.name}.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", *self.base, "--out", str(out)],
                                    cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def run(self, out: Path) -> None:
        if self.start(out).wait(timeout=300) != 0:
            sys.exit(f"seedbed synth into {out} failed; see {self.folder / (out.name + '.log')}")


def ok_answers(out: Path) -> list[str]:
    """Request ids of the journal's ok lines (a torn last line is skipped)."""
    ids = []
    for line in (out / "journal.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("status") == "ok":
            ids.append(entry["request_id"])
    return ids


def kill_when(process: subprocess.Popen, out: Path, lines: int) -> float:
    """SIGKILL `process` once its journal holds `lines` lines; returns the seconds it ran."""
    start, journal = time.monotonic(), out / "journal.jsonl"
    while not journal.exists() or journal.read_bytes().count(b"\n") < lines:
        if process.poll() is not None:
            sys.exit(f"the run ended before its journal held {lines} lines; raise --latency or --per-label")
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return time.monotonic() - start


def llm_calls(out: Path) -> int:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["counts"]["llm_calls"]


def measure(args, folder: Path, counter) -> dict:
    """Reference, killed and resumed runs; `counter()` is the endpoint's chat count (None: use manifests)."""
    task = folder / "task.yaml"
    write_task(task, args.per_label)
    root = build(folder, 200)
    synth = Synth(folder, task, root, args.concurrency, args.llm_args, args.env)
    seen = counter()
    synth.run(folder / "reference")
    total = llm_calls(folder / "reference")
    reference_calls = counter() - seen if seen is not None else total
    out = folder / "resumed"
    seen = counter()
    killed_after = kill_when(synth.start(out), out, max(1, round(total * args.kill_at)))
    journalled = len(set(ok_answers(out)))
    sent_before_kill = counter() - seen if seen is not None else None
    seen = counter()
    started = time.monotonic()
    synth.run(out)
    resumed_calls = counter() - seen if seen is not None else llm_calls(out)
    answers = ok_answers(out)
    return {
        "requests": total, "reference_calls": reference_calls, "killed_after_s": round(killed_after, 2),
        "journalled_at_kill": journalled,
        "lost_in_flight": None if sent_before_kill is None else sent_before_kill - journalled,
        "remaining": total - journalled, "resumed_calls": resumed_calls,
        "resumed_manifest_calls": llm_calls(out), "resume_s": round(time.monotonic() - started, 2),
        "ratio": round(resumed_calls / max(1, total - journalled), 4),
        "answered_twice": len(answers) - len(set(answers)),
        "dataset_identical": (out / "dataset.jsonl").read_bytes() == (folder / "reference" / "dataset.jsonl").read_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-label", type=int, default=10, help="examples per label (4 labels)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fake endpoint takes per call")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of the reference's answers journalled before the kill")
    parser.add_argument("--llm", choices=["server", "fake"], default="server")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/resume-<date>.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if args.llm == "server":
            from engine.testing import FakeOpenAIServer

            server = stack.enter_context(FakeOpenAIServer(latency=args.latency))
            args.llm_args, args.env = ["--base-url", server.base_url, "--model", server.model], {}
            counter = lambda: server.count  # noqa: E731
        else:
            args.llm_args, args.env = ["--fake"], {"SEEDBED_FAKE_DELAY": str(args.latency)}
            counter = lambda: None  # noqa: E731
        result = measure(args, Path(tmp), counter)

    lost = "n/a" if result["lost_in_flight"] is None else result["lost_in_flight"]
    print(f"{result['requests']} requests; killed after {result['killed_after_s']}s with {result['journalled_at_kill']} "
          f"answers journalled ({lost} lost in flight)")
    print(f"resumed run: {result['resumed_calls']} LLM calls for {result['remaining']} remaining requests; "
          f"ratio {result['ratio']:.3f} (target 1.0); answered twice: {result['answered_twice']}")
    print(f"dataset identical to the uninterrupted run's: {result['dataset_identical']}")
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
                  "llm": args.llm, "latency_s": args.latency, "concurrency": args.concurrency,
                  "examples_per_label": args.per_label, "labels": len(LABELS), "kill_at": args.kill_at, **result}
        path = RESULTS / f"resume-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    if result["ratio"] != 1.0 or result["answered_twice"] or not result["dataset_identical"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
