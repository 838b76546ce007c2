"""The `seedbed bench` command: measure datasets against a human split, write the report, update the cards."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from engine.cli_common import friendly

__all__ = ["bench"]


@click.command()
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
def bench(datasets: tuple[Path, ...], reference: Path, train: Path | None, text_field: str, label_field: str,
          reference_text_field: str | None, reference_label_field: str | None, train_text_field: str | None,
          train_label_field: str | None, label_map: str | None, embedder: str, seeds: int, max_reference: int,
          entities: bool, finetune_student: bool, embed_cache: bool, html: bool, out: Path) -> None:
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


def _card_bench(datasets: Sequence[Path], report: dict[str, Any], reference: Path) -> None:
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
