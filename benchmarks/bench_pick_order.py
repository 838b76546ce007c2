"""Choose how retrieval orders a label's passages by measurement: how many picks are really on-label?

Label assignment decides which passages may serve a label; maximal marginal relevance (MMR) then
orders them, and the first picks are the ones rewritten. MMR trades relevance against redundancy,
and with a low lambda it favours passages unlike everything picked so far: outliers, often barely
about the label. This script measures the purity of the first `--wanted` picks per label on the
news mix, whose documents say where they come from: Sports is right when a pick comes from a
rec.sport group, Sci/Tech from sci.* or comp.*, Business from a Reuters story with an economic
topic, World from talk.politics.mideast or a Reuters story with none (a rough truth: untagged Reuters stories are often
business, tagged ones such as `trade` or `ship` often world news, and AG News files technology
companies under Sci/Tech). So a second truth: an oracle, logistic regression on the embeddings of
human AG News training rows (`--train`), as `seedbed bench` measures label fidelity. Also printed:
the mean pairwise cosine of the picks (diversity: lower is more diverse). No LLM call.

Usage:
    python benchmarks/bench_pick_order.py --index news-mix [--root indexes] [--wanted 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from datetime import date
from pathlib import Path

import numpy as np

from engine.config import load_task
from engine.index.reader import Index
from engine.retrieval.retrieve import retrieve_for_task

from bench_label_margin import human_rows, write_record  # noqa: E402 (a sibling script: benchmarks/ is on sys.path)

VARIANTS = {  # name -> retrieval overrides; each names its order in full (the task spec's own order may change)
    "margin 0.08, mmr 0.5": {"label_margin": 0.08, "mmr_lambda": 0.5, "mmr_relevance": "cosine"},
    "margin 0.08, 0.7 both": {"label_margin": 0.08, "mmr_lambda": 0.7, "mmr_relevance": "both"},
    "min 0.3, mmr 0.5": {"min_similarity": 0.3, "mmr_lambda": 0.5, "mmr_relevance": "cosine"},
    "mmr 0.5 on cosine": {"mmr_lambda": 0.5, "mmr_relevance": "cosine"},
    "mmr 0.7 on cosine": {"mmr_lambda": 0.7, "mmr_relevance": "cosine"},
    "mmr 0.9 on cosine": {"mmr_lambda": 0.9, "mmr_relevance": "cosine"},
    "mmr 0.5 on margin": {"mmr_lambda": 0.5, "mmr_relevance": "margin"},
    "mmr 0.7 on margin": {"mmr_lambda": 0.7, "mmr_relevance": "margin"},
    "mmr 0.5 on both": {"mmr_lambda": 0.5, "mmr_relevance": "both"},
    "mmr 0.7 on both": {"mmr_lambda": 0.7, "mmr_relevance": "both"},
}


def truth(passage) -> str:
    meta = passage.metadata or {}
    group = str(meta.get("group") or "")
    if group.startswith("rec.sport"):
        return "Sports"
    if group.startswith(("sci.", "comp.")):
        return "Sci/Tech"
    if group.startswith("talk.politics"):
        return "World"
    if meta.get("source") == "reuters21578":
        return "Business" if group else "World"
    return "?"


def oracle(index: Index, train: Path, per_label: int = 500):
    """Logistic regression on MiniLM embeddings of human AG News training rows: vectors -> label."""
    from sklearn.linear_model import LogisticRegression

    texts, names = human_rows(train, per_label, seed=7)  # the rows bench_label_margin measures assignment on
    return LogisticRegression(C=1.0, max_iter=2000).fit(index.embedder.encode(texts), names).predict


def measure(index: Index, task, wanted: int, predict) -> dict:
    picks, _ = retrieve_for_task(index, task, wanted)
    out = {}
    for label, hits in picks.items():
        right = [truth(h.passage) == label for h in hits]
        vectors = index.vectors(np.array([index.row_of(h.passage.id) for h in hits])) if hits else np.zeros((0, 1))
        agree = (predict(vectors) == label).tolist() if hits else []
        sims = vectors @ vectors.T if len(hits) > 1 else np.zeros((1, 1))
        pairwise = float((sims.sum() - np.trace(sims)) / (len(hits) * (len(hits) - 1))) if len(hits) > 1 else None
        half = max(1, len(hits) // 2)
        out[label] = {"picked": len(hits), "purity": round(float(np.mean(right)), 3) if hits else None,
                      "purity_first_half": round(float(np.mean(right[:half])), 3) if hits else None,
                      "oracle": round(float(np.mean(agree)), 3) if hits else None,
                      "oracle_first_half": round(float(np.mean(agree[:half])), 3) if hits else None,
                      "mean_pairwise_cosine": round(pairwise, 3) if pairwise is not None else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=Path("benchmarks/tasks/ag_news.yaml"))
    parser.add_argument("--index", default="news-mix")
    parser.add_argument("--root", type=Path, default=Path("indexes"))
    parser.add_argument("--wanted", type=int, default=200, help="passages per label (100 examples x 2)")
    parser.add_argument("--train", type=Path, default=Path("../shared/data/ag_news/train_subset_8k_jointmatch.csv"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    task = load_task(args.task)
    index = Index.open(args.index, args.root)
    predict = oracle(index, args.train)
    rows = {}
    print(f"index {args.index!r}, {args.wanted} picks per label: source purity, oracle agreement (first half) / "
          "mean pairwise cosine")
    for name, overrides in VARIANTS.items():
        variant = dataclasses.replace(task, retrieval=dataclasses.replace(task.retrieval, **overrides))
        rows[name] = measure(index, variant, args.wanted, predict)
        cells = "  ".join(f"{label} {v['picked']} {v['purity']}, {v['oracle']} ({v['oracle_first_half']}) / "
                          f"{v['mean_pairwise_cosine']}" for label, v in rows[name].items())
        purity = np.mean([v["purity"] for v in rows[name].values() if v["purity"] is not None])
        agree = np.mean([v["oracle"] for v in rows[name].values() if v["oracle"] is not None])
        print(f"  {name:<18} purity {purity:.3f} oracle {agree:.3f}   {cells}", flush=True)
    record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "task": str(args.task), "index": args.index, "wanted": args.wanted, "variants": rows}
    write_record(args.out / f"pick-order-{args.index}-{record['date']}.json", record)


if __name__ == "__main__":
    main()
