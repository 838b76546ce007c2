"""Corpus coverage per label, before anything is paid for: is there enough real text to rewrite?

A label is `supported` when at least the passages a run wants (its examples with their top-up
margin) lie in the similarity band and belong to it (label assignment, see retrieve.py); `thin`
when there is at least one passage per wanted example but less than the top-up margin; and
`unsupported` below that. An unsupported label is never filled with off-topic rewrites: the
task's `fallback` strategy makes its examples, or the run stops before its first call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.errors import CoverageError
from engine.types import TaskSpec

__all__ = ["LabelCoverage", "assess", "routing", "SUPPORTED", "THIN", "UNSUPPORTED"]

SUPPORTED, THIN, UNSUPPORTED = "supported", "thin", "unsupported"


@dataclass(frozen=True)
class LabelCoverage:
    """What the index holds for one label, and the verdict.

    Attributes:
        label: the label name.
        in_band: candidates whose cosine to a query of the label lies within the task's band.
        assigned: candidates (in the band used) that belong to this label more than to any other.
        needed: examples the task wants for the label.
        wanted: passages a run retrieves for it (examples times the over-generation factor).
        verdict: supported, thin or unsupported.
        reason: one line saying why.
        min_similarity_used: the lower bound used (below the task's when it was relaxed).
        lost_to: the labels the rejected candidates belong to instead, with counts.
    """

    label: str
    in_band: int
    assigned: int
    needed: int
    wanted: int
    verdict: str
    reason: str
    min_similarity_used: float
    lost_to: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def assess(task: TaskSpec, per_label_report: dict[str, dict], wanted: int) -> dict[str, LabelCoverage]:
    """Verdicts per label from a retrieval report (`RetrievalReport.per_label`)."""
    return {spec.name: _one(spec.name, per_label_report[spec.name], task.gathered_per_label, wanted)
            for spec in task.labels}


def _one(label: str, counts: dict, needed: int, wanted: int) -> LabelCoverage:
    assigned, in_band = int(counts["assigned"]), int(counts["candidates_in_band"])
    lost_to = dict(counts.get("lost_to") or {})
    relaxed = counts.get("relaxed_from")
    band = f" (lower bound relaxed from {relaxed:.2f} to {counts['min_similarity_used']:.2f})" if relaxed is not None else ""
    if assigned >= wanted:
        verdict, reason = SUPPORTED, f"{assigned} passages belong to it, {wanted} wanted{band}"
    elif assigned >= needed:
        verdict, reason = THIN, (f"{assigned} passages belong to it: one per example ({needed}) but fewer than the "
                                 f"{wanted} wanted for top-ups, so rejections may leave it short{band}")
    else:
        rival = max(lost_to.items(), key=lambda kv: kv[1]) if lost_to else None
        candidates = assigned + sum(lost_to.values())
        elsewhere = f"; {rival[1]} of its {candidates} candidates belong to {rival[0]} instead" if rival else ""
        verdict, reason = UNSUPPORTED, f"only {assigned} passages belong to it, {needed} needed{elsewhere}{band}"
    return LabelCoverage(label, in_band, assigned, needed, wanted, verdict, reason,
                         float(counts["min_similarity_used"]), lost_to)


def routing(task: TaskSpec, coverage: dict[str, LabelCoverage], index_name: str) -> dict[str, str]:
    """Which strategy makes each label: the task's own, or its fallback for unsupported labels.

    Raises:
        CoverageError: some labels are unsupported and the task has no `fallback`.
    """
    unsupported = [name for name, c in coverage.items() if c.verdict == UNSUPPORTED]
    if unsupported and not task.fallback:
        why = "; ".join(f"{name}: {coverage[name].reason}" for name in unsupported)
        raise CoverageError(
            f"index {index_name!r} cannot support label(s) {', '.join(unsupported)} of task {task.name!r} ({why}); "
            "fix: add `fallback: attrprompt` (or fewgen) to the task spec to synthesize them without retrieval, "
            "index a corpus that covers them, or lower retrieval.label_margin / min_similarity "
            "(`seedbed plan` shows the coverage without calling the LLM)"
        )
    return {spec.name: task.fallback if spec.name in unsupported else task.strategy for spec in task.labels}
