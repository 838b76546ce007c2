"""Read corpora as a stream of passages: jsonl(.gz), csv, parquet, txt, or a folder of them.

Documents are normalised (Unicode NFC, HTML line breaks, whitespace), split into passages of at
most `chunk_words` words on sentence boundaries, and exact duplicates (after normalisation) are
dropped. Nothing is held in memory beyond one batch, so any corpus size works.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from engine.errors import CorpusError
from engine.types import Passage

__all__ = ["CorpusOptions", "CorpusStats", "count_documents", "iter_documents", "iter_passages", "list_files", "normalise", "chunk", "passage_id"]

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".txt": "txt"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9(])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_PARAGRAPH = re.compile(r"[ \t]*\n[ \t]*\n\s*")
_NEWLINE = re.compile(r"[ \t]*\n[ \t]*")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class CorpusOptions:
    """How to read a corpus: which field(s) hold the text and how to chunk."""

    text_fields: tuple[str, ...] = ("text",)
    chunk_words: int = 160
    min_words: int = 8


@dataclass
class CorpusStats:
    """Counts gathered while streaming (mutable on purpose: filled as the stream is consumed)."""

    files: int = 0
    documents: int = 0
    empty_documents: int = 0
    passages: int = 0
    duplicates: int = 0
    too_short: int = 0
    seen_hashes: SeenIds = field(default_factory=lambda: SeenIds(), repr=False)


class SeenIds:
    """The passage ids seen so far, 8 bytes each: a sorted array of each id's first 64 bits, plus a small set
    of the newest, merged into it every MERGE ids. A set of 200,000 id strings held about 20 MB.

    Ids are hex hashes (`passage_id`); two passages whose hashes share 64 bits would count as duplicates,
    as likely as a collision among 2**32 passages.
    """

    MERGE = 8192

    def __init__(self, ids: Iterable[str] = ()):
        self._sorted = np.zeros(0, np.uint64)
        self._recent: set[int] = set()
        self.update(ids)

    def __contains__(self, pid: str) -> bool:
        key = int(pid[:16], 16)
        if key in self._recent:
            return True
        at = int(np.searchsorted(self._sorted, np.uint64(key)))
        return at < len(self._sorted) and int(self._sorted[at]) == key

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add(self, pid: str) -> None:
        self._recent.add(int(pid[:16], 16))
        if len(self._recent) >= self.MERGE:
            self._sorted = np.union1d(self._sorted, np.fromiter(self._recent, np.uint64, len(self._recent)))
            self._recent.clear()

    def update(self, ids: Iterable[str]) -> None:
        for pid in ids:
            self.add(pid)


def list_files(path: str | Path) -> list[Path]:
    """The corpus files under `path` (a file or a folder, searched recursively, sorted).

    Raises:
        CorpusError: the path does not exist, has an unknown format, or a folder holds no corpus file.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"corpus path {path} does not exist; pass a .jsonl, .csv, .parquet, .txt file or a folder")
    if path.is_file():
        _format_of(path)
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _known(p))
    if not files:
        raise CorpusError(
            f"folder {path} holds no corpus file; supported: {', '.join(sorted(FORMATS))} (optionally .gz)"
        )
    return files


