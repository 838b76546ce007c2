"""Self-BLEU-4 of the first N answers of run folders, each read as the strategies read it and kept if
it reaches the spec's min_words: compares pilots (a sampling or prompt change) at equal size before a
full suite run is worth its hours. The answers are what each run paid for, in journal order, before
any filter but length, so two runs of the same method differ only in what the pilot changed.

Usage:
    python benchmarks/pilot_selfbleu.py --first 50 --min-words 50 RUN_FOLDER [RUN_FOLDER ...] [--record NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import date
from pathlib import Path

from bench_stock_phrases import run_answers

from engine.metrics.selfbleu import self_bleu

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--first", type=int, default=50)
    parser.add_argument("--min-words", type=int, default=50)
    parser.add_argument("--record", default="", help="write benchmarks/results/pilot-NAME-<date>.json")
    args = parser.parse_args()
    rows = {}
    for run in args.runs:
        texts = run_answers(run, args.min_words)[:args.first]
        rows[str(run)] = {"texts": len(texts), "self_bleu4": round(self_bleu(texts, 4)[4], 3) if len(texts) > 1 else None,
                          "mean_words": round(sum(len(t.split()) for t in texts) / max(1, len(texts)), 1)}
        print(f"{run}: {len(texts)} answers, Self-BLEU-4 {rows[str(run)]['self_bleu4']}, "
              f"{rows[str(run)]['mean_words']} words on average", flush=True)
    if args.record:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"pilot-{args.record}-{date.today().isoformat()}.json"
        path.write_text(json.dumps({"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                                    "args": {k: [str(r) for r in v] if k == "runs" else v for k, v in vars(args).items()}, "runs": rows},
                                   indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
