"""Search speed on a built index: dense, BM25 and hybrid latency, each against a baseline in the same run.

Baselines: rank-bm25's BM25Okapi over the same tokens (what bm25s replaces), and exact numpy
matrix-vector cosine over all vectors (what FAISS replaces). Queries are AG News test titles
(human text, never seen by the index). Prints a table and writes JSON to benchmarks/results/.

Usage: python benchmarks/bench_search.py [--index reuters-sample] [--queries 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from engine.index import dense, lexical
from engine.index.reader import Index

AG_NEWS_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ag_news" / "test.csv"


def queries(count: int) -> list[str]:
    with open(AG_NEWS_TEST, encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    step = max(1, len(rows) // count)
    return [rows[i][1] for i in range(0, len(rows), step)][:count]


def timed(func, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        func(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"mean_ms": statistics.fmean(ms), "p50_ms": ordered[len(ms) // 2], "p99_ms": ordered[int(len(ms) * 0.99) - 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="reuters-sample")
    parser.add_argument("--root", default="indexes")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    index = Index.open(args.index, Path(args.root))
    texts = index.passages["text"].to_list()
    qs = queries(args.queries)
    qvecs = index.embed_queries(qs)
    all_vectors = index.vectors(np.arange(len(index)))
    from rank_bm25 import BM25Okapi

    okapi = BM25Okapi(lexical.tokenized(texts), k1=1.5, b=0.75)
    pairs = list(zip(qs, qvecs))

    results = {
        "embed_query": summary(timed(lambda q: index.embed_queries([q]), qs)),
        "dense_top10_faiss": summary(timed(lambda v: dense.search(index.dense_index, v[None, :], 10), qvecs)),
        "dense_top10_numpy_baseline": summary(timed(lambda v: _numpy_top10(all_vectors, v), qvecs)),
        "bm25_top10_bm25s": summary(timed(lambda q: lexical.top_k(lexical.scores(index.bm25, q), 10), qs)),
        "bm25_top10_rank_bm25_baseline": summary(timed(lambda q: _numpy_top10_scores(okapi.get_scores(lexical.tokenize(q))), qs)),
        "search_dense_hits": summary(timed(lambda p: index.search(p[0], 10, "dense", query_vector=p[1]), pairs)),
        "search_bm25_hits": summary(timed(lambda p: index.search(p[0], 10, "bm25", query_vector=p[1]), pairs)),
        "search_hybrid_hits": summary(timed(lambda p: index.search(p[0], 10, "hybrid", query_vector=p[1]), pairs)),
    }
    ratios = {
        "bm25s_speedup_vs_rank_bm25": results["bm25_top10_rank_bm25_baseline"]["mean_ms"] / results["bm25_top10_bm25s"]["mean_ms"],
        "faiss_speedup_vs_numpy": results["dense_top10_numpy_baseline"]["mean_ms"] / results["dense_top10_faiss"]["mean_ms"],
        "hybrid_hits_vs_embedding_one_query": results["search_hybrid_hits"]["mean_ms"] / results["embed_query"]["mean_ms"],
    }
    record = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.python_version()}",
        "index": args.index, "passages": len(index), "dense_kind": index.manifest.dense_kind, "queries": len(qs),
        "latency": results, "ratios": ratios,
    }
    print(f"index {args.index}: {len(index)} passages ({index.manifest.dense_kind}), {len(qs)} AG News test titles as queries")
    print(f"{'operation':<32}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in results.items():
        print(f"{name:<32}{row['mean_ms']:>10.3f}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    out = Path(__file__).parent / "results" / f"search-{args.index}-{record['date']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def _numpy_top10(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    return _numpy_top10_scores(vectors @ query)


def _numpy_top10_scores(scores: np.ndarray) -> np.ndarray:
    top = np.argpartition(-scores, 10)[:10]
    return top[np.argsort(-scores[top])]


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
