"""`seedbed`: a thin command line over engine.pipeline. Errors become one line and exit code 1."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import click

from engine.cli_bench import bench
from engine.cli_common import INDEX_ROOT, LOCATION, PROMPTS, bundled_path, friendly
from engine.cli_runtime import models, setup
from engine.cli_serve import serve


@click.group()
@click.version_option(package_name="seedbed")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def main(verbose: bool) -> None:
    """Seedbed: index a corpus once, synthesize labelled training sets from it with an LLM."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # llama-server is started with fork+exec (to set its parent-death signal); lancedb warns about
    # forks of its runtime, which does not matter for a child that execs at once.
    warnings.filterwarnings("ignore", message="lancedb fork support")


# commands defined in the module of their area
main.add_command(bench)
main.add_command(models)
main.add_command(serve)
main.add_command(setup)


@main.command("index")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Index name (a folder under --root).")
@click.option("--text-field", default="text", show_default=True, help="Field/column with the text; comma-separate several to join them.")
@click.option("--chunk-words", default=160, show_default=True, type=click.IntRange(16, 4096), help="Longest passage, in words.")
@click.option("--min-words", default=8, show_default=True, type=click.IntRange(1), help="Drop passages shorter than this.")
@click.option("--add", is_flag=True, help="Append new documents to an existing index (only new passages are embedded).")
@click.option("--force", is_flag=True, help="Replace an existing index of that name.")
@click.option("--embedder", default="all-MiniLM-L6-v2", show_default=True, help="Embedding model (must match when adding): all-MiniLM-L6-v2, all-MiniLM-L6-v2-int8 (ONNX int8, ~2x faster), hash-N, or a local sentence-transformers folder.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Read, chunk, deduplicate and embed on a Ray cluster: --ray alone starts one here, --ray ADDRESS joins "
                   "one (needs pip install \"seedbed[ray]\"); the same index as a local build.")