def _known(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return Path(name).suffix in FORMATS


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    fmt = FORMATS.get(Path(name).suffix)
    if fmt is None:
        raise CorpusError(
            f"{path}: unknown corpus format {Path(name).suffix or '(no extension)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))} (optionally gzipped as .gz)"
        )
    return fmt


def normalise(text: str) -> str:
    """Canonical form of a text: NFC, HTML entities decoded, hard-wrapped lines joined,
    paragraphs (blank lines, `<br />`) kept as single newlines, spaces collapsed."""
    text = unicodedata.normalize("NFC", html.unescape(text)).replace("\r\n", "\n").replace("\r", "\n")
    text = _BR.sub("\n\n", text)
    text = _CONTROL.sub("", text)
    text = _PARAGRAPH.sub("\x00", text)
    text = _NEWLINE.sub(" ", text).replace("\x00", "\n")
    return _SPACES.sub(" ", text).strip()


def chunk(text: str, max_words: int) -> list[str]:
    """Split `text` into passages of at most `max_words` words, cutting at sentence ends."""
    words = text.split()
    if len(words) <= max_words:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(text.replace("\n", " \n ")):
        sentence_words = sentence.split()
        while len(sentence_words) > max_words:  # one huge sentence: hard cut
            pieces.extend(_flush(current))
            current = []
            pieces.append(" ".join(sentence_words[:max_words]))
            sentence_words = sentence_words[max_words:]
        if len(current) + len(sentence_words) > max_words:
            pieces.extend(_flush(current))
            current = []
        current.extend(sentence_words)
    pieces.extend(_flush(current))
    return pieces


def _flush(words: list[str]) -> list[str]:
    return [" ".join(words)] if words else []


def passage_id(text: str) -> str:
    """Stable id of a passage: a hash of its normalised text (so re-indexing keeps ids)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def iter_passages(path: str | Path, options: CorpusOptions, stats: CorpusStats | None = None) -> Iterator[Passage]:
    """Stream the deduplicated passages of a corpus.

    Args:
        path: a corpus file or folder.
        options: text fields and chunking.
        stats: filled with counts as the stream is consumed; pre-seed `seen_hashes` to skip
            passages an index already holds (used by `index --add`).

    Raises:
        CorpusError: an unreadable file, a missing text field, undecodable bytes, or no text at all.
    """
    stats = stats if stats is not None else CorpusStats()
    for doc_text, source, metadata in iter_documents(path, options, stats):
        for piece in chunk(doc_text, options.chunk_words):
            if len(piece.split()) < options.min_words:
                stats.too_short += 1
                continue
            pid = passage_id(piece)
            if pid in stats.seen_hashes:
                stats.duplicates += 1
                continue
            stats.seen_hashes.add(pid)
            stats.passages += 1
            yield Passage(id=pid, text=piece, source=source, metadata=metadata)


def iter_documents(path: str | Path, options: CorpusOptions, stats: CorpusStats) -> Iterator[tuple[str, str, dict]]:
    """Stream (normalised text, source 'file:line', metadata) for every non-empty document."""
    root = Path(path)
    for file in list_files(root):
        stats.files += 1
        reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet, "txt": _read_txt}[_format_of(file)]
        rel = file.name if file == root else str(file.relative_to(root))
        for where, record in reader(file, options):
            text = normalise(_join_fields(record, options.text_fields, file, where))
            stats.documents += 1
            if not text:
                stats.empty_documents += 1
                continue
            metadata = {k: _jsonable(v) for k, v in record.items() if k not in options.text_fields}
            yield text, f"{rel}:{where}", metadata


def _join_fields(record: dict[str, Any], fields: tuple[str, ...], file: Path, where: Any) -> str:
    missing = [f for f in fields if f not in record]
    if missing:
        raise CorpusError(
            f"{file}:{where}: no field {missing[0]!r}; fields present: {', '.join(map(str, record)) or '(none)'}. "
            "Choose the text field with --text-field NAME (comma-separate several to join them)"
        )
    parts = [record[f] for f in fields]
    return "\n".join(str(p) for p in parts if p is not None and str(p).strip())


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _open_text(file: Path) -> io.TextIOBase:
    raw = gzip.open(file, "rb") if file.name.lower().endswith(".gz") else open(file, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def _decode_error(file: Path, line: int, exc: UnicodeDecodeError) -> CorpusError:
    return CorpusError(
        f"{file}:{line}: bytes that are not UTF-8 ({exc.object[exc.start:exc.start + 4]!r}); "
        "convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
    )


def _read_jsonl(file: Path, options: CorpusOptions) -> Iterator[tuple[int, dict]]:
    line_no = 0
    try:
        with _open_text(file) as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusError(f"{file}:{line_no}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
                if not isinstance(record, dict):
                    raise CorpusError(f"{file}:{line_no}: expected a JSON object, got {type(record).__name__}")
                yield line_no, record
    except UnicodeDecodeError as exc:
        raise _decode_error(file, _line_of(file, exc), exc) from None
    except (OSError, EOFError) as exc:
        raise CorpusError(f"{file}: cannot read ({exc})") from None


def _read_csv(file: Path, options: CorpusOptions) -> Iterator[tuple[int, dict]]:
    try:
        with _open_text(file) as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                return
            missing = [f for f in options.text_fields if f not in reader.fieldnames]
            if missing:
                raise CorpusError(
                    f"{file}: no column {missing[0]!r}; columns: {', '.join(reader.fieldnames)}. "
                    "Choose the text column with --text-field NAME"
                )
            for record in reader:
                yield reader.line_num, {k: v for k, v in record.items() if k is not None}
    except UnicodeDecodeError as exc:
        raise _decode_error(file, _line_of(file, exc), exc) from None
    except csv.Error as exc:
        raise CorpusError(f"{file}: malformed CSV ({exc})") from None
    except (OSError, EOFError) as exc:
        raise CorpusError(f"{file}: cannot read ({exc})") from None


def _line_of(file: Path, exc: UnicodeDecodeError) -> int:
    """Line of the first undecodable byte (scans the file once; only on the error path)."""
    opener = gzip.open if file.name.lower().endswith(".gz") else open
    with opener(file, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _read_parquet(file: Path, options: CorpusOptions) -> Iterator[tuple[int, dict]]:
    import pyarrow.lib
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except (pyarrow.lib.ArrowException, OSError) as exc:
        raise CorpusError(f"{file}: not a readable Parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    missing = [f for f in options.text_fields if f not in names]
    if missing:
        raise CorpusError(f"{file}: no column {missing[0]!r}; columns: {', '.join(names)}. Choose it with --text-field NAME")
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _read_txt(file: Path, options: CorpusOptions) -> Iterator[tuple[int, dict]]:
    """A text file is one document; its text goes under the first text field's name."""
    try:
        with _open_text(file) as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise _decode_error(file, _line_of(file, exc), exc) from None
    yield 1, {name: (text if i == 0 else "") for i, name in enumerate(options.text_fields)}


def count_documents(path: str | Path) -> int:
    """Number of records in a corpus, read cheaply (for progress bars and ETAs, not for logic)."""
    total = 0
    for file in list_files(path):
        try:
            total += _count_file(file)
        except Exception as exc:  # pyarrow/gzip/OS errors vary; the reader gives the precise error later
            raise CorpusError(f"{file}: cannot read as {_format_of(file)} ({type(exc).__name__}: {exc})") from None
    return total


def _count_file(file: Path) -> int:
    fmt = _format_of(file)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(file).metadata.num_rows
    if fmt == "txt":
        return 1
    opener = gzip.open if file.name.lower().endswith(".gz") else open
    with opener(file, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if fmt == "csv" else lines  # csv: header; quoted newlines make this an estimate
