"""The confidence (cartography) filter of the SynthesizRR paper: keep, per label, the examples a
student trained on the synthetic set itself is most confident belong to their label.

`quality.confidence_keep` is the fraction kept per label (the paper keeps 83 %; 0, the default,
turns the filter off). The student is multinomial logistic regression on the run's sentence
embeddings (the index's embedder, else MiniLM), and each example is scored out of fold (5-fold,
stratified): a student that saw the example would rate its own training set confident, so the
paper's training-dynamics confidence is approximated by held-out confidence. The rest become
`low_confidence` rejections. The filter runs once, after every round; a run gathers
examples_per_label / confidence_keep per label first (`TaskSpec.gathered_per_label`), so the cut,
capped at examples_per_label, ends at the target. Deterministic: a resumed run drops the same examples.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from engine.filters import first_per_label
from engine.types import Example, Rejection, Request

__all__ = ["confidence_filter", "out_of_fold_confidence"]

FOLDS = 5


def out_of_fold_confidence(vectors: np.ndarray, labels: Sequence[str], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each row's held-out probability of its own label (stratified `folds`-fold logistic regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    confidence = np.zeros(len(labels), dtype=np.float64)
    with threadpool_limits(1):
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(vectors, labels):
            model = LogisticRegression(C=1.0, max_iter=2000).fit(vectors[train], labels[train])
            probabilities = model.predict_proba(vectors[test])
            column = {label: i for i, label in enumerate(model.classes_)}
            confidence[test] = [probabilities[row, column[label]] if label in column else 0.0
                                for row, label in enumerate(labels[test])]
    return confidence


def confidence_filter(pairs: list[tuple[Example, Request]], embedder, keep: float, seed: int = 0,
                      target: int | None = None) -> tuple[list[tuple[Example, Request]], list[Rejection], dict]:
    """Keep per label the top `keep` fraction of `pairs` by out-of-fold student confidence, and at
    most `target` (the task's examples_per_label) of them.

    Returns:
        (kept pairs in their original order, `low_confidence` rejections, a report for the manifest).
        When the set cannot train a student (one label, or a label with fewer than 2 examples) no
        pair is dropped for confidence, the first `target` per label are kept, and the report says why.
    """
    labels = [example.label for example, _ in pairs]
    counts = Counter(labels)
    report = {"keep": keep, "student": f"logistic regression on {getattr(embedder, 'id', 'embeddings')}, "
                                        f"{FOLDS}-fold out-of-fold", "dropped": 0}
    if len(counts) < 2 or min(counts.values()) < 2:
        report["skipped"] = f"needs 2 labels with 2 examples each to train a student, got {dict(counts)}"
        kept, surplus = first_per_label(pairs, len(pairs) if target is None else target,
                                        "gathered for the confidence filter, which could not run")
        return kept, surplus, report
    vectors = embedder.encode([example.text for example, _ in pairs])
    confidence = out_of_fold_confidence(vectors, labels, min(FOLDS, min(counts.values())), seed)
    dropped: set[int] = set()
    per_label = {}
    for label in counts:
        rows = sorted((i for i, name in enumerate(labels) if name == label), key=lambda i: (-confidence[i], i))
        cut = min(math.ceil(keep * len(rows)), target if target is not None else len(rows))
        dropped.update(rows[cut:])
        per_label[label] = {"kept": cut, "dropped": len(rows) - cut,
                            "threshold": round(float(confidence[rows[cut - 1]]), 4) if cut else None}
    cap = f" (at most {target})" if target is not None else ""
    rejections = [Rejection(labels[i], "low_confidence", pairs[i][0].text,
                            f"student confidence {confidence[i]:.2f} in its label is below the label's top "
                            f"{keep:.0%}{cap}", pairs[i][0].provenance) for i in sorted(dropped)]
    report.update(dropped=len(dropped), per_label=per_label)
    return [pair for i, pair in enumerate(pairs) if i not in dropped], rejections, report
