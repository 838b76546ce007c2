"""The benchmark suite: synthesize with several strategies, then bench them all against human text.

For each dataset (AG News with the Reuters sample as corpus, IMDb with IMDb `unsup` as corpus), every
strategy synthesizes the same number of examples per label with the same model and the same budget
of LLM calls (no label judge: the bench's oracle measures label fidelity). Then one `seedbed bench`
per dataset measures all its runs against the human test split, with the human training split as
the oracle's data and the gold ceiling. Results: <out>/<dataset>/report/report.{json,html} and a
summary in benchmarks/results/suite-<model>-<date>.{json,md}.

The IMDb corpus is an index of a seeded sample of `--imdb-docs` unsup reviews (`<br />` removed),
built on first use; the IMDb test and train splits are cleaned the same way into <out>/data/ so
human and synthetic text are measured alike. Every synthesis runs with the leakage guard against the
split its students are scored on (`SynthOptions.reference`). Re-running the command resumes: finished runs are
read from their folders (and unfinished ones continue from their journals).

Usage:
  python benchmarks/suite.py [--datasets ag_news,imdb] [--strategies fewgen,synthesizrr] [--per-label 25]
      [--model qwen2.5-coder-1.5b] [--out runs/suite-<date>] [--reuse ag_news=runs/compare-<date>] [--fake]

`--reuse DATASET=FOLDER` takes `FOLDER/<strategy>` runs made by compare_strategies.py with the same
task, model and examples per label instead of synthesizing them again. `--task DATASET=SPEC` runs a
dataset from another task spec (a prompt or retrieval variant of the suite's; the bench is the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
AG_NAMES = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
IMDB_NAMES = {"pos": "positive", "neg": "negative"}


def datasets(out: Path, imdb_docs: int) -> dict[str, dict]:
    """Per dataset: task spec, index, and the `seedbed bench` arguments for its human splits."""
    ag_bench = ["--reference", str(DATA / "ag_news/test.csv"), "--reference-text-field", "2",
                "--reference-label-field", "0", "--train", str(DATA / "ag_news/train_subset_8k_jointmatch.csv"),
                "--train-text-field", "content", "--train-label-field", "label",
                "--label-map", ",".join(f"{k}={v}" for k, v in AG_NAMES.items())]
    return {
        "ag_news_mix": {"task": ROOT / "benchmarks/tasks/ag_news.yaml", "index": "news-mix", "bench": ag_bench,
                        "corpus": ["corpora/news-mix", "--text-field", "title,text"]},
        "ag_news": {
            "task": ROOT / "benchmarks/tasks/ag_news.yaml", "index": "reuters-sample", "corpus": ["corpora/reuters-sample"],
            "bench": ["--reference", str(DATA / "ag_news/test.csv"), "--reference-text-field", "2",
                      "--reference-label-field", "0", "--train", str(DATA / "ag_news/train_subset_8k_jointmatch.csv"),
                      "--train-text-field", "content", "--train-label-field", "label",
                      "--label-map", ",".join(f"{k}={v}" for k, v in AG_NAMES.items())],
        },
        "imdb": {
            "task": ROOT / "benchmarks/tasks/imdb_suite.yaml", "index": f"imdb-unsup-{imdb_docs}",
            "bench": ["--reference", str(out / "data/imdb-test.jsonl"), "--train", str(out / "data/imdb-train.jsonl")],
        },
    }


def prepare_index(spec: dict, root: Path) -> None:
    """Build a bundled corpus's index on first use (`seedbed index`)."""
    if "corpus" not in spec or (root / spec["index"] / "manifest.json").exists():
        return
    print(f"== indexing {spec['corpus'][0]} as {spec['index']}", flush=True)
    subprocess.run([sys.executable, "-m", "engine.cli", "index", spec["corpus"][0], "--name", spec["index"],
                    "--root", str(root), *spec["corpus"][1:]], cwd=ROOT, check=True)


