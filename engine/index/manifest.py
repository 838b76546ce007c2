"""`manifest.json`: what an index was built from, checked every time it is opened."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import IndexMismatch, IndexStoreError

__all__ = ["Manifest", "FORMAT_VERSION", "read_manifest", "parse_manifest", "manifest_dict"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """Facts about an index; `format_version` changes only when the on-disk layout does."""

    name: str
    engine_version: str
    embedder: str
    dim: int
    passages: int
    corpus_fingerprint: str
    dense_kind: str
    parameters: dict[str, Any]
    sources: tuple[dict[str, Any], ...] = ()
    created_at: str = ""
    updated_at: str = ""
    format_version: int = FORMAT_VERSION
    stats: dict[str, Any] = field(default_factory=dict)

    def check_embedder(self, embedder_id: str, dim: int) -> None:
        """Raise IndexMismatch if vectors from this embedder cannot be compared with the index's."""
        if embedder_id != self.embedder or dim != self.dim:
            raise IndexMismatch(
                f"index {self.name!r} was built with embedder {self.embedder!r} ({self.dim}-d) but "
                f"{embedder_id!r} ({dim}-d) was given; open it with --embedder {self.embedder} or rebuild it "
                f"with `seedbed index CORPUS --name {self.name} --embedder {embedder_id} --force`"
            )


def read_manifest(folder: Path) -> Manifest:
    """Load and check `folder/manifest.json`.

    Raises:
        IndexStoreError: missing or unreadable manifest.
        IndexMismatch: written by an incompatible on-disk format.
    """
    path = folder / "manifest.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexStoreError(f"{path} is missing: {folder} is not a complete Seedbed index; rebuild it with `seedbed index`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexStoreError(f"{path} is not valid JSON ({exc}); rebuild the index with `seedbed index ... --force`") from None
    return parse_manifest(raw, str(path))


def parse_manifest(raw: dict[str, Any], where: str) -> Manifest:
    """A Manifest from its JSON object (read from `where`, named in errors); unknown keys are ignored.

    Raises:
        IndexMismatch: written by an incompatible on-disk format.
    """
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexMismatch(
            f"{where}: index format version {version!r}, this Seedbed reads version {FORMAT_VERSION}; "
            "rebuild the index with `seedbed index ... --force`"
        )
    known = set(Manifest.__dataclass_fields__)
    fields = {k: v for k, v in raw.items() if k in known}
    fields["sources"] = tuple(raw.get("sources", ()))
    return Manifest(**fields)


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    data = asdict(manifest)
    data["sources"] = list(manifest.sources)
    return data
