"""Write a benchmark report (JSON, HTML) and flatten it into headline rows for a terminal summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from engine.metrics.bench import BenchResult

__all__ = ["write_report", "headline_rows", "format_summary", "scalar", "HEADLINE", "REPORT_FILES"]

REPORT_FILES = {"json": "report.json", "html": "report.html"}

# (family, metric name or None, field inside the value or None, display name)
HEADLINE = [
    ("lexical", "self_bleu_4", None, "Self-BLEU-4"),
    ("lexical", "distinct_2", None, "distinct-2"),
    ("lexical", "compression_ratio", None, "compression ratio"),
    ("lexical", "vocabulary_size", None, "vocabulary"),
    ("lexical", "length", "mean", "mean length (tokens)"),
    ("semantic", "mean_pairwise_cosine", None, "mean pairwise cosine"),
    ("semantic", "vendi_score", None, "Vendi score"),
    ("semantic", "class_separability", None, "class separability"),
    ("entities", "popularity_bias", "share", "popularity bias"),
    ("human_likeness", "mauve", None, "MAUVE"),
    ("human_likeness", "frechet_distance", None, "Fréchet distance"),
    ("label_fidelity", None, "fidelity", "label fidelity"),
    ("students", "embedding_logreg", "accuracy_mean", "student acc. (embedding LR)"),
    ("students", "tfidf_logreg", "accuracy_mean", "student acc. (TF-IDF LR)"),
    ("students", "finetuned_minilm", "accuracy_mean", "student acc. (fine-tuned MiniLM)"),
]


def scalar(metrics: dict, family: str, name: str | None, field: str | None, side: str) -> float | str | None:
    """One number from a run's metrics, a reason string if it is unavailable, or None if absent."""
    node = metrics.get(family, {})
    if isinstance(node, dict) and "unavailable" in node:
        return str(node["unavailable"])
    if name is not None:
        node = node.get(name, {}) if isinstance(node, dict) else {}
    value = node.get(side) if isinstance(node, dict) else None
    if isinstance(value, dict):
        if "unavailable" in value:
            return str(value["unavailable"])
        value = value.get(field) if field else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def headline_rows(report: dict) -> list[tuple[str, list[tuple[object, object]]]]:
    """[(display name, [(synthetic, human) per run])] for the HEADLINE metrics."""
    rows = []
    for family, name, field, label in HEADLINE:
        pairs = [(scalar(run["metrics"], family, name, field, "synthetic"),
                  scalar(run["metrics"], family, name, field, "human")) for run in report["runs"]]
        if any(value is not None for pair in pairs for value in pair):  # an opt-in metric nobody ran is left out
            rows.append((label, pairs))
    return rows


def format_summary(report: dict) -> str:
    """A plain-text table: one row per headline metric, 'synthetic / human' per run, then the timing."""
    names = [run["name"] for run in report["runs"]]
    width = max([28] + [len(n) + 2 for n in names])
    lines = [f"{'metric (synthetic / human)':<30}" + "".join(f"{n[:width - 2]:>{width}}" for n in names)]
    for label, pairs in headline_rows(report):
        cells = [f"{_short(s)} / {_short(h)}" for s, h in pairs]
        lines.append(f"{label:<30}" + "".join(f"{c:>{width}}" for c in cells))
    t = report["timing"]
    lines.append(f"time: {t['total_s']:.1f} s in all, {t['embed_s']:.1f} s embedding {t['texts_embedded']} texts once "
                 f"({t['texts_from_cache']} more from the embedding cache); ratio total/embedding = {t['total_over_embed']}")
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "n/a" if value is None else "n/a*"


def write_report(out: Path, result: BenchResult, html: bool = True) -> dict[str, Path]:
    """Write report.json (and report.html) into `out`, each atomically.

    Returns:
        {kind: path} of the files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_FILES["json"]}
    _atomic(paths["json"], json.dumps(_finite(result.report), indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    if html:
        from engine.metrics.html import render_html

        paths["html"] = out / REPORT_FILES["html"]
        _atomic(paths["html"], render_html(result))
    return paths


def _finite(value):
    """JSON has no NaN/inf: write them as null (strict parsers reject NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
