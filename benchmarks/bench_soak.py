"""Soak: `seedbed serve` for `--minutes` under mixed loopback load, then killed with SIGKILL mid-job.

The server is a real `seedbed serve` process (its LLM: an `engine.testing.FakeOpenAIServer` in this
process, `--latency` seconds per answer, that counts every request). While it runs:
- 16 clients search (POST /v1/search) and 2 hold grounded chats (POST /v1/chat/completions), each
  sending its next request as soon as the last is answered;
- a synthesis job is submitted, cancelled after a moment, submitted again and awaited, over and
  over (the shared LLM cache makes the resubmission pay only for what the cancelled one lacked);
- a bad request (whitespace query, k=0, broken JSON, unknown route) goes out every second;
- the server's RSS is read every 10 s.
Then a last job is started, the server is killed with SIGKILL while the job runs, and started again
on the same jobs folder: the job must resume by itself and finish, and no request the fake endpoint
answered before the kill may be asked again (only the few in flight at the kill).

Targets (issue 15): 0 responses 5xx, 0 lost jobs (every job submitted ends done or cancelled),
RSS flat within 10 % after warm-up (`--warmup` minutes), the killed job resumed and finished with
at most the requests in flight paid twice. Prints p50/p99 per route.

Usage:
    python benchmarks/bench_soak.py [--minutes 20] [--index reuters-sample] [--root indexes] [--latency 0.05]
        [--warmup 3] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import httpx

from engine.testing.server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUERIES = ["oil prices OPEC output", "quarterly net profit dividend", "central bank interest rates", "wheat exports",
           "merger talks shares", "trade deficit yen", "gold mine production", "crude oil pipeline"]
TASK = {"name": "soak", "strategy": "synthesizrr", "output": {"kind": "news headline", "min_words": 3, "max_words": 24},
        "examples_per_label": 20, "retrieval": {"min_similarity": 0.1, "assign_labels": False},
        "labels": [{"name": "Oil", "verbalization": "crude oil prices, OPEC and oil production"},
                   {"name": "Earnings", "verbalization": "company quarterly earnings, profits and dividends"}]}
BAD = [("post", "/v1/search", {"query": "   "}), ("post", "/v1/search", {"query": "oil", "k": 0}),
       ("post", "/v1/search", "{not json"), ("get", "/v1/nothing-here", None), ("post", "/v1/jobs", {"task": {}})]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, port: int, jobs: Path, llm_url: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.cli", "serve", "--index", args.index, "--root", str(args.root), "--no-auth",
               "--port", str(port), "--jobs-dir", str(jobs), "--base-url", llm_url, "--model", "fake-model"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEEDBED_CACHE_DIR": str(jobs.parent / "llm-cache"), "HF_HUB_OFFLINE": "1"}
    with open(log, "ab") as handle:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"seedbed serve exited with {server.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    sys.exit(f"seedbed serve did not answer /healthz within 180 s; see {log}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    """Counters shared by the load coroutines."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.jobs: dict[str, str] = {}  # job id -> last state seen
        self.rss: list[tuple[float, float]] = []

    def note(self, route: str, status: int, seconds: float) -> None:
        self.status[route][status] += 1
        self.latency[route].append(seconds)


async def timed(client: httpx.AsyncClient, load: Load, route: str, method: str, path: str, body=None) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        if isinstance(body, str):
            response = await client.request(method, path, content=body, headers={"content-type": "application/json"})
        else:
            response = await client.request(method, path, json=body)
    except httpx.HTTPError:
        load.note(route, 0, time.perf_counter() - started)  # no answer at all: counted apart from 5xx
        return None
    load.note(route, response.status_code, time.perf_counter() - started)
    return response


async def searcher(client, load, until: float, n: int) -> None:
    i = n
    while time.monotonic() < until:
        await timed(client, load, "search", "POST", "/v1/search", {"query": QUERIES[i % len(QUERIES)], "k": 10})
        i += 1


async def chatter(client, load, until: float, n: int) -> None:
    i = n
    while time.monotonic() < until:
        body = {"messages": [{"role": "user", "content": f"What happened to {QUERIES[i % len(QUERIES)]}?"}], "max_tokens": 64}
        await timed(client, load, "chat", "POST", "/v1/chat/completions", body)
        i += 1


async def bad_requests(client, load, until: float) -> None:
    i = 0
    while time.monotonic() < until:
        method, path, body = BAD[i % len(BAD)]
        await timed(client, load, "bad", method.upper(), path, body)
        i += 1
        await asyncio.sleep(1.0)


async def wait_job(client, load, job_id: str, states: tuple[str, ...], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        response = await timed(client, load, "jobs", "GET", f"/v1/jobs/{job_id}")
        if response is not None and response.status_code == 200:
            state = response.json()["state"]
            load.jobs[job_id] = state
            if state in states:
                return state
        await asyncio.sleep(0.5)
    return state


async def job_cycle(client, load, until: float) -> None:
    """Submit, cancel after a moment, submit again and wait for it: over and over."""
    while time.monotonic() < until:
        response = await timed(client, load, "jobs", "POST", "/v1/jobs", {"task": TASK, "index": None})
        if response is None or response.status_code != 202:
            await asyncio.sleep(1)
            continue
        first = response.json()["id"]
        load.jobs[first] = "queued"
        await asyncio.sleep(1.5)
        await timed(client, load, "jobs", "DELETE", f"/v1/jobs/{first}")
        await wait_job(client, load, first, ("cancelled", "done", "failed"))
        response = await timed(client, load, "jobs", "POST", "/v1/jobs", {"task": TASK, "index": None})
        if response is not None and response.status_code == 202:
            second = response.json()["id"]
            load.jobs[second] = "queued"
            await wait_job(client, load, second, ("done", "failed", "cancelled"))


async def sample_rss(load, pid: int, until: float, started: float) -> None:
    while time.monotonic() < until:
        load.rss.append((round(time.monotonic() - started, 1), round(rss_mb(pid), 1)))
        await asyncio.sleep(10)


async def soak(url: str, pid: int, seconds: float) -> Load:
    load = Load()
    started = time.monotonic()
    until = started + seconds
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(searcher(client, load, until, n) for n in range(16)),
                             *(chatter(client, load, until, n) for n in range(2)),
                             bad_requests(client, load, until), job_cycle(client, load, until),
                             sample_rss(load, pid, until, started))
        for job_id, state in list(load.jobs.items()):  # let the last ones end
            if state in ("queued", "running"):
                await wait_job(client, load, job_id, ("done", "failed", "cancelled"))
    return load


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else float("nan"))


