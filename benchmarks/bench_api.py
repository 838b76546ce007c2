"""Load on `seedbed serve`: POST /v1/search at 16 concurrent clients on loopback, against in-process search.

Both sides run the same queries (AG News test titles) at the same concurrency in the same run: the
in-process side calls `Index.search` from 16 threads; the HTTP side sends 16 concurrent streams of
requests to a real uvicorn server in this process. Prints throughput, p50/p99 latency, errors and
the HTTP/in-process throughput ratio (the cost of the HTTP layer). Bounded: `--requests` per side
and `--max-seconds`.

Usage: python benchmarks/bench_api.py [--index reuters-sample] [--requests 800] [--clients 16] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import uvicorn

from engine.api import ServeConfig, create_app
from engine.index.reader import Index
from engine.testing import ScriptedLLM

AG_NEWS_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ag_news" / "test.csv"
RESULTS = Path(__file__).parent / "results"
KEY = "bench-key-0123456789abcdef"


def queries(count: int) -> list[str]:
    with open(AG_NEWS_TEST, encoding="utf-8") as handle:
        titles = [row[1] for row in csv.reader(handle)]
    return [titles[i % len(titles)] for i in range(count)]


def summary(latencies: list[float], seconds: float, errors: int) -> dict:
    ordered = sorted(latencies)
    return {"requests": len(latencies), "errors": errors, "seconds": round(seconds, 3),
            "per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)}


def in_process(index: Index, items: list[str], clients: int, k: int) -> dict:
    def one(query: str) -> float:
        start = time.perf_counter()
        index.search(query, k=k, mode="hybrid")
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, items))
    return summary(latencies, time.perf_counter() - start, 0)


async def over_http(url: str, items: list[str], clients: int, k: int, max_seconds: float) -> dict:
    latencies, errors = [], 0
    pending = iter(items)
    deadline = time.perf_counter() + max_seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for query in pending:
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            response = await http.post("/v1/search", json={"query": query, "k": k, "mode": "hybrid"})
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                                 timeout=60) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return summary(latencies, seconds, errors)


def serve(index: Index, name: str) -> tuple[uvicorn.Server, str]:
    config = ServeConfig(indexes={name: index}, api_keys=frozenset({KEY}), jobs_dir=Path("runs") / "bench-api-jobs")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config, ScriptedLLM()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="reuters-sample")
    parser.add_argument("--root", default="indexes")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    index = Index.open(args.index, Path(args.root))
    items = queries(args.requests)
    index.search(items[0], k=args.k)  # warm up: load the embedder once, outside both timings
    local = in_process(index, items, args.clients, args.k)
    server, url = serve(index, args.index)
    try:
        http = asyncio.run(over_http(url, items, args.clients, args.k, args.max_seconds))
    finally:
        server.should_exit = True
    ratio = http["per_second"] / local["per_second"]
    for name, row in (("in-process", local), ("HTTP", http)):
        print(f"{name:>10}: {row['per_second']:7.1f} req/s, p50 {row['p50_ms']:6.1f} ms, p99 {row['p99_ms']:6.1f} ms, "
              f"{row['requests']} requests, {row['errors']} errors")
    print(f"HTTP / in-process throughput: {ratio:.3f} ({args.clients} concurrent clients, hybrid k={args.k})")
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
                  "index": args.index, "passages": len(index), "clients": args.clients, "k": args.k,
                  "in_process": local, "http": http, "ratio_http_in_process": round(ratio, 4)}
        path = RESULTS / f"api-load-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
