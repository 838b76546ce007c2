"""Adaptive concurrency against fixed settings, on a fake server whose capacity the client is not told.

FakeOpenAIServer (real loopback HTTP, the real OpenAIChat client) serves `--requests` chat calls
per setting with a fixed latency and a hidden capacity. Two overload behaviours are measured:
"reject" (429 with Retry-After past capacity, as hosted APIs do) and "slow" (latency grows
quadratically past capacity, as a thrashing local server does). For each, the fixed settings
1, 2, 4, 8, 16 run first, then AdaptiveLimit; throughput counts successful answers per second.
The target: adaptive reaches at least 0.8x the best fixed setting, without being told the capacity.

Usage: python benchmarks/bench_concurrency.py [--requests 160] [--capacity 6] [--latency 0.06] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

from engine.llm.adaptive import AdaptiveLimit
from engine.llm.client import OpenAIChat
from engine.testing import FakeOpenAIServer
from engine.llm.runner import run_requests
from engine.types import Completion, Request, SamplingParams

FIXED = (1, 2, 4, 8, 16)
TARGET = 0.8


def planned(count: int) -> list[Request]:
    """`count` distinct chat requests, as a synthesis run would plan them."""
    return [
        Request(id=f"r{i}", label="L", messages=(("user", f"Write about topic {i}.\nPassage:\nStory number {i} ran long."),),
                template_id="bench", template_sha256="bench", sampling=SamplingParams(seed=i))
        for i in range(count)
    ]


def run_one(concurrency: int | AdaptiveLimit, args: argparse.Namespace, overload: str) -> dict:
    """Send every request at this setting against a fresh server; return throughput and counts."""
    limit = concurrency if isinstance(concurrency, AdaptiveLimit) else None
    outcomes = {"ok": 0, "failed": 0}

    def on_result(request: Request, result: object) -> None:
        outcomes["ok" if isinstance(result, Completion) else "failed"] += 1

    async def send(llm: OpenAIChat) -> None:
        async with llm:
            await run_requests(llm, planned(args.requests), concurrency=concurrency, on_result=on_result)

    with FakeOpenAIServer(capacity=args.capacity, overload=overload, latency=args.latency,
                          overload_retry_after=args.retry_after) as srv:
        llm = OpenAIChat(srv.base_url, srv.model, timeout=30.0, max_retries=4, backoff=0.05, max_backoff=1.0,
                         on_retry=limit.on_retry if limit else None)
        started = time.perf_counter()
        asyncio.run(send(llm))
        wall = time.perf_counter() - started
        row = {"setting": limit.describe() if limit else concurrency, "wall_s": round(wall, 3), **outcomes,
               "throughput_rps": round(outcomes["ok"] / wall, 2), "server_requests": srv.count,
               "server_max_in_flight": srv.max_in_flight}
    if limit:
        row |= {"final_limit": limit.limit, "peak_limit": limit.peak, "increases": limit.increases,
                "decreases": limit.decreases}
    return row


def sweep(args: argparse.Namespace, overload: str) -> dict:
    """Fixed settings, then adaptive, in the same run; the ratio is adaptive / best fixed."""
    fixed = [run_one(n, args, overload) for n in FIXED]
    adaptive = run_one(AdaptiveLimit(start=4, max=32), args, overload)
    best = max(fixed, key=lambda row: row["throughput_rps"])
    ratio = adaptive["throughput_rps"] / best["throughput_rps"]
    return {"overload": overload, "fixed": fixed, "adaptive": adaptive, "best_fixed": best["setting"],
            "adaptive_vs_best_fixed": round(ratio, 3), "meets_target": ratio >= TARGET}


def show(result: dict) -> None:
    print(f"\noverload={result['overload']}")
    print(f"{'setting':<22}{'ok':>6}{'failed':>8}{'sent':>7}{'wall s':>9}{'req/s':>9}{'max in flight':>15}")
    for row in [*result["fixed"], result["adaptive"]]:
        print(f"{str(row['setting']):<22}{row['ok']:>6}{row['failed']:>8}{row['server_requests']:>7}"
              f"{row['wall_s']:>9.2f}{row['throughput_rps']:>9.1f}{row['server_max_in_flight']:>15}")
    a = result["adaptive"]
    print(f"adaptive: final limit {a['final_limit']}, peak {a['peak_limit']}, {a['increases']} up, {a['decreases']} down")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"adaptive / best fixed ({result['best_fixed']}): {result['adaptive_vs_best_fixed']:.2f}x ({verdict} >= {TARGET})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=160, help="requests per setting")
    parser.add_argument("--capacity", type=int, default=6, help="the server's hidden concurrency")
    parser.add_argument("--latency", type=float, default=0.06, help="seconds per answer within capacity")
    parser.add_argument("--retry-after", type=float, default=0.5, help="Retry-After of the server's 429s")
    parser.add_argument("--overload", choices=["reject", "slow", "both"], default="both")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/concurrency-<date>.json")
    args = parser.parse_args()

    modes = ["reject", "slow"] if args.overload == "both" else [args.overload]
    started = time.perf_counter()
    results = []
    for mode in modes:
        results.append(sweep(args, mode))
        show(results[-1])
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, {platform.python_version()}",
                  "requests": args.requests, "capacity": args.capacity, "latency_s": args.latency,
                  "retry_after_s": args.retry_after, "results": results}
        out = Path(__file__).parent / "results" / f"concurrency-{record['date']}.json"
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
