"""Ray local against one process, on the same cores: synthesis throughput and its scaling over endpoints.

Synthesis: `--requests` distinct requests (2,000 by default) sent through `engine.calls.call_all`,
the path every round takes (journal, answers handed to the round loop), against
`engine.testing.FakeOpenAIServer` answering after `--latency` seconds (0.2), with `--concurrency`
requests in flight (64):
- in one process: the asyncio runner;
- on Ray (`--ray` local, `--workers` actors, each with concurrency / workers in flight, journalling
  into shards); the actors' start is counted (the timer starts before the RayLLM that starts them),
  though `seedbed synth --ray` starts them before it plans, which hides most of it in a real run.
  Ray's own start (`ray.init`, once per process) is printed, not counted.
The two alternate `--repeats` times; the ratio of median requests/s is printed (target >= 0.9).

Scaling: the same requests on Ray against 1, 2 and 4 fake endpoints (replicas) of `--capacity`
slots each (past it a server slows down quadratically, like a saturated one), with as many requests
in flight as the endpoints have slots (as a user sets --concurrency to the pool's slots): the
endpoints are the bottleneck, so throughput should grow near-linearly with them (ideal: count x
capacity / latency).

Indexing: `--index-docs` IMDb `unsup` reviews (split over 8 files) indexed by `build_index` in one
process and with `--ray` (`--workers` embedding actors), same embedder (`--embedder`), each from an
empty root: passages/s of each and the ratio (target >= 0.8), and whether both kept the same rows
(passages, duplicates dropped, fingerprint). `--index-docs 0` skips it.

Dedup (`--dedup-keys N`, off by default): N passage keys (5 % repeated ids, made on the workers)
deduplicated as `seedbed index --ray` does it (a Ray Data hash groupby by id; only the duplicates
reach the driver) against collecting every key on the driver (how it was done before): seconds and
the driver's peak Python memory (tracemalloc) of each. `--requests 0` skips synthesis and scaling.

Batch sizes (`--batch-sizes 64,256,1024`, off by default): the Ray build's read, dedup, embed and
write of `--tune-docs` reviews at each embedding batch size: passages/s, and the best against the
size the build uses (`engine.index.distributed.RAY_BATCH`).

Usage:
    python benchmarks/bench_ray.py [--requests 2000] [--latency 0.2] [--concurrency 64] [--workers 2]
        [--capacity 16] [--repeats 2] [--index-docs 14000] [--embedder all-MiniLM-L6-v2] [--dedup-keys 0]
        [--record]
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

from engine.calls import Progress, call_all
from engine.journal import Journal
from engine.llm.client import OpenAIChat
from engine.index.distributed import RAY_BATCH
from engine.llm.distributed import RayLLM, connect
from engine.llm.replicas import ReplicaPool
from engine.testing.server import FakeOpenAIServer
from engine.types import Request, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "fake-model"


def requests_for(count: int) -> list[Request]:
    """`count` distinct requests shaped like a rewrite prompt (about 150 words each)."""
    body = " ".join(f"word{i}" for i in range(140))
    return [Request(id=f"bench-{i:06d}", label="x", messages=(("system", "Rewrite the passage as a news summary."),
                                                              ("user", f"Passage {i}: {body}")),
                    template_id="bench", template_sha256="0", sampling=SamplingParams(max_tokens=64)) for i in range(count)]


def run_once(make_llm, requests: list[Request], concurrency: int) -> float:
    """Wall seconds to make the LLM (a RayLLM starts its actors) and answer every request through
    call_all into a fresh journal."""
    with tempfile.TemporaryDirectory() as folder, Journal(Path(folder) / "journal.jsonl") as journal:
        progress = Progress()
        started = time.perf_counter()
        llm = make_llm()
        answers = call_all(requests, llm, journal, concurrency, progress, None)
        seconds = time.perf_counter() - started
        assert len(answers) == len(requests), f"{len(requests) - len(answers)} requests unanswered"
        if isinstance(llm, RayLLM):
            llm.shutdown()  # the next repeat starts its actors again, as a new run would
        return seconds


def clients(urls: list[str]):
    made = [OpenAIChat(url, MODEL, max_retries=2) for url in urls]
    return made[0] if len(made) == 1 else ReplicaPool(made)


def measure_synthesis(args, requests: list[Request]) -> tuple[dict, dict[int, float]]:
    """In-process against Ray over one fake endpoint (requests/s and the ratio), and Ray's scaling over 1, 2 and 4."""
    with FakeOpenAIServer(latency=args.latency) as server:
        local, distributed = [], []
        for _ in range(args.repeats):
            local.append(args.requests / run_once(lambda: clients([server.base_url]), requests, args.concurrency))
            distributed.append(args.requests / run_once(
                lambda: RayLLM(clients([server.base_url]), [(server.base_url, "none")], workers=args.workers),
                requests, args.concurrency))
    ratio = statistics.median(distributed) / statistics.median(local)
    print(f"synthesis  in-process {statistics.median(local):7.1f} req/s   Ray {statistics.median(distributed):7.1f} req/s"
          f"   ratio {ratio:.2f} (target >= 0.9)   runs: {[round(x, 1) for x in local]} / {[round(x, 1) for x in distributed]}")

    scaling = {}
    for count in (1, 2, 4):
        servers = [FakeOpenAIServer(latency=args.latency, capacity=args.capacity, overload="slow") for _ in range(count)]
        for server in servers:
            server.__enter__()
        try:
            urls = [server.base_url for server in servers]
            scaling[count] = args.requests / run_once(
                lambda: RayLLM(clients(urls), [(url, "none") for url in urls], workers=args.workers),
                requests, args.capacity * count)
        finally:
            for server in servers:
                server.__exit__(None, None, None)
        ideal = count * args.capacity / args.latency
        print(f"scaling    {count} endpoint(s) x {args.capacity} slots, {args.capacity * count} in flight: "
              f"{scaling[count]:7.1f} req/s ({scaling[count] / scaling[1]:.2f}x one endpoint; {scaling[count] / ideal:.2f} of the ideal)")
    return {"in_process_rps": [round(x, 2) for x in local], "ray_rps": [round(x, 2) for x in distributed],
            "ratio": round(ratio, 3)}, scaling


