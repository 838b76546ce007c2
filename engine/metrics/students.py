"""Supervised metrics: student accuracy (train on a set, test on the human test split) and label
fidelity (does a classifier trained on human data agree with the synthetic labels?).

Students (scikit-learn, multinomial logistic regression, C = 1; fitted with one BLAS/OpenMP thread,
because on a small busy machine two threads made each fit several times slower):
- `embedding_logreg`: on the frozen sentence embeddings (MiniLM by default), the same vectors the
  semantic metrics use.
- `tfidf_logreg`: on TF-IDF of word uni- and bigrams (sublinear tf, lowercased), fitted on the
  training set only.
- `finetuned_minilm` (opt-in, `BenchConfig.finetune`): the MiniLM encoder fine-tuned end to end
  with a linear head (`engine.metrics.finetune`); minutes per fit on CPU, so bench runs it only
  when asked. It is not bootstrapped: its mean and spread are over fine-tuning seeds (head
  initialisation, dropout and batch order) on the whole set, as the literature reports students.

Student accuracy = accuracy (and macro-F1 over the test labels) on the test split. `full` is the
student trained on the whole set; the mean and spread (population std) are over `seeds` bootstrap
resamples of the training set (the same size, drawn with replacement): how much the result depends
on which examples the set happens to contain. The gold ceiling is the same students trained on an
equal number of human training examples with the same label counts.

Label fidelity = the share of examples whose label is the one an oracle predicts; the oracle is the
embedding student trained on the human training split. Its human counterpart is the oracle's
accuracy on a human sample of the test split.

Each student also reports its recall per label on the test split and its most frequent confusions
(true label -> predicted label): where a synthetic set falls short, not only by how much.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from engine.errors import MetricUnavailable

__all__ = ["STUDENTS", "FINETUNED", "student_accuracy", "label_fidelity", "fit_student", "label_errors"]

STUDENTS = ("embedding_logreg", "tfidf_logreg")
FINETUNED = "finetuned_minilm"


def _one_thread(func):
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return func(*args, **kwargs)

    return wrapper


def fit_student(kind: str, texts: Sequence[str], vectors: np.ndarray, labels: Sequence[str], seed: int = 0):
    """Fit one student; returns predict(texts, vectors) -> labels.

    Raises:
        MetricUnavailable: fewer than 2 distinct labels to learn.
    """
    if len(set(labels)) < 2:
        raise MetricUnavailable(f"a student needs at least 2 labels to learn, got {sorted(set(labels))}")
    if kind == FINETUNED:
        from engine.metrics.finetune import fit_finetuned

        predict_texts = fit_finetuned(list(texts), list(labels), seed=seed)
        return lambda texts_, _vecs: np.asarray(predict_texts(list(texts_)))
    return _fit_linear(kind, texts, vectors, labels)


@_one_thread
def _fit_linear(kind: str, texts: Sequence[str], vectors: np.ndarray, labels: Sequence[str]):
    from sklearn.linear_model import LogisticRegression

    if kind == "embedding_logreg":
        model = LogisticRegression(C=1.0, max_iter=2000)
        model.fit(np.asarray(vectors), list(labels))
        return lambda _texts, vecs: model.predict(np.asarray(vecs))
    if kind == "tfidf_logreg":
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        model = LogisticRegression(C=1.0, max_iter=2000, solver="newton-cg")  # same optimum as lbfgs, ~6x fewer seconds on sparse input
        model.fit(tfidf.fit_transform(list(texts)), list(labels))
        return lambda texts_, _vecs: model.predict(tfidf.transform(list(texts_)))
    raise ValueError(f"unknown student {kind!r}; use one of {STUDENTS + (FINETUNED,)}")


def _scores(predicted, truth: Sequence[str]) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    truth = list(truth)
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(truth)))
    macro_f1 = float(f1_score(truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0))
    return accuracy, macro_f1


def student_accuracy(kind: str, train: tuple[Sequence[str], np.ndarray, Sequence[str]],
                     test: tuple[Sequence[str], np.ndarray, Sequence[str]], seeds: int = 5) -> dict[str, object]:
    """Accuracy and macro-F1 of one student trained on `train`, tested on `test`.

    Args:
        kind: one of STUDENTS, or FINETUNED.
        train, test: (texts, embeddings, labels).
        seeds: bootstrap resamples for the mean and spread (0: the full fit only); for FINETUNED,
            fine-tuning seeds on the whole set (at least 1; the first is the full fit).

    Returns:
        {'accuracy', 'macro_f1' (full fit), 'accuracy_mean', 'accuracy_std', 'macro_f1_mean',
         'macro_f1_std', 'seeds', 'train_size', 'recall_per_label' (test rows of each label predicted
         as it: the full fit's, or for FINETUNED the mean over its seeds), 'confusions' (the full fit's
         three most frequent (true label, predicted label, test rows) errors)}.

    Raises:
        MetricUnavailable: fewer than 2 labels in the training set.
    """
    texts, vectors, labels = train
    test_texts, test_vectors, test_labels = test
    if kind == FINETUNED:  # fine-tuning varies with its seed alone: each seed retrains on the whole set
        predictions = [np.asarray(fit_student(kind, texts, vectors, labels, seed=seed)(test_texts, test_vectors))
                       for seed in range(max(1, seeds))]
        runs = [_scores(predicted, test_labels) for predicted in predictions]
        full = runs[0]
    else:
        predictions = [np.asarray(fit_student(kind, texts, vectors, labels)(test_texts, test_vectors))]
        full = _scores(predictions[0], test_labels)
        runs = _bootstrap_runs(kind, train, test, seeds)
    acc = np.array([r[0] for r in runs] or [full[0]])
    f1 = np.array([r[1] for r in runs] or [full[1]])
    return {"accuracy": full[0], "macro_f1": full[1], "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std()), "seeds": len(runs), "train_size": len(labels),
            **label_errors(predictions, test_labels)}


def label_errors(predictions: list[np.ndarray], truth: Sequence[str], top: int = 3) -> dict[str, object]:
    """Recall per label (mean over `predictions`) and the first prediction's most frequent confusions."""
    truth = np.asarray(list(truth))
    recall = {str(label): float(np.mean([np.mean(predicted[truth == label] == label) for predicted in predictions]))
              for label in sorted(set(truth.tolist()))}
    wrong = Counter((str(t), str(p)) for t, p in zip(truth.tolist(), predictions[0].tolist()) if t != p)
    return {"recall_per_label": recall, "confusions": [[t, p, n] for (t, p), n in wrong.most_common(top)]}


