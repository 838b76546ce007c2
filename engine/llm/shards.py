"""A distributed run's journal shard: what one worker (a Ray actor, `engine.llm.distributed`) answered,
durable as it arrives, where a successor or a re-run finds it.

A shard folder is the journal's `journal.d/` (`engine.journal.shard_dir`), a local path, or, for a run
folder on S3, the bucket's `journal.d/` URI: then the worker appends to a local file and uploads what
it added as a new part object at most every `UPLOAD_EVERY` seconds and whenever asked (after every
batch), so workers on any node keep their answers in the bucket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from pathlib import Path

from engine.errors import ConfigError

__all__ = ["ShardWriter", "UPLOAD_EVERY"]

UPLOAD_EVERY = 1.0  # seconds between an S3 shard's part uploads while answers arrive
log = logging.getLogger(__name__)


class ShardWriter:
    """One actor's journal shard in `folder` (a local path or an s3:// URI), and the answers of every
    shard already there.

    Local: the shard is `folder/<host>-<pid>-<random>.jsonl`, appended as answers arrive. On S3: the
    same file is kept in the local remote cache and each upload puts the lines added since the last
    one as a new object `<shard name>.<part>.jsonl` (parts, not the whole file again, so an upload
    costs what it adds), at most every `upload_every` seconds (`upload_soon`) and on `upload_now`.
    """

    def __init__(self, folder: str | Path, upload_every: float = UPLOAD_EVERY):
        from engine.journal import Journal
        from engine.remote import Remote, is_remote, local_cache

        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.remote = Remote.connect(folder, write=True) if is_remote(folder) else None
        local = local_cache(self.remote.uri, "shards") if self.remote else Path(folder)
        local.mkdir(parents=True, exist_ok=True)
        self.known = self._read_remote(local) if self.remote else self._read_local(local)
        self.journal = Journal(local / f"{name}.jsonl")
        self.name, self.upload_every = name, upload_every
        self._sent, self._part, self._last = 0, 0, 0.0
        self._uploading: asyncio.Future | None = None
        self._failed = False

    @staticmethod
    def _read_local(folder: Path) -> dict:
        from engine.journal import read_answers

        known: dict = {}
        for path in sorted(folder.glob("*.jsonl")):
            known.update(read_answers(path)[0])
        return known

    def _read_remote(self, scratch: Path) -> dict:
        from engine.journal import read_answers

        known: dict = {}
        copy = scratch / f".read-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for rel in sorted(self.remote.list_files()):
                if rel.endswith(".jsonl") and "/" not in rel and self.remote.get_file(rel, copy):
                    known.update(read_answers(copy)[0])
        finally:
            copy.unlink(missing_ok=True)
        return known

    def upload_soon(self) -> None:
        """Start an upload in a thread if the last one began `upload_every` seconds ago or more (S3 only)."""
        if self.remote is None or (self._uploading is not None and not self._uploading.done()):
            return
        if time.monotonic() - self._last >= self.upload_every:
            self._uploading = asyncio.get_running_loop().run_in_executor(None, self._upload)

    async def upload_now(self) -> None:
        """Wait for a running upload, then upload what is left (S3 only)."""
        if self.remote is None:
            return
        if self._uploading is not None:
            await self._uploading
        self._uploading = asyncio.get_running_loop().run_in_executor(None, self._upload)
        await self._uploading

    async def close(self) -> None:
        """This worker is done: upload what is left and close the shard; on S3, delete the local copy
        once the bucket holds every line of it (after a failed upload the copy stays, and says so)."""
        await self.upload_now()
        self.journal.close()
        if self.remote is None:
            return
        if self._sent == self.journal.path.stat().st_size:
            self.journal.path.unlink()
        else:
            log.warning("the journal shard %s is not all in %s; its answers stay in that file", self.journal.path,
                        self.remote.uri)

    def _upload(self) -> None:
        """Put the lines added since the last upload as the next part; a failure warns once and the next
        upload sends them (the answers also reach the driver, whose journal keeps them)."""
        from engine.files import complete_lines

        self._last = time.monotonic()
        end = complete_lines(self.journal.path)
        if end <= self._sent:
            return
        with open(self.journal.path, "rb") as handle:
            handle.seek(self._sent)
            data = handle.read(end - self._sent)
        try:
            self.remote.write_bytes(f"{self.name}.{self._part:06d}.jsonl", data)
        except (ConfigError, OSError) as exc:
            if not self._failed:
                log.warning("a worker could not upload its journal shard to %s (%s); it keeps the answers in %s and "
                            "tries again", self.remote.uri, exc, self.journal.path)
            self._failed = True
            return
        self._sent, self._part = end, self._part + 1
