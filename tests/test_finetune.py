"""The fine-tuned MiniLM student on real AG News rows (the shared data), with a short recipe."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from engine.metrics import finetune
from engine.metrics.students import FINETUNED, student_accuracy

from conftest import REPO

AG = REPO.parent / "shared" / "data" / "ag_news"
NAMES = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
SHORT = finetune.FinetuneConfig(epochs=1, min_steps=24, batch_size=8, max_length=64)  # seconds, not minutes


def ag_rows(path, per_label: int, text_columns) -> tuple[list[str], list[str]]:
    texts, labels, seen = [], [], {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            if row[0] not in NAMES or seen.get(row[0], 0) >= per_label:
                continue
            seen[row[0]] = seen.get(row[0], 0) + 1
            texts.append(" ".join(row[i] for i in text_columns))
            labels.append(NAMES[row[0]])
    return texts, labels


@pytest.fixture(scope="module")
def ag_news():
    if not AG.is_dir():
        pytest.skip(f"the shared AG News data is not at {AG}")
    return ag_rows(AG / "train_subset_8k_jointmatch.csv", 12, (1,)), ag_rows(AG / "test.csv", 30, (1, 2))


def test_the_fine_tuned_student_learns_the_topics_and_is_reproducible(ag_news):
    (texts, labels), (test_texts, test_labels) = ag_news
    predict = finetune.fit_finetuned(texts, labels, SHORT, seed=0)
    predicted = predict(test_texts)
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(test_labels)))
    assert accuracy >= 0.6, f"48 examples, 4 labels: {accuracy:.2f} is near chance (0.25)"
    assert set(predicted) <= set(labels)
    assert finetune.fit_finetuned(texts, labels, SHORT, seed=0)(test_texts) == predicted  # same seed, same student


def test_student_accuracy_reports_a_mean_and_spread_over_fine_tuning_seeds(ag_news, monkeypatch):
    monkeypatch.setattr(finetune, "DEFAULT", finetune.FinetuneConfig(epochs=1, min_steps=6, batch_size=8, max_length=64))
    (texts, labels), (test_texts, test_labels) = ag_news
    empty = np.zeros((len(texts), 1))
    result = student_accuracy(FINETUNED, (texts, empty, labels), (test_texts, np.zeros((len(test_texts), 1)), test_labels),
                              seeds=2)
    assert result["seeds"] == 2 and result["train_size"] == len(texts)
    assert 0.0 <= result["accuracy_std"] <= 0.5 and result["accuracy"] > 0.25
