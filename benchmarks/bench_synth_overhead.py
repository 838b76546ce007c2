"""Synthesis overhead against the raw server: the prompts of a real synthesizrr plan sent (a) through
`seedbed synth` and (b) by a bare asyncio loop with the `openai` client, at the same concurrency.

The plan is made once (retrieval on a real index, no LLM call); its first round is what both sides
send, with the same messages and sampling. (a) is `engine.pipeline.synthesize` with that plan and one
round: journal, parsing, filters (the spaCy grounding check, near-duplicates), dataset files,
manifest and card included. (b) is `asyncio.Semaphore(concurrency)` around
`AsyncOpenAI.chat.completions.create`, answers thrown away. The two sides alternate, `--repeats`
times each, so drift in machine load hits both alike; the ratio of median requests/s is printed
(target: >= 0.95) for each endpoint:

- `fake`: `engine.testing.FakeOpenAIServer` answering after `--latency` seconds (what Seedbed adds
  on top of a fast remote endpoint);
- `local`: the embedded llama-server with SmolLM2-135M (what Seedbed costs beside a CPU-bound
  server on the same 2 cores; run it on a quiet machine).

Usage:
    python benchmarks/bench_synth_overhead.py [--index news-mix] [--per-label 20] [--concurrency 4]
        [--endpoints fake,local] [--latency 0.2] [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import openai

from engine.config import load_task
from engine.index.reader import Index
from engine.llm.client import OpenAIChat
from engine.pipeline import SynthOptions, synthesize
from engine.plan import plan
from engine.rounds import first_round
from engine.types import Request

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


async def bare(base_url: str, model: str, api_key: str, requests: list[Request], concurrency: int) -> float:
    """Send every request with the plain openai client at `concurrency`; returns the wall seconds."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "none", max_retries=3)
    gate = asyncio.Semaphore(concurrency)

    async def one(request: Request) -> None:
        async with gate:
            sampling = request.sampling.as_dict()
            await client.chat.completions.create(
                model=model, messages=[{"role": role, "content": text} for role, text in request.messages],
                temperature=sampling.get("temperature"), top_p=sampling.get("top_p"),
                max_tokens=sampling.get("max_tokens"), seed=sampling.get("seed"))

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    seconds = time.perf_counter() - started
    await client.close()
    return seconds


def through_seedbed(task, index, synth_plan, base_url: str, model: str, api_key: str, concurrency: int) -> tuple[float, int]:
    """`synthesize` with the plan, one round, a fresh folder and no shared cache; (seconds, calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        llm = OpenAIChat(base_url, model, api_key=api_key or "none")
        options = SynthOptions(out=Path(tmp) / "run", concurrency=concurrency, max_rounds=1, cache=None)
        started = time.perf_counter()
        result = synthesize(task, index, llm, options, endpoint=base_url, synth_plan=synth_plan)
        return time.perf_counter() - started, result.calls


@contextmanager
def endpoint(kind: str, latency: float, concurrency: int):
    """(base_url, model, api_key) of a fake server or of the embedded llama-server with SmolLM2."""
    if kind == "fake":
        from engine.testing import FakeOpenAIServer

        with FakeOpenAIServer(latency=latency) as server:
            yield server.base_url, server.model, ""
        return
    from engine.runtime.catalog import TEST_MODEL
    from engine.runtime.server import LocalServer, ServerConfig

    with LocalServer.from_catalog(TEST_MODEL, ServerConfig(parallel=concurrency)) as server:
        yield server.base_url, server.model, server.api_key


def measure(kind: str, task, index, synth_plan, requests: list[Request], args) -> dict:
    rates: dict[str, list[float]] = {"seedbed": [], "bare": []}
    with endpoint(kind, args.latency, args.concurrency) as (base_url, model, api_key):
        asyncio.run(bare(base_url, model, api_key, requests[: args.concurrency], args.concurrency))  # warm-up
        for repeat in range(args.repeats):
            seconds = asyncio.run(bare(base_url, model, api_key, requests, args.concurrency))
            rates["bare"].append(len(requests) / seconds)
            seconds, calls = through_seedbed(task, index, synth_plan, base_url, model, api_key, args.concurrency)
            if calls != len(requests):
                raise SystemExit(f"seedbed sent {calls} requests, the plan has {len(requests)}: not the same work")
            rates["seedbed"].append(calls / seconds)
            print(f"{kind} repeat {repeat + 1}: bare {rates['bare'][-1]:.2f} req/s, seedbed synth "
                  f"{rates['seedbed'][-1]:.2f} req/s", flush=True)
    ratio = statistics.median(rates["seedbed"]) / statistics.median(rates["bare"])
    print(f"{kind}: seedbed / bare = {ratio:.3f} (median of {args.repeats}; target >= 0.95)", flush=True)
    return {"requests": len(requests), "req_per_s": rates, "ratio": round(ratio, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=str(ROOT / "benchmarks/tasks/ag_news.yaml"))
    parser.add_argument("--index", default="news-mix")
    parser.add_argument("--root", default="indexes")
    parser.add_argument("--per-label", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--endpoints", default="fake,local")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake endpoint takes per answer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--call-path-only", action="store_true",
                        help="turn the spec's confidence filter off: it embeds the set and trains a student after "
                             "the calls, work the bare loop does not do")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/synth-overhead-<date>.json")
    args = parser.parse_args()

    task = dataclasses.replace(load_task(Path(args.task)), examples_per_label=args.per_label, verify="")
    if args.call_path_only:
        task = dataclasses.replace(task, quality=dataclasses.replace(task.quality, confidence_keep=0.0))
    index = Index.open(args.index, Path(args.root))
    started = time.perf_counter()
    synth_plan = plan(task, index, SynthOptions(out=Path("unused"), concurrency=args.concurrency))
    plan_seconds = time.perf_counter() - started
    requests = [r for part in synth_plan.parts for r in first_round(task, part)]
    print(f"plan: {len(requests)} requests from index {args.index!r} in {plan_seconds:.1f}s (not timed on either side)")
    results = {kind: measure(kind, task, index, synth_plan, requests, args) for kind in args.endpoints.split(",")}
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
                  "task": Path(args.task).name, "call_path_only": args.call_path_only, "index": args.index, "concurrency": args.concurrency,
                  "fake_latency_s": args.latency, "plan_seconds": round(plan_seconds, 2), "endpoints": results}
        path = RESULTS / f"synth-overhead-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