def clean_review(text: str) -> str:
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def prepare_imdb(out: Path, root: Path, docs: int, seed: int) -> None:
    """Cleaned IMDb test/train copies (labels positive/negative) and the index of an unsup sample."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("test", "train"):
        target = folder / f"imdb-{split}.jsonl"
        if target.exists():
            continue
        with gzip.open(DATA / f"imdb/{split}.jsonl.gz", "rt", encoding="utf-8") as src, open(f"{target}.tmp", "w", encoding="utf-8") as dst:
            for line in src:
                row = json.loads(line)
                dst.write(json.dumps({"text": clean_review(row["text"]), "label": IMDB_NAMES[row["label"]]}) + "\n")
        os.replace(f"{target}.tmp", target)
    name = f"imdb-unsup-{docs}"
    if (root / name).exists():
        return
    corpus = folder / f"{name}.jsonl"
    with gzip.open(DATA / "imdb/unsup.jsonl.gz", "rt", encoding="utf-8") as src:
        rows = [json.loads(line) for line in src]
    random.Random(seed).shuffle(rows)
    with open(corpus, "w", encoding="utf-8") as dst:
        for row in rows[:docs]:
            dst.write(json.dumps({"id": row["id"], "text": clean_review(row["text"])}) + "\n")
    print(f"== indexing {docs} IMDb unsup reviews as {name}", flush=True)
    subprocess.run([sys.executable, "-m", "engine.cli", "index", str(corpus), "--name", name, "--root", str(root)],
                   cwd=ROOT, check=True)


def synthesize_one(dataset: str, strategy: str, spec: dict, llm, args, out: Path) -> Path:
    from engine.config import load_task
    from engine.index.reader import Index
    from engine.metrics.data import load_texts
    from engine.pipeline import SynthOptions, synthesize

    task = load_task(spec["task"])
    task = dataclasses.replace(task, strategy=strategy, examples_per_label=args.per_label, verify="")
    run = out / dataset / strategy
    budget = int(len(task.labels) * task.gathered_per_label * args.budget_factor)  # the confidence filter gathers more
    gathered = f" (gathering {task.gathered_per_label} for the confidence filter)" if task.quality.confidence_keep else ""
    print(f"== {dataset} / {strategy}: {len(task.labels)} labels x {args.per_label}{gathered}, budget {budget} calls", flush=True)
    index = Index.open(spec["index"], Path(args.root)) if strategy == "synthesizrr" else None
    # the leakage guard against the split the students are scored on (the bench's --reference)
    bench = spec["bench"]
    reference = tuple(load_texts(bench[1], bench[3] if bench[2] == "--reference-text-field" else "text"))
    options = SynthOptions(out=run, concurrency=args.concurrency, structured_output=True, max_calls=budget, fresh=True,
                           reference=reference)
    synthesize(task, index, llm, options, endpoint=args.model)
    return run


def reused(dataset: str, strategy: str, args) -> Path | None:
    for item in args.reuse:
        name, _, folder = item.partition("=")
        run = Path(folder) / strategy
        if name == dataset and (run / "manifest.json").exists():
            manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
            if manifest.get("model") != args.model or manifest["task"]["examples_per_label"] != args.per_label:
                sys.exit(f"--reuse {item}: {run} was made with model {manifest.get('model')!r} and "
                         f"{manifest['task']['examples_per_label']} per label, not {args.model!r} and {args.per_label}")
            return run
    return None


def value(node, *path):
    """A number from the report, or None where the report says a metric is unavailable."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


ROWS = [  # (column, path into a run's metrics, ending before the synthetic/human side)
    ("Self-BLEU-4", ("lexical", "self_bleu_4"), ()),
    ("distinct-2", ("lexical", "distinct_2"), ()),
    ("mean length (words)", ("lexical", "length"), ("mean",)),
    ("mean cosine", ("semantic", "mean_pairwise_cosine"), ()),
    ("Vendi", ("semantic", "vendi_score"), ()),
    ("class separability", ("semantic", "class_separability"), ()),
    ("MAUVE", ("human_likeness", "mauve"), ()),
    ("Fréchet", ("human_likeness", "frechet_distance"), ()),
    ("label fidelity", ("label_fidelity",), ("fidelity",)),
    ("student MiniLM+LR acc", ("students", "embedding_logreg"), ("accuracy_mean",)),
    ("student TF-IDF+LR acc", ("students", "tfidf_logreg"), ("accuracy_mean",)),
    ("student fine-tuned MiniLM acc", ("students", "finetuned_minilm"), ("accuracy_mean",)),
]


def summarize(report: dict) -> list[dict]:
    rows = []
    for run in report["runs"]:
        metrics = {}
        for column, path, tail in ROWS:
            node = value_node(run["metrics"], path)
            metrics[column] = {side: value(node, side, *tail) for side in ("synthetic", "human")}
        fidelity = value_node(run["metrics"], ("label_fidelity",))
        students = {name: {side: {k: node.get(side, {}).get(k) for k in ("accuracy_mean", "accuracy_std", "seeds")}
                           for side in ("synthetic", "human")}
                    for name, node in value_node(run["metrics"], ("students",)).items() if isinstance(node, dict)}
        rows.append({"run": run["name"], "rows": run["rows"], "labels": run["labels"], "metrics": metrics,
                     "label_fidelity_per_label": {side: (fidelity.get(side) or {}).get("per_label")
                                                  for side in ("synthetic", "human")},
                     "students": students})
    return rows


def value_node(node, path):
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node


