"""Human review of a synthesized dataset: rows to browse, verdicts appended to `review.jsonl`.

The dataset files are never modified: each accept/reject is one appended line in the output
folder's `review.jsonl` (the latest line for a row wins), so the original is always there and
every decision is kept with its time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

__all__ = ["REVIEW_FILE", "VERDICTS", "load_rows", "read_reviews", "record_review", "select"]

REVIEW_FILE = "review.jsonl"
VERDICTS = ("accept", "reject")
_SHOWN = ("text", "label", "passage_id", "passage_text", "retrieval_score", "retrieval_rank", "cosine", "query",
          "template_id", "model", "seed", "request_id", "copy_rate", "judge_label")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of review.jsonl: that verdict was never acknowledged
    return rows


def load_rows(out: Path) -> list[dict[str, Any]]:
    """Kept examples (`row_id` k0, k1, ...) then rejected answers (r0, r1, ...) of the run in `out`.

    Raises:
        ConfigError: `out` holds no finished dataset.
    """
    if not (out / "dataset.jsonl").exists():
        raise ConfigError(f"{out} holds no dataset.jsonl yet; review a finished run")
    rows = [{"row_id": f"k{i}", "status": "kept", "reason": None, **{k: row.get(k) for k in _SHOWN}}
            for i, row in enumerate(_jsonl(out / "dataset.jsonl"))]
    rows += [{"row_id": f"r{i}", "status": "rejected", "reason": row.get("reason"), "detail": row.get("detail"),
              "text": row.get("raw"), "label": row.get("label"), "passage_id": row.get("passage_id"),
              "request_id": row.get("request_id")}
             for i, row in enumerate(_jsonl(out / "rejected.jsonl"))]
    reviews = read_reviews(out)
    for row in rows:
        row["review"] = reviews.get(row["row_id"])
    return rows


def select(rows: list[dict[str, Any]], label: str | None = None, reason: str | None = None,
           min_copy_rate: float | None = None, max_copy_rate: float | None = None) -> list[dict[str, Any]]:
    """Rows with this label, this rejection reason (`kept` for kept rows), and copy-rate in range."""
    def keep(row: dict[str, Any]) -> bool:
        if label and row.get("label") != label:
            return False
        if reason and (row.get("reason") or "kept") != reason:
            return False
        rate = row.get("copy_rate")
        if min_copy_rate is not None and (rate is None or rate < min_copy_rate):
            return False
        return not (max_copy_rate is not None and (rate is None or rate > max_copy_rate))

    return [row for row in rows if keep(row)]


def read_reviews(out: Path) -> dict[str, dict[str, Any]]:
    """row_id -> the latest verdict recorded for it."""
    return {entry["row_id"]: entry for entry in _jsonl(out / REVIEW_FILE) if "row_id" in entry}


def record_review(out: Path, row_id: str, verdict: str, note: str = "") -> dict[str, Any]:
    """Append a verdict for one row (fsync'd before returning).

    Raises:
        ConfigError: an unknown row or verdict.
    """
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict {verdict!r} is not one of {list(VERDICTS)}")
    known = {row["row_id"] for row in load_rows(out)}
    if row_id not in known:
        raise ConfigError(f"no row {row_id!r} in {out.name}; row ids are k0.. for kept and r0.. for rejected rows")
    entry = {"row_id": row_id, "verdict": verdict, "note": note[:2000], "at": round(time.time(), 3)}
    with open(out / REVIEW_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return entry
