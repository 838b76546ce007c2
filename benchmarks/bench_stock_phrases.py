"""Choose `quality.stock_phrases` by measurement: how much of each text is phrases kept texts already use?

The stock-phrase filter (engine/quality.py) drops an example when more than `stock_phrases` of its
distinct word 4-grams are each in 2 or more kept examples. This script runs the filter, in order,
over human text and over the answers of synthesis runs, and prints for each threshold how many
texts it would keep and the Self-BLEU-4 of what it keeps (the suite's diversity metric), beside the
share each text shows (median, 90th and 99th percentile, after the first 30 texts). Human text is
the ceiling a threshold must not touch; a run's answers show what it costs (drops become top-up
calls) and what it buys. A run's answers are read from its journal (every answer it paid for, kept
or not, of at least `--min-words` words), so a run made without the filter shows what the filter
would have done.

Usage:
    python benchmarks/bench_stock_phrases.py --human ../shared/data/imdb/test.jsonl.gz \
        --run runs/suite-imdb-v3/imdb/synthesizrr --run runs/suite-imdb-v3/imdb/fewgen --record
"""

from __future__ import annotations

import argparse
import platform
import random
from datetime import date
from pathlib import Path

import numpy as np

from engine.journal import read_answers
from engine.metrics.data import load_texts
from engine.metrics.selfbleu import self_bleu
from engine.quality import StockPhrases
from engine.strategies.answers import extract_text

from bench_label_margin import write_record  # noqa: E402 (sibling scripts: benchmarks/ is on sys.path)
from suite import clean_review  # noqa: E402

THRESHOLDS = (0.0, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04)


def human_texts(path: Path, count: int, seed: int) -> list[str]:
    texts = [clean_review(text) for text in load_texts(path, role="human")]
    random.Random(seed).shuffle(texts)
    return texts[:count]


def run_answers(folder: Path, min_words: int) -> list[str]:
    """Every answer a run paid for (its journal and worker shards, in journal order), read as the
    strategies read them: the `text` field of a JSON answer, else the raw text."""
    answers, _ = read_answers(folder / "journal.jsonl")
    texts = [extract_text(completion.text)[0] for completion in answers.values()]
    return [text for text in texts if len(text.split()) >= min_words]


def sweep(texts: list[str], keep: int) -> dict:
    """For each threshold: texts kept (of the first that reach `keep` kept), shares, Self-BLEU-4 of the kept."""
    rows = {}
    for threshold in THRESHOLDS:
        stock, kept, shares = StockPhrases(), [], []
        for text in texts:
            share, _ = stock.share(text)
            shares.append(share)
            if threshold and share > threshold:
                continue
            kept.append(text)
            stock.add(text)
            if len(kept) == keep:
                break
        tail = np.array(shares[30:] or shares)
        rows[str(threshold)] = {"seen": len(shares), "kept": len(kept), "dropped": len(shares) - len(kept),
                                "share_median": round(float(np.median(tail)), 3),
                                "share_p90": round(float(np.quantile(tail, 0.9)), 3),
                                "share_p99": round(float(np.quantile(tail, 0.99)), 3),
                                "self_bleu4": round(self_bleu(kept, 4)[4], 3)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--human", type=Path, action="append", default=[], help="human JSONL(.gz) with a text field")
    parser.add_argument("--run", type=Path, action="append", default=[], help="a synthesis run folder")
    parser.add_argument("--keep", type=int, default=242, help="stop a run's answers once this many are kept (the suite gathers 242)")
    parser.add_argument("--min-words", type=int, default=50, help="answers shorter than this were rejected anyway")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/stock-phrases-DATE.json")
    args = parser.parse_args()
    sets = {str(path): human_texts(path, 1000, seed=1) for path in args.human}
    sets.update({str(folder): run_answers(folder, args.min_words) for folder in args.run})
    results = {}
    for name, texts in sets.items():  # human text is checked whole: 1,000 reviews, each against those before it
        results[name] = sweep(texts, len(texts) if Path(name).is_file() else args.keep)
        print(f"{name} ({len(texts)} texts)")
        for threshold, row in results[name].items():
            label = "off " if threshold == "0.0" else f"{float(threshold):.2f}"
            print(f"  {label}  kept {row['kept']:>4} of {row['seen']:>4}  share median {row['share_median']:.3f} "
                  f"p90 {row['share_p90']:.3f} p99 {row['share_p99']:.3f}  Self-BLEU-4 {row['self_bleu4']:.3f}", flush=True)
    if args.record:
        write_record(Path("benchmarks/results") / f"stock-phrases-{date.today().isoformat()}.json",
                     {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.system()}",
                      "keep": args.keep, "sets": results})


if __name__ == "__main__":
    main()
