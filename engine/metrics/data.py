"""Labelled text sets for the benchmark: load any Parquet / JSONL / CSV / TSV (or a run folder) with a
text and a label column, clean it, and draw label-matched samples.

Loading never crashes deep inside a metric: a missing file, an unknown format, a missing column or an
empty set raises a ConfigError naming the file, the field, the value and the fix; rows that cannot be
measured (empty text, no label) are dropped and said so in `warnings`; huge texts are cut to
`MAX_CHARS` characters, also with a warning.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ConfigError

__all__ = ["LabeledSet", "load_labeled", "parse_label_map", "matched_indices", "MAX_CHARS", "SUFFIXES"]

MAX_CHARS = 20_000
SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".jsonl.gz", ".csv", ".tsv")
_RUN_FILES = ("dataset.parquet", "dataset.jsonl")


@dataclass(frozen=True)
class LabeledSet:
    """A cleaned set of (text, label) rows; `sources` holds the source passage per row when known."""

    name: str
    path: str
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    sources: tuple[str | None, ...] | None = None
    warnings: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.texts)

    def label_counts(self) -> dict[str, int]:
        """{label: rows}, labels sorted by name."""
        return dict(sorted(Counter(self.labels).items()))

    def subset(self, rows, warnings: tuple[str, ...] = ()) -> "LabeledSet":
        """The rows at these positions (in that order), keeping name and path."""
        rows = list(rows)
        sources = tuple(self.sources[i] for i in rows) if self.sources is not None else None
        return LabeledSet(self.name, self.path, tuple(self.texts[i] for i in rows), tuple(self.labels[i] for i in rows),
                          sources, self.warnings + tuple(warnings))


def parse_label_map(spec: str | None) -> dict[str, str]:
    """Parse '1=World,2=Sports' into {'1': 'World', '2': 'Sports'}.

    Raises:
        ConfigError: an item without '=' or with an empty side.
    """
    if not spec:
        return {}
    mapping = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--label-map item {item!r} is not KEY=NAME; write e.g. --label-map 1=World,2=Sports")
        mapping[key.strip()] = value.strip()
    return mapping


def load_labeled(path: str | Path, text_field: str = "text", label_field: str = "label", *, label_map: dict[str, str] | None = None,
                 source_field: str = "passage_text", role: str = "dataset", name: str | None = None) -> LabeledSet:
    """Load a labelled set from a run folder or a .parquet/.jsonl(.gz)/.csv/.tsv file.

    Args:
        path: a file, or a `seedbed synth` output folder (its dataset.parquet or dataset.jsonl).
        text_field: the text column; comma-separate several to join them with a space. All-digit
            names (e.g. '2') mean column positions in a CSV/TSV without a header row.
        label_field: the label column (values are compared as strings).
        label_map: rename labels, e.g. {'1': 'World'}; labels not in it are kept.
        source_field: optional column with the source passage (kept for the report's samples).
        role: how the file is named in errors ('dataset', 'reference', 'train').
        name: the set's display name (default: the folder or file stem).

    Returns:
        A LabeledSet with at least one row.

    Raises:
        ConfigError: missing file, unknown format, missing column, or no usable row.
    """
    file = _resolve(Path(path), role)
    fields = [f.strip() for f in text_field.split(",") if f.strip()]
    if not fields or not label_field.strip():
        raise ConfigError(f"{role} {file}: empty --text-field/--label-field; name the columns, e.g. --text-field text")
    frame = _read(file, headerless=all(f.isdigit() for f in [*fields, label_field]), role=role)
    _check_columns(frame, file, role, fields, label_field)
    texts = _joined(frame, fields)
    labels = [None if v is None else str(v) for v in frame[label_field].to_list()]
    if label_map:
        labels = [None if v is None else label_map.get(v, v) for v in labels]
    sources = frame[source_field].to_list() if source_field in frame.columns else None
    display = name or (Path(path).name if Path(path).is_dir() else Path(path).name.split(".")[0])
    return _clean(display, str(file), role, texts, labels, sources)


def load_texts(path: str | Path, text_field: str = "text", role: str = "reference") -> list[str]:
    """The non-empty texts of a .parquet/.jsonl(.gz)/.csv/.tsv file (e.g. `synth --reference`).

    Raises:
        ConfigError: missing file, unknown format, missing column, or no text.
    """
    file = _resolve(Path(path), role)
    fields = [f.strip() for f in text_field.split(",") if f.strip()]
    if not fields:
        raise ConfigError(f"{role} {file}: empty --{role}-text-field; name the column(s), e.g. text")
    frame = _read(file, headerless=all(f.isdigit() for f in fields), role=role)
    missing = [f for f in fields if f not in frame.columns]
    if frame.height == 0 or missing:
        raise ConfigError(f"{role} {file} has no text column {missing[0] if missing else fields[0]!r} "
                          f"(columns: {frame.columns[:12]}); pass --{role}-text-field NAME "
                          "(all-digit names are column positions in a headerless CSV)")
    texts = [t for t in _joined(frame, fields) if t.strip()]
    if not texts:
        raise ConfigError(f"{role} {file}: column {text_field!r} holds no text")
    return texts


def _resolve(path: Path, role: str) -> Path:
    if path.is_dir():
        for candidate in _RUN_FILES:
            if (path / candidate).is_file():
                return path / candidate
        raise ConfigError(f"{role} folder {path} has no {' or '.join(_RUN_FILES)}; pass a run folder of `seedbed synth` "
                          f"or a file ({', '.join(SUFFIXES)})")
    if not path.is_file():
        raise ConfigError(f"{role} {path} does not exist; pass a run folder or a {', '.join(SUFFIXES)} file")
    if not path.name.lower().endswith(SUFFIXES):
        raise ConfigError(f"{role} {path}: unknown format {''.join(path.suffixes) or '(no suffix)'!r}; "
                          f"use one of {', '.join(SUFFIXES)}")
    return path


def _read(file: Path, headerless: bool, role: str):
    import polars as pl

    lower = file.name.lower()
    try:
        if lower.endswith(".parquet"):
            return pl.read_parquet(file)
        if lower.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
            return pl.read_ndjson(file, infer_schema_length=None)
        separator = "\t" if lower.endswith(".tsv") else ","
        frame = pl.read_csv(file, has_header=not headerless, separator=separator, infer_schema=False,
                            quote_char=None if separator == "\t" else '"')
        return frame.rename({c: str(i) for i, c in enumerate(frame.columns)}) if headerless else frame
    except pl.exceptions.NoDataError:
        return pl.DataFrame()
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        raise ConfigError(f"{role} {file} cannot be read as {lower.rsplit('.', 1)[-1]}: {str(exc).splitlines()[0]}; "
                          "check the file's format") from exc


def _check_columns(frame, file: Path, role: str, fields: list[str], label_field: str) -> None:
    if frame.height == 0:
        raise ConfigError(f"{role} {file} is empty (0 rows); benchmark a set with at least one labelled example")
    option = "" if role == "dataset" else f"{role}-"
    for kind, name in [*(("text", f) for f in fields), ("label", label_field)]:
        if name not in frame.columns:
            raise ConfigError(
                f"{role} {file} has no {kind} column {name!r}; its columns are {frame.columns[:12]}; "
                f"pass --{option}{kind}-field NAME (all-digit names are column positions in a headerless CSV)")


def _joined(frame, fields: list[str]) -> list[str]:
    columns = [frame[f].cast(str, strict=False).to_list() for f in fields]
    return [" ".join(p for p in parts if p and p.strip()) for parts in zip(*columns)]


def _clean(name: str, file: str, role: str, texts: list[str], labels: list[str | None], sources) -> LabeledSet:
    keep, empty, unlabeled, cut = [], 0, 0, 0
    for i, (text, label) in enumerate(zip(texts, labels)):
        if label is None or not label.strip():
            unlabeled += 1
        elif not text.strip():
            empty += 1
        else:
            keep.append(i)
            cut += len(text) > MAX_CHARS
    warnings = []
    if empty:
        warnings.append(f"{role} {file}: dropped {empty} row(s) with empty text")
    if unlabeled:
        warnings.append(f"{role} {file}: dropped {unlabeled} row(s) without a label")
    if cut:
        warnings.append(f"{role} {file}: cut {cut} text(s) longer than {MAX_CHARS} characters to that length")
    if not keep:
        raise ConfigError(f"{role} {file} has no row with both a text and a label ({len(texts)} row(s) read); "
                          "check --text-field/--label-field")
    clean_texts = tuple(" ".join(texts[i][:MAX_CHARS].split()) for i in keep)
    src = tuple(None if sources[i] is None else str(sources[i]) for i in keep) if sources is not None else None
    return LabeledSet(name, file, clean_texts, tuple(labels[i].strip() for i in keep), src, tuple(warnings))


def matched_indices(labels: tuple[str, ...], wanted: dict[str, int], seed: int, exclude: set[int] = frozenset(),
                    prefer: set[int] | None = None) -> tuple[list[int], dict[str, int]]:
    """Draw rows so each label appears as often as in `wanted` (or as often as available).

    Args:
        labels: the labels of the pool to draw from.
        wanted: {label: count} to match (e.g. a synthetic set's label counts).
        seed: the random seed (the same seed draws the same rows).
        exclude: positions not to draw (e.g. an earlier disjoint sample).
        prefer: positions to draw from first (e.g. rows already embedded); others only fill a shortfall.

    Returns:
        (positions, {label: shortfall}) with positions sorted; shortfall lists labels the pool had too few of.
    """
    rng = np.random.default_rng(seed)
    first: dict[str, list[int]] = {}
    then: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if i not in exclude:
            (first if prefer is None or i in prefer else then).setdefault(label, []).append(i)
    chosen, short = [], {}
    for label, count in sorted(wanted.items()):
        for pool in (first.get(label, []), then.get(label, [])):
            take = min(count, len(pool))
            chosen.extend(rng.choice(pool, size=take, replace=False).tolist() if take else [])
            count -= take
        if count:
            short[label] = count
    return sorted(chosen), short
