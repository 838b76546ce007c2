"""Search speed on a built index: dense, BM25 and hybrid latency, each against a baseline in the same run.

Baselines: rank-bm25's BM25Okapi over the same tokens (what bm25s replaces), and exact numpy
matrix-vector cosine over all vectors (what FAISS replaces). Queries are AG News test titles
(human text, never seen by the index). Also measured: the hybrid query end to end (embedding the
query included), the ANN's recall@10 against exact search, and how often bm25s's top-10 is
rank-bm25's. Prints a table and writes JSON to benchmarks/results/.

`--build-100k` first builds (once) the index `search-100k` from ../shared/data: the 50,000 IMDb
`unsup` reviews and the Reuters-21578 stories with a body, about 100,000 passages with the default
embedder (HNSW above dense.FLAT_MAX passages); a quarter of an hour of embedding on 2 cores.
`--rebuild-dense` first rebuilds the index's FAISS graph from its stored vectors with today's HNSW
settings (`engine.index.builder.rebuild_dense`; an index built before a change of them keeps its old
graph). For an HNSW index, recall and latency at efSearch 256, 512 and 1,024 are measured beside the default.

Usage: python benchmarks/bench_search.py [--index reuters-sample] [--queries 200]
       python benchmarks/bench_search.py --build-100k [--rebuild-dense] [--root indexes]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import platform
import subprocess
import sys
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from engine.index import dense, lexical
from engine.index.reader import Index

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
AG_NEWS_TEST = DATA / "ag_news" / "test.csv"
BIG = "search-100k"


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
    parser.add_argument("--build-100k", action="store_true", help=f"build (once) and measure the {BIG} index")
    parser.add_argument("--rebuild-dense", action="store_true",
                        help="first rebuild the index's FAISS graph from its stored vectors with today's HNSW settings")
    args = parser.parse_args()
    if args.build_100k:
        args.index = BIG
        build_big(Path(args.root))
    rebuilt_s = None
    if args.rebuild_dense:
        from engine.index.builder import rebuild_dense

        started = time.perf_counter()
        rebuild_dense(args.index, Path(args.root))
        rebuilt_s = time.perf_counter() - started
        print(f"rebuilt the dense index of {args.index} in {rebuilt_s:.0f} s", flush=True)

    index = Index.open(args.index, Path(args.root))
    texts = index.passages["text"].to_list()
    qs = queries(args.queries)
    qvecs = index.embed_queries(qs)
    all_vectors = index.vectors(np.arange(len(index)))
    okapi = lucene_okapi(lexical.tokenized(texts), k1=1.5, b=0.75)
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
        "search_hybrid_end_to_end": summary(timed(lambda q: index.search(q, 10, "hybrid"), qs)),
    }
    exact = [set(_numpy_top10(all_vectors, v).tolist()) for v in qvecs]
    ann = [set(dense.search(index.dense_index, v[None, :], 10)[1].ravel().tolist()) for v in qvecs]
    quality = {"ann_recall_at_10": statistics.fmean(len(a & e) / 10 for a, e in zip(ann, exact)),
               "bm25_same_top10_as_rank_bm25": statistics.fmean(_same_top10(index, okapi, q) for q in qs)}
    if index.manifest.dense_kind == "hnsw":  # recall and latency at other efSearch values, for choosing the default
        for ef in (256, 384, 512, 768):
            dense.set_ef_search(index.dense_index, ef)
            hits = [set(dense.search(index.dense_index, v[None, :], 10)[1].ravel().tolist()) for v in qvecs]
            quality[f"ann_recall_at_10_ef{ef}"] = statistics.fmean(len(a & e) / 10 for a, e in zip(hits, exact))
            results[f"dense_top10_faiss_ef{ef}"] = summary(timed(lambda v: dense.search(index.dense_index, v[None, :], 10), qvecs))
        dense.set_ef_search(index.dense_index)
    ratios = {
        "bm25s_speedup_vs_rank_bm25": results["bm25_top10_rank_bm25_baseline"]["mean_ms"] / results["bm25_top10_bm25s"]["mean_ms"],
        "faiss_speedup_vs_numpy": results["dense_top10_numpy_baseline"]["mean_ms"] / results["dense_top10_faiss"]["mean_ms"],
        "hybrid_hits_vs_embedding_one_query": results["search_hybrid_hits"]["mean_ms"] / results["embed_query"]["mean_ms"],
    }
    record = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.python_version()}",
        "index": args.index, "passages": len(index), "dense_kind": index.manifest.dense_kind, "queries": len(qs),
        "dense_parameters": {**dense.graph_parameters(index.dense_index), "hnsw_ef_search": dense.HNSW_EF_SEARCH,
                             "graphs": len(getattr(index.dense_index, "shards", ())),
                             "rebuilt_seconds": rebuilt_s},
        "latency": results, "ratios": ratios, "quality": quality,
    }
    print(f"index {args.index}: {len(index)} passages ({index.manifest.dense_kind}), {len(qs)} AG News test titles as queries")
    print(f"{'operation':<32}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in results.items():
        print(f"{name:<32}{row['mean_ms']:>10.3f}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    for name, value in quality.items():
        print(f"{name}: {value:.3f}")
    out = Path(__file__).parent / "results" / f"search-{args.index}-{record['date']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def _same_top10(index, okapi, query: str) -> bool:
    """Whether bm25s's top-10 is rank-bm25's: as many passages (those scoring above 0, up to 10), each
    scoring at least rank-bm25's 10th best (a passage tied with the 10th may stand in for another)."""
    rows = lexical.top_k(lexical.scores(index.bm25, query), 10)[0]
    baseline = okapi.get_scores(lexical.tokenize(query))
    positive = np.sort(baseline[baseline > 0])[::-1]
    if len(rows) != min(10, len(positive)):
        return False
    return not len(rows) or bool(np.all(baseline[rows] >= positive[len(rows) - 1] * (1 - 1e-5)))


