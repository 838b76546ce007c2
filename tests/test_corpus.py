"""Corpus reading: every format, field selection, normalisation, chunking, dedup, and errors that
name the file and line."""

from __future__ import annotations

import csv
import gzip
import json
import re

import polars as pl
import pytest

from engine.corpus import CorpusOptions, CorpusStats, SeenIds, chunk, count_documents, iter_passages, list_files, normalise, passage_id
from engine.embed import HashEmbedder
from engine.errors import CorpusError
from engine.index.builder import build_index

from conftest import REUTERS

DOCS = [
    {"id": 1, "title": "Oil rises", "text": "Crude oil prices rose two dollars on Monday as OPEC ministers met in Vienna.", "topic": "crude"},
    {"id": 2, "title": "Wheat falls", "text": "Wheat futures fell in Chicago after the harvest report showed record yields in Kansas.", "topic": "grain"},
    {"id": 3, "title": "Bank merger", "text": "Two regional banks agreed to merge in a stock deal valued at four hundred million dollars.", "topic": "acq"},
]


def passages(path, **options):
    stats = CorpusStats()
    return list(iter_passages(path, CorpusOptions(**options), stats)), stats


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path, rows, fields=("id", "title", "text", "topic")):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows([{k: row[k] for k in fields} for row in rows])
    return path


# --- formats ---------------------------------------------------------------------------------------


def test_jsonl_keeps_other_fields_as_metadata(tmp_path):
    found, stats = passages(write_jsonl(tmp_path / "c.jsonl", DOCS))
    assert [p.text for p in found] == [d["text"] for d in DOCS]
    assert found[0].metadata == {"id": 1, "title": "Oil rises", "topic": "crude"}
    assert [p.source for p in found] == ["c.jsonl:1", "c.jsonl:2", "c.jsonl:3"]
    assert (stats.files, stats.documents, stats.passages) == (1, 3, 3)


def test_jsonl_gz_reads_like_jsonl(tmp_path):
    plain, _ = passages(write_jsonl(tmp_path / "c.jsonl", DOCS))
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress((tmp_path / "c.jsonl").read_bytes()))
    zipped, _ = passages(gz)
    assert [(p.id, p.text, p.metadata) for p in zipped] == [(p.id, p.text, p.metadata) for p in plain]
    assert zipped[0].source == "c.jsonl.gz:1"


def test_csv_rows_with_line_numbers(tmp_path):
    found, _ = passages(write_csv(tmp_path / "c.csv", DOCS))
    assert [p.text for p in found] == [d["text"] for d in DOCS]
    assert found[1].metadata == {"id": "2", "title": "Wheat falls", "topic": "grain"}  # CSV values are strings
    assert found[1].source == "c.csv:3"  # header is line 1


def test_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    pl.DataFrame(DOCS).write_parquet(path)
    found, _ = passages(path)
    assert [p.text for p in found] == [d["text"] for d in DOCS]
    assert found[2].metadata == {"id": 3, "title": "Bank merger", "topic": "acq"}
    assert found[2].source == "c.parquet:3"


