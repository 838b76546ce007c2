"""Indexing on Ray (`seedbed index --ray [ADDRESS]`): read, chunk, deduplicate and embed a corpus as a Ray
Dataset, and write the LanceDB table of record with Ray's Lance writer.

The pipeline: one row per corpus file -> `flat_map` reads and chunks each file with the local code
(`engine.corpus.iter_passages`, so passages, ids and sources are the local build's) -> exact dedup: a
hash groupby of each passage's (file, position, id) by a hash of the id, each group keeping the first
of each id in file order (as locally) and returning the later copies -> the driver turns each file's
passage count less its copies into the file's first row (a prefix sum over files) -> `map_batches`
drops the copies and numbers each kept passage (its file's first row plus the kept passages before it)
-> `map_batches` with a pool of actors that each load the embedder once -> `write_lance` into the
build's private folder. The builder (`engine.index.builder`) then builds FAISS and BM25 from that table
and swaps the folder into place exactly as a local build does, so a Ray-built index is the local
build's, row for row. With `--add` the table's own ids join the groupby as a file before the first, so
passages already indexed are duplicates.

What reaches the driver: the file list, each file's counts, and the (file, position) of each duplicate;
never a passage, and no id but the ones it streams from the written table for the corpus fingerprint
(a hash over the kept ids in row order, as a local build computes it; it holds one batch at a time).
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
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.corpus import CorpusOptions, CorpusStats, iter_passages, list_files
from engine.errors import ConfigError
from engine.index import store

__all__ = ["fill_on_ray", "LANCE_HINT"]

LANCE_HINT = 'indexing on Ray writes with Ray\'s Lance writer, which needs pylance: pip install "seedbed[ray]"'
_STATS = ("files", "documents", "empty_documents", "duplicates", "too_short")
RAY_BATCH = 256  # passages per embedding batch on an actor (benchmarks/bench_ray.py --batch-sizes)


def fill_on_ray(work: Path, corpus: str | Path, options: CorpusOptions, embedder_id: str, dim: int, *,
                address: str | None, workers: int, batch_size: int = RAY_BATCH,
                previous: tuple[int, str] | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[int, str, CorpusStats]:
    """Write the passages table of `corpus` under `work/store` on Ray.

    `progress` is called with (passages embedded, documents they stand for) about twice a second while
    the actors embed, and once at the end, as a local build calls it after each batch.

    With `previous` (`--add`: the table's row count and the old corpus fingerprint),
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
    with warnings.catch_warnings():  # lance warns on any fork; Ray's fork execs its own processes at once
        warnings.filterwarnings("ignore", message="lance is not fork-safe", category=UserWarning)
        connect(address)
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO and notice lines would break the command's bar
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the command's own bar covers the build
    # Blocks leave each stage in the order they entered it, so the table is written in row order and the
    # builder reads it a batch at a time (a scan out of row order would have to sort the whole table).
    ordered, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:
        return _fill(ray, work, corpus, options, embedder_id, dim, workers, batch_size, previous, progress)
    finally:
        context.execution_options.preserve_order = ordered


def _fill(ray, work: Path, corpus, options: CorpusOptions, embedder_id: str, dim: int, workers: int, batch_size: int,
          previous: tuple[int, str] | None, progress: Callable[[int, int], None] | None) -> tuple[int, str, CorpusStats]:
    files = [str(path) for path in list_files(corpus)]
    stats = CorpusStats(files=len(files))
    listing = ray.data.from_items([{"file": f, "file_no": i} for i, f in enumerate(files)],
                                  override_num_blocks=max(1, min(len(files), 4 * workers)))
    read = listing.flat_map(_file_rows, fn_kwargs={"options": dataclasses.asdict(options)}).materialize()
    sizes = {}  # passages per file, before deduplication
    for row in read.filter(expr="kind == 'stats'").take_all():
        counts = json.loads(row["text"])
        sizes[row["file_no"]] = counts.pop("passages")
        for name, value in counts.items():
            setattr(stats, name, getattr(stats, name) + value)
    passages = read.filter(expr="kind == 'passage'")
    table_path = work / "store" / f"{store.TABLE}.lance"
    start_row, fingerprint = previous or (0, "")
    keys = passages.select_columns(["file_no", "seq", "id"])
    if previous:  # --add: the table's passages come first (file -1, position = row), so theirs win
        keys = ray.data.read_lance(str(table_path), columns=["row", "id"]).map_batches(
            _previous_keys, batch_format="pyarrow").union(keys)
    dropped = _duplicates(keys, buckets=max(1, 2 * workers))
    stats.duplicates += sum(len(seqs) for file_no, seqs in dropped.items() if file_no >= 0)
    offsets, row = {}, start_row  # each file's first row: files in order, each after the kept passages before it
    for file_no in range(len(files)):
        offsets[file_no] = row
        row += sizes.get(file_no, 0) - len(dropped.get(file_no, ()))
    stats.passages = total = row - start_row
    if total == 0:
        return 0, hashlib.sha256(fingerprint.encode()).hexdigest(), stats
    numbered = passages.map_batches(_number, fn_kwargs={"numbering": ray.put((offsets, dropped))}, batch_format="pyarrow")
    # One block per embedding batch, so every actor gets work even from a single file (one block otherwise,
    # and one actor embedding it while the others idle); without a shuffle the order stays.
    numbered = numbered.repartition(target_num_rows_per_block=batch_size)
    threads = max(1, int(ray.cluster_resources().get("CPU", 1) // workers))  # torch threads per actor: no oversubscription
    counter = ray.remote(num_cpus=0)(_Counter).remote()  # the actors count what they embed; the driver polls it
    embedded = numbered.map_batches(_Embed, fn_constructor_kwargs={"embedder_id": embedder_id, "dim": dim, "threads": threads,
                                                                   "counter": counter},
                                    batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                                    num_cpus=0.5, batch_format="pyarrow")  # 1 CPU each starved the reading tasks on 2 CPUs
    with _Reporting(ray, counter, total, stats.documents, progress):
        embedded.write_lance(str(table_path), schema=store.schema(dim), mode="append" if previous else "create")
    ray.kill(counter)
    # The fingerprint a local build computes: the kept ids in row order, after the old fingerprint. The
    # driver streams the id column from the table a batch at a time; it holds none of it.
    digest = hashlib.sha256(fingerprint.encode())
    for batch in store.iter_columns(store.open_table(work), ["id"]):
        new = batch.filter(pc.greater_equal(batch.column("row"), start_row)).column("id")
        for passage_id in new.to_pylist():
            digest.update(passage_id.encode())
    return total, digest.hexdigest(), stats


def _file_rows(row: dict[str, Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """One corpus file's passages (in order, as the local build reads them), then one row of its counts."""
    opts = CorpusOptions(**{**options, "text_fields": tuple(options["text_fields"])})
    stats = CorpusStats()
    out = [{"kind": "passage", "file_no": row["file_no"], "seq": seq, "id": p.id, "text": p.text, "source": p.source,
            "metadata": json.dumps(p.metadata, ensure_ascii=False, default=str)}
           for seq, p in enumerate(iter_passages(row["file"], opts, stats))]
    counts = {name: getattr(stats, name) for name in _STATS if name != "files"} | {"passages": len(out)}
    out.append({"kind": "stats", "file_no": row["file_no"], "seq": -1, "id": "", "text": json.dumps(counts),
                "source": "", "metadata": ""})
    return out


def _previous_keys(batch: pa.Table) -> pa.Table:
    """`--add`: the table's rows as keys of a file before every corpus file (-1), in row order."""
    return pa.table({"file_no": pa.array([-1] * batch.num_rows, pa.int64()), "seq": batch.column("row"),
                     "id": batch.column("id")})


def _duplicates(keys, buckets: int) -> dict[int, np.ndarray]:
    """The (file, position) of every passage whose id an earlier one already has (file order, then position),
    as {file number: sorted positions}: a Ray Data hash groupby of the keys by a hash of the id, each group
    keeping the first of each id. Only the duplicates reach the driver."""
    from ray.data.context import DataContext, ShuffleStrategy

    context = DataContext.get_current()
    strategy, context.shuffle_strategy = context.shuffle_strategy, ShuffleStrategy.HASH_SHUFFLE  # sort-based: 1.6x slower here
    try:
        found = (keys.map_batches(_with_bucket, fn_kwargs={"buckets": buckets}, batch_format="pyarrow")
                 .groupby("bucket", num_partitions=buckets).map_groups(_later_copies, batch_format="pyarrow"))
        parts = [(b.column("file_no").to_numpy(), b.column("seq").to_numpy())  # 16 bytes a duplicate, as arrays
                 for b in found.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    finally:
        context.shuffle_strategy = strategy
    if not parts:
        return {}
    files, seqs = np.concatenate([f for f, _ in parts]), np.concatenate([q for _, q in parts])
    order = np.lexsort((seqs, files))
    files, seqs = files[order], seqs[order]
    numbers, starts = np.unique(files, return_index=True)
    return {int(n): part for n, part in zip(numbers, np.split(seqs, starts[1:]))}


def _with_bucket(batch: pa.Table, buckets: int) -> pa.Table:
    ids = batch.column("id").to_pylist()
    bucket = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=4).digest(), "little") % buckets for i in ids]
    return batch.append_column("bucket", pa.array(bucket, pa.int32()))


def _later_copies(group: pa.Table) -> pa.Table:
    """The rows of `group` whose id an earlier row (by file, then position) has."""
    import polars as pl

    frame = pl.from_arrow(group.select(["file_no", "seq", "id"])).sort(["id", "file_no", "seq"])
    later = frame.filter(~pl.col("id").is_first_distinct())
    return pa.table({"file_no": later["file_no"].to_arrow().cast(pa.int64()), "seq": later["seq"].to_arrow().cast(pa.int64())})


def _number(batch: pa.Table, numbering) -> pa.Table:
    """The batch's passages that a local build keeps, with their row numbers (row i is FAISS vector i): a
    passage's row is its file's first row plus the kept passages before it in the file."""
    import ray

    offsets, dropped = ray.get(numbering) if isinstance(numbering, ray.ObjectRef) else numbering
    files, seqs = batch.column("file_no").to_numpy(), batch.column("seq").to_numpy()
    keep, rows = [], []
    for i, (file_no, seq) in enumerate(zip(files.tolist(), seqs.tolist())):
        gone = dropped.get(file_no)
        before = 0 if gone is None else int(np.searchsorted(gone, seq))
        if gone is not None and before < len(gone) and gone[before] == seq:
            continue
        keep.append(i)
        rows.append(offsets[file_no] + seq - before)
    return batch.take(keep).append_column("row", pa.array(rows, pa.int64()))


class _Counter:
    """A Ray actor holding how many passages the embedding actors have embedded."""

    def __init__(self):
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count

    def get(self) -> int:
        return self.done


class _Reporting:
    """While the block runs, a thread calls `progress(passages, documents)` from `counter` twice a second;
    at the end, once with the totals."""

    def __init__(self, ray, counter, total: int, documents: int, progress: Callable[[int, int], None] | None):
        self.ray, self.counter, self.total, self.documents, self.progress = ray, counter, total, documents, progress
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _report(self, done: int) -> None:
        done = min(done, self.total)
        self.progress(done, self.documents * done // self.total)

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            self._report(self.ray.get(self.counter.get.remote()))

    def __enter__(self):
        if self.progress:
            self.thread.start()
        return self

    def __exit__(self, kind, *_) -> None:
        self.stop.set()
        if self.progress:
            self.thread.join()
            if kind is None:
                self._report(self.total)


class _Embed:
    """A Ray actor that loads the embedder once and embeds batches of passages into table rows."""

    def __init__(self, embedder_id: str, dim: int, threads: int = 1, counter=None):
        import torch

        from engine.embed import get_embedder

        torch.set_num_threads(threads)
        self.embedder, self.dim, self.counter = get_embedder(embedder_id), dim, counter

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        vectors = np.asarray(self.embedder.encode(texts), dtype=np.float32)
        if self.counter is not None:
            self.counter.add.remote(len(texts))
        return pa.table({
            "row": batch.column("row"), "id": batch.column("id"), "text": batch.column("text"),
            "source": batch.column("source"), "metadata": batch.column("metadata"),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim),
        }, schema=store.schema(self.dim))
