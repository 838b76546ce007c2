"""Dataset cards: every run folder gets a README.md in the Hugging Face card format, and the
dataset loads unchanged with `datasets.load_dataset("parquet", ...)` and with polars."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from engine.card import render_card, size_category
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.types import QualityParams

from test_coverage import LABELS, build_mix_index, make_task


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    index = build_mix_index(folder)
    (folder / "LICENSE.md").write_text("# Test corpus\nResearch use only.\n", encoding="utf-8")
    task = make_task(labels=LABELS, fallback="fewgen", quality=QualityParams(near_duplicate=0.0))
    return synthesize(task, index, ScriptedLLM(), SynthOptions(out=folder / "run")), folder


def header_and_body(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_a_run_writes_a_card_whose_header_describes_the_set(run):
    result, folder = run
    header, body = header_and_body((result.out / "README.md").read_text(encoding="utf-8"))
    assert header["task_categories"] == ["text-classification"] and header["size_categories"] == ["n<1K"]
    assert header["language"] == ["en"] and header["license"] == "other"
    assert header["license_details"] == f"inherited from the corpus: see {folder / 'LICENSE.md'}"
    assert header["dataset_info"]["features"][1]["values"] == ["Business", "Sports", "Space"]
    assert header["configs"] == [{"config_name": "default", "data_files": "dataset.parquet"}]
    assert "Kept: 12 (Business 4, Sports 4, Space 4)" in body
    assert "`Space`: made by fewgen, corpus coverage unsupported" in body and "`Sports`: made by synthesizrr" in body
    assert "model `scripted`" in body and "ungrounded-entity rate" in body


def test_the_run_loads_unchanged_with_datasets_and_polars(run):
    datasets = pytest.importorskip("datasets")
    result, _ = run
    frame = pl.read_parquet(result.files["parquet"])
    loaded = datasets.load_dataset("parquet", data_files=str(result.files["parquet"]), split="train")
    assert loaded.num_rows == frame.height == 12
    assert loaded["text"] == frame["text"].to_list() and loaded["label"] == frame["label"].to_list()


def test_bench_adds_its_headline_metrics_to_the_card_of_a_run_folder(run, tmp_path):
    from click.testing import CliRunner

    from engine.cli import main

    result, _ = run
    reference = tmp_path / "reference.jsonl"
    rows = pl.read_parquet(result.files["parquet"]).select("text", "label").to_dicts()
    reference.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bench = CliRunner().invoke(main, ["bench", str(result.out), "--reference", str(reference), "--embedder", "hash-64",
                                      "--seeds", "0", "--no-entities", "--no-html", "--no-embed-cache", "--out", str(tmp_path / "b")])
    assert bench.exit_code == 0, bench.output
    _, body = header_and_body((result.out / "README.md").read_text(encoding="utf-8"))
    assert "## Benchmark" in body and f"Against `{reference}`" in body and "| Self-BLEU-4 |" in body


def test_size_categories_and_a_corpus_without_licence():
    assert [size_category(n) for n in (0, 999, 1000, 50_000, 2_000_000)] == ["n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "n>1M"]
    manifest = {"task": {"name": "t", "labels": [{"name": "a"}, {"name": "b"}]}, "counts": {"kept": 2, "kept_per_label": {}},
                "index": {"name": "i", "sources": [{"path": "/nonexistent/corpus.jsonl"}]}, "strategy": "synthesizrr"}
    header, _ = header_and_body(render_card(manifest))
    assert "carries no licence file" in header["license_details"]
    header, _ = header_and_body(render_card({**manifest, "index": None, "strategy": "fewgen"}))
    assert "no corpus" in header["license_details"]
