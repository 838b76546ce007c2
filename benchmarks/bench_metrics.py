"""`seedbed bench` end to end on 2,000 examples, against the time of embedding those texts once.

Stand-ins for two synthetic sets: two disjoint sets of 2,000 AG News training descriptions (500
per label, real text); the other 4,000 are the human training split and the official test split
is the reference. The command runs as a user runs it (a subprocess, model loading included), twice
with a fresh embedding cache: set A cold (every text embedded: the set, up to 4,000 reference rows
and 2,000 training rows), then set B warm (the human splits come from the cache, as for every run
after the first one of a task). Then, in this process, set A's texts are embedded once with the
same embedder (model load excluded): the baseline of the ratio.

Target (issue 4): under 3 minutes on this machine (2 cores).

Usage: python benchmarks/bench_metrics.py [--examples 2000] [--no-entities] [--no-save]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl

# The same OpenMP setting `seedbed bench` uses, so the baseline embeds under the same conditions.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
AG_NEWS = ROOT.parent / "shared" / "data" / "ag_news"
NAMES = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}


def prepare(folder: Path, examples: int) -> tuple[list[Path], Path, list[str]]:
    """Write two disjoint balanced sets of `examples` rows (A, B) and the rest of the training split."""
    with open(AG_NEWS / "train_subset_8k_jointmatch.csv", encoding="utf-8") as handle:
        rows = [(" ".join(r["content"].replace("\\", " ").split()), NAMES[r["label"]]) for r in csv.DictReader(handle)]
    per_label, taken, parts = examples // 4, {}, {"A": [], "B": [], "train": []}
    for text, label in rows:
        k = taken[label] = taken.get(label, 0) + 1
        parts["A" if k <= per_label else "B" if k <= 2 * per_label else "train"].append((text, label))
    paths = []
    for name, part in parts.items():
        frame = pl.DataFrame({"text": [t for t, _ in part], "label": [lab for _, lab in part]})
        path = folder / (f"{name}.csv" if name == "train" else f"set-{name}.parquet")
        frame.write_csv(path) if name == "train" else frame.write_parquet(path)
        paths.append(path)
    return paths[:2], paths[2], [t for t, _ in parts["A"]]


def bench(dataset: Path, train: Path, folder: Path, args) -> tuple[float, dict, str]:
    """Run `seedbed bench` on one set; returns (wall seconds, report, printed summary)."""
    command = [sys.executable, "-m", "engine.cli", "bench", str(dataset), "--reference", str(AG_NEWS / "test.csv"),
               "--reference-text-field", "2", "--reference-label-field", "0", "--train", str(train),
               "--train-text-field", "text", "--train-label-field", "label",
               "--label-map", ",".join(f"{k}={v}" for k, v in NAMES.items()), "--embedder", args.embedder,
               "--out", str(folder / "report")] + (["--no-entities"] if args.no_entities else [])
    env = {**os.environ, "SEEDBED_EMBED_CACHE_DIR": str(folder / "embed-cache")}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"seedbed bench failed:\n{done.stderr}")
    return wall, json.loads((folder / "report" / "report.json").read_text()), done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--no-entities", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (set_a, set_b), train, texts = prepare(folder, args.examples)
        cold, report, summary = bench(set_a, train, folder, args)
        print(summary)
        warm, warm_report, _ = bench(set_b, train, folder, args)

    from engine.embed import get_embedder

    model = get_embedder(args.embedder)
    model.encode(texts[:8])  # warm-up outside the timing
    start = time.perf_counter()
    model.encode(texts)
    embed_once = time.perf_counter() - start
    result = {"examples": len(texts), "cold_wall_s": round(cold, 1), "warm_wall_s": round(warm, 1), "target_s": 180,
              "cold_within_target": cold < 180, "warm_within_target": warm < 180,
              "embed_examples_once_s": round(embed_once, 2), "ratio_cold_to_embedding_examples": round(cold / embed_once, 2),
              "ratio_warm_to_embedding_examples": round(warm / embed_once, 2),
              "cold_timing": report["timing"], "warm_timing": warm_report["timing"], "entities": not args.no_entities,
              "students": {run["name"]: run["metrics"]["students"] for run in report["runs"]},
              "machine": {"cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}, "date": date.today().isoformat()}
    t = report["timing"]
    print(f"cold: seedbed bench on {len(texts)} examples {cold:.1f} s wall (target < 180 s); inside: {t['total_s']:.1f} s, "
          f"of which embedding {t['texts_embedded']} texts {t['embed_s']:.1f} s (ratio {t['total_over_embed']})")
    print(f"warm (human splits cached): {warm:.1f} s wall (target < 180 s)")
    print(f"embedding the {len(texts)} examples once: {embed_once:.1f} s -> ratio cold {cold / embed_once:.2f}, "
          f"warm {warm / embed_once:.2f}")
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / f"bench-metrics-{date.today().isoformat()}.json"
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
