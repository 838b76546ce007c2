"""Record a finished synthesis run in benchmarks/results/: its manifest facts, the machine, and sample examples.

Usage: python benchmarks/record_run.py RUN_DIR NAME
Writes benchmarks/results/NAME.json and prints a Markdown summary for the README.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import polars as pl


def main(run_dir: Path, name: str) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    frame = pl.read_parquet(run_dir / "dataset.parquet")
    samples = {label: frame.filter(pl.col("label") == label).head(3).select("text", "passage_text").to_dicts()
               for label in manifest["counts"]["kept_per_label"]}
    counts, tokens = manifest["counts"], manifest["tokens"]
    record = {
        "name": name,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, no GPU, Python {platform.python_version()}",
        "finished_at": manifest["finished_at"], "model": manifest["model"], "endpoint": manifest["endpoint"],
        "task": manifest["task"]["name"], "index": manifest["index"], "counts": counts, "tokens": tokens,
        "wall_seconds": manifest["wall_seconds"],
        "seconds_per_call": round(manifest["wall_seconds"] / max(1, counts["llm_calls"]), 2),
        "options": manifest["options"], "retrieval": manifest["retrieval"], "samples": samples,
    }
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    reasons = ", ".join(f"{k} {v}" for k, v in counts["rejected_by_reason"].items()) or "none"
    print(f"| {record['finished_at'][:10]} | {manifest['task']['name']} | {manifest['model']} | {counts['kept']} "
          f"({', '.join(f'{k} {v}' for k, v in counts['kept_per_label'].items())}) | {counts['rejected']} ({reasons}) | "
          f"{counts['llm_calls']} | {tokens['prompt_this_run']} + {tokens['completion_this_run']} | "
          f"{manifest['wall_seconds']:.0f} s | {record['machine']} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2])