@click.option("--ray-workers", type=click.IntRange(1), default=2, show_default=True, help="Ray actors embedding passages.")
@INDEX_ROOT
@friendly
def index_cmd(corpus: Path, name: str, text_field: str, chunk_words: int, min_words: int, add: bool, force: bool,
              embedder: str, ray_address: str | None, ray_workers: int, root: Path | str) -> None:
    """Index CORPUS (a .jsonl/.csv/.parquet/.txt file or a folder of them, or bundled:reuters-sample /
    bundled:news-mix / bundled:news-mix-small, the sample corpora) as NAME."""
    corpus = bundled_path(corpus, "corpora")
    from tqdm import tqdm

    from engine.files import validate_name
    from engine.corpus import CorpusOptions, count_documents
    from engine.embed import get_embedder
    from engine.pipeline import index

    validate_name(name)
    fields = tuple(f.strip() for f in text_field.split(",") if f.strip())
    options = CorpusOptions(text_fields=fields or ("text",), chunk_words=chunk_words, min_words=min_words)
    total = count_documents(corpus)
    click.echo(f"loading embedder {embedder} ...", err=True)
    model = get_embedder(embedder)
    with tqdm(total=total, unit="doc", desc=f"indexing {name}", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(passages: int, documents: int) -> None:
            bar.update(documents - bar.n)
            bar.set_postfix(passages=passages)

        result = index(corpus, name, model, root=root, options=options, add=add, force=force, progress=progress,
                       ray=ray_address, ray_workers=ray_workers)
        bar.update(result.stats.documents - bar.n)
    m, s = result.manifest, result.stats
    click.echo(
        f"index {m.name!r}: {m.passages} passages ({result.added} added from {s.documents} documents; "
        f"{s.duplicates} duplicates, {s.empty_documents} empty, {s.too_short} too short dropped), "
        f"dense={m.dense_kind}, {result.seconds:.1f}s -> {root}/{m.name}"
    )


@main.command()
@click.argument("name")
@click.argument("query")
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--mode", type=click.Choice(["dense", "bm25", "hybrid"]), default="hybrid", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@INDEX_ROOT
@friendly
def search(name: str, query: str, k: int, mode: str, as_json: bool, root: Path | str) -> None:
    """Search index NAME for QUERY and print ranked passages with scores."""
    from engine.pipeline import search as run_search

    for hit in run_search(name, query, k=k, mode=mode, root=root):
        if as_json:
            click.echo(json.dumps({"rank": hit.rank, "score": hit.score, "cosine": hit.cosine, "id": hit.passage.id,
                                   "source": hit.passage.source, "text": hit.passage.text}, ensure_ascii=False))
        else:
            text = hit.passage.text.replace("\n", " ")
            click.echo(f"{hit.rank:>3}  {hit.score:8.4f}  cos={hit.cosine:5.2f}  {hit.passage.source}\n     {text[:300]}")


@main.command()
@click.argument("task", type=click.Path(path_type=Path))
@click.option("--index", "index_name", help="Index to retrieve passages from (not needed by fewgen).")
@click.option("--out", type=LOCATION, required=True,
              help="Output folder, or s3://bucket/prefix (re-run into it to resume, from any machine for s3://).")
@click.option("--base-url", "base_urls", multiple=True, envvar="SEEDBED_BASE_URL",
              help="OpenAI-compatible endpoint, e.g. http://host:8000/v1 (default: the embedded llama.cpp server). Give it "
                   "again for more replicas of the same model: requests are spread over them and a failing one is drained.")
@click.option("--model", envvar="SEEDBED_MODEL", help="Model name at the endpoint, or a local catalog model (see `seedbed models`).")
@click.option("--api-key", envvar=["SEEDBED_API_KEY", "OPENAI_API_KEY"], help="API key for --base-url (or SEEDBED_API_KEY).")
@click.option("--concurrency", default="auto", show_default=True,
              help="Requests in flight: a number, or auto (adaptive for --base-url endpoints: starts at 4, rises while "
                   "throughput rises and latency holds, backs off on 429s and timeouts; the embedded server uses 4 slots; "
                   "with --ray, 8 per worker).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Answer the requests on a Ray cluster: --ray alone starts one on this machine, --ray ADDRESS joins one "
                   "(needs pip install \"seedbed[ray]\").")
@click.option("--ray-workers", type=click.IntRange(1), default=2, show_default=True, help="Ray actors answering requests.")
@click.option("--structured/--no-structured", default=True, show_default=True, help="Ask for JSON through a JSON schema.")
@click.option("--fresh", is_flag=True, help="Accept a changed task spec in an existing --out folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out (re-running the same command does the same); "
              "an error if --out holds no run.")
@click.option("--fake", is_flag=True, help="Use the deterministic scripted LLM (offline plumbing checks; not real data).")
@click.option("-n", "--examples-per-label", type=click.IntRange(1), help="Override the task's examples_per_label.")
@click.option("--max-calls", type=click.IntRange(0), help="Budget of new LLM calls for generation; stops cleanly there (resumable).")
@click.option("--max-tokens-total", type=click.IntRange(1), help="Cap on this run's prompt + completion tokens; stops cleanly there (resumable).")
@click.option("--max-cost", type=click.FloatRange(0, min_open=True), help="Cap on this run's spend (needs --price-in/--price-out); stops cleanly there.")
@click.option("--price-in", type=click.FloatRange(0), envvar="SEEDBED_PRICE_IN", help="Price per million prompt tokens, for estimates and --max-cost.")
@click.option("--price-out", type=click.FloatRange(0), envvar="SEEDBED_PRICE_OUT", help="Price per million completion tokens.")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Reuse answers from the shared LLM cache (see `seedbed cache`).")
@click.option("--strategy", help="Override the task's strategy (synthesizrr, fewgen, attrprompt, targen, oneshot).")
@click.option("--verify", type=click.Choice(["drop", "relabel", "keep", "off"]), help="Override the task's label verification.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Rows no example may near-duplicate and no prompt may carry (e.g. the test split): .csv/.jsonl/.parquet.")
@click.option("--reference-text-field", default="text", show_default=True,
              help="Text column(s) of --reference; digits = positions in a headerless CSV (AG News test.csv: 1,2).")
@INDEX_ROOT
@PROMPTS
@friendly
def synth(task: Path, index_name: str | None, out: Path | str, base_urls: tuple[str, ...], model: str | None, api_key: str | None,
          concurrency: str, ray_address: str | None, ray_workers: int, structured: bool, fresh: bool, resume: bool, fake: bool, examples_per_label: int | None,
          max_calls: int | None, max_tokens_total: int | None, max_cost: float | None, price_in: float | None,
          price_out: float | None, cache: bool, strategy: str | None, verify: str | None, reference: Path | None,
          reference_text_field: str, root: Path | str) -> None:
    """Synthesize a labelled dataset for TASK (a YAML/TOML spec, or bundled:ag_news and the like) from an index."""
    from engine.cli_synth import Budget, Overrides, Scale, run_synth

    task = bundled_path(task, "tasks")
    if resume and fresh:
        raise click.UsageError("--resume continues the run in --out; --fresh replaces it: give one of them")
    if resume and not _holds_run(out):
        from engine.errors import ConfigError

        raise ConfigError(f"--resume: {out} holds no run to continue (no run.json); drop --resume to start one")
    if (price_in is None) != (price_out is None):
        raise click.UsageError("give both --price-in and --price-out (per million tokens), or neither")
    overrides = Overrides(examples_per_label, strategy, "" if verify == "off" else verify)
    prices = (price_in, price_out) if price_in is not None else None
    budget = Budget(max_calls, max_tokens_total, max_cost, prices)
    texts = None
    if reference is not None:
        from engine.metrics.data import load_texts

        texts = tuple(load_texts(reference, reference_text_field))
    base_url = base_urls[0] if base_urls else None
    run_synth(task, index_name, out, base_url, model, api_key, concurrency, structured, fresh, fake, overrides, root,
              budget, use_cache=cache and not fake, reference=texts,
              scale=Scale(replicas=tuple(base_urls[1:]), ray=ray_address, ray_workers=ray_workers))


def _holds_run(out: Path | str) -> bool:
    """Whether the --out folder (or s3:// URI) holds a run to continue."""
    from engine.remote import is_remote

    if is_remote(out):
        from engine.remote_run import remote_run_exists

        return remote_run_exists(out)
    return (Path(out) / "run.json").exists()


@main.command("plan")
@click.argument("task", type=click.Path(path_type=Path))
@click.option("--index", "index_name", help="Index to retrieve passages from (not needed by fewgen).")
@click.option("-n", "--examples-per-label", type=click.IntRange(1), help="Override the task's examples_per_label.")
@click.option("--strategy", help="Override the task's strategy.")
@click.option("--model", envvar="SEEDBED_MODEL", help="Local catalog model whose measured speed turns tokens into time.")
@INDEX_ROOT
@PROMPTS
@friendly
def plan_cmd(task: Path, index_name: str | None, examples_per_label: int | None, strategy: str | None, model: str | None,
             root: Path | str) -> None:
    """Show what `synth` would do for TASK: coverage per label, routing, calls, tokens, time. No LLM call."""
    from engine.cli_synth import Overrides, run_plan

    task = bundled_path(task, "tasks")
    run_plan(task, index_name, Overrides(examples_per_label, strategy, None), root, model or "qwen2.5-coder-1.5b")


@main.group(invoke_without_command=True)
@click.pass_context
@friendly
def cache(ctx: click.Context) -> None:
    """The shared LLM answer cache: `seedbed cache info`, `seedbed cache clear`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(cache_info)


@cache.command("info")
@friendly
def cache_info() -> None:
    """Where the cache is, how many answers it holds and how big it is."""
    from engine.cache import LLMCache

    with LLMCache() as store:
        info = store.info()
    click.echo(f"{info['path']}\n{info['entries']} answers, {info['answer_bytes'] / 1e6:.1f} MB of answers, "
               f"{info['file_bytes'] / 1e6:.1f} MB on disk, limit {info['max_bytes'] / 1e6:.0f} MB "
               "(least recently used answers are evicted past it)")


@cache.command("clear")
@click.confirmation_option(prompt="Delete every cached LLM answer?")
@friendly
def cache_clear() -> None:
    """Delete every cached answer (run journals in output folders are kept)."""
    from engine.cache import LLMCache

    with LLMCache() as store:
        click.echo(f"deleted {store.clear()} cached answers from {store.path}")



@main.command()
@click.argument("folder", type=click.Path(path_type=Path), default=Path("."))
@click.option("--prompts", "with_prompts", is_flag=True, help="Also copy the bundled prompt templates to FOLDER/prompts to edit.")
@friendly
def init(folder: Path, with_prompts: bool) -> None:
    """Start a project in FOLDER: a commented starter task spec (task.yaml) and, with --prompts, the templates."""
    import shutil

    from engine.errors import ConfigError
    from engine.resources import bundled

    spec, prompts = folder / "task.yaml", folder / "prompts"
    clashes = [str(p) for p in (spec, prompts if with_prompts else None) if p is not None and p.exists()]
    if clashes:
        raise ConfigError(f"seedbed init: {', '.join(clashes)} already exists; move it away or pick another FOLDER "
                          "(init never overwrites)")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundled("tasks") / "starter.yaml", spec)
    click.echo(f"wrote {spec}")
    if with_prompts:
        shutil.copytree(bundled("prompts"), prompts)
        click.echo(f"wrote {prompts}/ ({sum(1 for _ in prompts.rglob('*.md'))} templates); use them with "
                   f"--prompts {prompts} or SEEDBED_PROMPTS={prompts}")
    click.echo(f"next: seedbed index bundled:reuters-sample --name sample && "
               f"seedbed synth {spec} --index sample --out runs/first --fake")


@main.command("indexes")
@INDEX_ROOT
@friendly
def indexes_cmd(root: Path | str) -> None:
    """List the indexes under --root."""
    from engine.index.reader import list_indexes

    for m in list_indexes(root):
        graph = (f" (M {m.parameters.get('hnsw_m')}, efConstruction {m.parameters.get('hnsw_ef_construction', 'n/a')})"
                 if m.dense_kind == "hnsw" else "")
        click.echo(f"{m.name:<24} {m.passages:>8} passages  {m.embedder} ({m.dim}-d)  dense={m.dense_kind}{graph}  "
                   f"updated {m.updated_at}")


@main.command("rebuild-dense")
@click.argument("name")
@INDEX_ROOT
@friendly
def rebuild_dense_cmd(name: str, root: Path | str) -> None:
    """Rebuild index NAME's FAISS graphs from its stored vectors with this version's HNSW settings (no
    re-embedding): graphs of at most 32,768 passages; an index built by an older Seedbed keeps its older
    graph (one, of any size, searched at efSearch 768) until then."""
    import time

    from engine.index.builder import rebuild_dense

    started = time.monotonic()
    m = rebuild_dense(name, root)
    click.echo(f"index {m.name!r}: dense={m.dense_kind}, M {m.parameters['hnsw_m']}, efConstruction "
               f"{m.parameters['hnsw_ef_construction']}, {m.passages} vectors, {time.monotonic() - started:.1f}s")



if __name__ == "__main__":
    main()
