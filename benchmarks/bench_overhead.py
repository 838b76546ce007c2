"""What the run journal and the shared LLM cache cost: synth throughput with both on / with both off.

The same synthesis (scripted LLM answering after a fixed latency, like a fast endpoint) runs
alternately with the journal and cache on and off, several times each, in the same process;
the ratio of median throughputs is the overhead (target: at least 0.95). "Off" replaces the
journal with one that keeps answers in memory only, and passes no cache.

Usage: python benchmarks/bench_overhead.py [--requests-per-label 40] [--latency 0.05] [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import engine.pipeline as pipeline
from engine.cache import LLMCache
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.types import LabelSpec, OutputSpec, SamplingParams, TaskSpec

RESULTS = Path(__file__).parent / "results"


class MemoryJournal:
    """The journal's interface with nothing written: the 'off' side of the comparison."""

    def __init__(self, path):
        self._done = {}

    def completed(self, request_id, model):
        return self._done.get((request_id, model))

    def record_ok(self, request_id, model, completion):
        self._done[(request_id, model)] = completion

    def record_failed(self, request_id, model, error):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def task(per_label: int) -> TaskSpec:
    labels = tuple(LabelSpec(name, f"news about {name.lower()}") for name in ("World", "Sports", "Business", "Tech"))
    return TaskSpec(name="overhead", labels=labels, output=OutputSpec("news headline", min_words=3, max_words=30),
                    examples_per_label=per_label, sampling=SamplingParams(max_tokens=40), strategy="fewgen", seed=1)


def one_run(spec: TaskSpec, latency: float, concurrency: int, on: bool, folder: Path) -> tuple[float, int]:
    original = pipeline.Journal
    if not on:
        pipeline.Journal = MemoryJournal
    try:
        cache = LLMCache(folder / "cache") if on else None
        llm = ScriptedLLM(delay=latency)
        start = time.perf_counter()
        result = synthesize(spec, None, llm, SynthOptions(out=folder / "out", concurrency=concurrency, cache=cache))
        seconds = time.perf_counter() - start
        if cache:
            cache.close()
    finally:
        pipeline.Journal = original
    return result.calls / seconds, result.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-label", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake endpoint takes per call")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    spec = task(args.requests_per_label)
    rates = {True: [], False: []}
    calls = 0
    for repeat in range(args.repeats):
        for on in (False, True):  # alternate, so drift in machine load hits both sides alike
            with tempfile.TemporaryDirectory() as tmp:
                rate, calls = one_run(spec, args.latency, args.concurrency, on, Path(tmp))
            rates[on].append(rate)
            print(f"repeat {repeat + 1}: journal+cache {'on ' if on else 'off'} {rate:7.1f} calls/s ({calls} calls)")
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    ratio = on / off
    print(f"median throughput: on {on:.1f} calls/s, off {off:.1f} calls/s; on/off = {ratio:.3f} (target >= 0.95)")
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
                  "latency_s": args.latency, "concurrency": args.concurrency, "calls_per_run": calls,
                  "calls_per_s_on": rates[True], "calls_per_s_off": rates[False], "ratio_on_off": round(ratio, 4)}
        path = RESULTS / f"overhead-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
