"""Indexes under an s3:// root: built locally, published as a new build behind one pointer, opened from a local copy.

Layout under the root URI:

    ROOT/NAME/manifest.json      the pointer: the index's manifest plus "build": its id and its files
    ROOT/NAME/builds/ID/...      one complete build: manifest.json, store/, dense.faiss (dense-1.faiss... for more HNSW graphs), bm25/

A build is made by the local builder in a staging folder, uploaded in full, and only then is the
pointer written: one PUT, atomic on S3. So a reader sees the old complete index or the new one, and
an upload cut short leaves a build nobody points at. After the pointer moves, the previous build is
deleted (a reader still copying it follows the pointer to the new one).

Readers copy the pointed build into a local cache (`remote_cache_dir()/indexes/<sha of endpoint and ROOT/NAME>/ID/`)
and open it there. The LanceDB table is copied, not read in place: search holds FAISS, BM25 and the
passage table in memory anyway, so reading the table on S3 would add round trips and save nothing.
A build id never changes content, so a complete cached copy is reused without asking the bucket
for more than the pointer; the copies of older builds are removed when a newer one arrives (never
newer ones: build ids sort by time, and another process may have just fetched a newer build).

One writer per machine and index (the builder's lock, on the cache folder); two machines writing one
index at once are not detected (S3 has no lock): the last pointer written wins.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from engine.errors import ConfigError, IndexStoreError
from engine.files import validate_name
from engine.index.builder import BuildResult, build_index, check_target, writer_lock
from engine.index.manifest import Manifest, manifest_dict, parse_manifest
from engine.index.reader import missing_index, recover
from engine.remote import Remote, local_cache

__all__ = ["build_remote", "fetch", "list_remote", "POINTER"]

POINTER = "manifest.json"
READ_NOTE = ("copied whole into a local cache and opened there (search keeps FAISS, BM25 and the passage table in "
             "memory, so reading the LanceDB table in place on S3 would only add round trips)")
log = logging.getLogger(__name__)


def build_remote(corpus, name: str, embedder, root: str, add: bool, force: bool, **build: Any) -> BuildResult:
    """`build_index` for an s3:// root: build in a local staging folder, upload it as a new build, then move
    the pointer (`build` holds build_index's other arguments).

    Raises:
        ConfigError: storage problems (one line each); an existing index without add/force; add with force.
        IndexNotFound: `add` on a missing index. Otherwise what build_index raises.
    """
    remote = Remote.connect(root, write=True).child(validate_name(name))  # read-only credentials fail before embedding
    cache = local_cache(remote.uri, "indexes")
    with writer_lock(cache, name):
        pointer = _pointer(remote)
        check_target(name, remote.uri.rsplit("/", 1)[0], pointer is not None, add, force)
        staging = cache / "staging"  # the lock is held: no other process of this machine stages this index
        shutil.rmtree(staging, ignore_errors=True)
        try:
            if add:
                shutil.copytree(_fetch_build(remote, pointer, cache, name), staging / name)
            result = build_index(corpus, name, embedder, root=staging, add=add, **build)
            build_id = _publish(remote, staging / name, result.manifest, pointer)
            os.rename(staging / name, cache / build_id)  # what was uploaded is the cached copy of the new build
            _prune(cache, newest=build_id)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def fetch(name: str, root: str) -> Path:
    """The local folder of index `name`'s current build under the s3:// `root`, copied there if needed.

    Raises:
        ConfigError: storage problems. IndexNotFound: no such index (the message lists the ones there).
        IndexStoreError: a damaged pointer or build.
    """
    remote = Remote.connect(root).child(validate_name(name))
    pointer = _pointer(remote)
    if pointer is None:
        raise missing_index(name, root)
    return _fetch_build(remote, pointer, local_cache(remote.uri, "indexes"), name)


def list_remote(root: str) -> list[Manifest]:
    """Manifests of every published index under the s3:// `root` (one read of each pointer)."""
    remote = Remote.connect(root)
    found = []
    for folder in remote.list_folders():
        pointer = _pointer(remote.child(folder))
        if pointer is not None:
            found.append(parse_manifest(pointer, remote.child(folder).uri_of(POINTER)))
    return found


def _pointer(remote: Remote) -> dict[str, Any] | None:
    """The index's pointer (its manifest plus "build"), or None when there is no index."""
    raw = remote.read_bytes(POINTER)
    if raw is None:
        return None
    where = remote.uri_of(POINTER)
    try:
        pointer = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexStoreError(f"{where} is not valid JSON ({exc}); rebuild the index with --force") from None
    build = pointer.get("build") if isinstance(pointer, dict) else None
    if not isinstance(build, dict) or not isinstance(build.get("id"), str) or not isinstance(build.get("files"), dict):
        raise IndexStoreError(f"{where} names no build (an index folder copied to S3 by hand?); publish it with "
                              f"`seedbed index CORPUS --name NAME --root {remote.uri.rsplit('/', 1)[0]} --force`")
    parse_manifest(pointer, where)  # an unreadable format fails here, before any download
    return pointer


def _publish(remote: Remote, folder: Path, manifest: Manifest, previous: dict | None) -> str:
    """Upload `folder` as a new build, then point the index at it; returns the build id."""
    build_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)  # sorts by time
    pointer = {**manifest_dict(manifest), "build": {"id": build_id, "files": _files_of(folder), "read": READ_NOTE}}
    try:
        remote.child("builds", build_id).upload_folder(folder)
        remote.write_bytes(POINTER, json.dumps(pointer, indent=2, sort_keys=True).encode())
    except BaseException:
        _quietly(lambda: _drop_unpointed(remote, build_id))  # an upload or pointer write that failed: tidy up
        raise
    if previous is not None:
        _quietly(lambda: remote.delete(f"builds/{previous['build']['id']}"))
    return build_id


