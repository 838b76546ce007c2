"""Compare retrieval queries by measurement, with no LLM call: would a student trained on the picks generalize?

A refine run rewrites each picked passage into an example of its label and keeps its topic, so the
picks decide which parts of a label the synthetic set covers. This script retrieves for each task
spec given (the same retrieval as `seedbed synth`: queries, band, label assignment, MMR), takes the
first `--per-label` picks per label, cut to their first `--words` words, trains logistic regression
on their MiniLM embeddings with the label they were picked for, and scores it on human rows
(AG News train rows, never the test split the suite's students are scored on): accuracy, recall per
label and the most frequent confusions. A label whose picks cover only some of its topics (Business
queried by its verbalization and three seeds found 1987 earnings and bank stories in the news mix)
shows as low recall, and the rows it loses show where.

Usage:
    python benchmarks/bench_queries.py --index news-mix \
        --task benchmarks/tasks/ag_news_seeded.yaml --task benchmarks/tasks/ag_news_beats.yaml
"""

from __future__ import annotations

import argparse
import platform
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

from engine.config import load_task
from engine.index.reader import Index
from engine.metrics.students import label_errors
from engine.retrieval.retrieve import retrieve_for_task

from bench_label_margin import human_rows, write_record  # noqa: E402 (a sibling script: benchmarks/ is on sys.path)


def picks_as_examples(index: Index, task, per_label: int, words: int) -> tuple[list[str], list[str]]:
    """The first `per_label` picks per label, cut to `words` words, each with the label it was picked for."""
    picks, _ = retrieve_for_task(index, task, per_label)
    texts, labels = [], []
    for label, hits in picks.items():
        for hit in hits[:per_label]:
            texts.append(" ".join(hit.passage.text.split()[:words]))
            labels.append(label)
    return texts, labels


def score(index: Index, texts: list[str], labels: list[str], test_vectors: np.ndarray, truth: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=10.0, max_iter=2000).fit(index.embedder.encode(texts), labels)
    predicted = model.predict(test_vectors)
    errors = label_errors([predicted], truth)  # what `seedbed bench` reports per student
    return {"accuracy": round(float((predicted == truth).mean()), 3), "picked": dict(Counter(labels)),
            "recall_per_label": {name: round(r, 3) for name, r in errors["recall_per_label"].items()},
            "confusions": errors["confusions"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, action="append", required=True, help="a task spec; give several to compare")
    parser.add_argument("--index", default="news-mix")
    parser.add_argument("--root", type=Path, default=Path("indexes"))
    parser.add_argument("--per-label", type=int, default=100, help="picks per label (examples per label in the suite)")
    parser.add_argument("--words", type=int, default=100, help="words of each passage the student sees")
    parser.add_argument("--train", type=Path, default=Path("../shared/data/ag_news/train_subset_8k_jointmatch.csv"))
    parser.add_argument("--rows", type=int, default=500, help="human rows per label to score on")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    index = Index.open(args.index, args.root)
    texts, names = human_rows(args.train, args.rows, seed=11)
    test_vectors, truth = index.embedder.encode(texts), np.array(names)
    print(f"index {args.index!r}: a student trained on the first {args.per_label} picks per label, scored on "
          f"{len(names)} human rows of {args.train.name}")
    rows = {}
    for path in args.task:
        picked = picks_as_examples(index, load_task(path), args.per_label, args.words)
        rows[str(path)] = score(index, *picked, test_vectors, truth)
        r = rows[str(path)]
        print(f"  {path.name:<24} accuracy {r['accuracy']:.3f}  recall {r['recall_per_label']}  "
              f"confusions {r['confusions']}", flush=True)
    record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "index": args.index, "per_label": args.per_label, "words": args.words, "rows_per_label": args.rows,
              "train": args.train.name, "tasks": rows}
    write_record(args.out / f"queries-{args.index}-{record['date']}.json", record)


if __name__ == "__main__":
    main()