def write_corpus(folder: Path, docs: int) -> Path:
    """The first `docs` IMDb `unsup` reviews as 8 JSONL files under `folder/corpus`."""
    import gzip

    corpus = folder / "corpus"
    corpus.mkdir()
    handles = [open(corpus / f"part-{i}.jsonl", "w", encoding="utf-8") for i in range(8)]
    with gzip.open(ROOT.parent / "shared" / "data" / "imdb" / "unsup.jsonl.gz", "rt", encoding="utf-8") as src:
        for n, line in enumerate(src):
            if n >= docs:
                break
            row = json.loads(line)
            handles[n % 8].write(json.dumps({"text": row["text"].replace("<br />", " ")}) + "\n")
    for handle in handles:
        handle.close()
    return corpus


def measure_indexing(args) -> dict:
    """build_index in one process and on Ray over the same files; passages/s and the ratio."""
    from engine.corpus import CorpusOptions
    from engine.embed import get_embedder
    from engine.index.builder import build_index

    with tempfile.TemporaryDirectory() as folder:
        corpus = write_corpus(Path(folder), args.index_docs)
        embedder = get_embedder(args.embedder)
        rates, built = {}, {}
        for side, ray in (("in_process", None), ("ray", "local")):
            started = time.perf_counter()
            result = build_index(corpus, f"bench-{side}", embedder, root=Path(folder) / "indexes", options=CorpusOptions(),
                                 ray=ray, ray_workers=args.workers)
            rates[side] = result.manifest.passages / (time.perf_counter() - started)
            built[side] = (result.manifest.passages, result.stats.duplicates, result.manifest.corpus_fingerprint)
    ratio = rates["ray"] / rates["in_process"]
    same = built["ray"] == built["in_process"]  # passages, duplicates dropped and the fingerprint over ids in row order
    print(f"indexing   {result.manifest.passages} passages ({result.stats.duplicates} duplicates dropped), {args.embedder}: "
          f"in-process {rates['in_process']:.1f} passages/s   Ray ({args.workers} actors) {rates['ray']:.1f} passages/s   "
          f"ratio {ratio:.2f} (target >= 0.8)   same rows: {'yes' if same else 'NO'}")
    return {"passages": result.manifest.passages, "duplicates": result.stats.duplicates, "embedder": args.embedder,
            "passages_per_s": {k: round(v, 2) for k, v in rates.items()}, "ratio": round(ratio, 3), "same_rows": same}