def _drop_unpointed(remote: Remote, build_id: str) -> None:
    """Delete build `build_id` unless the pointer names it (a pointer write reported failed may have landed)."""
    current = _pointer(remote)
    if current is None or current["build"]["id"] != build_id:
        remote.delete(f"builds/{build_id}")


def _fetch_build(remote: Remote, pointer: dict, cache: Path, name: str) -> Path:
    """The local copy of the pointed build, downloaded if missing; follows the pointer if the build is replaced meanwhile."""
    for _ in range(3):
        build_id = pointer["build"]["id"]
        local = cache / build_id
        if local.is_dir() or _download(remote.child("builds", build_id), pointer["build"]["files"], local):
            _prune(cache, newest=build_id)
            return local
        newer = _pointer(remote)
        if newer is None or newer["build"]["id"] == build_id:
            raise IndexStoreError(f"index {name!r} at {remote.uri} is damaged: build {build_id} lacks files its "
                                  "manifest lists; rebuild it with --force")
        pointer = newer
    raise IndexStoreError(f"index {name!r} at {remote.uri} was replaced three times while being copied; try again")


def _download(build: Remote, files: dict[str, int], local: Path) -> bool:
    """Copy a build into `local` (a temp folder renamed into place); False if its files are not all there."""
    local.parent.mkdir(parents=True, exist_ok=True)
    recover(local)  # temp folders of dead downloads
    tmp = local.with_name(f".{local.name}.tmp-{os.getpid()}-{int(time.time())}")
    try:
        try:
            build.download_folder("", tmp)
        except FileNotFoundError:  # the build was deleted under us
            return False
        if _files_of(tmp) != files:
            return False
        try:
            os.rename(tmp, local)
        except OSError:
            if not local.is_dir():  # another process renamed the same build first: use theirs
                raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _files_of(folder: Path) -> dict[str, int]:
    return {path.relative_to(folder).as_posix(): path.stat().st_size
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _prune(cache: Path, newest: str) -> None:
    """Remove cached copies of builds older than `newest` (ids sort by time; an open index holds its data in
    memory). Newer ones stay: another process may have just fetched one."""
    for folder in cache.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and folder.name != "staging" and folder.name < newest:
            shutil.rmtree(folder, ignore_errors=True)


def _quietly(action: Callable[[], None]) -> None:
    """Run a clean-up whose failure must not hide the outcome (the pointer is what counts)."""
    try:
        action()
    except (ConfigError, IndexStoreError) as exc:
        log.warning("clean-up on S3 failed (%s); the leftover build is not pointed at and can be deleted", exc)
