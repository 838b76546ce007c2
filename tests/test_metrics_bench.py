"""Students, label fidelity, the benchmark runner and `seedbed bench` (hash embedder, scripted entity extractor)."""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.embed import HashEmbedder
from engine.errors import ConfigError, MetricUnavailable
from engine.metrics.bench import SCHEMA, BenchConfig, run_bench
from engine.metrics.data import LabeledSet
from engine.metrics.report import format_summary, write_report
from engine.metrics.students import label_fidelity, student_accuracy

POOLS = {"Sports": "goal match team coach league striker season cup", "Business": "stock market shares profit bank earnings merger trade",
         "Science": "space nasa physics genome lab telescope quantum study"}
COMMON = "the a said on in new today report week".split()


def topic_texts(label: str, n: int, seed: int) -> list[str]:
    rng = random.Random(f"{label}-{seed}")
    words = POOLS[label].split()
    return [" ".join(rng.choice(words if k % 2 else COMMON) for k in range(rng.randint(6, 14))) for _ in range(n)]


def topic_set(name: str, per_label: int, seed: int, labels=tuple(POOLS)) -> LabeledSet:
    texts, tags = [], []
    for label in labels:
        texts += topic_texts(label, per_label, seed)
        tags += [label] * per_label
    return LabeledSet(name, f"{name}.parquet", tuple(texts), tuple(tags), tuple(f"passage {i}" for i in range(len(texts))))


def fake_entities(texts):
    return [[(w, "ORG") for w in t.split() if w in {"nasa", "bank", "league"}] for t in texts]


EMB = HashEmbedder(64)


def test_students_learn_separable_topics_and_report_spread():
    train, test = topic_set("train", 30, 1), topic_set("test", 20, 2)
    for kind in ("embedding_logreg", "tfidf_logreg"):
        out = student_accuracy(kind, (train.texts, EMB.encode(train.texts), train.labels),
                               (test.texts, EMB.encode(test.texts), test.labels), seeds=3)
        assert out["accuracy"] >= 0.9 and out["seeds"] == 3 and out["train_size"] == 90
        assert 0 <= out["accuracy_std"] < 0.2 and out["macro_f1_mean"] > 0.8
    with pytest.raises(MetricUnavailable, match="at least 2 labels"):
        student_accuracy("tfidf_logreg", (["a b"], EMB.encode(["a b"]), ["x"]), (["a"], EMB.encode(["a"]), ["x"]))


def test_students_report_recall_per_label_and_their_most_frequent_confusions():
    # Trained with Science texts labelled Business, a student calls the test split's Science rows Business:
    # its recall says which label failed and its confusions say what it became.
    train, test = topic_set("train", 30, 1), topic_set("test", 20, 2)
    mislabelled = tuple("Business" if label == "Science" else label for label in train.labels)
    for kind in ("embedding_logreg", "tfidf_logreg"):
        out = student_accuracy(kind, (train.texts, EMB.encode(train.texts), mislabelled),
                               (test.texts, EMB.encode(test.texts), test.labels), seeds=0)
        assert out["recall_per_label"]["Science"] == 0.0, out
        assert out["recall_per_label"]["Sports"] >= 0.9 and out["recall_per_label"]["Business"] >= 0.9, out
        assert out["confusions"][0][:2] == ["Science", "Business"] and out["confusions"][0][2] >= 18, out
        clean = student_accuracy(kind, (train.texts, EMB.encode(train.texts), train.labels),
                                 (test.texts, EMB.encode(test.texts), test.labels), seeds=0)
        assert min(clean["recall_per_label"].values()) >= 0.9 and sum(n for *_, n in clean["confusions"]) <= 6


def test_label_fidelity_counts_agreement_with_the_oracle():
    train, data = topic_set("train", 30, 1), topic_set("syn", 10, 3)
    flipped = tuple("Business" if (i % 2 and lab == "Sports") else lab for i, lab in enumerate(data.labels))
    clean = label_fidelity((EMB.encode(train.texts), train.labels), EMB.encode(data.texts), data.labels)
    noisy = label_fidelity((EMB.encode(train.texts), train.labels), EMB.encode(data.texts + ("pasta sauce",)), flipped + ("Other",))
    assert clean["fidelity"] == 1.0 and clean["unscored"] == 0
    assert noisy["per_label"]["Sports"] == 1.0 and noisy["per_label"]["Business"] < 1.0
    assert noisy["scored"] == 30 and noisy["unscored"] == 1   # the oracle never saw 'Other': not scored


