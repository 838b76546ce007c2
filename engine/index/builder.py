"""Build or extend an index from a corpus, atomically: a crash never leaves a half-written index."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from engine import __version__
from engine.corpus import CorpusOptions, CorpusStats, iter_passages, list_files
from engine.errors import ConfigError, CorpusError, IndexNotFound
from engine.index import dense, lexical, store
from engine.files import write_json_atomic
from engine.index.manifest import Manifest, manifest_dict, read_manifest
from engine.index.reader import index_path, recover as _recover
from engine.index.spill import release_memory
from engine.remote import is_remote
from engine.types import Passage

__all__ = ["BuildResult", "build_index", "check_target", "rebuild_dense", "writer_lock"]

BATCH = 256  # passages per embedding call (and per progress update)


@dataclass(frozen=True)
class BuildResult:
    """What a build did: the manifest written and the counts of this run."""

    manifest: Manifest
    added: int
    stats: CorpusStats
    seconds: float


def build_index(
    corpus: str | Path,
    name: str,
    embedder,
    root: Path | str = Path("indexes"),
    options: CorpusOptions = CorpusOptions(),
    add: bool = False,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    ray: str | None = None,
    ray_workers: int = 2,
) -> BuildResult:
    """Index `corpus` as `root/name`, or append it to that index with `add=True`.

    Work happens in a hidden temp folder renamed into place at the end, so readers see the old
    index or the new one, never a mix.

    Args:
        corpus: a corpus file or folder.
        name: index name (a folder name, validated).
        embedder: the Embedder to use (must match the index's when adding).
        root: folder holding indexes, or an s3:// URI (see engine/index/remote.py).
        options: text fields and chunking.
        add: append new passages to an existing index (only new ones are embedded).
        force: replace an existing index of that name.
        progress: called with (passages_done, documents_done) after each batch.
        ray: read, chunk, deduplicate and embed on a Ray cluster ("local" or its address; see
            engine/index/distributed.py) with `ray_workers` embedding actors; the result is the same
            index, row for row, with or without `add`.

    Raises:
        ConfigError: bad name, or an existing index without --add/--force; for an s3:// root, a missing bucket,
            denied access or an unreachable endpoint.
        IndexNotFound: `add=True` on a missing index. IndexMismatch: another embedder.
        CorpusError: unreadable or empty corpus.
    """
    started = time.monotonic()
    target = index_path(name, root)
    list_files(corpus)  # fail fast on a bad path before any work
    if is_remote(root):  # built here in a staging folder by this function, then published (engine/index/remote.py)
        from engine.index.remote import build_remote

        return build_remote(corpus, name, embedder, str(root), add, force, options=options, progress=progress, ray=ray,
                            ray_workers=ray_workers)
    with writer_lock(Path(root), name):
        _check_target(target, name, add, force)
        with _staged(Path(root), name, target) as work:
            return _build_in(work, target, corpus, name, embedder, options, add, progress, started, (ray, ray_workers))


def rebuild_dense(name: str, root: Path | str = Path("indexes")) -> Manifest:
    """Rebuild index NAME's FAISS index from its stored vectors with today's kind and graph settings (an
    index built before a change of `dense.HNSW_M` or `HNSW_EF_CONSTRUCTION` keeps its old graph until
    then); no passage is re-embedded. In a copy swapped into place, as a build is.

    Raises:
        IndexNotFound: no index NAME under `root`.
    """
    if is_remote(root):
        raise ConfigError(f"rebuild_dense works on a local index root, not {root}: rebuild it there and publish it "
                          "with `seedbed index ... --force`")
    target = index_path(name, root)
    with writer_lock(Path(root), name):
        _recover(target)  # a crash between a swap's renames leaves the old folder aside: put it back first
        if not target.exists():
            raise IndexNotFound(f"no index {name!r} under {root}; build it with `seedbed index CORPUS --name {name}`")
        previous = read_manifest(target)
        with _staged(Path(root), name, target) as work:
            shutil.copytree(target, work)
            kind, graph = _write_dense(None, store.open_table(work), previous.dim, previous.passages, work / "dense.faiss")
            manifest = replace(previous, dense_kind=kind, parameters={**previous.parameters, **graph},
                               updated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            write_json_atomic(work / "manifest.json", manifest_dict(manifest))
            return manifest


@contextmanager
def _staged(root: Path, name: str, target: Path) -> Iterator[Path]:
    """A private work folder for index NAME (the caller fills it), swapped over `target` when the block
    ends normally and removed when it raises: readers see the old index or the new one, never a mix."""
    work = root / f".{name}.tmp-{os.getpid()}-{int(time.time())}"
    try:
        yield work
        _swap_into_place(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


@contextmanager
def writer_lock(root: Path, name: str) -> Iterator[None]:
    """Hold `root/.NAME.lock` while index NAME is built or added to: one writer at a time.

    Two `--add`s that overlapped would each copy the old index and the later rename would drop
    the other's passages; the second is refused instead. The lock is an flock, so it dies with
    its process (a killed build blocks nothing). The file is removed on release, while still
    locked; a writer that locked a file already removed (it opened it just before) sees that the
    path no longer names its file and tries again, so two writers never both hold a lock. Readers
    never take it.

    Raises:
        ConfigError: another process is writing this index (its pid is named).
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".{name}.lock"
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(f"index {name!r} under {root} is being built or added to by another process "
                              f"(pid {holder}, lock {path}); wait for it to finish, then run this again") from None
        if _names(path, handle):
            break
        handle.close()  # locked a file its holder had just removed: take the current one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def _names(path: Path, handle) -> bool:
    """Whether `path` still names the open file `handle`."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _check_target(target: Path, name: str, add: bool, force: bool) -> None:
    _recover(target)
    exists = (target / "manifest.json").is_file()
    if target.exists() and not exists and not force:
        raise ConfigError(
            f"{target} exists but is not a Seedbed index (no manifest.json); move it away or pass --force to replace it"
        )
    check_target(name, str(target.parent), exists, add, force)


def check_target(name: str, root: str, exists: bool, add: bool, force: bool) -> None:
    """Refuse add with force, add to a missing index, and replacing an existing one without add or force.

    Args:
        root: the folder or s3:// URI holding the index (named in the messages); exists: whether the index does.

    Raises:
        ConfigError: add with force, or an existing index without either. IndexNotFound: add to a missing index.
    """
    if add and force:
        raise ConfigError("--add and --force contradict each other; choose one")
    if add and not exists:
        raise IndexNotFound(f"cannot --add to index {name!r}: it does not exist under {root}; build it first without --add")
    if exists and not (add or force):
        raise ConfigError(f"index {name!r} already exists at {root}/{name}; use --add to append documents or --force to "
                          "rebuild it")


def _build_in(work, target, corpus, name, embedder, options, add, progress, started, on_ray=(None, 2)) -> BuildResult:
    previous = _copy_previous(target, work, embedder) if add else None
    if on_ray[0]:
        return _build_on_ray(work, corpus, name, embedder, options, started, *on_ray, previous=previous, progress=progress)
    stats = CorpusStats()
    if previous:
        table = store.open_table(work)
        index = dense.load(work / "dense.faiss", tail=True)  # new rows go to the last graph and after it
        stats.seen_hashes.update(store.passage_ids(table))
        start_row = table.count_rows()
    else:
        work.mkdir(parents=True)
        table = store.create_table(work, embedder.dim)
        index = None  # built once at the end from the stored vectors, of the kind the final size needs
        start_row = 0
    digest = hashlib.sha256((previous.corpus_fingerprint if previous else "").encode())
    added = 0

    def embedded():  # the table's new rows, a batch at a time, as they are embedded
        nonlocal added
        for batch in _batches(iter_passages(corpus, options, stats), BATCH):
            vectors = embedder.encode([p.text for p in batch])
            if index is not None:  # --add: the previous index grows (rebuilt at the end if it outgrows its kind)
                index.add(vectors)
            for passage in batch:
                digest.update(passage.id.encode())
            yield store.rows_batch(start_row + added, batch, vectors)
            added += len(batch)
            if progress:
                progress(added, stats.documents)
            if added % (64 * BATCH) == 0:
                release_memory()

    store.append_stream(table, embedder.dim, embedded())
    release_memory()
    return _finish(work, corpus, name, embedder, options, stats, table, index, start_row + added, digest.hexdigest(),
                   added, previous, started)


def _copy_previous(target: Path, work: Path, embedder) -> Manifest:
    """`--add`: the index's manifest (its embedder must be `embedder`), the index copied into `work`."""
    previous = read_manifest(target)
    previous.check_embedder(embedder.id, embedder.dim)
    shutil.copytree(target, work)
    return previous


def _build_on_ray(work, corpus, name, embedder, options, started, address: str, workers: int,
                  previous: Manifest | None = None, progress: Callable[[int, int], None] | None = None) -> BuildResult:
    """The table written on Ray (engine/index/distributed.py), then FAISS and BM25 from it as locally;
    with `previous` (`--add`, the index already copied into `work`), new passages appended to it."""
    from engine.index.distributed import fill_on_ray

    existing = None
    if previous is None:
        work.mkdir(parents=True)
    else:
        table = store.open_table(work)
        existing = (table.count_rows(), previous.corpus_fingerprint)
    added, fingerprint, stats = fill_on_ray(work, corpus, options, embedder.id, embedder.dim, address=address,
                                            workers=workers, previous=existing, progress=progress)
    total = added + (existing[0] if existing else 0)
    table = store.open_table(work) if total else None  # no passages: nothing was written, and _finish says why
    return _finish(work, corpus, name, embedder, options, stats, table, None, total, fingerprint, added, previous, started)


def _finish(work, corpus, name, embedder, options, stats, table, index, total: int, fingerprint: str, added: int,
            previous, started: float) -> BuildResult:
    """Everything after the table is written: compaction, FAISS, BM25 and the manifest, in `work`."""
    if total == 0:
        raise CorpusError(
            f"corpus {corpus} yielded no passages ({stats.documents} documents, {stats.empty_documents} empty, "
            f"{stats.too_short} shorter than {options.min_words} words); check --text-field and the files"
        )
    store.compact(table)  # an --add wrote a fragment of its own; nobody else sees `work` yet
    kind, graph = _write_dense(index, table, embedder.dim, total, work / "dense.faiss")
    manifest = _manifest(name, embedder, total, fingerprint, kind, graph, options, corpus, stats, added, previous)
    del index  # on disk now: BM25's build does not sit on top of the vectors
    release_memory()
    _write_bm25(table, work / "bm25")
    write_json_atomic(work / "manifest.json", manifest_dict(manifest))
    return BuildResult(manifest, added, stats, time.monotonic() - started)


def _batches(items: Iterable[Passage], size: int) -> Iterator[list[Passage]]:
    batch: list[Passage] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_dense(index, table, dim: int, total: int, path: Path) -> tuple[str, dict[str, int]]:
    """Write the dense index of the kind the final size needs to `path`: an `--add`'s grown in memory
    when it is still of that kind, else built from the stored vectors (no re-embedding), an HNSW
    index one graph at a time. Returns its kind and graph parameters."""
    kind = dense.kind_for(total)
    if index is not None and dense.kind_of(index) == kind:
        dense.save(index, path)
        return kind, dense.graph_parameters(index)
    return kind, dense.build((vectors for _, vectors in store.iter_vectors(table)), dim, kind, path, total)


def _write_bm25(table, folder: Path) -> None:
    # BM25's IDF depends on the whole corpus, so it is rebuilt from the stored texts (seconds per 100k),
    # streamed a batch at a time: no text and no token list is held past its batch.
    lexical.write_batches(store.iter_texts(table), folder, **lexical.BM25_PARAMS)


def _manifest(name, embedder, total, fingerprint, kind, graph, options, corpus, stats, added, previous) -> Manifest:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = {
        "path": str(corpus), "added": added, "documents": stats.documents, "at": now,
        "duplicates": stats.duplicates, "empty_documents": stats.empty_documents, "too_short": stats.too_short,
    }
    return Manifest(
        name=name,
        engine_version=__version__,
        embedder=embedder.id,
        dim=embedder.dim,
        passages=total,
        corpus_fingerprint=fingerprint,
        dense_kind=kind,
        parameters={
            "text_fields": list(options.text_fields), "chunk_words": options.chunk_words,
            "min_words": options.min_words, "bm25": lexical.BM25_PARAMS, "flat_max": dense.FLAT_MAX,
            **graph,
        },
        sources=(previous.sources if previous else ()) + (source,),
        created_at=previous.created_at if previous else now,
        updated_at=now,
    )


def _swap_into_place(work: Path, target: Path) -> None:
    """Rename the finished build over the target; a crash between the renames is undone by _recover."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.rename(target, old)
    os.rename(work, target)
    shutil.rmtree(old, ignore_errors=True)
