"""The benchmark use case: measure one or more labelled sets against a human reference.

Every metric is computed twice: on the set ("synthetic") and on a human sample drawn from the
reference with the same label counts ("human"), so each number has its human counterpart at the
same size. Student accuracy's human counterpart is the gold ceiling: the same students trained on
an equal, label-matched number of human training examples. Each distinct text is embedded once.

The report is a plain dict with stable keys (schema `seedbed.bench/1`); a metric that cannot be
computed holds {'unavailable': reason} instead of a number.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np

from engine.errors import ConfigError, MetricUnavailable
from engine.metrics.data import LabeledSet, matched_indices
from engine.metrics.entities import entity_metrics, spacy_extractor
from engine.metrics.human import human_likeness
from engine.metrics.lexical import lexical_metrics, tokenize
from engine.metrics.semantic import semantic_metrics
from engine.metrics.students import FINETUNED, STUDENTS, label_fidelity, student_accuracy
from engine.metrics.vectors import EmbeddingCache, Vectors

__all__ = ["BenchConfig", "BenchResult", "run_bench", "SCHEMA", "HUMAN_KEY"]

SCHEMA = "seedbed.bench/1"
HUMAN_KEY = "human reference"


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how much data to use."""

    seeds: int = 5                 # bootstrap resamples per student
    max_reference: int = 2000      # reference rows students are tested on (stratified sample above this)
    max_train: int = 2000          # human training rows used at least (more when a set is larger): oracle + gold ceiling
    entities: bool = True          # spaCy NER metrics
    finetune: bool = False         # also the fine-tuned MiniLM student (minutes per fit; seeds = fine-tuning seeds)
    top_k: int = 10                # entities counted for popularity bias
    samples: int = 8               # example rows shown per set in the report
    seed: int = 13


@dataclass
class BenchResult:
    """The JSON report, plus per-set data the HTML plots need (lengths, a 2-D map) kept out of the JSON."""

    report: dict
    figures: dict = field(default_factory=dict)


def run_bench(datasets: list[LabeledSet], reference: LabeledSet, train: LabeledSet | None, embedder,
              config: BenchConfig = BenchConfig(), extractor: Callable | None = None,
              progress: Callable[[str], None] = lambda _msg: None, cache: EmbeddingCache | None = None) -> BenchResult:
    """Measure each dataset and its human counterpart; see the module docstring.

    Args:
        datasets: the sets to measure (at least one).
        reference: the human test split: label-matched samples and the student test set.
        train: the human training split (oracle and gold ceiling), or None to skip those.
        embedder: an engine.embed Embedder.
        config: sizes and switches.
        extractor: an entity extractor (default: spaCy, loaded only if config.entities).
        progress: called with a short message per step.
        cache: embeddings kept across runs (None: embed everything this run needs).

    Raises:
        ConfigError: no dataset, or a dataset none of whose labels is in the reference.
    """
    if not datasets:
        raise ConfigError("no dataset to benchmark; pass at least one run folder or file")
    start = time.perf_counter()
    vectors = Vectors(embedder, cache)
    test_rows = _stratified(reference.labels, config.max_reference, config.seed)
    extractor, entity_reason = _extractor(config, extractor)
    ctx = _Context(config, vectors, reference, extractor, entity_reason, progress, {}, test_rows)
    if train is not None:
        largest = max(len(d) for d in datasets)
        cap = max(config.max_train, largest)
        note = (f"{train.path}: used a stratified random sample of {cap} of its {len(train)} rows",)
        ctx.train = train.subset(_stratified(train.labels, cap, config.seed), note) if len(train) > cap else train
    runs, figures = [], {}
    for dataset in _unique_names(datasets):
        run, figure = _bench_one(_restrict(dataset, reference), ctx)
        runs.append(run)
        figures[run["name"]] = figure
    figures["_map"] = _embedding_map(figures, config.seed)
    total = time.perf_counter() - start
    report = {
        "schema": SCHEMA, "embedder": embedder.id, "settings": asdict(config),
        "reference": {**_describe(reference, test_rows), "test_rows": len(test_rows)}, "train": _describe(ctx.train) if ctx.train is not None else None,
        "runs": runs,
        "timing": {"total_s": round(total, 3), "embed_s": round(vectors.seconds, 3), "texts_embedded": vectors.encoded,
                   "texts_from_cache": vectors.cached,
                   "total_over_embed": round(total / vectors.seconds, 3) if vectors.seconds else None},
    }
    return BenchResult(report, figures)


@dataclass
class _Context:
    config: BenchConfig
    vectors: Vectors
    reference: LabeledSet
    extractor: Callable | None
    entity_reason: str | None
    progress: Callable[[str], None]
    human_cache: dict
    test_rows: list[int]
    train: LabeledSet | None = None