def _bootstrap_runs(kind: str, train, test, seeds: int) -> list[tuple[float, float]]:
    texts, vectors, labels = train
    test_texts, test_vectors, test_labels = test
    runs = []
    for seed in range(seeds):
        rows = np.random.default_rng(seed).integers(0, len(labels), size=len(labels))
        sample_labels = [labels[i] for i in rows]
        if len(set(sample_labels)) < 2:
            continue
        predict = fit_student(kind, [texts[i] for i in rows], np.asarray(vectors)[rows], sample_labels)
        runs.append(_scores(predict(test_texts, test_vectors), test_labels))
    return runs


@_one_thread
def label_fidelity(oracle_train: tuple[np.ndarray, Sequence[str]], vectors: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """Share of rows whose label equals the oracle's prediction, overall and per label.

    Rows whose label the oracle never saw are not scored (counted in 'unscored').

    Raises:
        MetricUnavailable: the oracle has fewer than 2 labels, or no row has a label it knows.
    """
    train_vectors, train_labels = oracle_train
    predict = fit_student("embedding_logreg", [], train_vectors, train_labels)
    known = set(train_labels)
    rows = [i for i, label in enumerate(labels) if label in known]
    if not rows:
        raise MetricUnavailable(f"label fidelity: none of the labels {sorted(set(labels))[:8]} is in the training split")
    predicted = predict(None, np.asarray(vectors)[rows])
    truth = np.array([labels[i] for i in rows])
    agree = predicted == truth
    per_label = {label: float(agree[truth == label].mean()) for label in sorted(set(truth.tolist()))}
    return {"fidelity": float(agree.mean()), "per_label": per_label, "scored": len(rows), "unscored": len(labels) - len(rows)}