def measure_batch_sizes(args) -> dict:
    """The Ray build's read, dedup, embed and write (`fill_on_ray`) of `--tune-docs` reviews at each of
    `--batch-sizes` passages per embedding batch: passages/s of each."""
    from engine.corpus import CorpusOptions
    from engine.embed import get_embedder
    from engine.index.distributed import fill_on_ray

    embedder = get_embedder(args.embedder)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        corpus = write_corpus(Path(folder), args.tune_docs)
        for size in (int(x) for x in args.batch_sizes.split(",")):
            work = Path(folder) / f"work-{size}"
            work.mkdir()
            started = time.perf_counter()
            written, _, _ = fill_on_ray(work, corpus, CorpusOptions(), embedder.id, embedder.dim, address=None,
                                        workers=args.workers, batch_size=size)
            rates[size] = written / (time.perf_counter() - started)
            print(f"batch size {size:5d}: {written} passages, {rates[size]:.1f} passages/s", flush=True)
    best = max(rates, key=rates.get)
    print(f"batch sizes: best {best} ({rates[best]:.1f} passages/s; the build uses {RAY_BATCH})")
    return {"docs": args.tune_docs, "embedder": args.embedder, "passages_per_s": {str(k): round(v, 2) for k, v in rates.items()},
            "best": best, "default": RAY_BATCH}


def measure_dedup(args) -> dict:
    """Exact dedup of `--dedup-keys` passage keys (5 % repeated ids, made on the workers) as seedbed index --ray
    does it (a Ray Data hash groupby; only duplicates reach the driver) against the way it did before
    (every key collected on the driver, a set): seconds and the driver's peak Python memory for each."""
    import hashlib
    import tracemalloc

    import pyarrow as pa
    import ray

    from engine.index.distributed import _duplicates

    count = args.dedup_keys

    def keys(batch):
        ids = [hashlib.sha1(str(i % int(count * 0.95)).encode()).hexdigest()[:16] for i in batch["id"].tolist()]
        return pa.table({"file_no": batch["id"] // 10_000, "seq": batch["id"] % 10_000, "id": ids})

    data = ray.data.range(count, override_num_blocks=16).map_batches(keys, batch_format="numpy").materialize()
    results = {}
    for side in ("driver", "ray"):
        tracemalloc.start()
        started = time.perf_counter()
        if side == "ray":
            dropped = sum(len(seqs) for seqs in _duplicates(data, buckets=2 * args.workers).values())
        else:
            seen, dropped = set(), 0
            for row in sorted(data.take_all(), key=lambda r: (r["file_no"], r["seq"])):
                dropped += row["id"] in seen
                seen.add(row["id"])
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[side] = {"seconds": round(seconds, 2), "driver_peak_mb": round(peak / 2**20, 1), "duplicates": dropped}
    print(f"dedup      {count} keys, {results['ray']['duplicates']} duplicates: on the driver {results['driver']['seconds']} s, "
          f"peak {results['driver']['driver_peak_mb']} MB   Ray groupby {results['ray']['seconds']} s, peak "
          f"{results['ray']['driver_peak_mb']} MB   same duplicates: "
          f"{'yes' if results['ray']['duplicates'] == results['driver']['duplicates'] else 'NO'}")
    return {"keys": count, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (default: seedbed's --ray-workers default)")
    parser.add_argument("--capacity", type=int, default=16, help="requests each fake endpoint serves at full speed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--index-docs", type=int, default=14000, help="IMDb unsup reviews to index (0: skip)")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--dedup-keys", type=int, default=0, help="also time the exact dedup over this many keys")
    parser.add_argument("--batch-sizes", default="", help="also time the Ray build at these embedding batch sizes, e.g. 64,256,1024")
    parser.add_argument("--tune-docs", type=int, default=2000, help="IMDb unsup reviews for --batch-sizes")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/ray-<date>.json")
    args = parser.parse_args()
    requests = requests_for(args.requests)
    started = time.perf_counter()
    connect("local", num_cpus=os.cpu_count())
    ray_start = time.perf_counter() - started
    print(f"Ray local started in {ray_start:.1f} s ({os.cpu_count()} CPUs); {args.requests} requests, "
          f"{args.latency * 1000:.0f} ms latency, {args.concurrency} in flight, {args.workers} Ray workers")

    synthesis, scaling = measure_synthesis(args, requests) if args.requests else (None, {})
    indexing = measure_indexing(args) if args.index_docs else None
    dedup = measure_dedup(args) if args.dedup_keys else None
    batches = measure_batch_sizes(args) if args.batch_sizes else None
    if args.record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        parts = [name for name, ran in (("synthesis", args.requests), ("indexing", args.index_docs), ("dedup", args.dedup_keys),
                                        ("batches", args.batch_sizes)) if ran]
        stem = "ray" if args.requests and args.index_docs else "-".join(["ray", *parts])  # a partial run: its own record
        path = RESULTS / f"{stem}-{date.today().isoformat()}.json"
        record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}", "args": vars(args), "ray_start_seconds": round(ray_start, 2),
                  "synthesis": synthesis,
                  "scaling_rps": {str(k): round(v, 2) for k, v in scaling.items()}, "indexing": indexing, "dedup": dedup,
                  "batch_sizes": batches}
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
