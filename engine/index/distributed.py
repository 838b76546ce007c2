"""Indexing on Ray (`seedbed index --ray [ADDRESS]`): read, chunk, deduplicate and embed a corpus as a Ray
Dataset, and write the LanceDB table of record with Ray's Lance writer.

The pipeline: one row per corpus file -> `flat_map` reads and chunks each file with the local code
(`engine.corpus.iter_passages`, so passages, ids and sources are the local build's) -> the driver
takes each passage's (file, position, id), drops exact duplicates across files (the first in file
order wins, as locally) and numbers the rest in file order -> `map_batches` keeps and numbers each
block's passages -> `map_batches` with a pool of actors that each load the embedder once ->
`write_lance` into the build's private folder. The
builder (`engine.index.builder`) then builds FAISS and BM25 from that table and swaps the folder into
place exactly as a local build does, so a Ray-built index is the local build's, row for row.

What reaches the driver: the file list, and the (file, position, id) of every passage (about 80
bytes each: 8 GB at 100 M passages, where the dedup and numbering must become a Ray Data groupby,
whose hash shuffle crawled on this 2-core machine).
FAISS and BM25 are built by the driver from the table, as a local build does, reading it a batch at
a time (FAISS keeps the vectors; BM25 keeps (doc, token, tf) arrays, no text). For a corpus far past one machine the
ANN and full-text indexes should be Lance's own, built by its distributed index builders; that is
not done here (see docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.corpus import CorpusOptions, CorpusStats, iter_passages, list_files
from engine.errors import ConfigError
from engine.index import store

__all__ = ["fill_on_ray", "LANCE_HINT"]

LANCE_HINT = 'indexing on Ray writes with Ray\'s Lance writer, which needs pylance: pip install "seedbed[ray]"'
_STATS = ("files", "documents", "empty_documents", "duplicates", "too_short")


def fill_on_ray(work: Path, corpus: str | Path, options: CorpusOptions, embedder_id: str, dim: int, *,
                address: str | None, workers: int, batch_size: int = 256,
                previous: tuple[set[str], int, str] | None = None) -> tuple[int, str, CorpusStats]:
    """Write the passages table of `corpus` under `work/store` on Ray.

    With `previous` (`--add`: the table's passage ids, its row count and the old corpus fingerprint),
    passages already in the table are duplicates, the new ones are numbered after its last row and
    appended, and the fingerprint continues the old one, as a local `--add` does.

    Returns:
        (passages written, the corpus fingerprint's hex digest, corpus counts).

    Raises:
        ConfigError: Ray or pylance missing, or the cluster unreachable (one line, with the fix).
        CorpusError: a file that cannot be read (raised from the worker that read it).
    """
    from engine.llm.distributed import connect, ray_module

    ray = ray_module()
    try:
        import lance  # noqa: F401 (Ray's Lance writer imports it on the workers)
    except ImportError as exc:
        raise ConfigError(LANCE_HINT) from exc
    connect(address)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # the command's own bar covers the build
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines would interleave with that bar
    files = [str(path) for path in list_files(corpus)]
    stats = CorpusStats(files=len(files))
    listing = ray.data.from_items([{"file": f, "file_no": i} for i, f in enumerate(files)],
                                  override_num_blocks=max(1, min(len(files), 4 * workers)))
    read = listing.flat_map(_file_rows, fn_kwargs={"options": dataclasses.asdict(options)}).materialize()
    for row in read.filter(expr="kind == 'stats'").take_all():
        for name, value in json.loads(row["text"]).items():
            setattr(stats, name, getattr(stats, name) + value)
    passages = read.filter(expr="kind == 'passage'")
    # Exact duplicates across files, and row numbers in file order: decided on the driver from the
    # (file, position, id) of each passage, 3 small columns; the texts stay on the cluster. (A Ray Data
    # groupby does this without the driver, but its hash shuffle took minutes for 115 passages here.)
    keys = passages.select_columns(["file_no", "seq", "id"]).take_all()
    keys.sort(key=lambda r: (r["file_no"], r["seq"]))
    seen, start_row, fingerprint = previous or (set(), 0, "")
    rows: dict[tuple[int, int], int] = {}
    digest = hashlib.sha256(fingerprint.encode())  # the fingerprint a local build computes: the kept ids in row order
    for key in keys:
        if key["id"] not in seen:
            seen.add(key["id"])
            rows[(key["file_no"], key["seq"])] = start_row + len(rows)
            digest.update(key["id"].encode())
    stats.duplicates += len(keys) - len(rows)
    stats.passages = total = len(rows)
    if total == 0:
        return 0, digest.hexdigest(), stats
    numbered = passages.map_batches(_number, fn_kwargs={"rows": ray.put(rows)}, batch_format="pyarrow")
    threads = max(1, int(ray.cluster_resources().get("CPU", 1) // workers))  # torch threads per actor: no oversubscription
    embedded = numbered.map_batches(_Embed, fn_constructor_kwargs={"embedder_id": embedder_id, "dim": dim, "threads": threads},
                                    batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                                    num_cpus=0.5, batch_format="pyarrow")  # 1 CPU each starved the reading tasks on 2 CPUs
    embedded.write_lance(str(work / "store" / f"{store.TABLE}.lance"), schema=store.schema(dim),
                         mode="append" if previous else "create")
    return total, digest.hexdigest(), stats


def _file_rows(row: dict[str, Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """One corpus file's passages (in order, as the local build reads them), then one row of its counts."""
    opts = CorpusOptions(**{**options, "text_fields": tuple(options["text_fields"])})
    stats = CorpusStats()
    out = [{"kind": "passage", "file_no": row["file_no"], "seq": seq, "id": p.id, "text": p.text, "source": p.source,
            "metadata": json.dumps(p.metadata, ensure_ascii=False, default=str)}
           for seq, p in enumerate(iter_passages(row["file"], opts, stats))]
    counts = {name: getattr(stats, name) for name in _STATS if name != "files"}
    out.append({"kind": "stats", "file_no": row["file_no"], "seq": -1, "id": "", "text": json.dumps(counts),
                "source": "", "metadata": ""})
    return out


def _number(batch: pa.Table, rows) -> pa.Table:
    """The batch's passages that a local build keeps, with their row numbers (row i is FAISS vector i)."""
    import ray

    rows = ray.get(rows) if isinstance(rows, ray.ObjectRef) else rows
    files, seqs = batch.column("file_no").to_pylist(), batch.column("seq").to_pylist()
    numbers = [rows.get((f, q)) for f, q in zip(files, seqs)]
    keep = [i for i, n in enumerate(numbers) if n is not None]
    return batch.take(keep).append_column("row", pa.array([numbers[i] for i in keep], pa.int64()))


class _Embed:
    """A Ray actor that loads the embedder once and embeds batches of passages into table rows."""

    def __init__(self, embedder_id: str, dim: int, threads: int = 1):
        import torch

        from engine.embed import get_embedder

        torch.set_num_threads(threads)
        self.embedder, self.dim = get_embedder(embedder_id), dim

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        vectors = np.asarray(self.embedder.encode(texts), dtype=np.float32)
        return pa.table({
            "row": batch.column("row"), "id": batch.column("id"), "text": batch.column("text"),
            "source": batch.column("source"), "metadata": batch.column("metadata"),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim),
        }, schema=store.schema(self.dim))
