"""Per-label retrieval for SynthesizRR: queries -> hybrid candidates -> similarity band -> diverse sample.

For each label the queries are its verbalization, its seed examples and its spec's `queries` (the
paper retrieves with the seeds; the verbalization adds passages that match the label's meaning
rather than the seeds' particular stories; `queries` name the beats of a broad label, so that its
passages span them: on the news mix, Business queried by its verbalization and three seeds found
1987 earnings and bank stories, and a student trained on them called technology companies' business
news Sci/Tech). Candidates whose cosine to their query lies outside [min, max] are dropped: above
max they are near-copies of the query, below min they are off-topic. The rest are ordered by
maximal marginal relevance (MMR), and labels pick in turns so that no passage is used by more
than `max_reuse` labels.

Label assignment keeps a candidate for label y only when it belongs to y more than to any other
label: its best cosine to y's queries must beat its best cosine to every other label's queries by
`label_margin`. Without it, a corpus that covers some labels and not others fills the uncovered
ones with passages about the covered ones (farm-policy stories rewritten "as" Sports).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.types import Hit, LabelSpec, RetrievalParams, TaskSpec

__all__ = ["label_queries", "LabelPool", "RetrievalReport", "retrieve_for_task", "mmr_order", "label_scores", "assignment"]

log = logging.getLogger(__name__)


def label_queries(label: LabelSpec) -> list[str]:
    """Queries for a label: its verbalization, its seed examples, then its retrieval queries (duplicates dropped)."""
    return list(dict.fromkeys([label.verbalization, *label.seeds, *label.queries]))


@dataclass
class LabelPool:
    """Ordered candidate passages for one label (best next pick first) and how they were found."""

    label: str
    hits: list[Hit] = field(default_factory=list)
    in_band: int = 0
    below_band: int = 0
    above_band: int = 0
    min_similarity: float = 0.0
    assigned: int = 0  # candidates in the (possibly relaxed) band that belong to this label
    lost_to: dict[str, int] = field(default_factory=dict)  # label -> candidates that belong to it instead
    relaxed_from: float | None = None  # the task's lower bound when it was relaxed
    margins: dict[str, float] = field(default_factory=dict)  # passage id -> its assignment margin for this label


@dataclass(frozen=True)
class RetrievalReport:
    """Per-label counts for the run manifest: how many candidates the band and label assignment kept."""

    per_label: dict[str, dict[str, Any]]


def retrieve_for_task(index, task: TaskSpec, per_label: int) -> tuple[dict[str, list[Hit]], RetrievalReport]:
    """Pick up to `per_label` diverse passages for every label of `task`.

    Args:
        index: an opened `engine.index.reader.Index`.
        task: the task spec (labels and retrieval parameters).
        per_label: how many passages to return per label, in pick order (the first ones are
            used first; the rest top up labels that lose examples to rejections).

    Returns:
        ({label: hits in pick order}, a report of band and assignment counts per label).
    """
    params = task.retrieval
    queries = {spec.name: index.embed_queries(label_queries(spec)) for spec in task.labels}
    pools = {spec.name: _pool(index, spec, params, per_label, queries) for spec in task.labels}
    picks = _round_robin(index, pools, per_label, params)
    report = RetrievalReport({name: _counts(p, len(picks[name])) for name, p in pools.items()})
    return picks, report


def _counts(pool: LabelPool, picked: int) -> dict[str, Any]:
    return {"candidates_in_band": pool.in_band, "below_band": pool.below_band, "above_band": pool.above_band,
            "assigned": pool.assigned, "lost_to": dict(sorted(pool.lost_to.items(), key=lambda kv: -kv[1])),
            "min_similarity_used": pool.min_similarity, "relaxed_from": pool.relaxed_from, "picked": picked}


def label_scores(vectors: np.ndarray, queries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each passage's similarity to each label: its best cosine to any of the label's queries."""
    return {name: (vectors @ q.T).max(axis=1) for name, q in queries.items()}


