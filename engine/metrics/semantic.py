"""Semantic diversity and class structure from unit-norm sentence embeddings (engine.embed).

For L2-normalised rows x_i (cosine = dot product), with s = sum of the rows of a group:

- mean pairwise cosine of a set of N: mean over i != j of x_i . x_j = (|s|^2 - N) / (N (N - 1)).
  Exact in O(N d). Lower = more diverse.
- within-label cosine: the same inside each label; reported per label and as the unweighted mean
  over labels with at least 2 rows.
- between-label cosine of labels A, B: mean over a in A, b in B of x_a . x_b = s_A . s_B / (|A| |B|);
  reported as the unweighted mean over label pairs.
- class separability = mean within-label cosine - mean between-label cosine. Higher = labels form
  tighter, better separated clusters.
- Vendi score (Friedman & Dieng, 2023) with the cosine kernel K = X X^T: exp(-sum_i l_i log l_i) over
  the eigenvalues l_i of K / N. The non-zero eigenvalues of X X^T / N are those of X^T X / N
  (d x d), so this is exact in O(N d^2). Ranges from 1 (all identical) to min(N, d): an effective
  number of distinct items.
- Fréchet distance (the FID formula on our embeddings, Heusel et al., 2017) between two sets:
  |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), with S the (N - 1)-normalised covariances;
  Tr (S_1 S_2)^(1/2) is the sum of square roots of the eigenvalues of S_1 S_2 (real, >= 0 for PSD S).
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from engine.errors import MetricUnavailable

__all__ = ["mean_pairwise_cosine", "label_cosines", "vendi_score", "frechet_distance", "frechet_from_moments",
           "semantic_metrics"]


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine over all ordered pairs i != j of unit vectors.

    Raises:
        MetricUnavailable: fewer than 2 vectors.
    """
    n = len(vectors)
    if n < 2:
        raise MetricUnavailable(f"mean pairwise cosine needs at least 2 examples, got {n}")
    total = np.asarray(vectors, dtype=np.float64).sum(axis=0)
    return float((total @ total - _sq_norms(vectors).sum()) / (n * (n - 1)))


def _sq_norms(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    return np.einsum("ij,ij->i", v, v)  # 1 for unit vectors; exact also for rows that are not


def label_cosines(vectors: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """Within-label cosine per label and on average, between-label cosine, and their difference.

    Raises:
        MetricUnavailable: fewer than 2 labels.
    """
    groups = _groups(labels)
    if len(groups) < 2:
        raise MetricUnavailable(f"class separability needs at least 2 labels, got {len(groups)}")
    v = np.asarray(vectors, dtype=np.float64)
    sums = {label: v[rows].sum(axis=0) for label, rows in groups.items()}
    within = {label: mean_pairwise_cosine(v[rows]) for label, rows in groups.items() if len(rows) >= 2}
    if not within:
        raise MetricUnavailable("within-label cosine needs a label with at least 2 examples")
    between = [float(sums[a] @ sums[b]) / (len(groups[a]) * len(groups[b])) for a, b in combinations(sorted(groups), 2)]
    mean_within, mean_between = float(np.mean(list(within.values()))), float(np.mean(between))
    return {"within_label_cosine": mean_within, "within_label_cosine_per_label": within,
            "between_label_cosine": mean_between, "class_separability": mean_within - mean_between}


def _groups(labels: Sequence[str]) -> dict[str, np.ndarray]:
    order: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        order.setdefault(label, []).append(i)
    return {label: np.array(rows) for label, rows in sorted(order.items())}


def vendi_score(vectors: np.ndarray) -> float:
    """Vendi score with the cosine kernel: exp(Shannon entropy of the eigenvalues of K / N).

    Raises:
        MetricUnavailable: no vectors.
    """
    n = len(vectors)
    if n == 0:
        raise MetricUnavailable("Vendi score needs at least 1 example")
    v = np.asarray(vectors, dtype=np.float64)
    gram = v.T @ v / n if v.shape[1] < n else v @ v.T / n
    eig = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    eig = eig[eig > 1e-12]
    eig = eig / eig.sum()  # the trace is 1 for unit rows; renormalise for rounding
    return float(np.exp(-(eig * np.log(eig)).sum()))


def frechet_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians given their means and covariances."""
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    eig = np.linalg.eigvals(np.asarray(cov1, dtype=np.float64) @ np.asarray(cov2, dtype=np.float64))
    trace_sqrt = np.sqrt(np.clip(eig.real, 0.0, None)).sum()
    return float(max(0.0, diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two sets of embeddings.

    Raises:
        MetricUnavailable: a set has fewer than 2 rows.
    """
    if len(a) < 2 or len(b) < 2:
        raise MetricUnavailable(f"Fréchet distance needs at least 2 examples per set, got {len(a)} and {len(b)}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return frechet_from_moments(a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False))


def semantic_metrics(vectors: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """All single-set semantic metrics: {name: value, or {'unavailable': reason}}."""
    out: dict[str, object] = {}
    for name, func in (("mean_pairwise_cosine", mean_pairwise_cosine), ("vendi_score", vendi_score)):
        try:
            out[name] = func(vectors)
        except MetricUnavailable as exc:
            out[name] = {"unavailable": str(exc)}
    try:
        out.update(label_cosines(vectors, labels))
    except MetricUnavailable as exc:
        for name in ("within_label_cosine", "within_label_cosine_per_label", "between_label_cosine", "class_separability"):
            out[name] = {"unavailable": str(exc)}
    return out
