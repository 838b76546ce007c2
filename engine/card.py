"""The dataset card: a `README.md` in every run folder, in the Hugging Face card format.

A YAML header (task category, size category, labels, language, a licence note inherited from the
corpus, the data file) and then how the set was made, from the run's manifest: strategy per label
and why, model and endpoint, corpus and coverage, counts kept and rejected by reason, label
verification agreement, the quality filters; and, once `seedbed bench` has measured the run, its
headline metrics beside their human counterparts. The card is rewritten from the manifest each
time (atomically), so it never disagrees with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CARD_NAME", "render_card", "write_card", "size_category"]

CARD_NAME = "README.md"
_LICENCE_FILES = ("LICENSE.md", "LICENSE", "LICENCE.md", "README.md")


def size_category(rows: int) -> str:
    """The Hugging Face size category of a set with `rows` examples."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "n>1M"


def _licence(sources: list[str], root: Path) -> tuple[str, str]:
    """(licence file found next to the corpus, or "", a one-line note) for the index's source paths."""
    for source in sources:
        path = Path(source) if Path(source).is_absolute() else root / source
        folder = path if path.is_dir() else path.parent
        for name in _LICENCE_FILES:
            if (folder / name).is_file():
                return str(Path(source) / name if path.is_dir() else Path(source).parent / name), ""
    if not sources:
        return "", "no corpus: the examples were written by the model from the task spec alone"
    return "", "the corpus carries no licence file; check its terms before sharing this set"


def render_card(manifest: dict[str, Any], bench: dict[str, Any] | None = None, root: Path = Path(".")) -> str:
    """The card's text for a run's manifest (and its row of a bench report, when given)."""
    task, counts = manifest["task"], manifest["counts"]
    labels = [spec["name"] for spec in task["labels"]]
    index = manifest.get("index") or {}
    sources = [s.get("path", "") for s in index.get("sources", []) if s.get("path")]
    licence_file, licence_note = _licence(sources, root)
    header = {
        "pretty_name": f"{task['name']} ({manifest.get('strategy', task.get('strategy'))}, {manifest.get('model')})",
        "task_categories": ["text-classification"],
        "size_categories": [size_category(counts["kept"])],
        "language": ["en"],
        "license": "other",
        "license_details": (f"inherited from the corpus: see {licence_file}" if licence_file else licence_note),
        "tags": ["synthetic", "seedbed", str(manifest.get("strategy", ""))],
        "configs": [{"config_name": "default", "data_files": "dataset.parquet"}],
        "dataset_info": {"features": [{"name": "text", "dtype": "string"},
                                      {"name": "label", "dtype": "string", "values": labels}]},
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {task['name']}: a synthetic labelled dataset", "", task.get("description") or "", ""]
    lines += _made(manifest, index, sources)
    lines += _counts(manifest, labels)
    if bench:
        lines += _bench(bench)
    lines += ["## Files", "", "`dataset.parquet` and `dataset.jsonl` (text, label and each example's provenance), "
              "`rejected.jsonl` (what was not kept, and why), `manifest.json` (everything above, and more).", "",
              "Language: en (assumed: the task spec does not declare one). The examples are model-written; "
              "the licence of the corpus their passages came from applies to them.", ""]
    return "\n".join(lines)


def _made(manifest: dict, index: dict, sources: list[str]) -> list[str]:
    routes = manifest.get("routes") or {}
    coverage = manifest.get("coverage") or {}
    out = ["## How it was made", "",
           f"- Seedbed {manifest.get('seedbed_version', '')}, model `{manifest.get('model')}` at `{manifest.get('endpoint', '')}`, "
           f"{manifest.get('finished_at', '')}",
           f"- Strategy: {manifest.get('strategy')}"]
    if index:
        out.append(f"- Corpus: index `{index.get('name')}` ({index.get('passages')} passages, {index.get('embedder')}"
                   + (f"; built from {', '.join(sources)}" if sources else "") + ")")
    for label, route in routes.items():
        verdict = coverage.get(label, {}).get("verdict")
        why = route.get("strategy_reason") or ""
        out.append(f"- `{label}`: made by {route.get('strategy')}" + (f", corpus coverage {verdict}" if verdict else "")
                   + (f" ({why})" if why else ""))
    return out + [""]


def _counts(manifest: dict, labels: list[str]) -> list[str]:
    counts = manifest["counts"]
    per_label = ", ".join(f"{label} {counts['kept_per_label'].get(label, 0)}" for label in labels)
    rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.get("rejected_by_reason", {}).items(),
                                                                 key=lambda kv: -kv[1])) or "none"
    out = ["## Counts", "", f"- Kept: {counts['kept']} ({per_label})", f"- Rejected: {counts.get('rejected', 0)} ({rejected})",
           f"- LLM calls: {counts.get('llm_calls', 0)}; tokens: {json.dumps(manifest.get('tokens', {}))}"]
    verification = manifest.get("verification")
    if verification:
        agreement = ", ".join(f"{label} {share:.2f}" for label, share in verification["agreement"].items())
        out.append(f"- Label verification ({verification['policy']}): judge agreement {agreement}")
    quality = (manifest.get("stages") or {}).get("quality")
    if quality:
        rate = quality["grounding"].get("ungrounded_rate")
        out.append(f"- Quality filters: dropped {json.dumps(quality['dropped'])}; ungrounded-entity rate "
                   f"{'n/a' if rate is None else f'{rate:.1%}'}")
    return out + [""]


def _bench(bench: dict) -> list[str]:
    out = ["## Benchmark (`seedbed bench`; synthetic / human counterpart)", "",
           f"Against `{bench.get('reference', '')}`, measured {bench.get('date', '')}.", "",
           "| metric | synthetic | human |", "|---|---|---|"]
    for name, (synthetic, human) in bench["rows"]:
        out.append(f"| {name} | {_cell(synthetic)} | {_cell(human)} |")
    return out + [""]


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("n/a" if value is None else str(value)[:60])


def write_card(out: Path, manifest: dict[str, Any], bench: dict[str, Any] | None = None, root: Path = Path(".")) -> Path:
    """Write `out/README.md` atomically; returns its path."""
    import os

    path = out / CARD_NAME
    tmp = path.with_name(f".{CARD_NAME}.tmp-{os.getpid()}")
    tmp.write_text(render_card(manifest, bench, root), encoding="utf-8")
    os.replace(tmp, path)
    return path