def assignment(vectors: np.ndarray, label: str, queries: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """How far each passage belongs to `label` more than to any other label, and that closest other label.

    Returns:
        (margin per passage: its score for `label` minus its best score for another label, +inf
        when the task has one label; the best other label per passage, "" when there is none).
    """
    scores = label_scores(vectors, queries)
    others = [name for name in queries if name != label]
    if not others:
        return np.full(len(vectors), np.inf), [""] * len(vectors)
    other = np.stack([scores[name] for name in others])
    best = other.argmax(axis=0)
    return scores[label] - other.max(axis=0), [others[i] for i in best]


def _pool(index, spec: LabelSpec, params: RetrievalParams, needed: int, queries: dict[str, np.ndarray]) -> LabelPool:
    """Union of the label's query hits inside the band that belong to the label, each passage once.

    When fewer than `needed` such passages exist, the lower bound is relaxed in steps of 0.05, by
    at most `relax_limit`; the bound used is reported and logged, never silently changed.
    """
    best: dict[str, Hit] = {}
    too_close: set[str] = set()  # near-copies of any query (e.g. of a seed) never reach a prompt
    pool = LabelPool(spec.name, min_similarity=params.min_similarity)
    for query, qvec in zip(label_queries(spec), queries[spec.name]):
        for hit in index.search(query, k=params.candidates, mode=params.mode, query_vector=qvec):
            cos = hit.cosine if hit.cosine is not None else 0.0
            if cos > params.max_similarity:
                pool.above_band += 1
                too_close.add(hit.passage.id)
            elif hit.passage.id not in best or cos > (best[hit.passage.id].cosine or 0.0):
                best[hit.passage.id] = hit
    ranked = sorted((h for h in best.values() if h.passage.id not in too_close),
                    key=lambda h: (-(h.cosine or 0.0), h.passage.id))
    belongs, rival, margins = _belongs(index, ranked, spec.name, params, queries)
    floor, lowest = params.min_similarity, round(max(-1.0, params.min_similarity - params.relax_limit), 4)
    while round(floor - 0.05, 4) >= lowest - 1e-9 and _assigned_above(ranked, belongs, floor) < needed:
        floor = round(floor - 0.05, 4)
    in_floor = [(h, ok, r) for h, ok, r in zip(ranked, belongs, rival) if (h.cosine or 0.0) >= floor]
    pool.hits = [h for h, ok, _ in in_floor if ok]
    pool.margins = {h.passage.id: m for h, m in zip(ranked, margins) if np.isfinite(m)}
    pool.assigned = len(pool.hits)
    for _, ok, other in in_floor:
        if not ok:
            pool.lost_to[other] = pool.lost_to.get(other, 0) + 1
    pool.in_band = sum((h.cosine or 0.0) >= params.min_similarity for h in ranked)
    pool.below_band = len(ranked) - len(in_floor)
    if floor < params.min_similarity:
        pool.min_similarity, pool.relaxed_from = floor, params.min_similarity
        log.warning(
            "label %r: only %d passages within cosine %.2f-%.2f of its queries belong to it; relaxed the lower bound "
            "to %.2f (at most retrieval.relax_limit=%.2f below; set it to 0 to never relax)",
            spec.name, _assigned_above(ranked, belongs, params.min_similarity), params.min_similarity,
            params.max_similarity, floor, params.relax_limit,
        )
    return pool


def _belongs(index, ranked: list[Hit], label: str, params: RetrievalParams,
             queries: dict[str, np.ndarray]) -> tuple[list[bool], list[str], list[float]]:
    """Which candidates belong to `label` (label assignment), the closest rival label of each, and the margins."""
    if not ranked or not params.assign_labels or len(queries) < 2:
        return [True] * len(ranked), [""] * len(ranked), [np.inf] * len(ranked)
    vectors = index.vectors(np.array([index.row_of(h.passage.id) for h in ranked]))
    margins, rivals = assignment(vectors, label, queries)
    return [bool(m >= params.label_margin) for m in margins], rivals, [float(m) for m in margins]


def _assigned_above(ranked: list[Hit], belongs: list[bool], floor: float) -> int:
    return sum(ok and (h.cosine or 0.0) >= floor for h, ok in zip(ranked, belongs))


def _round_robin(index, pools: dict[str, LabelPool], per_label: int, params: RetrievalParams) -> dict[str, list[Hit]]:
    """Labels take turns picking their next MMR passage, honouring the reuse cap."""
    orders = {name: mmr_order(index, pool.hits, per_label * 3, params.mmr_lambda, _relevance(pool, params.mmr_relevance))
              for name, pool in pools.items()}
    uses: dict[str, int] = {}
    picks: dict[str, list[Hit]] = {name: [] for name in pools}
    cursors = dict.fromkeys(pools, 0)
    progressed = True
    while progressed:
        progressed = False
        for name, order in orders.items():
            if len(picks[name]) >= per_label:
                continue
            while cursors[name] < len(order):
                hit = order[cursors[name]]
                cursors[name] += 1
                if uses.get(hit.passage.id, 0) < params.max_reuse:
                    uses[hit.passage.id] = uses.get(hit.passage.id, 0) + 1
                    picks[name].append(_reranked(hit, len(picks[name]) + 1))
                    progressed = True
                    break
    return picks


def _relevance(pool: LabelPool, kind: str) -> np.ndarray | None:
    """MMR's relevance per hit: the cosine to its query (None), the assignment margin, or their sum."""
    if kind == "cosine" or not pool.margins:
        return None
    margin = np.array([pool.margins.get(h.passage.id, 0.0) for h in pool.hits], dtype=np.float32)
    return margin if kind == "margin" else margin + np.array([h.cosine or 0.0 for h in pool.hits], dtype=np.float32)


def _reranked(hit: Hit, rank: int) -> Hit:
    return Hit(passage=hit.passage, score=hit.score, rank=rank, query=hit.query, cosine=hit.cosine)


def mmr_order(index, hits: list[Hit], limit: int, lam: float, relevance: np.ndarray | None = None) -> list[Hit]:
    """Greedy maximal marginal relevance: lam * relevance - (1 - lam) * max cosine(picked).

    Args:
        index: gives the stored vectors of the hits' passages.
        hits: candidates with `cosine` to their query.
        limit: how many to order (the rest are dropped).
        lam: 1.0 is pure relevance, 0.0 pure diversity.
        relevance: per hit (default: its cosine to its query).
    """
    if not hits:
        return []
    rows = np.array([index.row_of(h.passage.id) for h in hits])
    vectors = index.vectors(rows)
    if relevance is None:
        relevance = np.array([h.cosine or 0.0 for h in hits], dtype=np.float32)
    closest = np.full(len(hits), -np.inf, dtype=np.float32)
    chosen: list[int] = []
    available = np.ones(len(hits), dtype=bool)
    for _ in range(min(limit, len(hits))):
        redundancy = np.where(np.isfinite(closest), closest, 0.0)
        score = lam * relevance - (1.0 - lam) * redundancy
        score[~available] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        closest = np.maximum(closest, vectors @ vectors[best])
    return [hits[i] for i in chosen]