def kill_and_resume(args, port: int, jobs: Path, fake: FakeOpenAIServer, log: Path) -> dict:
    """A job killed with its server mid-run resumes on restart; count what the endpoint answers twice."""
    server = start_server(args, port, jobs, fake.base_url, log)
    url = f"http://127.0.0.1:{port}"
    task = {**TASK, "name": "soak-kill", "examples_per_label": 60}
    job_id = httpx.post(f"{url}/v1/jobs", json={"task": task, "index": None}, timeout=60).json()["id"]
    before = fake.count
    deadline = time.monotonic() + 120
    while fake.count < before + 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait()
    at_kill = fake.count
    asked_before = Counter(json.dumps(body["messages"], sort_keys=True) for body in fake.chat_bodies()[before:])
    server = start_server(args, port, jobs, fake.base_url, log)
    state = "?"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()["state"]
        if state in ("done", "failed", "cancelled"):
            break
        time.sleep(0.5)
    job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    after = [json.dumps(body["messages"], sort_keys=True) for body in fake.chat_bodies()[at_kill:]]
    asked_again = sum(1 for prompt in after if prompt in asked_before)
    return {"job_state": state, "resumed": job.get("resumed"), "requests_before_kill": at_kill - before,
            "requests_after_restart": len(after), "asked_again": asked_again}


def tracebacks(text: str) -> list[list[str]]:
    """The server log's tracebacks, each as its lines (up to the exception line)."""
    found, current = [], None
    for line in text.splitlines():
        if line.startswith("Traceback"):
            current = [line]
            found.append(current)
        elif current is not None:
            current.append(line)
            if line and not line[0].isspace():
                current = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3, help="minutes before RSS must stay flat")
    parser.add_argument("--index", default="reuters-sample")
    parser.add_argument("--root", type=Path, default=ROOT / "indexes")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per fake LLM answer")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/soak-<date>.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seedbed-soak-") as folder, FakeOpenAIServer(latency=args.latency) as fake:
        jobs, log = Path(folder) / "jobs", Path(folder) / "serve.log"
        port = free_port()
        server = start_server(args, port, jobs, fake.base_url, log)
        print(f"seedbed serve (pid {server.pid}) on :{port}, index {args.index}; soaking for {args.minutes:g} min", flush=True)
        load = asyncio.run(soak(f"http://127.0.0.1:{port}", server.pid, args.minutes * 60))
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        kill = kill_and_resume(args, port, jobs, fake, log)
        errors = tracebacks(log.read_text(errors="replace"))

    fivexx = {route: sum(n for status, n in counts.items() if status >= 500) for route, counts in load.status.items()}
    no_answer = {route: counts.get(0, 0) for route, counts in load.status.items()}
    lost = [job for job, state in load.jobs.items() if state not in ("done", "cancelled")]
    steady = [mb for at, mb in load.rss if at >= args.warmup * 60]
    growth = (max(steady) / min(steady) - 1) if len(steady) >= 2 else float("nan")
    print(f"{'route':<7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    routes = {}
    for route in ("search", "chat", "jobs", "bad"):
        values = load.latency.get(route, [])
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        routes[route] = {"requests": len(values), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
                         "statuses": dict(sorted(load.status[route].items()))}
        print(f"{route:<7} {len(values):>8} {p50:>8.1f} {p99:>8.1f}  {dict(sorted(load.status[route].items()))}")
    if errors:
        print(f"server log: {len(errors)} traceback(s); the last:\n  " + "\n  ".join(errors[-1]))
    print(f"5xx: {sum(fivexx.values())} (target 0); no answer: {sum(no_answer.values())}; jobs: {len(load.jobs)}, "
          f"{Counter(load.jobs.values())}, lost {len(lost)} (target 0)")
    print(f"RSS after {args.warmup:g} min warm-up: {min(steady, default=0):.0f}-{max(steady, default=0):.0f} MB, "
          f"growth {growth:.1%} (target <= 10 %); samples {load.rss}")
    print(f"SIGKILL mid-job: job {kill['job_state']} after restart (resumed {kill['resumed']}x); endpoint asked "
          f"{kill['requests_before_kill']} before the kill, {kill['requests_after_restart']} after; "
          f"{kill['asked_again']} asked again (target: only those in flight, <= 4)")
    if args.record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"soak-{date.today().isoformat()}.json"
        record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}", "args": {k: str(v) for k, v in vars(args).items()},
                  "routes": routes, "5xx": fivexx, "no_answer": no_answer, "jobs": dict(Counter(load.jobs.values())),
                  "lost_jobs": lost, "rss_mb": load.rss, "rss_growth_after_warmup": round(growth, 4), "sigkill": kill}
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
