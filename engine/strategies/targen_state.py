"""What TarGEN's setup stage keeps: the pool of contexts and instance seeds, and its file in the run folder."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.files import write_json_atomic
from engine.strategies.base import derive_seed

__all__ = ["NAME", "SEEDS_FILE", "SeedPool", "write_seeds"]

NAME = "targen"  # the strategy's registry name, also part of the pool's rotation seed
SEEDS_FILE = "targen_seeds.json"


@dataclass(frozen=True)
class SeedPool:
    """The setup stage's output: contexts and, parallel to them, each context's instance seeds."""

    contexts: tuple[str, ...]
    seeds: tuple[tuple[str, ...], ...]

    def pairs(self, task_seed: int) -> tuple[tuple[int, int], ...]:
        """(context, seed) indexes in rotation order: every context once per turn, a new seed each turn."""
        rng = random.Random(derive_seed(task_seed, NAME, "pairs"))
        order = rng.sample(range(len(self.contexts)), len(self.contexts))
        seed_order = {c: rng.sample(range(len(self.seeds[c])), len(self.seeds[c])) for c in order}
        depth = max((len(seeds) for seeds in self.seeds), default=0)
        return tuple((c, seed_order[c][turn]) for turn in range(depth) for c in order if turn < len(self.seeds[c]))

    def as_dict(self) -> dict[str, Any]:
        return {"contexts": [{"context": c, "seeds": list(s)} for c, s in zip(self.contexts, self.seeds)]}


def write_seeds(workdir: Path, task_name: str, pool: SeedPool, report: dict[str, Any]) -> Path:
    """Write the pool and the setup report atomically to SEEDS_FILE in `workdir`; returns the file's path."""
    path = Path(workdir) / SEEDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"task": task_name, **pool.as_dict(), "report": report})
    return path
