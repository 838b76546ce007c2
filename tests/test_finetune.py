"""The fine-tuned MiniLM student on real posts (20 Newsgroups train, from the bundled news mix), with a short recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.metrics import finetune
from engine.metrics.students import FINETUNED, student_accuracy

from conftest import REPO

MIX = REPO / "corpora" / "news-mix" / "news_mix.jsonl"  # bundled: the test never skips for want of data
GROUPS = {"rec.sport": "Sports", "sci.": "Science", "comp.": "Computers"}  # 20 Newsgroups train posts, clean labels
SHORT = finetune.FinetuneConfig(epochs=1, min_steps=24, batch_size=8, max_length=64)  # seconds, not minutes


def mix_rows(skip: int, per_label: int) -> tuple[list[str], list[str]]:
    """`per_label` posts per label after skipping the first `skip` of each (train and test stay disjoint)."""
    texts, labels, seen = [], [], {}
    for line in MIX.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        label = next((name for prefix, name in GROUPS.items() if str(row.get("group", "")).startswith(prefix)), None)
        if label is None:
            continue
        seen[label] = seen.get(label, 0) + 1
        if skip < seen[label] <= skip + per_label:
            texts.append(f"{row.get('title', '')}. {row['text']}")
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def posts():
    return mix_rows(0, 12), mix_rows(40, 30)


def test_the_fine_tuned_student_learns_the_topics_and_is_reproducible(posts):
    (texts, labels), (test_texts, test_labels) = posts
    predict = finetune.fit_finetuned(texts, labels, SHORT, seed=0)
    predicted = predict(test_texts)
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(test_labels)))
    assert accuracy >= 0.6, f"36 examples, 3 labels: {accuracy:.2f} is near chance (0.33)"
    assert set(predicted) <= set(labels)
    assert finetune.fit_finetuned(texts, labels, SHORT, seed=0)(test_texts) == predicted  # same seed, same student


def test_student_accuracy_reports_a_mean_and_spread_over_fine_tuning_seeds(posts, monkeypatch):
    monkeypatch.setattr(finetune, "DEFAULT", finetune.FinetuneConfig(epochs=1, min_steps=6, batch_size=8, max_length=64))
    (texts, labels), (test_texts, test_labels) = posts
    empty = np.zeros((len(texts), 1))
    result = student_accuracy(FINETUNED, (texts, empty, labels), (test_texts, np.zeros((len(test_texts), 1)), test_labels),
                              seeds=2)
    assert result["seeds"] == 2 and result["train_size"] == len(texts)
    assert 0.0 <= result["accuracy_std"] <= 0.5 and result["accuracy"] > 0.33
    assert set(result["recall_per_label"]) == set(test_labels)  # the mean over both seeds' predictions
    assert all(0.0 <= r <= 1.0 for r in result["recall_per_label"].values())
