"""Sort rows by an integer key on disk, so an index whose layout groups rows by key (BM25's postings by
token) is written in that order without holding every row in memory.

Rows arrive in batches (`SortedRuns.add`): each batch is sorted by key (stably) and written as one run,
a raw file per column. `merged` then reads, for consecutive key ranges of about `chunk_rows` rows, each
run's slice of that range with plain reads (no mmap, so the pages are the kernel's cache, not this
process's memory) and yields them sorted by key, rows of equal key in the order they were added.
The peak is one chunk and one run's keys, whatever the number of rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["SortedRuns", "NpyWriter", "release_memory"]


def release_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim; nothing elsewhere), so the garbage
    of one phase of a build does not stay in its peak while the next phase allocates: at 200,000 passages
    the build's peak was 30 MB higher without it."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SortedRuns:
    """Key-sorted runs of rows under `folder` (a private temp folder the caller removes).

    Args:
        folder: where the runs are written.
        columns: each column's dtype (one scalar per row); the key column is int64.
    """

    def __init__(self, folder: Path, columns: dict[str, str]):
        self.folder, self.columns = Path(folder), {"key": np.dtype(np.int64)} | {n: np.dtype(t) for n, t in columns.items()}
        self.runs = 0

    def add(self, keys: np.ndarray, **values: np.ndarray) -> None:
        """Write one run: the rows of `values` (one array per column, same length as `keys`) sorted by key."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        for name, dtype in self.columns.items():
            column = keys if name == "key" else values[name]
            np.asarray(column, dtype)[order].tofile(self._path(self.runs, name))
        self.runs += 1

    def merged(self, key_counts: np.ndarray, chunk_rows: int = 1 << 18) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """Yield (first key, end key, {column: rows}) over consecutive key ranges covering every key, each
        holding about `chunk_rows` rows (a key with more is a range of its own), rows sorted by key.

        Args:
            key_counts: how many rows hold each key (their sum is the number of rows added).
        """
        total = np.cumsum(key_counts)
        cuts = np.unique(np.searchsorted(total, np.arange(chunk_rows, total[-1] if len(total) else 0, chunk_rows),
                                         side="right"))
        bounds = np.concatenate([[0], cuts[(cuts > 0) & (cuts < len(key_counts))], [len(key_counts)]])
        starts = [np.searchsorted(self._read(run, "key"), bounds) for run in range(self.runs)]
        for i in range(len(bounds) - 1):
            parts = {name: [] for name in self.columns}
            for run, offsets in enumerate(starts):
                for name in parts:
                    parts[name].append(self._read(run, name, offsets[i], offsets[i + 1]))
            chunk = {name: np.concatenate(arrays) if arrays else np.zeros(0) for name, arrays in parts.items()}
            order = np.argsort(chunk["key"], kind="stable")  # runs in arrival order: equal keys keep it
            yield int(bounds[i]), int(bounds[i + 1]), {name: array[order] for name, array in chunk.items()}

    def _path(self, run: int, name: str) -> Path:
        return self.folder / f"{run}.{name}"

    def _read(self, run: int, name: str, start: int = 0, end: int = -1) -> np.ndarray:
        """Rows [start, end) of one run's column (end -1: to the end)."""
        dtype = self.columns[name]
        return np.fromfile(self._path(run, name), dtype=dtype, count=end - start if end >= 0 else -1,
                           offset=start * dtype.itemsize)


class NpyWriter:
    """A .npy file of a known shape written front to back a piece at a time (what np.load reads back)."""

    def __init__(self, path: Path, dtype, shape: tuple[int, ...]):
        self.dtype, self.shape, self.written = np.dtype(dtype), shape, 0
        self.file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": shape})

    def write(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
        self.written += len(rows)

    def close(self) -> None:
        self.file.close()
        if self.written != self.shape[0]:
            raise RuntimeError(f"{self.file.name}: wrote {self.written} rows, the header says {self.shape[0]}")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.file.close()
