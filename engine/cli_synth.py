"""The `seedbed synth` command's presentation: progress bar with tokens and ETA, and the end summary."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.pipeline import SynthPlan, SynthProgress, SynthResult
from engine.types import TaskSpec

if TYPE_CHECKING:
    from engine.index.reader import Index


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Task-spec fields replaced from the command line (None: keep the spec's value)."""

    examples_per_label: int | None = None
    strategy: str | None = None
    verify: str | None = None

    def apply(self, task: TaskSpec) -> TaskSpec:
        """`task` with the overridden fields replaced."""
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(task, **changes) if changes else task


@dataclasses.dataclass(frozen=True)
class Budget:
    """Caps on a run; each stops it cleanly, and a re-run with a larger cap continues."""

    max_calls: int | None = None
    max_tokens_total: int | None = None
    max_cost: float | None = None
    prices: tuple[float, float] | None = None  # (input, output) per million tokens


@dataclasses.dataclass(frozen=True)
class Scale:
    """Where requests are answered beyond one endpoint in this process (engine/llm/endpoint.py)."""

    replicas: tuple[str, ...] = ()  # more base URLs of the same model
    ray: str | None = None  # "local" or a Ray cluster address
    ray_workers: int = 2


def run_synth(task_path: Path, index_name: str | None, out: Path | str, base_url: str | None, model: str | None,
              api_key: str | None, concurrency: int | str, structured: bool, fresh: bool, fake: bool, overrides: Overrides,
              root: Path | str, budget: Budget = Budget(), use_cache: bool = True,
              reference: tuple[str, ...] | None = None, scale: Scale = Scale()) -> SynthResult:
    """Load the task and index, open the LLM, run the synthesis with a progress bar, print a summary."""
    from engine.config import load_task
    from engine.index.reader import Index
    from engine.llm.endpoint import EndpointSettings, open_llm
    from engine.pipeline import SynthOptions, plan, synthesize

    task = overrides.apply(load_task(task_path))
    index = Index.open(index_name, root) if index_name else None
    from engine.llm.adaptive import AdaptiveLimit, parse_concurrency

    # with --ray, each worker learns its own number in flight, up to 32 (engine/llm/distributed.py)
    concurrency = parse_concurrency(concurrency, start=4, max=32 * (scale.ray_workers if scale.ray else 1))
    if isinstance(concurrency, AdaptiveLimit) and not base_url:
        concurrency = 4  # the embedded server (and the fake) has a fixed number of slots: fill them
    adaptive = concurrency if isinstance(concurrency, AdaptiveLimit) else None
    slots = max(1, min(concurrency if isinstance(concurrency, int) else 8, 8))
    settings = EndpointSettings(base_url=base_url, model=model, api_key=api_key, fake=fake, parallel=slots,
                                replicas=scale.replicas, ray=scale.ray, ray_workers=scale.ray_workers)
    click.echo(f"task {task.name!r}: {len(task.labels)} labels x {task.examples_per_label} examples{_gathered(task)}, "
               f"strategy {task.strategy}, index {_describe(index)}, LLM {settings.describe()}", err=True)
    options = SynthOptions(out=out, concurrency=concurrency, fresh=fresh, structured_output=structured,
                           max_calls=budget.max_calls, max_tokens_total=budget.max_tokens_total,
                           max_cost=budget.max_cost, prices=budget.prices, reference=reference)
    with contextlib.ExitStack() as stack:
        llm = None
        if scale.ray:  # join the cluster and start the actors first: they take seconds, which the plan hides
            llm = stack.enter_context(open_llm(settings, on_retry=adaptive.on_retry if adaptive else None))
        # spec problems and labels the index cannot support fail here, before a model loads (unless --ray
        # started it above; its actors are stopped on the way out) or a file is written
        synth_plan = plan(task, index, options)
        print_plan(task, synth_plan, index, None if (base_url or fake) else (model or "qwen2.5-coder-1.5b"))
        if use_cache:
            from engine.cache import LLMCache

            options = dataclasses.replace(options, cache=stack.enter_context(LLMCache()))
        llm = llm or stack.enter_context(open_llm(settings, on_retry=adaptive.on_retry if adaptive else None))
        bar = stack.enter_context(_ProgressBar())
        result = synthesize(task, index, llm, options, on_progress=bar.update, endpoint=settings.describe(),
                            synth_plan=synth_plan)
    print_summary(result)
    if adaptive:
        click.echo(f"concurrency {adaptive.describe()}, peak {adaptive.peak}")
    if result.failed:
        from engine.errors import LLMError

        raise LLMError(
            f"{result.failed} requests failed after retries (see the journal in {out}); the dataset holds what "
            "succeeded; re-run the same command to retry only those"
        )
    return result