def table(summary: dict) -> str:
    lines = []
    for dataset, info in summary.items():
        runs = info["runs"]
        lines += [f"**{dataset}** ({info['reference']}); each cell: synthetic / human counterpart", "",
                  "| metric | " + " | ".join(f"{r['run']} ({r['rows']})" for r in runs) + " |",
                  "|---|" + "---|" * len(runs)]
        for column, _, _ in ROWS:
            cells = []
            for r in runs:
                pair = r["metrics"][column]
                cells.append(" / ".join("n/a" if pair[s] is None else f"{pair[s]:.3f}" for s in ("synthetic", "human")))
            lines.append(f"| {column} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ag_news,imdb")
    parser.add_argument("--strategies", default="fewgen,synthesizrr")
    parser.add_argument("--per-label", type=int, default=25)
    parser.add_argument("--budget-factor", type=float, default=1.6, help="calls allowed per wanted example")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--root", default="indexes")
    parser.add_argument("--imdb-docs", type=int, default=4000, help="IMDb unsup reviews in the suite's index")
    parser.add_argument("--reuse", action="append", default=[], metavar="DATASET=FOLDER")
    parser.add_argument("--task", action="append", default=[], metavar="DATASET=SPEC",
                        help="another task spec for a dataset (a prompt or retrieval variant), same labels")
    parser.add_argument("--out", default=f"runs/suite-{date.today().isoformat()}")
    parser.add_argument("--fake", action="store_true", help="scripted LLM: checks the plumbing, not the methods")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--finetune-student", action="store_true", help="bench also fine-tunes the MiniLM student")
    parser.add_argument("--seeds", type=int, default=5, help="student seeds in the bench")
    args = parser.parse_args()
    if args.fake:
        args.model = "fake"
    out, names = Path(args.out), args.datasets.split(",")
    specs = datasets(out, args.imdb_docs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        sys.exit(f"--datasets: unknown {unknown}; choose from {sorted(specs)}")
    for item in args.task:
        dataset, _, path = item.partition("=")
        if dataset not in specs or not Path(path).is_file():
            sys.exit(f"--task {item}: give DATASET=SPEC with DATASET one of {sorted(specs)} and SPEC an existing task file")
        specs[dataset]["task"] = Path(path).resolve()
    if "imdb" in names:
        prepare_imdb(out, Path(args.root), args.imdb_docs, seed=7)
    for name in names:
        prepare_index(specs[name], Path(args.root))

    from engine.llm.endpoint import EndpointSettings, open_llm

    runs: dict[str, list[Path]] = {}
    settings = EndpointSettings(base_url=args.base_url, model=args.model, fake=args.fake, parallel=args.concurrency)
    summary = {}
    for dataset in names:  # each dataset is benched as soon as its runs are made: results come early
        with open_llm(settings) as llm:
            runs[dataset] = [reused(dataset, s, args) or synthesize_one(dataset, s, specs[dataset], llm, args, out)
                             for s in args.strategies.split(",")]
        report_dir = out / dataset / "report"
        print(f"== seedbed bench: {dataset}, {len(runs[dataset])} runs", flush=True)
        extra = ["--seeds", str(args.seeds)] + (["--finetune-student"] if args.finetune_student else [])
        subprocess.run([sys.executable, "-m", "engine.cli", "bench", *map(str, runs[dataset]), *specs[dataset]["bench"],
                        *extra, "--out", str(report_dir)], cwd=ROOT, check=True)
        report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
        summary[dataset] = {"reference": Path(specs[dataset]["bench"][1]).name, "report": str(report_dir),
                            "runs": [{**row, "run": f"{Path(run).name}", "folder": str(run), "manifest": _facts(Path(run))}
                                     for row, run in zip(summarize(report), runs[dataset])]}
    text = table(summary)
    print(text)
    if not args.no_save:
        stem = RESULTS / f"suite-{args.model}-{date.today().isoformat()}"
        machine = f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}"
        record = {"date": date.today().isoformat(), "model": args.model, "machine": machine, "per_label": args.per_label,
                  "strategies": args.strategies.split(","), "datasets": summary}
        Path(f"{stem}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        Path(f"{stem}.md").write_text(text + "\n", encoding="utf-8")
        print(f"wrote {stem}.json and .md")


def _facts(run: Path) -> dict:
    """What the synthesis cost, from its manifest."""
    m = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    counts = m["counts"]
    return {"kept": counts["kept"], "kept_per_label": counts["kept_per_label"], "rejected_by_reason": counts["rejected_by_reason"],
            "llm_calls": counts["llm_calls"] - counts.get("judge_calls", 0), "tokens": m["tokens"], "wall_seconds": m["wall_seconds"]}


if __name__ == "__main__":
    main()
