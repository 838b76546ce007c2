"""Loading labelled sets for `seedbed bench`: formats, field options, and clear errors on bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest

from engine.errors import ConfigError
from engine.metrics.data import MAX_CHARS, load_labeled, matched_indices, parse_label_map

ROWS = [{"text": "Oil prices rose", "label": "Oil", "passage_text": "OPEC said"},
        {"text": "Wheat exports fell", "label": "Grain", "passage_text": None}]


def write(tmp_path, name: str, rows=ROWS):
    path = tmp_path / name
    frame = pl.DataFrame(rows)
    if name.endswith(".parquet"):
        frame.write_parquet(path)
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        frame.write_csv(path, separator="\t" if name.endswith(".tsv") else ",")
    return path


@pytest.mark.parametrize("name", ["set.parquet", "set.jsonl", "set.csv", "set.tsv"])
def test_every_format_loads_the_same_rows(tmp_path, name):
    data = load_labeled(write(tmp_path, name))
    assert data.texts == ("Oil prices rose", "Wheat exports fell") and data.labels == ("Oil", "Grain")
    assert data.sources == ("OPEC said", None) and data.warnings == ()


def test_run_folder_reads_its_dataset_parquet(tmp_path):
    (tmp_path / "run").mkdir()
    write(tmp_path / "run", "dataset.parquet")
    data = load_labeled(tmp_path / "run")
    assert len(data) == 2 and data.name == "run"


def test_headerless_csv_by_column_position_joins_fields_and_maps_labels(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text('"3","Fears for pension","Unions say they are disappointed"\n"2","Cup final","A late goal"\n')
    data = load_labeled(path, "1,2", "0", label_map=parse_label_map("2=Sports,3=Business"), role="reference")
    assert data.texts[0] == "Fears for pension Unions say they are disappointed"
    assert data.labels == ("Business", "Sports")


def test_integer_labels_become_strings(tmp_path):
    data = load_labeled(write(tmp_path, "set.parquet", [{"text": "a b", "label": 1}, {"text": "c d", "label": 2}]))
    assert data.labels == ("1", "2")


@pytest.mark.parametrize("spec", ["1World", "=World", "1="])
def test_bad_label_map_names_the_item_and_the_fix(spec):
    with pytest.raises(ConfigError, match="KEY=NAME"):
        parse_label_map(spec)


def test_missing_column_names_file_field_columns_and_option(tmp_path):
    path = write(tmp_path, "ref.csv")
    with pytest.raises(ConfigError) as err:
        load_labeled(path, "body", "label", role="reference")
    message = str(err.value)
    assert str(path) in message and "'body'" in message and "['text', 'label', 'passage_text']" in message
    assert "--reference-text-field" in message


def test_missing_file_unknown_format_and_empty_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_labeled(tmp_path / "nope.parquet")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(ConfigError, match="unknown format '.xlsx'"):
        load_labeled(tmp_path / "x.xlsx")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(ConfigError, match="has no dataset.parquet or dataset.jsonl"):
        load_labeled(tmp_path / "empty-run")


def test_empty_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_labeled(tmp_path / "empty.jsonl")
    with pytest.raises(ConfigError, match="no row with both a text and a label"):
        load_labeled(write(tmp_path, "blank.parquet", [{"text": "  ", "label": "a"}, {"text": "x", "label": None}]))


def test_empty_and_huge_texts_are_dropped_or_cut_with_warnings(tmp_path):
    rows = [{"text": "", "label": "a"}, {"text": "word " * MAX_CHARS, "label": "a"}, {"text": "fine", "label": None},
            {"text": "ok text", "label": "b"}]
    data = load_labeled(write(tmp_path, "set.parquet", rows))
    assert data.labels == ("a", "b") and len(data.texts[0]) <= MAX_CHARS
    assert any("1 row(s) with empty text" in w for w in data.warnings)
    assert any("without a label" in w for w in data.warnings) and any("cut 1 text" in w for w in data.warnings)


def test_matched_indices_match_label_counts_disjointly_and_report_shortfall():
    labels = ("a",) * 10 + ("b",) * 3
    rows, short = matched_indices(labels, {"a": 4, "b": 2}, seed=1)
    assert sorted(labels[i] for i in rows) == ["a"] * 4 + ["b"] * 2 and short == {}
    assert matched_indices(labels, {"a": 4, "b": 2}, seed=1)[0] == rows          # same seed, same rows
    other, short = matched_indices(labels, {"a": 4, "b": 2}, seed=2, exclude=set(rows))
    assert not set(other) & set(rows) and short == {"b": 1}
    assert matched_indices(labels, {"c": 2}, seed=0) == ([], {"c": 2})