def _unique_names(datasets: list[LabeledSet]) -> list[LabeledSet]:
    seen: dict[str, int] = {}
    out = []
    for data in datasets:
        seen[data.name] = seen.get(data.name, 0) + 1
        out.append(data if seen[data.name] == 1 else replace(data, name=f"{data.name}-{seen[data.name]}"))
    return out


def _extractor(config: BenchConfig, extractor):
    if not config.entities:
        return None, "entity metrics were switched off (--no-entities)"
    if extractor is not None:
        return extractor, None
    try:
        return spacy_extractor(), None
    except MetricUnavailable as exc:
        return None, str(exc)


def _stratified(labels: tuple[str, ...], cap: int, seed: int) -> list[int]:
    """Up to `cap` positions with each label's share kept (largest remainders get the rounding)."""
    if len(labels) <= cap:
        return list(range(len(labels)))
    counts = Counter(labels)
    quota = {label: cap * n / len(labels) for label, n in counts.items()}
    wanted = {label: int(q) for label, q in quota.items()}
    for label in sorted(quota, key=lambda lab: (int(quota[lab]) - quota[lab], lab))[:cap - sum(wanted.values())]:
        wanted[label] += 1
    return matched_indices(labels, wanted, seed)[0]


def _restrict(dataset: LabeledSet, reference: LabeledSet) -> LabeledSet:
    known = set(reference.labels)
    absent = sorted(set(dataset.labels) - known)
    if not absent:
        return dataset
    rows = [i for i, label in enumerate(dataset.labels) if label in known]
    if not rows:
        raise ConfigError(f"dataset {dataset.path}: none of its labels {sorted(set(dataset.labels))[:8]} is a label of the "
                          f"reference {reference.path} ({sorted(known)[:8]}); map them with --label-map, e.g. 1=World,2=Sports")
    return dataset.subset(rows, (f"dataset {dataset.path}: {len(dataset) - len(rows)} row(s) with labels absent from the "
                                 f"reference were left out: {absent[:8]}",))


def _describe(data: LabeledSet, test_rows: list[int] | None = None) -> dict:
    warnings = list(data.warnings)
    if test_rows is not None and len(test_rows) < len(data):
        warnings.append(f"{data.path}: students are tested on a stratified random sample of {len(test_rows)} of its "
                        f"{len(data)} rows (--max-reference)")
    return {"path": data.path, "rows": len(data), "labels": data.label_counts(), "warnings": warnings}


def _bench_one(dataset: LabeledSet, ctx: _Context) -> tuple[dict, dict]:
    cfg, ref = ctx.config, ctx.reference
    ctx.progress(f"{dataset.name}: embedding")
    warnings = list(dataset.warnings)
    if len(set(dataset.labels)) < 2:
        warnings.append(f"dataset {dataset.path} has one label only ({dataset.labels[0]!r}): label metrics are unavailable")
    counts = dataset.label_counts()
    prefer = set(ctx.test_rows)
    rows_a, short = matched_indices(ref.labels, counts, cfg.seed, prefer=prefer)
    if short:
        warnings.append(f"the reference has fewer rows than the dataset for {short}: the human sample is smaller")
    human = ref.subset(rows_a)
    syn_vec, hum_vec = ctx.vectors(dataset.texts), ctx.vectors(human.texts)
    gold = matched_indices(ctx.train.labels, counts, cfg.seed) if ctx.train is not None else None
    other_vec, second = _second_human_sample(ctx, counts, rows_a, gold, complete=not short)
    metrics = {"lexical": _paired(ctx, "lexical", dataset, human, lambda d, v: lexical_metrics(d.texts), syn_vec, hum_vec),
               "semantic": _paired(ctx, "semantic", dataset, human, lambda d, v: semantic_metrics(v, d.labels), syn_vec, hum_vec)}
    ctx.progress(f"{dataset.name}: entities")
    metrics["entities"] = _entities(ctx, dataset, human)
    ctx.progress(f"{dataset.name}: MAUVE and Fréchet distance")
    metrics["human_likeness"] = human_likeness(syn_vec, hum_vec, other_vec, seed=cfg.seed)
    ctx.progress(f"{dataset.name}: students")
    metrics["label_fidelity"], metrics["students"] = _supervised(ctx, dataset, syn_vec, hum_vec, human, gold, warnings)
    run = {"name": dataset.name, "path": dataset.path, "rows": len(dataset), "labels": counts,
           "human_sample": {"rows": len(human), "labels": human.label_counts(), "second_sample": second}, "warnings": warnings,
           "metrics": metrics, "samples": _samples(dataset, cfg)}
    figure = {"lengths": {"synthetic": [len(tokenize(t)) for t in dataset.texts], "human": [len(tokenize(t)) for t in human.texts]},
              "vectors": syn_vec, "human_vectors": hum_vec, "labels": dataset.labels, "human_labels": human.labels}
    return run, figure