def lucene_okapi(corpus, k1: float, b: float):
    """rank-bm25's BM25Okapi with Lucene's idf, log(1 + (N - df + 0.5) / (df + 0.5)), the variant the index
    uses (engine/index/lexical.py): the same ranking (its extra (k1 + 1) factor is a constant), so the
    top-10s can be compared; Okapi's own idf differs for words in more than half the passages."""
    import math

    from rank_bm25 import BM25Okapi

    class Lucene(BM25Okapi):
        def _calc_idf(self, nd):
            self.idf = {word: math.log(1 + (self.corpus_size - df + 0.5) / (df + 0.5)) for word, df in nd.items()}

    return Lucene(corpus, k1=k1, b=b)


def build_big(root: Path) -> None:
    """Index IMDb unsup + Reuters-21578 (about 100,000 passages) as `search-100k` under `root`, unless it is there."""
    if (root / BIG / "manifest.json").exists():
        return
    corpus = root.parent / "runs" / "bench-search" / "search_100k.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with open(corpus, "w", encoding="utf-8") as out:
        with gzip.open(DATA / "imdb" / "unsup.jsonl.gz", "rt", encoding="utf-8") as src:
            for line in src:
                row = json.loads(line)
                text = " ".join(row["text"].replace("<br />", " ").split())
                out.write(json.dumps({"id": f"imdb-{row['id']}", "text": text}) + "\n")
        with open(DATA / "reuters21578" / "reuters21578.jsonl", encoding="utf-8") as src:
            for line in src:
                row = json.loads(line)
                if (row.get("text") or "").strip():
                    out.write(json.dumps({"id": f"reuters-{row['newid']}", "text": f"{row.get('title') or ''}\n{row['text']}"}) + "\n")
    print(f"== indexing {corpus} as {BIG} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "engine.cli", "index", str(corpus), "--name", BIG, "--root", str(root)],
                   cwd=ROOT, check=True)


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