def run_plan(task_path: Path, index_name: str | None, overrides: Overrides, root: Path | str, model: str | None) -> None:
    """`seedbed plan`: coverage per label, routing and the estimated calls, tokens and time; no LLM call."""
    from engine.config import load_task
    from engine.index.reader import Index
    from engine.pipeline import SynthOptions, plan

    task = overrides.apply(load_task(task_path))
    index = Index.open(index_name, root) if index_name else None
    synth_plan = plan(task, index, SynthOptions(out=Path("plan-only")))
    print_plan(task, synth_plan, index, model, file_err=False)


def _gathered(task: TaskSpec) -> str:
    keep = task.quality.confidence_keep
    return f" (gathering {task.gathered_per_label} for the confidence filter, which keeps {keep:.0%})" if keep else ""


def print_plan(task: TaskSpec, synth_plan: SynthPlan, index: Index | None, model: str | None, file_err: bool = True) -> None:
    """The coverage table, which strategy makes which label, and the first round's estimate."""
    echo = lambda line="": click.echo(line, err=file_err)  # noqa: E731
    if synth_plan.coverage:
        echo(f"coverage of index {index.manifest.name!r} for task {task.name!r} ({task.examples_per_label} examples "
             f"per label{_gathered(task)}, {synth_plan.per_label} passages wanted per label):")
        width = max(len(name) for name in synth_plan.coverage)
        echo(f"  {'label':<{width}}  {'in band':>7}  {'assigned':>8}  verdict      made by")
        for name, c in synth_plan.coverage.items():
            echo(f"  {name:<{width}}  {c.in_band:>7}  {c.assigned:>8}  {c.verdict:<11}  {synth_plan.routes[name]:<11}  {c.reason}")
    estimate = synth_plan.estimate(task)
    unknown = estimate["tokens_unknown_for"]
    tokens = f"~{estimate['prompt_tokens']:,} prompt + at most {estimate['completion_tokens_max']:,} completion tokens"
    if unknown:
        tokens += f" (not counting {', '.join(unknown)}, whose prompts are known after its setup calls)"
    screened = estimate.get("screen_requests", 0)
    of_them = f" ({screened} of them yes/no screening questions)" if screened else ""
    echo(f"estimate for the first round: {estimate['requests']} requests{of_them}, {tokens}{_time(task, estimate, model)}; "
         "top-ups for rejections add to it")


def _time(task: TaskSpec, estimate: dict[str, Any], model: str | None) -> str:
    """Rough wall time on the embedded model from its measured speed (empty for other endpoints)."""
    from engine.runtime.catalog import CATALOG

    entry = CATALOG.get(model or "")
    if entry is None or not all(entry.speed):
        return ""
    screened = estimate.get("screen_requests", 0)
    expected = (estimate["requests"] - screened) * min(task.sampling.max_tokens,
                                                       1.4 * (task.output.min_words + task.output.max_words) / 2) + screened
    seconds = estimate["prompt_tokens"] / entry.speed[0] + expected / entry.speed[1]
    return f", about {seconds / 60:.0f} min on {entry.name} with 2 CPU cores"


def _describe(index: Index | None) -> str:
    return "none" if index is None else f"{index.manifest.name!r} ({len(index)} passages)"


class _ProgressBar:
    """tqdm over LLM calls, showing kept tokens and the journal reuse count."""

    def __enter__(self) -> "_ProgressBar":
        from tqdm import tqdm

        self._bar = tqdm(total=0, unit="call", desc="synthesizing", file=sys.stderr, dynamic_ncols=True)
        self._estimated = False
        return self

    def update(self, progress: SynthProgress) -> None:
        if progress.estimate is not None and not self._estimated:
            self._estimated = True
            self._bar.write(_estimate_line(progress.estimate), file=sys.stderr)
        if self._bar.total != progress.sent:
            self._bar.total = progress.sent
            self._bar.refresh()
        postfix = {"reused": progress.reused, "failed": progress.failed,
                   "tok_in": progress.prompt_tokens, "tok_out": progress.completion_tokens}
        if progress.prices is not None:
            postfix["spent"] = f"${progress.cost():.4f}"
            postfix["projected"] = f"${progress.projected_cost():.4f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(progress.done - self._bar.n)  # refreshes, with the postfix just set

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def _estimate_line(estimate: dict[str, Any]) -> str:
    cost = f", at most ${estimate['cost_max']:.4f}" if estimate.get("cost_max") is not None else ""
    judge = "; label verification adds one short judge call per kept example" if estimate["plus_judge_calls"] else ""
    return (f"estimate for the first round: {estimate['requests']} requests, ~{estimate['prompt_tokens']} prompt tokens, "
            f"at most {estimate['completion_tokens_max']} completion tokens{cost} (top-ups for rejections add to it{judge})")