def run_small(*datasets: LabeledSet, train=True, **config):
    reference, human_train = topic_set("reference", 40, 5), topic_set("train", 30, 1)
    return run_bench(list(datasets), reference, human_train if train else None, EMB,
                     BenchConfig(seeds=2, **config), extractor=fake_entities)


def test_report_has_stable_keys_and_a_human_counterpart_for_every_metric():
    result = run_small(topic_set("syn", 12, 3))
    report = result.report
    assert report["schema"] == SCHEMA and list(report) == ["schema", "embedder", "settings", "reference", "train", "runs", "timing"]
    (run,) = report["runs"]
    assert list(run) == ["name", "path", "rows", "labels", "human_sample", "warnings", "metrics", "samples"]
    assert list(run["metrics"]) == ["lexical", "semantic", "entities", "human_likeness", "label_fidelity", "students"]
    for family in ("lexical", "semantic", "human_likeness", "students"):
        for name, pair in run["metrics"][family].items():
            assert set(pair) == {"synthetic", "human"}, (family, name)
    assert run["human_sample"]["labels"] == run["labels"] == {"Business": 12, "Science": 12, "Sports": 12}
    assert run["human_sample"]["second_sample"] == "train"   # MAUVE's human counterpart: the gold-ceiling sample
    assert run["metrics"]["students"]["tfidf_logreg"]["human"]["train_size"] == 36   # the gold ceiling: equal size
    assert run["metrics"]["human_likeness"]["mauve"]["synthetic"] == {
        "unavailable": "MAUVE needs at least 50 examples per side, got 36 synthetic and 36 human"}
    assert run["metrics"]["entities"]["entity_entropy"]["ORG"]["human"]["mentions"] > 0
    assert run["samples"][0]["source"].startswith("passage")
    assert report["timing"]["texts_embedded"] > 0 and report["timing"]["total_over_embed"] > 1


def test_one_label_and_absent_labels_become_warnings_and_reasons():
    one = topic_set("one", 12, 3, labels=("Sports",))
    extra = LabeledSet("extra", "extra.parquet", ("goal cup", "alien words here"), ("Sports", "Cooking"))
    report = run_small(one, extra, train=False).report
    first, second = report["runs"]
    assert any("one label only" in w for w in first["warnings"])
    assert first["human_sample"]["second_sample"] == "reference"   # no --train: a second disjoint reference sample
    assert "unavailable" in first["metrics"]["semantic"]["class_separability"]["synthetic"]
    assert "unavailable" in first["metrics"]["students"]["embedding_logreg"]["synthetic"]
    assert first["metrics"]["label_fidelity"]["synthetic"] == {"unavailable": "no human training split was given (--train)"}
    assert second["rows"] == 1 and any("absent from the reference" in w and "Cooking" in w for w in second["warnings"])


def test_no_label_in_common_with_the_reference_is_a_clear_error():
    other = LabeledSet("ids", "ids.parquet", ("a b", "c d"), ("1", "2"))
    with pytest.raises(ConfigError, match="--label-map"):
        run_small(other)


def test_several_runs_with_the_same_name_get_distinct_names_and_html(tmp_path):
    result = run_small(topic_set("syn", 12, 3), topic_set("syn", 12, 4))
    assert [r["name"] for r in result.report["runs"]] == ["syn", "syn-2"]
    paths = write_report(tmp_path, result)
    page = paths["html"].read_text(encoding="utf-8")
    HTMLParser().feed(page)  # well-formed enough to parse
    assert page.count("<svg") > 10 and "syn-2" in page and "<td class='muted'>passage " in page and "Not computed" in page
    assert "<h2>Students per label</h2>" in page and "<h3>tfidf_logreg</h3>" in page and "most frequent errors" in page
    assert json.loads(paths["json"].read_text())["runs"][1]["name"] == "syn-2"
    assert "Self-BLEU-4" in format_summary(result.report)


