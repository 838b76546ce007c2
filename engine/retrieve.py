"""Per-label retrieval for SynthesizRR: queries -> hybrid candidates -> similarity band -> diverse sample.

For each label the queries are its verbalization plus its seed examples (the paper retrieves
with the seeds; the verbalization adds passages that match the label's meaning rather than the
seeds' particular stories). Candidates whose cosine to their query lies outside [min, max] are dropped: above
max they are near-copies of the query, below min they are off-topic. The rest are ordered by
maximal marginal relevance (MMR), and labels pick in turns so that no passage is used by more
than `max_reuse` labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from engine.types import Hit, LabelSpec, RetrievalParams, TaskSpec

__all__ = ["label_queries", "LabelPool", "RetrievalReport", "retrieve_for_task", "mmr_order"]

log = logging.getLogger(__name__)


def label_queries(label: LabelSpec) -> list[str]:
    """Queries for a label: its verbalization, then its seed examples (duplicates dropped)."""
    return list(dict.fromkeys([label.verbalization, *label.seeds]))


@dataclass
class LabelPool:
    """Ordered candidate passages for one label (best next pick first)."""

    label: str
    hits: list[Hit] = field(default_factory=list)
    in_band: int = 0
    below_band: int = 0
    above_band: int = 0
    min_similarity: float = 0.0


@dataclass(frozen=True)
class RetrievalReport:
    """Per-label counts for the run manifest: how many candidates the band kept or dropped."""

    per_label: dict[str, dict[str, float]]


def retrieve_for_task(index, task: TaskSpec, per_label: int) -> tuple[dict[str, list[Hit]], RetrievalReport]:
    """Pick up to `per_label` diverse passages for every label of `task`.

    Args:
        index: an opened `engine.index.reader.Index`.
        task: the task spec (labels and retrieval parameters).
        per_label: how many passages to return per label, in pick order (the first ones are
            used first; the rest top up labels that lose examples to rejections).

    Returns:
        ({label: hits in pick order}, a report of band counts per label).
    """
    params = task.retrieval
    pools = {spec.name: _pool(index, spec, params, per_label) for spec in task.labels}
    picks = _round_robin(index, pools, per_label, params)
    report = RetrievalReport({
        name: {"candidates_in_band": p.in_band, "below_band": p.below_band, "above_band": p.above_band,
               "min_similarity_used": p.min_similarity, "picked": len(picks[name])}
        for name, p in pools.items()
    })
    return picks, report


def _pool(index, spec: LabelSpec, params: RetrievalParams, needed: int) -> LabelPool:
    """Union of the label's query hits inside the band, each passage once with its best query.

    When fewer than `needed` passages lie in the band (a corpus far from the task, or an
    embedder whose cosines run lower than the paper's), the lower bound is relaxed in steps of
    0.05 until enough are found; the bound used is reported, never silently changed.
    """
    queries = label_queries(spec)
    vectors = index.embed_queries(queries)
    best: dict[str, Hit] = {}
    too_close: set[str] = set()  # near-copies of any query (e.g. of a seed) never reach a prompt
    pool = LabelPool(spec.name, min_similarity=params.min_similarity)
    for query, qvec in zip(queries, vectors):
        for hit in index.search(query, k=params.candidates, mode=params.mode, query_vector=qvec):
            cos = hit.cosine if hit.cosine is not None else 0.0
            if cos > params.max_similarity:
                pool.above_band += 1
                too_close.add(hit.passage.id)
            elif hit.passage.id not in best or cos > (best[hit.passage.id].cosine or 0.0):
                best[hit.passage.id] = hit
    ranked = sorted((h for h in best.values() if h.passage.id not in too_close),
                    key=lambda h: (-(h.cosine or 0.0), h.passage.id))
    floor = params.min_similarity
    while floor > 0.0 and sum((h.cosine or 0.0) >= floor for h in ranked) < needed:
        floor = round(floor - 0.05, 2)
    pool.hits = [h for h in ranked if (h.cosine or 0.0) >= floor]
    pool.in_band = sum((h.cosine or 0.0) >= params.min_similarity for h in ranked)
    pool.below_band = len(ranked) - len(pool.hits)
    if floor < params.min_similarity:
        pool.min_similarity = floor
        log.warning(
            "label %r: only %d passages within cosine %.2f-%.2f of its queries; relaxed the lower bound to %.2f "
            "(set retrieval.min_similarity to silence this, or use a corpus closer to the task)",
            spec.name, pool.in_band, params.min_similarity, params.max_similarity, floor,
        )
    return pool


def _round_robin(index, pools: dict[str, LabelPool], per_label: int, params: RetrievalParams) -> dict[str, list[Hit]]:
    """Labels take turns picking their next MMR passage, honouring the reuse cap."""
    orders = {name: mmr_order(index, pool.hits, per_label * 3, params.mmr_lambda) for name, pool in pools.items()}
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


def _reranked(hit: Hit, rank: int) -> Hit:
    return Hit(passage=hit.passage, score=hit.score, rank=rank, query=hit.query, cosine=hit.cosine)


def mmr_order(index, hits: list[Hit], limit: int, lam: float) -> list[Hit]:
    """Greedy maximal marginal relevance: lam * cosine(query) - (1 - lam) * max cosine(picked).

    Args:
        index: gives the stored vectors of the hits' passages.
        hits: candidates with `cosine` to their query.
        limit: how many to order (the rest are dropped).
        lam: 1.0 is pure relevance, 0.0 pure diversity.
    """
    if not hits:
        return []
    rows = np.array([index.row_of(h.passage.id) for h in hits])
    vectors = index.vectors(rows)
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