def print_summary(result: SynthResult) -> None:
    """A short end-of-run summary: kept per label, rejected by reason, cost, time, where files are."""
    counts = result.manifest["counts"]
    kept = ", ".join(f"{label} {n}" for label, n in result.kept.items())
    click.echo(f"\nkept {counts['kept']} examples ({kept})")
    if result.rejected:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(result.rejected.items(), key=lambda kv: -kv[1]))
        click.echo(f"rejected {counts['rejected']} ({reasons})")
    coverage = result.manifest.get("coverage")
    if coverage:
        routes = result.manifest.get("routes") or {}
        verdicts = ", ".join(f"{label} {c['verdict']}" + (f" (made by {routes[label]['strategy']})"
                                                           if routes.get(label, {}).get("strategy_reason") else "")
                             for label, c in coverage.items())
        click.echo(f"corpus coverage: {verdicts}")
    quality = (result.manifest.get("stages") or {}).get("quality")
    if quality:
        grounding = quality["grounding"]
        rate = "n/a (no passage-grounded examples)" if grounding["ungrounded_rate"] is None else f"{grounding['ungrounded_rate']:.1%}"
        dropped = ", ".join(f"{k} {v}" for k, v in quality["dropped"].items()) or "none dropped"
        click.echo(f"quality filters: {dropped}; examples with an entity not in their passage: {rate} of "
                   f"{grounding['checked']} checked (policy {quality['grounding_policy']})")
    stages = result.manifest.get("stages") or {}
    if stages.get("screen"):
        said_no = ", ".join(f"{label} {c['no']}/{c['screened']}" for label, c in stages["screen"].items())
        click.echo(f"retrieval screen: passages the LLM said are not about their label: {said_no}")
    confidence = stages.get("confidence")
    if confidence:
        done = confidence.get("skipped") or f"dropped {confidence['dropped']} low-confidence examples"
        click.echo(f"confidence filter (keep top {confidence['keep']:.0%} per label): {done}")
    verification = result.manifest.get("verification")
    if verification:
        shares = ", ".join(f"{label} {share:.2f}" for label, share in verification["agreement"].items())
        unreadable = sum(c["unreadable"] for c in verification["counts"].values())
        click.echo(f"label verification ({verification['policy']}): agreement {shares or 'n/a'}; "
                   f"{verification['actions']['dropped']} dropped, {verification['actions']['relabelled']} relabelled, "
                   f"{unreadable} unreadable verdicts")
    if counts.get("unsent_over_token_or_cost_cap"):
        click.secho(f"stopped at the token or cost cap ({counts['unsent_over_token_or_cost_cap']} requests held back); "
                    "re-run with a larger --max-tokens-total or --max-cost to continue", fg="yellow")
    elif counts.get("unsent_over_budget"):
        click.secho(f"stopped at the budget of {result.manifest['options']['max_calls']} LLM calls "
                    f"({counts['unsent_over_budget']} planned requests not sent); re-run with a larger --max-calls "
                    "to continue", fg="yellow")
    if result.failed:
        click.secho(f"failed {result.failed} requests after retries; re-run the same command to retry them", fg="yellow")
    spent = result.manifest.get("cost_this_run")
    cached = result.manifest["tokens"].get("prompt_cached_this_run")
    prefix = f" ({cached} of them from the server's prefix cache)" if cached is not None else ""
    kept = sum(result.kept.values())
    per_kept = f", {(result.prompt_tokens + result.completion_tokens) / kept:.0f} tokens per kept example" if kept else ""
    click.echo(f"LLM calls {result.calls} (+{counts['reused_from_journal']} reused from the journal, "
               f"+{counts['reused_from_cache']} from the cache), tokens {result.prompt_tokens} prompt{prefix} + "
               f"{result.completion_tokens} completion{per_kept}{f', cost ${spent:.4f}' if spent is not None else ''}, "
               f"{result.seconds:.1f}s")
    short = [label for label, n in result.kept.items() if n < result.manifest["task"]["examples_per_label"]]
    ran_out = stages.get("passages_ran_out") or {}
    stock = (counts.get("rejected_by_reason") or {}).get("stock_phrases")
    for label in (label for label in short if label in ran_out):
        turned_away = (stages.get("screen") or {}).get(label, {}).get("no")
        screened = f", {turned_away} of them turned away by the retrieval screen" if turned_away else ""
        click.secho(f"{label}: {result.kept[label]} of {result.manifest['task']['examples_per_label']}: its "
                    f"{ran_out[label]} retrieved passages ran out{screened}; widen retrieval (more seeds or the "
                    "label's `queries`, a larger retrieval.candidates, a lower retrieval.min_similarity)"
                    f"{', or turn retrieval.screen off' if turned_away else ''}"
                    f"{f', or allow more reuse with a higher quality.stock_phrases (it dropped {stock} answers)' if stock else ''}",
                    fg="yellow")
    short = [label for label in short if label not in ran_out]
    if short:
        click.secho(f"labels short of the target: {', '.join(short)} (see rejected.jsonl; raise max_words or "
                    "examples_per_label, or use a corpus closer to the task)", fg="yellow")
    click.echo(f"dataset: {result.files['parquet']}  {result.files['jsonl']}\nmanifest: {result.files['manifest']}  "
               f"rejections: {result.files['rejected']}  card: {result.files['card']}")