def test_cli_bench_writes_reports_and_bad_input_is_one_line(tmp_path):
    for name, data in (("run.parquet", topic_set("syn", 12, 3)), ("ref.csv", topic_set("reference", 40, 5))):
        frame = pl.DataFrame({"body" if name == "ref.csv" else "text": data.texts, "label": data.labels})
        frame.write_parquet(tmp_path / name) if name.endswith("parquet") else frame.write_csv(tmp_path / name)
    args = ["bench", str(tmp_path / "run.parquet"), "--reference", str(tmp_path / "ref.csv"), "--embedder", "hash-64",
            "--no-entities", "--seeds", "1", "--out", str(tmp_path / "out")]
    bad = CliRunner().invoke(main, args)
    assert bad.exit_code == 1 and "no text column 'text'" in bad.output and "--reference-text-field" in bad.output
    ok = CliRunner().invoke(main, [*args, "--reference-text-field", "body"])
    assert ok.exit_code == 0, ok.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["runs"][0]["metrics"]["entities"] == {"unavailable": "entity metrics were switched off (--no-entities)"}
    assert (tmp_path / "out" / "report.html").is_file() and "ratio total/embedding" in ok.output
    empty = CliRunner().invoke(main, ["bench", str(tmp_path / "missing"), "--reference", str(tmp_path / "ref.csv")])
    assert empty.exit_code == 1 and "does not exist" in empty.output


def test_huge_and_duplicate_texts_do_not_crash_the_runner():
    texts = ("goal " * 30000,) + ("the same match",) * 5 + topic_set("x", 4, 1).texts
    labels = ("Sports",) * 6 + topic_set("x", 4, 1).labels
    report = run_small(LabeledSet("odd", "odd.parquet", texts, labels)).report
    assert np.isfinite(report["runs"][0]["metrics"]["semantic"]["vendi_score"]["synthetic"])


def test_embedding_cache_round_trips_and_evicts_least_recently_used(tmp_path):
    from engine.metrics.vectors import EmbeddingCache

    cache = EmbeddingCache(tmp_path, max_bytes=3 * (64 * 4 + 120))
    texts = ["one", "two", "three"]
    cache.put_many(EMB.id, texts, EMB.encode(texts))
    found = cache.get_many(EMB.id, EMB.dim, ["two", "four"])
    assert list(found) == ["two"] and np.array_equal(found["two"], EMB.encode(["two"])[0])
    assert cache.get_many("other-embedder", EMB.dim, ["two"]) == {}
    cache.put_many(EMB.id, ["four"], EMB.encode(["four"]))      # over the size: the oldest unused go first
    assert len(cache) <= 3 and "two" in cache.get_many(EMB.id, EMB.dim, ["two"])
    cache.close()


def test_a_second_bench_against_the_same_reference_embeds_only_the_new_set(tmp_path):
    from engine.metrics.vectors import EmbeddingCache

    reference, train = topic_set("reference", 40, 5), topic_set("train", 30, 1)
    timings = []
    for seed in (3, 4):
        cache = EmbeddingCache(tmp_path)
        result = run_bench([topic_set("syn", 12, seed)], reference, train, EMB, BenchConfig(seeds=0, entities=False), cache=cache)
        cache.close()
        timings.append(result.report["timing"])
    assert timings[0]["texts_from_cache"] == 0
    new_texts = len(set(topic_set("syn", 12, 4).texts) - set(topic_set("syn", 12, 3).texts))
    assert timings[1]["texts_embedded"] == new_texts and timings[1]["texts_from_cache"] > 0


def test_a_one_row_set_is_measured_with_reasons_not_a_crash(tmp_path):
    tiny = LabeledSet("tiny", "tiny.parquet", ("goal match cup",), ("Sports",))
    result = run_small(tiny)
    metrics = result.report["runs"][0]["metrics"]
    assert "unavailable" in metrics["lexical"]["self_bleu_1"]["synthetic"]
    assert "unavailable" in metrics["semantic"]["mean_pairwise_cosine"]["synthetic"]
    assert metrics["label_fidelity"]["synthetic"]["scored"] == 1
    assert "unavailable" in metrics["students"]["tfidf_logreg"]["synthetic"]
    assert isinstance(metrics["students"]["tfidf_logreg"]["human"], dict)
    assert write_report(tmp_path, result)["html"].is_file()