def test_txt_file_is_one_document(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("The central bank held rates steady,\nciting slower growth in the second quarter.\n", encoding="utf-8")
    found, stats = passages(path)
    assert [p.text for p in found] == ["The central bank held rates steady, citing slower growth in the second quarter."]
    assert found[0].source == "note.txt:1" and found[0].metadata == {}
    assert stats.documents == 1


def test_folder_of_mixed_files_is_read_recursively_in_order(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    write_jsonl(root / "a.jsonl", DOCS[:1])
    write_csv(root / "sub" / "b.csv", DOCS[1:2])
    pl.DataFrame(DOCS[2:]).write_parquet(root / "sub" / "c.parquet")
    (root / "d.txt").write_text("Gold prices climbed to a three month high as the dollar weakened against the yen.", encoding="utf-8")
    (root / "README.rst").write_text("not a corpus file", encoding="utf-8")
    assert [p.relative_to(root).as_posix() for p in list_files(root)] == ["a.jsonl", "d.txt", "sub/b.csv", "sub/c.parquet"]
    found, stats = passages(root)
    assert [p.source for p in found] == ["a.jsonl:1", "d.txt:1", "sub/b.csv:2", "sub/c.parquet:1"]
    assert stats.files == 4 and stats.passages == 4


# --- fields ----------------------------------------------------------------------------------------


def test_text_field_selection(tmp_path):
    found, _ = passages(write_jsonl(tmp_path / "c.jsonl", DOCS), text_fields=("title",), min_words=1)
    assert [p.text for p in found] == ["Oil rises", "Wheat falls", "Bank merger"]
    assert "text" in found[0].metadata and "title" not in found[0].metadata


def test_several_text_fields_are_joined(tmp_path):
    found, _ = passages(write_csv(tmp_path / "c.csv", DOCS), text_fields=("title", "text"))
    assert found[0].text == "Oil rises " + DOCS[0]["text"]
    assert set(found[0].metadata) == {"id", "topic"}


def test_missing_field_in_a_jsonl_record_names_file_line_and_fields(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [DOCS[0], {"body": "no text field here at all"}])
    with pytest.raises(CorpusError) as info:
        passages(path)
    message = str(info.value)
    assert f"{path}:2: no field 'text'; fields present: body" in message
    assert "--text-field" in message


def test_empty_and_short_documents_are_counted_not_kept(tmp_path):
    rows = [{"text": ""}, {"text": None}, {"text": "too short"}, DOCS[0]]
    found, stats = passages(write_jsonl(tmp_path / "c.jsonl", rows))
    assert len(found) == 1
    assert (stats.documents, stats.empty_documents, stats.too_short) == (4, 2, 1)


# --- normalise and chunk ---------------------------------------------------------------------------


def test_normalise_entities_breaks_wraps_and_paragraphs():
    raw = "Fish &amp; chips&nbsp;cost &pound;5.<br />Second paragraph\nwrapped here,\r\nand here.\n\n\nThird   para\u0007."
    assert normalise(raw) == "Fish & chips cost \u00a35.\nSecond paragraph wrapped here, and here.\nThird para."


def test_normalise_unicode_nfc_and_trims():
    assert normalise("  Cafe\u0301  ") == "Caf\u00e9"
    assert normalise("<BR/><br>") == ""


def test_reuters_hard_wrapped_text_is_joined():
    first = json.loads(REUTERS.read_text(encoding="utf-8").splitlines()[0])
    assert "\n" in first["text"]
    text = normalise(first["text"])
    assert "Standard Oil Co and BP North America Inc said" in text
    assert "  " not in text


def test_chunks_respect_the_word_limit_and_cut_at_sentence_ends():
    sentences = [f"Sentence {i} says that the market moved {i} points today." for i in range(30)]
    pieces = chunk(" ".join(sentences), 25)
    assert len(pieces) > 1
    assert all(len(p.split()) <= 25 for p in pieces)
    assert all(p.endswith("today.") for p in pieces)
    assert " ".join(pieces).split() == " ".join(sentences).split()  # nothing lost, nothing added


def test_one_huge_sentence_is_hard_cut():
    words = [f"w{i}" for i in range(55)]
    pieces = chunk(" ".join(words), 20)
    assert [len(p.split()) for p in pieces] == [20, 20, 15]
    assert " ".join(pieces).split() == words


def test_long_documents_become_several_passages_under_the_limit(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", [json.loads(line) for line in REUTERS.read_text(encoding="utf-8").splitlines()[:40]])
    found, stats = passages(corpus, chunk_words=40)
    assert stats.passages > stats.documents
    assert all(len(p.text.split()) <= 40 for p in found)
    assert all(len(p.text.split()) >= 8 for p in found)


# --- dedup and ids ---------------------------------------------------------------------------------


def test_exact_duplicates_after_normalisation_are_dropped_and_counted(tmp_path):
    rows = [DOCS[0], DOCS[1], {"text": DOCS[0]["text"].replace(" ", "  ")}, {"text": DOCS[1]["text"] + "\n"}, DOCS[2]]
    found, stats = passages(write_jsonl(tmp_path / "c.jsonl", rows))
    assert [p.text for p in found] == [d["text"] for d in DOCS]
    assert stats.duplicates == 2 and stats.documents == 5 and stats.passages == 3


def test_passage_ids_are_stable_content_hashes(tmp_path):
    first, _ = passages(write_jsonl(tmp_path / "a.jsonl", DOCS))
    again, _ = passages(write_csv(tmp_path / "b.csv", list(reversed(DOCS))))
    assert {p.id: p.text for p in first} == {p.id: p.text for p in again}
    assert first[0].id == passage_id(DOCS[0]["text"])
    assert re.fullmatch(r"[0-9a-f]{20}", first[0].id)


def test_pre_seeded_hashes_skip_known_passages(tmp_path):
    stats = CorpusStats(seen_hashes=SeenIds([passage_id(DOCS[0]["text"])]))
    found = list(iter_passages(write_jsonl(tmp_path / "c.jsonl", DOCS), CorpusOptions(), stats))
    assert [p.text for p in found] == [DOCS[1]["text"], DOCS[2]["text"]]
    assert stats.duplicates == 1


def test_seen_ids_remember_every_id_across_their_merges(monkeypatch):
    monkeypatch.setattr(SeenIds, "MERGE", 7)  # most ids end up in the sorted array, the newest in the set
    ids = [passage_id(f"passage {i}") for i in range(100)]
    seen = SeenIds(ids[:50])
    assert len(seen) == 50 and len(seen._sorted) == 49 and len(seen._recent) == 1
    assert all(pid in seen for pid in ids[:50]) and not any(pid in seen for pid in ids[50:])
    for pid in ids[50:]:
        seen.add(pid)
    assert len(seen) == 100 and all(pid in seen for pid in ids)
    assert passage_id("a passage never added") not in seen
    assert "f" * 20 not in seen and "0" * 20 not in seen  # past either end of the sorted array


# --- errors ----------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match=re.escape(f"corpus path {tmp_path / 'nope.jsonl'} does not exist")):
        passages(tmp_path / "nope.jsonl")


def test_unknown_extension(tmp_path):
    path = tmp_path / "notes.docx"
    path.write_bytes(b"PK")
    with pytest.raises(CorpusError, match=re.escape(f"{path}: unknown corpus format '.docx'")):
        passages(path)


def test_folder_without_corpus_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(CorpusError, match="holds no corpus file"):
        passages(tmp_path)


def test_csv_without_the_named_column_lists_columns(tmp_path):
    path = write_csv(tmp_path / "c.csv", DOCS)
    with pytest.raises(CorpusError) as info:
        passages(path, text_fields=("body",))
    assert str(info.value).startswith(f"{path}: no column 'body'; columns: id, title, text, topic.")


def test_parquet_without_the_named_column_lists_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pl.DataFrame(DOCS).write_parquet(path)
    with pytest.raises(CorpusError, match=re.escape(f"{path}: no column 'body'; columns: id, title, text, topic")):
        passages(path, text_fields=("body",))


def test_jsonl_line_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(DOCS[0]) + "\n\n" + '{"text": "unterminated\n' + json.dumps(DOCS[1]) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=re.escape(f"{path}:3: not valid JSON")):
        passages(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(DOCS[0]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: expected a JSON object, got list")):
        passages(path)


LATIN1_ROWS = [f"Row {i} of the file talks about coffee markets in Brazil and Colombia." for i in range(6)]
LATIN1_ROWS[3] = "Row 3 mentions the caf\u00e9 owners who complained about coffee prices this year."


def test_undecodable_bytes_in_csv_name_file_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(("text\n" + "\n".join(LATIN1_ROWS) + "\n").encode("latin-1"))
    with pytest.raises(CorpusError) as info:
        passages(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5: bytes that are not UTF-8")  # header + rows 0..3
    assert "iconv" in message


def test_undecodable_bytes_in_jsonl_name_file_and_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes("".join(json.dumps({"text": row}, ensure_ascii=False) + "\n" for row in LATIN1_ROWS).encode("latin-1"))
    with pytest.raises(CorpusError) as info:
        passages(path)
    assert str(info.value).startswith(f"{path}:4: bytes that are not UTF-8")


def test_undecodable_bytes_in_txt(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("\n".join(LATIN1_ROWS).encode("latin-1"))
    with pytest.raises(CorpusError, match=re.escape(f"{path}:4: bytes that are not UTF-8")):
        passages(path)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(CorpusError, match=re.escape(f"{path}: not a readable Parquet file")):
        passages(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"not gzip data")
    with pytest.raises(CorpusError, match=re.escape(f"{path}: cannot read")):
        passages(path)


@pytest.mark.parametrize("content", ["", "\n\n", '{"text": ""}\n{"text": "   "}\n', '{"text": "two words"}\n'])
def test_empty_corpus_fails_the_build_and_leaves_nothing(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    root = tmp_path / "indexes"
    with pytest.raises(CorpusError, match=r"yielded no passages"):
        build_index(path, "empty", HashEmbedder(16), root=root)
    assert list(root.iterdir()) == []


def test_count_documents_per_format(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", DOCS)
    write_csv(tmp_path / "b.csv", DOCS[:2])
    pl.DataFrame(DOCS).write_parquet(tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("one document\nover two lines", encoding="utf-8")
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n\n{"text": "y"}\n'))
    assert count_documents(tmp_path / "a.jsonl") == 3
    assert count_documents(tmp_path / "b.csv") == 2
    assert count_documents(tmp_path / "c.parquet") == 3
    assert count_documents(tmp_path / "d.txt") == 1
    assert count_documents(tmp_path / "e.jsonl.gz") == 2
    assert count_documents(tmp_path) == 3 + 2 + 3 + 1 + 2
    assert count_documents(REUTERS) == 2000
