"""Ingestion: `seedbed index` passages/s over the bare embedder's, and its peak memory as the corpus grows.

Both parts index real text: IMDb reviews (unsup, then train and test; `<br />` removed) from
../shared/data/imdb, written to a JSONL corpus in a temp folder.

1. Throughput (target >= 0.9): `--passages` passages (10,000) through `build_index` in this process
   with the default embedder (MiniLM: read, chunk, dedup, embed, LanceDB, FAISS, BM25, compaction,
   manifest), against `embedder.encode` on the very passages that index holds (read back from it),
   same batch size, same process, the model loaded once before either side is timed. The sides
   alternate `--repeats` times; the ratio of median passages/s is printed.
2. Memory (target: peak RSS grows <= 15 % from `--small` to `--large` passages, 20,000 -> 200,000):
   `seedbed index` as a child process with the cheap `hash-64` embedder (so the large build takes
   minutes, and what is measured is Seedbed's own buffers: the reader, the BM25 build, the LanceDB
   writer, FAISS), peak RSS from the kernel (the child's VmHWM at exit). The embedder is not what grows.

Usage: python benchmarks/bench_index.py [--passages 10000] [--small 20000] [--large 200000]
       [--repeats 1] [--parts throughput,memory] [--record]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imdb"
RESULTS = Path(__file__).parent / "results"
CHUNK_WORDS = 80  # an IMDb review (~230 words) makes about three passages


def reviews():
    """IMDb review texts, unsup first, then train and test."""
    for split in ("unsup", "train", "test"):
        with gzip.open(DATA / f"{split}.jsonl.gz", "rt", encoding="utf-8") as src:
            for line in src:
                yield re.sub(r"<br\s*/?>", " ", json.loads(line)["text"])


def write_corpus(path: Path, passages: int) -> int:
    """A JSONL corpus of whole reviews holding about `passages` passages of CHUNK_WORDS; returns documents."""
    words = documents = 0
    with open(path, "w", encoding="utf-8") as dst:
        for text in reviews():
            dst.write(json.dumps({"id": f"r{documents}", "text": text}) + "\n")
            documents += 1
            words += len(text.split())
            if words >= passages * CHUNK_WORDS * 0.85:  # chunks end at sentences, so a little under the cap
                break
    return documents


def throughput(folder: Path, passages: int, repeats: int) -> dict:
    from engine.corpus import CorpusOptions
    from engine.embed import get_embedder
    from engine.index.builder import build_index
    from engine.index.reader import Index

    corpus = folder / "throughput.jsonl"
    documents = write_corpus(corpus, passages)
    embedder = get_embedder()
    embedder.encode(["warm up the model"] * 8)
    options = CorpusOptions(chunk_words=CHUNK_WORDS)
    seedbed, bare, texts = [], [], None
    for repeat in range(repeats):
        started = time.perf_counter()
        result = build_index(corpus, "throughput", embedder, root=folder / "indexes", options=options, force=True)
        elapsed = time.perf_counter() - started
        if texts is None:
            texts = Index.open("throughput", folder / "indexes", embedder=embedder).passages["text"].to_list()
        count = result.manifest.passages
        seedbed.append(count / elapsed)
        started = time.perf_counter()
        embedder.encode(texts, batch_size=64)
        bare.append(len(texts) / (time.perf_counter() - started))
        print(f"  repeat {repeat + 1}: seedbed index {seedbed[-1]:.1f} passages/s, bare embedder {bare[-1]:.1f} "
              f"passages/s ({count} passages from {documents} reviews)", flush=True)
    ratio = statistics.median(seedbed) / statistics.median(bare)
    return {"passages": len(texts), "documents": documents, "seedbed_passages_per_s": statistics.median(seedbed),
            "bare_embedder_passages_per_s": statistics.median(bare), "ratio": round(ratio, 3),
            "target": ">= 0.9", "met": ratio >= 0.9}


# The child reports its own peak, VmHWM of its address space, at exit: the kernel's ru_maxrss (wait4)
# also counts the pages the child shared with this process between fork and exec, which is this
# process's whole RSS once the throughput part has loaded MiniLM.
_HWM_PROBE = """
import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status") as status, open(os.environ["SEEDBED_BENCH_HWM"], "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM")).split()[1])
atexit.register(_hwm)
sys.argv = ["seedbed", *sys.argv[1:]]
runpy.run_module("engine.cli", run_name="__main__", alter_sys=True)
"""


def peak_rss(folder: Path, passages: int) -> dict:
    """`seedbed index` of about `passages` passages in a child: its peak RSS (MiB), passages and time."""
    corpus = folder / f"memory-{passages}.jsonl"
    documents = write_corpus(corpus, passages)
    name = f"mem{passages}"
    command = [sys.executable, "-c", _HWM_PROBE, "index", str(corpus), "--name", name, "--root", str(folder / "indexes"),
               "--embedder", "hash-64", "--chunk-words", str(CHUNK_WORDS)]
    hwm = folder / f"hwm-{passages}"
    started = time.perf_counter()
    child = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env={**os.environ, "TQDM_DISABLE": "1", "SEEDBED_BENCH_HWM": str(hwm)})
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"seedbed index failed ({child.returncode}): {child.stderr.decode()[-2000:]}")
    manifest = json.loads((folder / "indexes" / name / "manifest.json").read_text(encoding="utf-8"))
    shutil.rmtree(folder / "indexes" / name)
    corpus.unlink()
    rss = int(hwm.read_text()) / 1024  # kB
    print(f"  {manifest['passages']} passages from {documents} reviews: peak RSS {rss:.0f} MiB, {elapsed:.0f} s", flush=True)
    return {"passages": manifest["passages"], "documents": documents, "peak_rss_mib": round(rss, 1),
            "seconds": round(elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--parts", default="throughput,memory")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/index-<date>.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                                                           f"Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        folder = Path(tmp)
        if "throughput" in parts:
            print(f"== throughput: seedbed index vs the bare embedder on ~{args.passages} passages", flush=True)
            record["throughput"] = result = throughput(folder, args.passages, args.repeats)
            print(f"ratio {result['ratio']} (target >= 0.9: {'met' if result['met'] else 'NOT met'})", flush=True)
        if "memory" in parts:
            print(f"== memory: seedbed index (hash-64 embedder), ~{args.small} then ~{args.large} passages", flush=True)
            small, large = peak_rss(folder, args.small), peak_rss(folder, args.large)
            growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
            record["memory"] = {"small": small, "large": large, "growth": round(growth, 3), "target": "<= 0.15",
                                "met": growth <= 0.15}
            print(f"peak RSS growth {growth:+.1%} from {small['passages']} to {large['passages']} passages "
                  f"(target <= +15 %: {'met' if growth <= 0.15 else 'NOT met'})", flush=True)
    if args.record:  # the parts measured now replace the same day's; the others are kept
        path = RESULTS / f"index-{record['date']}.json"
        if path.is_file():
            record = {**json.loads(path.read_text(encoding="utf-8")), **record}
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
