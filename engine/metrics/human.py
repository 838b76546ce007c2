"""Human-likeness: how close a set's embedding distribution is to a human reference sample.

- MAUVE (Pillutla et al., 2021) computed by `mauve-text` from features we pass (our own sentence
  embeddings; its text path would download GPT-2): both sets are jointly reduced by PCA (90 %
  variance), quantised by k-means into k = round(min(N_p, N_q) / 10) buckets (the paper's
  heuristic), and MAUVE is the area under the divergence frontier of the two bucket histograms,
  with scaling factor 5. 1 = indistinguishable, near 0 = disjoint. Needs `MIN_MAUVE` rows per side.
- Fréchet distance between Gaussians fitted to the two embedding sets: engine.metrics.semantic.

The reference sample is label-matched (the same label counts as the synthetic set), so a topic mix
that differs from the human one is not what MAUVE measures. The human counterpart of each number is
the same metric between that sample and a second, disjoint human sample of the same size and label
counts: the gold-ceiling sample of the training split when one is given, else more reference rows.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from engine.errors import MetricUnavailable
from engine.metrics.semantic import frechet_distance

__all__ = ["mauve_score", "human_likeness", "MIN_MAUVE"]

MIN_MAUVE = 50


def mauve_score(p: np.ndarray, q: np.ndarray, seed: int = 25) -> dict[str, float]:
    """MAUVE between embeddings p (human) and q (synthetic).

    Returns:
        {'mauve': ..., 'mauve_star': ... (Krichevsky-Trofimov smoothed), 'buckets': k}.

    Raises:
        MetricUnavailable: fewer than MIN_MAUVE rows on a side.
    """
    if min(len(p), len(q)) < MIN_MAUVE:
        raise MetricUnavailable(f"MAUVE needs at least {MIN_MAUVE} examples per side, got {len(q)} synthetic and {len(p)} human")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.redirect_stdout(io.StringIO()), _quiet_native_output(), _one_thread():
        import mauve

        out = mauve.compute_mauve(p_features=np.asarray(p, dtype=np.float32), q_features=np.asarray(q, dtype=np.float32),
                                  seed=seed, verbose=False, device_id=-1)
    return {"mauve": float(out.mauve), "mauve_star": float(out.mauve_star), "buckets": int(out.num_buckets)}


@contextlib.contextmanager
def _one_thread():
    """One thread for faiss k-means and PCA: on a small busy machine two made MAUVE about 4x slower."""
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        faiss.omp_set_num_threads(before)


@contextlib.contextmanager
def _quiet_native_output():
    """Silence faiss's C++ 'please provide at least N training points' lines (MAUVE's bucket rule causes them)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_c_stdio()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no libc symbol table (non-POSIX): the lines may show, harmless
        pass


def human_likeness(synthetic: np.ndarray, human: np.ndarray, human_other: np.ndarray | None, seed: int = 25) -> dict[str, dict]:
    """MAUVE and Fréchet distance of a set against a human sample, and of a second human sample.

    Args:
        synthetic: embeddings of the synthetic set.
        human: embeddings of a label-matched human sample.
        human_other: a disjoint label-matched human sample (the human counterpart), or None.
        seed: k-means seed for MAUVE.

    Returns:
        {'mauve': {'synthetic', 'human'}, 'mauve_star': ..., 'frechet_distance': ...}; a value that
        cannot be computed is {'unavailable': reason}.
    """
    no_other = {"unavailable": "no second, disjoint label-matched human sample of the same size (give --train, or a larger reference)"}
    out: dict[str, dict] = {}
    for key, pair in (("synthetic", (human, synthetic)), ("human", (human, human_other))):
        if pair[1] is None:
            out.setdefault("mauve", {})[key] = out.setdefault("mauve_star", {})[key] = no_other
            out.setdefault("frechet_distance", {})[key] = no_other
            continue
        try:
            scores = mauve_score(*pair, seed=seed)
            out.setdefault("mauve", {})[key] = scores["mauve"]
            out.setdefault("mauve_star", {})[key] = scores["mauve_star"]
        except MetricUnavailable as exc:
            out.setdefault("mauve", {})[key] = out.setdefault("mauve_star", {})[key] = {"unavailable": str(exc)}
        try:
            out.setdefault("frechet_distance", {})[key] = frechet_distance(pair[1], pair[0])
        except MetricUnavailable as exc:
            out.setdefault("frechet_distance", {})[key] = {"unavailable": str(exc)}
    return out
