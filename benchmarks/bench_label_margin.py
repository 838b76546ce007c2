"""Choose `retrieval.label_margin` by measurement: how precise is label assignment at each margin?

Label assignment keeps a passage for label y only when its best cosine to y's queries (verbalization
and seeds) beats its best cosine to every other label's queries by the margin. Two measurements,
same embedder and queries as `seedbed synth`:

1. Human-labelled text from the same domain (AG News train rows, never the test split): for each
   margin, the precision of the assignment (a row assigned to y is truly y) and its recall (rows
   assigned to their true label, over all rows), per label and overall.
2. The retrieval corpus (an index, e.g. news-mix): how many of the passages each label retrieves
   survive, and where the survivors come from (the corpus's `group`/`source` metadata), so that a
   margin that starves a label is visible.

Usage:
    python benchmarks/bench_label_margin.py --task benchmarks/tasks/ag_news.yaml --index news-mix \
        --train ../shared/data/ag_news/train_subset_8k_jointmatch.csv --per-label 400
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from engine.config import load_task
from engine.index.reader import Index
from engine.retrieval.retrieve import label_queries, label_scores, retrieve_for_task

MARGINS = (-1.0, 0.0, 0.02, 0.04, 0.05, 0.06, 0.08, 0.10, 0.15)
AG_LABELS = {1: "World", 2: "Sports", 3: "Business", 4: "Sci/Tech"}


def human_rows(path: Path, per_label: int, seed: int) -> tuple[list[str], list[str]]:
    frame = pl.read_csv(path)
    frame = frame.with_columns(pl.col("label").replace_strict(AG_LABELS, return_dtype=pl.Utf8).alias("name"))
    parts = [frame.filter(pl.col("name") == name).sample(n=per_label, seed=seed) for name in AG_LABELS.values()]
    rows = pl.concat(parts)
    return rows["content"].to_list(), rows["name"].to_list()


def measure_human(index: Index, task, texts: list[str], truth: list[str]) -> list[dict]:
    queries = {spec.name: index.embed_queries(label_queries(spec)) for spec in task.labels}
    vectors = index.embedder.encode(texts)
    scores = label_scores(vectors, queries)
    names = list(queries)
    matrix = np.stack([scores[n] for n in names], axis=1)
    order = np.sort(matrix, axis=1)
    best = matrix.argmax(axis=1)
    margin = order[:, -1] - order[:, -2]
    rows = []
    for m in MARGINS:
        kept = margin >= m
        assigned = [names[i] for i in best]
        per_label = {}
        for name in names:
            mine = kept & (np.array(assigned) == name)
            true_mine = np.array(truth) == name
            per_label[name] = {"precision": round(float((np.array(truth)[mine] == name).mean()), 3) if mine.any() else None,
                               "recall": round(float((mine & true_mine).sum() / true_mine.sum()), 3)}
        correct = kept & (np.array(assigned) == np.array(truth))
        rows.append({"margin": m, "kept": int(kept.sum()), "precision": round(float(correct.sum() / max(1, kept.sum())), 3),
                     "recall": round(float(correct.sum() / len(truth)), 3), "per_label": per_label})
    return rows


def measure_corpus(index: Index, task, wanted: int, floors: list[float]) -> list[dict]:
    import dataclasses

    rows = []
    for floor, m in [(f, m) for f in floors for m in MARGINS]:
        retrieval = dataclasses.replace(task.retrieval, label_margin=m, relax_limit=0.0, assign_labels=m > -1.0,
                                        min_similarity=floor)
        picks, report = retrieve_for_task(index, dataclasses.replace(task, retrieval=retrieval), wanted)
        per_label = {}
        for name, hits in picks.items():
            groups = Counter(_group(h.passage) for h in hits)
            per_label[name] = {"assigned": report.per_label[name]["assigned"], "picked": len(hits),
                               "sources": dict(groups.most_common(4))}
        rows.append({"min_similarity": floor, "margin": m, "per_label": per_label})
    return rows


def _group(passage) -> str:
    meta = passage.metadata or {}
    group = str(meta.get("group") or meta.get("source") or passage.source)
    if group.startswith(("rec.sport", "sci.", "comp.")):
        return group.split(".")[0] + "." + group.split(".")[1]
    return "reuters" if meta.get("source") == "reuters21578" else group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=Path("benchmarks/tasks/ag_news.yaml"))
    parser.add_argument("--index", default="news-mix")
    parser.add_argument("--root", type=Path, default=Path("indexes"))
    parser.add_argument("--train", type=Path, default=Path("../shared/data/ag_news/train_subset_8k_jointmatch.csv"))
    parser.add_argument("--per-label", type=int, default=400, help="human rows per label")
    parser.add_argument("--wanted", type=int, default=200, help="passages retrieved per label (100 examples x 2)")
    parser.add_argument("--min-similarity", type=float, nargs="+", default=None,
                        help="lower bounds of the band to try on the corpus (default: the task's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    task = load_task(args.task)
    index = Index.open(args.index, args.root)
    texts, truth = human_rows(args.train, args.per_label, seed=7)
    human = measure_human(index, task, texts, truth)
    corpus = measure_corpus(index, task, args.wanted, args.min_similarity or [task.retrieval.min_similarity])
    print(f"human AG News train rows ({len(texts)}): margin -> kept, precision, recall (precision per label)")
    for row in human:
        labels = "  ".join(f"{n} {v['precision']}" for n, v in row["per_label"].items())
        print(f"  {row['margin']:>5}: kept {row['kept']:>5}  precision {row['precision']:.3f}  recall {row['recall']:.3f}   {labels}")
    print(f"index {args.index!r}, {args.wanted} wanted per label: band floor, margin -> assigned per label "
          "(top sources of the picks)")
    for row in corpus:
        labels = "  ".join(f"{n} {v['assigned']} {v['sources']}" for n, v in row["per_label"].items())
        print(f"  {row['min_similarity']:>4} {row['margin']:>5}: {labels}")
    record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "task": str(args.task), "index": args.index, "embedder": index.manifest.embedder,
              "human_rows": len(texts), "human": human, "corpus": corpus}
    write_record(args.out / f"label-margin-{args.index}-{record['date']}.json", record)


def write_record(path: Path, record: dict) -> None:
    """Write a benchmark record as indented JSON (its folder made if needed) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