def _second_human_sample(ctx: _Context, counts: dict, rows_a: list[int], gold, complete: bool):
    """The human sample that MAUVE and Fréchet compare with the first one: the gold-ceiling sample of the
    training split when there is one (already embedded), else a second disjoint sample of the reference."""
    if not complete:
        return None, None
    if gold is not None and not gold[1]:
        return ctx.vectors([ctx.train.texts[i] for i in gold[0]]), "train"
    rows_b, short_b = matched_indices(ctx.reference.labels, counts, ctx.config.seed + 1, exclude=set(rows_a),
                                      prefer=set(ctx.test_rows))
    return (None, None) if short_b else (ctx.vectors([ctx.reference.texts[i] for i in rows_b]), "reference")


def _paired(ctx: _Context, family: str, dataset: LabeledSet, human: LabeledSet, measure, syn_vec, hum_vec) -> dict:
    synthetic = measure(dataset, syn_vec)
    key = (family, human.texts)
    if key not in ctx.human_cache:
        ctx.human_cache[key] = measure(human, hum_vec)
    return {name: {"synthetic": value, "human": ctx.human_cache[key][name]} for name, value in synthetic.items()}


def _entities(ctx: _Context, dataset: LabeledSet, human: LabeledSet) -> dict:
    if ctx.extractor is None:
        return {"unavailable": ctx.entity_reason}
    measure = lambda d, _v: entity_metrics(d.texts, ctx.extractor, ctx.config.top_k)  # noqa: E731
    paired = _paired(ctx, "entities", dataset, human, measure, None, None)
    types = sorted(set(paired["entity_entropy"]["synthetic"]) | set(paired["entity_entropy"]["human"]))
    none = {"entropy_bits": 0.0, "mentions": 0, "unique": 0}
    paired["entity_entropy"] = {t: {side: paired["entity_entropy"][side].get(t, none) for side in ("synthetic", "human")}
                                for t in types}
    return paired


def _supervised(ctx: _Context, dataset: LabeledSet, syn_vec, hum_vec, human: LabeledSet, gold_draw, warnings: list) -> tuple[dict, dict]:
    cfg, train = ctx.config, ctx.train
    ref = ctx.reference.subset(ctx.test_rows)
    test = (ref.texts, ctx.vectors(ref.texts), ref.labels)
    no_train = {"unavailable": "no human training split was given (--train)"}
    fidelity, gold = {"synthetic": no_train, "human": no_train}, None
    if train is not None:
        train_vec = ctx.vectors(train.texts)
        fidelity = {"synthetic": _try(label_fidelity, (train_vec, train.labels), syn_vec, dataset.labels),
                    "human": _try(label_fidelity, (train_vec, train.labels), hum_vec, human.labels)}
        rows, short = gold_draw
        if short:
            warnings.append(f"the training split has fewer rows than the dataset for {short}: the gold ceiling uses fewer")
        gold = ([train.texts[i] for i in rows], train_vec[rows], [train.labels[i] for i in rows])
    students = {}
    for kind in STUDENTS + ((FINETUNED,) if cfg.finetune else ()):
        ctx.progress(f"{dataset.name}: student {kind}")
        synthetic = _try(student_accuracy, kind, (dataset.texts, syn_vec, dataset.labels), test, cfg.seeds)
        human_side = _try(student_accuracy, kind, gold, test, cfg.seeds) if gold else no_train
        students[kind] = {"synthetic": synthetic, "human": human_side}
    return fidelity, students


def _try(func, *args):
    try:
        return func(*args)
    except MetricUnavailable as exc:
        return {"unavailable": str(exc)}


def _samples(dataset: LabeledSet, cfg: BenchConfig) -> list[dict]:
    rng = np.random.default_rng(cfg.seed)
    rows = sorted(rng.choice(len(dataset), size=min(cfg.samples, len(dataset)), replace=False).tolist())
    return [{"text": dataset.texts[i], "label": dataset.labels[i],
             "source": dataset.sources[i] if dataset.sources is not None else None} for i in rows]


def _embedding_map(figures: dict, seed: int, per_set: int = 400) -> dict:
    """2-D PCA coordinates of up to `per_set` points per set and of the first run's human sample."""
    rng = np.random.default_rng(seed)
    parts, names = [], []
    for name, fig in figures.items():
        take = rng.permutation(len(fig["vectors"]))[:per_set]
        parts.append(fig["vectors"][take])
        names.append((name, [fig["labels"][i] for i in take]))
    first = next(iter(figures.values()))
    take = rng.permutation(len(first["human_vectors"]))[:per_set]
    parts.append(first["human_vectors"][take])
    names.append((HUMAN_KEY, [first["human_labels"][i] for i in take]))
    stacked = np.vstack(parts).astype(np.float64)
    centred = stacked - stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T if vt.shape[0] >= 2 else np.zeros((len(stacked), 2))
    out, offset = {}, 0
    for (name, labels), part in zip(names, parts):
        out[name] = {"xy": coords[offset:offset + len(part)].tolist(), "labels": labels}
        offset += len(part)
    return out
