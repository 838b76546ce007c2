"""Run every strategy with the same model, task and budget of LLM calls; tabulate what each produced.

For each strategy: examples kept (per label), rejection reasons, LLM calls, tokens, wall time, and
the agreement of an LLM label judge (`verify: keep`, so it only measures; its calls are outside the
budget). One embedded llama-server (or one endpoint) serves all runs. Results go to
benchmarks/results/compare-<task>-<model>-<date>.json and .md; runs recorded earlier the same day,
or in the file given with `--merge`, are kept unless re-run (each row carries its date).

Usage:
  python benchmarks/compare_strategies.py --task benchmarks/tasks/ag_news.yaml --index reuters-sample \
      --per-label 25 --options benchmarks/tasks/ag_news_compare.yaml [--strategies synthesizrr,fewgen,...] \
      [--model qwen2.5-coder-1.5b] [--fake]

Per-strategy options (e.g. attrprompt's attributes) come from `--options FILE` (YAML mapping of
run name -> {strategy, strategy_options, sampling}; `sampling` overrides the task's sampling for that
run); `synthesizrr-retricl` is predefined.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import warnings
from datetime import date
from pathlib import Path

import yaml

from engine.config import load_task
from engine.index.reader import Index
from engine.llm.endpoint import EndpointSettings, open_llm
from engine.pipeline import SynthOptions, synthesize

PRESETS = {"synthesizrr-retricl": {"strategy": "synthesizrr", "strategy_options": {"variant": "retricl"}}}
RESULTS = Path(__file__).parent / "results"


def run_one(name: str, preset: dict, task, index, llm, args) -> dict:
    sampling = dataclasses.replace(task.sampling, **preset.get("sampling", {}))  # e.g. oneshot's per-call max_tokens
    spec = dataclasses.replace(task, strategy=preset.get("strategy", name), examples_per_label=args.per_label,
                               strategy_options=preset.get("strategy_options", {}), verify="keep", sampling=sampling)
    budget = int(len(task.labels) * args.per_label * args.budget_factor)
    options = SynthOptions(out=Path(args.out) / name, concurrency=args.concurrency, structured_output=True,
                           max_calls=budget, max_rounds=args.max_rounds, fresh=True)
    print(f"== {name}: {len(task.labels)} labels x {args.per_label}, budget {budget} calls", flush=True)
    result = synthesize(spec, index, llm, options, endpoint=args.model)
    m = result.manifest
    verification = m.get("verification") or {}
    return {
        "run": name, "date": date.today().isoformat(), "strategy": spec.strategy, "options": spec.strategy_options, "sampling": preset.get("sampling", {}), "budget_calls": budget,
        "max_rounds": args.max_rounds,
        "kept": m["counts"]["kept"], "kept_per_label": m["counts"]["kept_per_label"],
        "rejected_by_reason": m["counts"]["rejected_by_reason"], "failed": m["counts"]["failed"],
        "llm_calls": m["counts"]["llm_calls"] - m["counts"]["judge_calls"], "judge_calls": m["counts"]["judge_calls"],
        "judge_agreement": verification.get("agreement", {}),
        "tokens": m["tokens"], "wall_seconds": m["wall_seconds"],
        "reused_from_journal": m["counts"]["reused_from_journal"],  # answers of an earlier, interrupted run
    }


def table(rows: list[dict]) -> str:
    dated = len({r.get("date") for r in rows}) > 1  # rows merged from an earlier day's results
    lines = [("| run (date) " if dated else "| run ") + "| kept (per label) | rejected (reasons) | generation calls (budget) | tokens in + out (all calls) | wall s (all calls) | judge agreement |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        per_label = ", ".join(f"{k} {v}" for k, v in r["kept_per_label"].items())
        reasons = ", ".join(f"{k} {v}" for k, v in r["rejected_by_reason"].items()) or "none"
        agreement = ", ".join(f"{k} {v:.2f}" for k, v in r["judge_agreement"].items()) or "n/a"
        tokens = f"{r['tokens']['prompt_this_run']} + {r['tokens']['completion_this_run']}"
        if r.get("reused_from_journal"):  # tokens and time then cover only the calls made in this run
            tokens += f" (+{r['reused_from_journal']} answers reused)"
        run = f"{r['run']} ({r.get('date', '?')})" if dated else r["run"]
        lines.append(f"| {run} | {r['kept']} ({per_label}) | {sum(r['rejected_by_reason'].values())} ({reasons}) | "
                     f"{r['llm_calls']} ({r['budget_calls']}) | {tokens} | {r['wall_seconds']:.0f} | {agreement} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="benchmarks/tasks/ag_news.yaml")
    parser.add_argument("--index", default="reuters-sample")
    parser.add_argument("--root", default="indexes")
    parser.add_argument("--strategies", default="synthesizrr,synthesizrr-retricl,fewgen,attrprompt,targen,oneshot")
    parser.add_argument("--options", help="YAML: run name -> {strategy, strategy_options}")
    parser.add_argument("--per-label", type=int, default=25)
    parser.add_argument("--budget-factor", type=float, default=1.6, help="calls allowed per wanted example")
    parser.add_argument("--max-rounds", type=int, default=10,
                        help="rounds of generation and top-ups per run (the budget, not this, should end a run)")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", default=f"runs/compare-{date.today().isoformat()}")
    parser.add_argument("--merge", metavar="RESULTS_JSON",
                        help="an earlier day's results file: its runs not re-run now are kept (with their date)")
    parser.add_argument("--fake", action="store_true", help="scripted LLM: checks the plumbing, not the methods")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="lancedb fork support")  # as the CLI: llama-server forks, then execs

    task = load_task(args.task)
    presets = dict(PRESETS)
    if args.options:
        presets.update(yaml.safe_load(Path(args.options).read_text(encoding="utf-8")) or {})
    index = Index.open(args.index, Path(args.root))
    settings = EndpointSettings(base_url=args.base_url, model=args.model, fake=args.fake, parallel=args.concurrency)
    rows: list[dict] = []
    measured: list[dict] = []
    machine = f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}"
    model = "fake" if args.fake else args.model
    stem = RESULTS / f"compare-{task.name}-{model}-{date.today().isoformat()}"
    earlier = []  # runs recorded today by an earlier invocation (or in --merge), kept unless re-run now
    sources = ([Path(args.merge)] if args.merge else []) + [p for p in [Path(f"{stem}.json")] if p.exists()]
    for path in sources:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if (recorded.get("task"), recorded.get("model"), recorded.get("per_label")) != (task.name, model, args.per_label):
            raise SystemExit(f"{path}: task, model or per-label differ from this run "
                             f"({recorded.get('task')}, {recorded.get('model')}, {recorded.get('per_label')}); merge like with like")
        runs = [{"date": recorded.get("date"), **r} for r in recorded.get("runs", [])]
        earlier = [r for r in earlier if r["run"] not in {x["run"] for x in runs}] + runs
    names = args.strategies.split(",")
    with open_llm(settings) as llm:
        for name in names:
            measured.append(run_one(name, presets.get(name, {}), task, index, llm, args))
            done = {r["run"] for r in measured}  # an earlier row goes only once its run is measured again
            rows = [r for r in earlier if r["run"] not in done] + measured
            # written after every run, so a long comparison stopped half-way keeps what it measured
            record = {"date": date.today().isoformat(), "task": task.name, "model": model, "machine": machine,
                      "per_label": args.per_label, "runs": rows}
            # not with_suffix: the model name has dots in it ("qwen2.5-coder-1.5b")
            Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            Path(f"{stem}.md").write_text(table(rows) + "\n", encoding="utf-8")
    print(table(rows))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
