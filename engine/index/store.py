"""The LanceDB table of record: one row per passage (row, id, text, source, metadata, vector)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from engine.errors import IndexStoreError
from engine.types import Passage

__all__ = ["TABLE", "schema", "open_table", "create_table", "rows_batch", "append_stream", "compact", "load_passages", "iter_columns",
           "iter_vectors", "iter_texts", "passage_ids"]

TABLE = "passages"
READ_ROWS = 2048  # rows per query of iter_columns: at 8,192 a build of 200,000 passages peaked 24 MB higher


def _lancedb():
    # lance logs a warning on every new table otherwise ("No existing dataset ... it will be created");
    # pylance reads LANCE_LOG, lancedb's own native module (0.40) LANCEDB_LOG
    os.environ.setdefault("LANCE_LOG", "error")
    os.environ.setdefault("LANCEDB_LOG", "error")
    import lancedb

    return lancedb


def schema(dim: int) -> pa.Schema:
    """Arrow schema of the passages table for `dim`-dimensional vectors."""
    return pa.schema([
        pa.field("row", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("source", pa.string()),
        pa.field("metadata", pa.string()),  # JSON: corpus fields vary per file
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ])


def create_table(folder: Path, dim: int):
    """Create an empty passages table under `folder/store`."""
    return _lancedb().connect(str(folder / "store")).create_table(TABLE, schema=schema(dim), mode="overwrite")


def open_table(folder: Path):
    """Open the passages table of an index folder.

    Raises:
        IndexStoreError: the table is missing or unreadable.
    """
    try:
        return _lancedb().connect(str(folder / "store")).open_table(TABLE)
    except Exception as exc:  # lancedb raises ValueError/FileNotFoundError/RuntimeError variously
        raise IndexStoreError(f"{folder / 'store'}: cannot open the passages table ({exc}); rebuild the index with --force") from None


def rows_batch(start_row: int, passages: Sequence[Passage], vectors: np.ndarray) -> pa.RecordBatch:
    """Passages with their vectors as one record batch of the table, rows numbered from `start_row`."""
    dim = vectors.shape[1]
    return pa.record_batch(
        {
            "row": pa.array(range(start_row, start_row + len(passages)), pa.int64()),
            "id": [p.id for p in passages],
            "text": [p.text for p in passages],
            "source": [p.source for p in passages],
            "metadata": [json.dumps(p.metadata, ensure_ascii=False, default=str) for p in passages],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        },
        schema=schema(dim),
    )


def append_stream(table, dim: int, batches: Iterator[pa.RecordBatch]) -> None:
    """Append every batch `batches` yields as one write: one table version and few, large fragments (lance
    starts a file every million rows), however many batches there are. Appending each batch on its own
    made a fragment and a version per batch, whose compaction later cost more memory than the build
    (150 MB at 200,000 passages). An exception the iterator raises is raised as itself."""
    raised: list[BaseException] = []

    def watched() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except BaseException as exc:  # lance would turn it into its own error, losing its type and message
            raised.append(exc)
            raise

    try:
        table.add(pa.RecordBatchReader.from_batches(schema(dim), watched()))
    except BaseException:
        if raised:
            raise raised[0] from None
        raise


def compact(table) -> None:
    """Merge the table's small appended fragments and drop every older version.

    Only for a table no other process can see: the builder calls it on its private work copy,
    before the swap, so deleting old versions cannot pull files from under a reader.
    """
    import warnings
    from datetime import timedelta

    with warnings.catch_warnings():  # its warning is about other readers of the table, and there are none
        warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)", category=UserWarning)
        table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)


def iter_columns(table, columns: Sequence[str], batch_rows: int = READ_ROWS):
    """Yield Arrow record batches of `columns` in row order, a batch at a time (never the whole table).

    Each batch is its own offset/limit query: one scan of the whole table reads ahead by as much as the
    table holds (its memory grew with the table, 90 MB of texts at 200,000 passages), a query of
    `batch_rows` rows only by that. LanceDB scans a table in the order it was written, which is row order
    for every table Seedbed writes; should a scan ever come out of order, the table is read whole and
    sorted instead.
    """
    wanted = list(dict.fromkeys(["row", *columns]))
    total, expected = table.count_rows(), 0
    while expected < total:
        chunk = table.search().select(wanted).offset(expected).limit(batch_rows).to_arrow().combine_chunks()
        rows = chunk.column("row").to_numpy()
        if not len(rows) or not np.array_equal(rows, np.arange(expected, expected + len(rows))):
            break
        expected += len(rows)
        yield from chunk.to_batches()
    else:
        return
    ordered = table.to_arrow().select(wanted).sort_by("row").slice(expected)
    yield from ordered.to_batches(batch_rows)


def load_passages(table) -> pl.DataFrame:
    """All passages without vectors, ordered by row (row i is FAISS vector i)."""
    frame = pl.from_arrow(table.to_arrow().select(["row", "id", "text", "source", "metadata"]))
    return frame.sort("row")


def iter_vectors(table, batch_rows: int = READ_ROWS):
    """Yield (rows, vectors) in row order, a batch at a time, to rebuild FAISS without re-embedding."""
    for chunk in iter_columns(table, ["vector"], batch_rows):
        flat = chunk.column("vector").flatten().to_numpy(zero_copy_only=False)
        yield chunk.column("row").to_numpy(), flat.reshape(chunk.num_rows, -1).astype(np.float32)


def iter_texts(table, batch_rows: int = READ_ROWS):
    """Yield each batch's passage texts (a list of str) in row order."""
    for chunk in iter_columns(table, ["text"], batch_rows):
        yield chunk.column("text").to_pylist()


def passage_ids(table) -> set[str]:
    """Every passage id of the table (the id column alone, streamed)."""
    ids: set[str] = set()
    for chunk in iter_columns(table, ["id"]):
        ids.update(chunk.column("id").to_pylist())
    return ids


def row_to_passage(row: dict[str, Any]) -> Passage:
    """A Passage from one row of `load_passages`."""
    return Passage(id=row["id"], text=row["text"], source=row["source"], metadata=json.loads(row["metadata"] or "{}"))
