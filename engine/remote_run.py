"""A run folder on S3 (`--out s3://bucket/runs/x`): the run works in a local copy and uploads it.

The local copy is `remote_cache_dir()/runs/<sha of endpoint and URI>/run/`. Before the run the remote folder
is downloaded into it, journals merged line by line (answers this machine journalled but never
uploaded are kept too), so a re-run on any machine resumes from the uploaded journal and pays for no
answer twice. The journal and run.json (what `--resume` looks for) are uploaded after every round, and
when the run stops on an error; a failed upload after a round warns once and the run goes on (the local
journal keeps every answer). At the end the files go up with manifest.json last, after the old one was
removed, so a manifest.json in the bucket always describes the dataset files beside it; then the local
copy is deleted (the bucket is the record). A journal is uploaded up to its last complete line.

One process per machine runs a given URI (a lock beside the local copy, as `engine.run_folder.locked`
locks a local folder); two machines running one URI at once are not detected (S3 has no lock), and
the last upload wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from engine.errors import ConfigError
from engine.files import complete_lines, ends_with_newline
from engine.journal import JOURNAL_NAME, shard_dir
from engine.remote import Remote, local_cache
from engine.run_folder import RUN_FILE, SynthResult, locked

__all__ = ["StagedRun", "staged_run", "remote_run_exists"]

MANIFEST = "manifest.json"
SHARDS = shard_dir(Path(JOURNAL_NAME)).name  # the journal's worker shards: journal.d
log = logging.getLogger(__name__)


@dataclass
class StagedRun:
    """A remote run folder and its local copy, where the run writes."""

    remote: Remote
    folder: Path
    _round_push_failed: bool = field(default=False, init=False, repr=False)

    def pull(self) -> None:
        """Download the remote folder into the local copy, merging journals."""
        for rel in sorted(self.remote.list_files()):
            if any(part.startswith(".") for part in rel.split("/")):
                continue  # never uploaded by a run: not ours
            local = self.folder / rel
            if _is_journal(rel) and local.exists():
                copy = local.with_name(f".{local.name}.remote-{os.getpid()}")
                try:
                    if self.remote.get_file(rel, copy):
                        _merge_lines(local, copy)
                finally:
                    copy.unlink(missing_ok=True)
            else:
                self.remote.get_file(rel, local)

    @property
    def shards(self) -> str:
        """Where the workers of a distributed run put their journal shards: the bucket's `journal.d/`."""
        return self.remote.uri_of(SHARDS)

    def push_journal(self) -> None:
        """Upload run.json and the journal (and its worker shards) as far as its last complete line."""
        files = [(path, rel) for path, rel in self._files() if rel == RUN_FILE or _is_journal(rel)]
        self._put(files)

    def _put(self, files: list[tuple[Path, str]]) -> None:
        """Upload (path, rel) files, a journal as far as its last complete line; a worker shard the bucket
        already holds at that size (one pulled from it, or a Ray worker's own upload) is not sent again."""
        shards = {rel for _, rel in files if rel != JOURNAL_NAME and _is_journal(rel)}
        there = self.remote.list_files() if shards else {}
        for path, rel in files:
            limit = complete_lines(path) if _is_journal(rel) else None
            if rel not in shards or there.get(rel) != limit:
                self.remote.put_file(path, rel, limit=limit)

    def push_round(self) -> None:
        """`push_journal` after a round; a failure warns once and the run goes on (the local journal keeps every
        answer, the next round tries again, and `publish` fails loudly if the bucket still refuses)."""
        try:
            self.push_journal()
        except (ConfigError, OSError) as exc:
            if not self._round_push_failed:
                log.warning("could not upload the journal to %s after a round (%s); the run goes on, every answer is "
                            "kept in %s and the upload is tried again", self.remote.uri, exc, self.folder)
            self._round_push_failed = True

    def publish(self, result: SynthResult) -> SynthResult:
        """Upload the finished run, manifest.json last; `result` with its files named by URI."""
        self.remote.delete(MANIFEST)  # until the new one is up, no manifest describes files being replaced
        self._put([(path, rel) for path, rel in self._files() if rel != MANIFEST])
        self.remote.put_file(self.folder / MANIFEST, MANIFEST)
        files = {kind: self.remote.uri_of(Path(path).relative_to(self.folder).as_posix())
                 for kind, path in result.files.items()}
        shutil.rmtree(self.folder, ignore_errors=True)  # the bucket is the record; a re-run pulls it
        return dataclasses.replace(result, out=self.remote.uri, files=files)

    def _files(self) -> list[tuple[Path, str]]:
        """The run's files, with their paths relative to the folder: everything but hidden ones (the lock,
        temp files of atomic writes)."""
        paths = sorted(path for path in self.folder.rglob("*") if path.is_file()
                       and not any(part.startswith(".") for part in path.relative_to(self.folder).parts))
        return [(path, path.relative_to(self.folder).as_posix()) for path in paths]


@contextmanager
def staged_run(location: str | Path) -> Iterator[StagedRun]:
    """Lock the local copy of the remote run folder `location`, pull it, and yield it; on an error, upload
    the journal before re-raising (what was paid for is kept in the bucket).

    Raises:
        ConfigError: storage problems (one line each); another process of this machine runs this URI.
    """
    remote = Remote.connect(location, write=True)  # read-only credentials fail here, before any paid call
    base = local_cache(remote.uri, "runs")
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(base))
        except ConfigError:
            raise ConfigError(f"another seedbed run on this machine is writing to {remote.uri} (lock {base / '.lock'}); "
                              "wait for it or choose another --out") from None
        staged = StagedRun(remote, base / "run")
        staged.folder.mkdir(parents=True, exist_ok=True)
        staged.pull()
        try:
            yield staged
        except BaseException:
            _push_quietly(staged)
            raise


def remote_run_exists(location: str | Path) -> bool:
    """Whether the remote run folder `location` holds a run (its run.json)."""
    return Remote.connect(location).read_bytes(RUN_FILE) is not None


def _push_quietly(staged: StagedRun) -> None:
    """Upload the journal of a run that failed; a failure here must not hide the run's own error."""
    try:
        staged.push_journal()
    except (ConfigError, OSError) as exc:
        log.warning("could not upload the journal to %s (%s); it is kept in %s and merged on the next run here",
                    staged.remote.uri, exc, staged.folder)


def _is_journal(rel: str) -> bool:
    return rel == JOURNAL_NAME or (rel.startswith(SHARDS + "/") and rel.endswith(".jsonl"))


def _merge_lines(local: Path, other: Path) -> None:
    """Append to `local` the complete lines of `other` it lacks (journal entries are keyed, so order is free)."""
    seen = set()
    with open(local, "rb") as handle:
        for line in handle:
            seen.add(hashlib.sha1(line.rstrip(b"\n")).digest())
    torn = local.stat().st_size > 0 and not ends_with_newline(local)
    with open(other, "rb") as source, open(local, "ab") as target:
        if torn:
            target.write(b"\n")
        for line in source:
            if line.endswith(b"\n") and hashlib.sha1(line.rstrip(b"\n")).digest() not in seen:
                target.write(line)
