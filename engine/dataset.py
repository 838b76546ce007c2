"""Write a synthesized dataset: Parquet + JSONL of examples, rejections, and the run manifest.

Every file is written to a temporary name and renamed into place, so a reader never sees a
partial file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from engine.files import write_atomic, write_json_atomic
from engine.types import Example, Rejection

__all__ = ["example_row", "rejection_row", "write_dataset", "read_dataset", "DATASET_FILES"]

DATASET_FILES = {
    "parquet": "dataset.parquet",
    "jsonl": "dataset.jsonl",
    "rejected": "rejected.jsonl",
    "manifest": "manifest.json",
}


def example_row(example: Example, passage_text: str | None = None, copy_rate: float | None = None,
                judge_label: str | None = None, made_by: dict[str, str] | None = None) -> dict[str, Any]:
    """One flat output row: text, label, then provenance fields (and the judge's label when verified).

    `made_by` adds `strategy` and `strategy_reason` (why a fallback strategy made the example).
    """
    prov = asdict(example.provenance)
    prov["sampling"] = json.dumps(prov["sampling"], sort_keys=True)
    # a JSON string, like sampling: the keys differ by strategy, and Parquet columns need one type
    prov["grounding"] = json.dumps(prov["grounding"], sort_keys=True, ensure_ascii=False) if prov["grounding"] else None
    return {"text": example.text, "label": example.label, **prov, "passage_text": passage_text, "copy_rate": copy_rate,
            "judge_label": judge_label, **(made_by or {})}


def rejection_row(rejection: Rejection) -> dict[str, Any]:
    prov = asdict(rejection.provenance) if rejection.provenance else {}
    return {
        "label": rejection.label, "reason": rejection.reason, "detail": rejection.detail, "raw": rejection.raw,
        "request_id": prov.get("request_id", ""), "passage_id": prov.get("passage_id"),
    }


def write_dataset(out: Path, rows: list[dict[str, Any]], rejected: list[dict[str, Any]], manifest: dict[str, Any]) -> dict[str, Path]:
    """Write all output files of a run into `out` atomically, the manifest last.

    Returns:
        {kind: path} of the files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    paths = {kind: out / name for kind, name in DATASET_FILES.items()}
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema={"text": pl.Utf8, "label": pl.Utf8})
    write_atomic(paths["parquet"], lambda tmp: frame.write_parquet(tmp))
    write_atomic(paths["jsonl"], lambda tmp: _write_jsonl(tmp, rows))
    write_atomic(paths["rejected"], lambda tmp: _write_jsonl(tmp, rejected))
    write_json_atomic(paths["manifest"], manifest)
    return paths


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _remove_stale_temps(out: Path) -> None:
    """Delete temp files a killed run left behind (the run holds the folder's lock, so no live writer owns them)."""
    for tmp in out.glob(".*.tmp-*"):
        if tmp.is_file() and not tmp.name.endswith(f".tmp-{os.getpid()}"):
            tmp.unlink(missing_ok=True)


def read_dataset(path: Path) -> pl.DataFrame:
    """Load a dataset folder (its Parquet) or a .parquet/.jsonl/.csv file with text and label columns."""
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILES["parquet"]
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix == ".jsonl":
        return pl.read_ndjson(path)
    return pl.read_csv(path)
