"""Index build/open/search on real Reuters text: the three search modes, the manifest, `--add`,
atomic builds under crashes, recovery, the HNSW switch, and BM25 against rank-bm25 as an oracle."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from engine.corpus import CorpusOptions, iter_passages
from engine.embed import HashEmbedder, get_embedder
from engine.errors import ConfigError, IndexMismatch, IndexNotFound, IndexStoreError, RuntimeSetupError
from engine.index import builder, dense, lexical, store
from engine.index.builder import build_index
from engine.index.manifest import FORMAT_VERSION, read_manifest
from engine.index.reader import Index, list_indexes

from conftest import REUTERS

MODES = ("dense", "bm25", "hybrid")


class CountingEmbedder:
    """Wraps an embedder and records every text it is asked to encode."""

    def __init__(self, inner, fail_after_batches: int | None = None, error: BaseException | None = None):
        self.inner = inner
        self.id, self.dim = inner.id, inner.dim
        self.texts: list[str] = []
        self.batches = 0
        self.fail_after_batches = fail_after_batches
        self.error = error

    def encode(self, texts, batch_size: int = 64):
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise self.error or RuntimeError("embedder crashed")
        self.batches += 1
        self.texts.extend(texts)
        return self.inner.encode(texts, batch_size)


def entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture
def corpus(reuters_slice):
    return reuters_slice(60)


@pytest.fixture
def built(tmp_path, corpus):
    root = tmp_path / "indexes"
    result = build_index(corpus, "news", HashEmbedder(64), root=root)
    return root, result


# --- build, open, search ---------------------------------------------------------------------------


def test_query_copied_from_a_passage_finds_it_first_in_every_mode(hash_index):
    index = hash_index.index
    for row in (0, 57, len(index) - 1):
        passage = index.passage(row)
        for mode in MODES:
            hits = index.search(passage.text, k=5, mode=mode)
            assert hits[0].passage.id == passage.id, mode
            assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
            assert hits[0].cosine == pytest.approx(1.0, abs=1e-5)
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_bm25_ranks_passages_with_the_query_words(hash_index):
    hits = hash_index.index.search("OPEC crude oil output", k=10, mode="bm25")
    assert len(hits) >= 3
    assert all(any(w in h.passage.text.lower() for w in ("opec", "crude", "oil", "output")) for h in hits)
    top = hits[0].passage.text.lower()
    assert "opec" in top or "crude" in top


def test_bm25_returns_nothing_for_unknown_words_and_search_checks_arguments(hash_index):
    index = hash_index.index
    assert index.search("zzzqqq xxyyzz", k=5, mode="bm25") == []
    with pytest.raises(ConfigError, match="unknown search mode 'fuzzy'"):
        index.search("oil", mode="fuzzy")
    with pytest.raises(ConfigError, match="k must be at least 1"):
        index.search("oil", k=0)
    assert len(index.search("oil", k=10_000, mode="dense")) == len(index)


def test_manifest_records_what_the_index_was_built_from(built, corpus):
    root, result = built
    manifest = read_manifest(root / "news")
    assert manifest == result.manifest
    assert manifest.name == "news" and manifest.embedder == "hash-64" and manifest.dim == 64
    assert manifest.format_version == FORMAT_VERSION and manifest.dense_kind == "flat"
    assert manifest.passages == result.added == result.stats.passages
    assert len(manifest.corpus_fingerprint) == 64
    assert manifest.parameters == {
        "text_fields": ["text"], "chunk_words": 160, "min_words": 8,
        "bm25": {"method": "lucene", "k1": 1.5, "b": 0.75}, "flat_max": dense.FLAT_MAX, "hnsw_m": dense.HNSW_M,
        "hnsw_ef_construction": dense.HNSW_EF_CONSTRUCTION,
    }
    (source,) = manifest.sources
    assert source["path"] == str(corpus) and source["documents"] == 60 and source["added"] == manifest.passages
    index = Index.open("news", root)  # embedder rebuilt from the manifest
    assert len(index) == manifest.passages and index.embedder.id == "hash-64"
    assert [m.name for m in list_indexes(root)] == ["news"]


def test_same_corpus_gives_the_same_ids_and_fingerprint(corpus, built):
    root, first = built
    again = build_index(corpus, "again", HashEmbedder(64), root=root)
    assert again.manifest.corpus_fingerprint == first.manifest.corpus_fingerprint
    assert Index.open("again", root).passages["id"].to_list() == Index.open("news", root).passages["id"].to_list()


# --- --add -----------------------------------------------------------------------------------------


def test_add_embeds_only_new_passages_and_keeps_old_rows(tmp_path, reuters_slice):
    root = tmp_path / "indexes"
    build_index(reuters_slice(60, name="a.jsonl"), "news", HashEmbedder(64), root=root)
    before = Index.open("news", root, embedder=HashEmbedder(64))
    old_ids = before.passages["id"].to_list()

    counting = CountingEmbedder(HashEmbedder(64))
    result = build_index(reuters_slice(100, start=40, name="b.jsonl"), "news", counting, root=root, add=True)

    after = Index.open("news", root, embedder=HashEmbedder(64))
    ids = after.passages["id"].to_list()
    assert ids[: len(old_ids)] == old_ids
    assert result.added > 0 and len(ids) == len(old_ids) + result.added == result.manifest.passages
    assert len(set(ids)) == len(ids)
    assert len(counting.texts) == result.added  # nothing re-embedded
    assert not set(counting.texts) & set(before.passages["text"].to_list())
    assert result.stats.duplicates >= 20  # documents 40..59 were indexed already
    assert result.manifest.corpus_fingerprint != before.manifest.corpus_fingerprint
    assert result.manifest.created_at == before.manifest.created_at
    assert [s["added"] for s in result.manifest.sources] == [len(old_ids), result.added]
    assert after.dense_index.ntotal == len(ids) == int(after.bm25.scores["num_docs"])
    new = after.passage(len(ids) - 1)
    for mode in MODES:
        assert after.search(new.text, k=3, mode=mode)[0].passage.id == new.id, mode
    assert entries(root) == ["news"]


def test_adding_the_same_corpus_again_embeds_nothing(built, corpus):
    root, first = built
    counting = CountingEmbedder(HashEmbedder(64))
    result = build_index(corpus, "news", counting, root=root, add=True)
    assert result.added == 0 and counting.texts == []
    assert result.manifest.passages == first.manifest.passages
    assert result.stats.duplicates == first.manifest.passages


def test_add_to_a_missing_index_and_add_with_force(tmp_path, corpus, built):
    root, _ = built
    with pytest.raises(IndexNotFound, match="cannot --add to index 'other'"):
        build_index(corpus, "other", HashEmbedder(64), root=root, add=True)
    with pytest.raises(ConfigError, match="--add and --force contradict"):
        build_index(corpus, "news", HashEmbedder(64), root=root, add=True, force=True)


# --- mismatches and names --------------------------------------------------------------------------


def test_opening_or_adding_with_another_embedder_is_a_mismatch(built, corpus):
    root, _ = built
    with pytest.raises(IndexMismatch) as info:
        Index.open("news", root, embedder=HashEmbedder(32))
    message = str(info.value)
    assert "'hash-64' (64-d)" in message and "'hash-32' (32-d)" in message and "--embedder hash-64" in message
    with pytest.raises(IndexMismatch):
        build_index(corpus, "news", HashEmbedder(32), root=root, add=True)
    assert entries(root) == ["news"]
    assert len(Index.open("news", root)) > 0


def test_building_over_an_existing_name_needs_add_or_force(built, reuters_slice):
    root, first = built
    with pytest.raises(ConfigError, match="index 'news' already exists .* use --add to append documents or --force"):
        build_index(reuters_slice(10, name="small.jsonl"), "news", HashEmbedder(64), root=root)
    assert read_manifest(root / "news") == first.manifest
    forced = build_index(reuters_slice(10, name="small.jsonl"), "news", HashEmbedder(64), root=root, force=True)
    assert forced.manifest.passages < first.manifest.passages
    assert len(Index.open("news", root)) == forced.manifest.passages
    assert entries(root) == ["news"]


def test_index_not_found_lists_existing_names(built):
    root, _ = built
    with pytest.raises(IndexNotFound, match=r"no index named 'missing' under .*; existing: news\. Build it with"):
        Index.open("missing", root)
    with pytest.raises(IndexNotFound, match=r"existing: \(none\)"):
        Index.open("missing", root / "nowhere")


def test_bad_index_names_are_rejected_before_any_work(tmp_path, corpus):
    for name in ("../escape", "a/b", ""):
        with pytest.raises(ConfigError, match="invalid index name"):
            build_index(corpus, name, HashEmbedder(64), root=tmp_path / "indexes")
    assert not (tmp_path / "indexes").exists() and not (tmp_path / "escape").exists()


def test_a_damaged_index_says_so(built):
    root, _ = built
    (root / "news" / "dense.faiss").unlink()
    with pytest.raises(IndexStoreError, match="is damaged"):
        Index.open("news", root)


# --- crashes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("embedder crashed"), KeyboardInterrupt()])
def test_a_crash_mid_build_leaves_no_index_and_no_temp_folder(tmp_path, corpus, monkeypatch, error):
    monkeypatch.setattr(builder, "BATCH", 16)
    root = tmp_path / "indexes"
    crashing = CountingEmbedder(HashEmbedder(64), fail_after_batches=2, error=error)
    with pytest.raises(type(error)):
        build_index(corpus, "news", crashing, root=root)
    assert crashing.batches == 2
    assert entries(root) == []


@pytest.mark.parametrize("mode", ["force", "add"])
@pytest.mark.parametrize("error", [RuntimeError("embedder crashed"), KeyboardInterrupt()])
def test_a_crash_while_replacing_or_extending_keeps_the_old_index(built, reuters_slice, monkeypatch, mode, error):
    root, first = built
    monkeypatch.setattr(builder, "BATCH", 16)
    crashing = CountingEmbedder(HashEmbedder(64), fail_after_batches=1, error=error)
    with pytest.raises(type(error)):
        build_index(reuters_slice(120, start=60, name="more.jsonl"), "news", crashing, root=root, **{mode: True})
    assert entries(root) == ["news"]
    assert read_manifest(root / "news") == first.manifest
    index = Index.open("news", root)
    assert len(index) == first.manifest.passages
    assert index.search(index.passage(3).text, k=1, mode="hybrid")[0].passage.id == index.passage(3).id


def test_an_index_left_aside_mid_swap_is_put_back(built, corpus):
    root, first = built
    os.rename(root / "news", root / ".news.old-424242")  # crash between the two renames (pid 424242 is gone)
    assert len(Index.open("news", root)) == first.manifest.passages  # opening puts it back
    assert entries(root) == ["news"]
    os.rename(root / "news", root / ".news.old-424242")
    with pytest.raises(ConfigError, match="already exists"):  # so does the next build
        build_index(corpus, "news", HashEmbedder(64), root=root)
    assert entries(root) == ["news"]


def test_a_swap_in_progress_is_left_alone(built):
    root, _ = built
    os.rename(root / "news", root / f".news.old-{os.getpid()}")  # a live build between its two renames
    with pytest.raises(IndexNotFound):
        Index.open("news", root)
    assert entries(root) == [f".news.old-{os.getpid()}"]


def test_stale_leftovers_are_cleaned_but_live_builds_are_not(built, corpus):
    root, _ = built
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / f".news.old-{dead.pid}").mkdir()  # the target exists and its builder is dead: stale
    (root / f".news.tmp-{dead.pid}-1").mkdir()
    (root / f".news.tmp-{os.getpid()}-1").mkdir()  # a build of a live process
    build_index(corpus, "news", HashEmbedder(64), root=root, add=True)
    assert entries(root) == [f".news.tmp-{os.getpid()}-1", "news"]


# --- dense kinds -----------------------------------------------------------------------------------


def test_hnsw_above_the_flat_threshold(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(dense, "FLAT_MAX", 20)
    result = build_index(corpus, "big", HashEmbedder(64), root=tmp_path / "indexes")
    assert result.manifest.dense_kind == "hnsw" and result.manifest.parameters["flat_max"] == 20
    index = Index.open("big", tmp_path / "indexes")
    assert hasattr(index.dense_index, "hnsw") and index.dense_index.ntotal == len(index)
    for row in (0, 10, len(index) - 1):
        passage = index.passage(row)
        assert index.search(passage.text, k=3, mode="dense")[0].passage.id == passage.id
    assert np.allclose(index.vectors([5]), HashEmbedder(64).encode([index.passage(5).text]), atol=1e-6)


def test_an_hnsw_index_is_graphs_of_at_most_shard_rows_written_one_at_a_time_and_searched_as_one(
        tmp_path, reuters_slice, monkeypatch):
    root = tmp_path / "indexes"
    monkeypatch.setattr(dense, "FLAT_MAX", 20)
    monkeypatch.setattr(dense, "SHARD_ROWS", 16)
    writes = []
    original_write = dense._write_graph
    monkeypatch.setattr(dense, "_write_graph", lambda graph, path, number: (
        writes.append((number, graph.ntotal)), original_write(graph, path, number))[1])
    built = build_index(reuters_slice(40, name="a.jsonl"), "news", HashEmbedder(64), root=root).manifest.passages
    graphs = -(-built // 16)  # the fewest graphs of at most 16, the rows split evenly between them
    per = -(-built // graphs)
    sizes = [per] * (graphs - 1) + [built - per * (graphs - 1)]
    assert graphs >= 3 and writes == list(enumerate(sizes))

    before = {p.name: p.read_bytes() for p in (root / "news").glob("dense*.faiss")}
    reads = []
    original_read = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda path, *a: (reads.append(os.path.basename(path)), original_read(path, *a))[1])
    added = build_index(reuters_slice(60, start=40, name="b.jsonl"), "news", HashEmbedder(64), root=root, add=True)
    monkeypatch.setattr(faiss, "read_index", original_read)
    n = added.manifest.passages
    # the --add read only the last graph, and left the full ones before it as they were
    assert reads == [f"dense-{graphs - 1}.faiss"]
    assert all((root / "news" / name).read_bytes() == data for name, data in before.items()
               if name != f"dense-{graphs - 1}.faiss")
    index = Index.open("news", root)
    # an --add fills the last graph, then starts new ones
    more = n - built - (16 - sizes[-1])
    assert n - built > 16 and [g.ntotal for g in index.dense_index.shards] == (
        sizes[:-1] + [16] + [16] * (more // 16) + ([more % 16] if more % 16 else []))
    assert sorted(p.name for p in (root / "news").glob("dense*.faiss")) == sorted(
        ["dense.faiss"] + [f"dense-{i}.faiss" for i in range(1, len(index.dense_index.shards))])
    vectors = index.vectors(np.arange(n))  # read back across the graphs' boundaries, in row order
    assert np.allclose(vectors, HashEmbedder(64).encode(index.passages["text"].to_list()), atol=1e-6)
    for row in (0, per - 1, per, 2 * per + 1, n - 1):  # graphs this small are searched exhaustively: the merge is exact search
        scores, rows = dense.search(index.dense_index, vectors[row][None, :], 8)
        exact = np.argsort(-(vectors @ vectors[row]), kind="stable")[:8]
        assert rows[0][0] == row and set(rows[0].tolist()) == set(exact.tolist())
        assert np.all(np.diff(scores[0]) <= 1e-6)
        assert index.search(index.passage(row).text, k=3, mode="dense")[0].passage.id == index.passage(row).id

    monkeypatch.setattr(dense, "SHARD_ROWS", 1000)  # a rebuild into fewer graphs leaves no stale graph file
    builder.rebuild_dense("news", root)
    assert sorted(p.name for p in (root / "news").glob("dense*.faiss")) == ["dense.faiss"]
    again = Index.open("news", root)
    assert len(again.dense_index.shards) == 1 and np.array_equal(again.vectors(np.arange(n)), vectors)


def test_rebuild_dense_redoes_an_old_graph_from_stored_vectors_and_records_it(tmp_path, reuters_slice, monkeypatch):
    root = tmp_path / "indexes"
    monkeypatch.setattr(dense, "FLAT_MAX", 20)
    monkeypatch.setattr(dense, "HNSW_M", 8)
    monkeypatch.setattr(dense, "HNSW_EF_CONSTRUCTION", 16)
    build_index(reuters_slice(40, name="a.jsonl"), "news", HashEmbedder(64), root=root)
    monkeypatch.setattr(dense, "HNSW_M", 16)
    monkeypatch.setattr(dense, "HNSW_EF_CONSTRUCTION", 40)
    added = build_index(reuters_slice(20, start=40, name="b.jsonl"), "news", HashEmbedder(64), root=root, add=True)
    # an --add grows the old graph, and the manifest says which graph that is, not today's settings
    assert added.manifest.parameters["hnsw_m"] == 8 and added.manifest.parameters["hnsw_ef_construction"] == 16
    before = Index.open("news", root)
    vectors, ids = before.vectors(np.arange(len(before))), before.passages["id"].to_list()
    assert before.dense_index.hnsw.nb_neighbors(0) == 2 * 8  # level 0 holds 2 M links

    def fail(*args):
        raise OSError("disk full")
    with monkeypatch.context() as patch:
        patch.setattr(dense, "build", fail)
        with pytest.raises(OSError, match="disk full"):
            builder.rebuild_dense("news", root)
    assert read_manifest(root / "news") == added.manifest and sorted(p.name for p in root.iterdir()) == ["news"]

    manifest = builder.rebuild_dense("news", root)
    after = Index.open("news", root)
    assert after.dense_index.hnsw.nb_neighbors(0) == 2 * 16 and after.dense_index.hnsw.efConstruction == 40
    assert manifest.parameters["hnsw_m"] == 16 and manifest.parameters["hnsw_ef_construction"] == 40
    assert read_manifest(root / "news") == manifest and manifest.passages == len(ids)
    assert after.passages["id"].to_list() == ids and np.array_equal(after.vectors(np.arange(len(after))), vectors)
    assert sorted(p.name for p in root.iterdir()) == ["news"]  # no work folder or lock left behind
    with pytest.raises(IndexNotFound, match="'nope'"):
        builder.rebuild_dense("nope", root)
    with pytest.raises(ConfigError, match="local index root"):
        builder.rebuild_dense("news", "s3://bucket/indexes")


def test_sorted_runs_read_back_every_row_sorted_by_key_in_arrival_order_a_range_at_a_time(tmp_path):
    from engine.index.spill import SortedRuns

    rng = np.random.default_rng(7)
    runs = SortedRuns(tmp_path, {"value": "int64", "weight": "float32"})
    keys = [rng.integers(0, 50, size) for size in (40, 1, 0, 73, 25)]
    for batch, key in enumerate(keys):
        runs.add(key, value=np.arange(len(key)) + 1000 * batch, weight=rng.random(len(key)))
    every = np.concatenate(keys)
    order = np.argsort(every, kind="stable")
    values = np.concatenate([np.arange(len(k)) + 1000 * b for b, k in enumerate(keys)])[order]
    chunks = list(runs.merged(np.bincount(every, minlength=60), chunk_rows=16))
    assert [c[0] for c in chunks][0] == 0 and chunks[-1][1] == 60
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # consecutive key ranges
    assert len(chunks) > 5 and max(len(c[2]["key"]) for c in chunks) < 16 + 10
    assert np.array_equal(np.concatenate([c[2]["key"] for c in chunks]), every[order])
    assert np.array_equal(np.concatenate([c[2]["value"] for c in chunks]), values)
    assert all(np.all((c[2]["key"] >= c[0]) & (c[2]["key"] < c[1])) for c in chunks)


def test_add_switches_a_flat_index_to_hnsw_without_re_embedding(tmp_path, reuters_slice, monkeypatch):
    root = tmp_path / "indexes"
    build_index(reuters_slice(15, name="a.jsonl"), "news", HashEmbedder(64), root=root)
    assert read_manifest(root / "news").dense_kind == "flat"
    monkeypatch.setattr(dense, "FLAT_MAX", 30)
    counting = CountingEmbedder(HashEmbedder(64))
    result = build_index(reuters_slice(40, start=15, name="b.jsonl"), "news", counting, root=root, add=True)
    assert result.manifest.dense_kind == "hnsw" and len(counting.texts) == result.added
    index = Index.open("news", root)
    first = index.passage(0)
    assert index.search(first.text, k=1, mode="dense")[0].passage.id == first.id


# --- BM25 oracle -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bm25_corpus():
    texts = [p.text for p in iter_passages(REUTERS, CorpusOptions())][:200]
    tokens = lexical.tokenized(texts)
    assert all(tokens)  # no empty documents: bm25s would get a placeholder token rank-bm25 does not
    reference = BM25Okapi(tokens, k1=1.5, b=0.75)
    return texts, tokens, reference


QUERIES = ["oil prices opec", "wheat export", "bank merger shares", "dividend quarterly", "japan yen trade surplus"]


def _document_frequency(reference, word):
    return sum(1 for freqs in reference.doc_freqs if word in freqs)


def test_robertson_bm25_matches_rank_bm25(bm25_corpus):
    texts, _, reference = bm25_corpus
    model = lexical.build(texts, method="robertson", k1=1.5, b=0.75)
    n_docs = len(texts)
    for query in QUERIES:
        terms = lexical.tokenize(query)
        assert all(0 < _document_frequency(reference, w) < n_docs / 2 for w in terms), query  # positive IDF
        ours = lexical.scores(model, query)
        # bm25s drops the constant (k1 + 1) factor of the term-frequency part (as Lucene does); ranks are unchanged.
        theirs = reference.get_scores(terms) / (1.5 + 1)
        assert ours.max() > 0
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_default_lucene_bm25_matches_the_formula_on_rank_bm25_statistics(bm25_corpus):
    texts, _, reference = bm25_corpus
    model = lexical.build(texts, **lexical.BM25_PARAMS)
    k1, b, n_docs = 1.5, 0.75, len(texts)
    for query in QUERIES:
        expected = np.zeros(n_docs)
        for word in lexical.tokenize(query):
            n = _document_frequency(reference, word)
            idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
            for row, freqs in enumerate(reference.doc_freqs):
                tf = freqs.get(word, 0)
                expected[row] += idf * tf / (tf + k1 * (1 - b + b * reference.doc_len[row] / reference.avgdl))
        np.testing.assert_allclose(lexical.scores(model, query), expected, atol=1e-5, rtol=1e-5)


def test_saved_bm25_scores_like_the_fresh_one(tmp_path, bm25_corpus):
    texts, _, _ = bm25_corpus
    model = lexical.build(texts)
    lexical.save(model, tmp_path / "bm25")
    assert not list(tmp_path.rglob("*.pkl"))
    loaded = lexical.load(tmp_path / "bm25")
    for query in QUERIES:
        np.testing.assert_allclose(lexical.scores(loaded, query), lexical.scores(model, query), atol=1e-6)
    rows, values = lexical.top_k(lexical.scores(model, "wheat export"), 5)
    assert len(rows) == 5 and list(values) == sorted(values, reverse=True)


def test_bm25_built_in_batches_is_bm25s_own_index(bm25_corpus):
    import bm25s

    texts, tokens, _ = bm25_corpus
    theirs = bm25s.BM25(**lexical.BM25_PARAMS)
    theirs.index(tokens, show_progress=False)
    whole = lexical.build(texts)
    for ours in (whole, lexical.build_batches(texts[i:i + 7] for i in range(0, len(texts), 7))):
        assert ours.scores["num_docs"] == theirs.scores["num_docs"] == len(texts)
        assert set(ours.vocab_dict) == set(theirs.vocab_dict)
        for token, column in theirs.vocab_dict.items():  # same docs and scores per token (ids may differ)
            if token == "":
                continue
            a = slice(*theirs.scores["indptr"][column:column + 2])
            b = slice(*ours.scores["indptr"][ours.vocab_dict[token]:ours.vocab_dict[token] + 2])
            np.testing.assert_array_equal(ours.scores["indices"][b], theirs.scores["indices"][a])
            np.testing.assert_allclose(ours.scores["data"][b], theirs.scores["data"][a], rtol=1e-6)
        for query in QUERIES:
            np.testing.assert_array_equal(lexical.scores(ours, query), lexical.scores(whole, query))


def test_bm25_of_an_empty_passage_and_of_nothing():
    model = lexical.build(["", "wheat exports rose", "the of and"])
    assert model.scores["num_docs"] == 3 and lexical.scores(model, "wheat")[1] > 0
    with pytest.raises(ValueError, match="at least one passage"):
        lexical.build_batches([])


def test_the_table_is_read_in_row_order_a_batch_at_a_time(built):
    root, _ = built
    table = store.open_table(root / "news")
    whole = store.load_passages(table)
    batches = list(store.iter_columns(table, ["id", "text"], batch_rows=7))
    assert len(batches) > 1 and all(b.num_rows <= 7 for b in batches)
    assert [t for b in store.iter_texts(table, batch_rows=7) for t in b] == whole["text"].to_list()
    assert store.passage_ids(table) == set(whole["id"].to_list())
    rows = np.concatenate([r for r, _ in store.iter_vectors(table, batch_rows=7)])
    np.testing.assert_array_equal(rows, np.arange(len(whole)))


# --- the real embedder -----------------------------------------------------------------------------


def test_real_minilm_embedder_end_to_end(tmp_path, reuters_slice):
    embedder = get_embedder()
    assert embedder.id == "all-MiniLM-L6-v2" and embedder.dim == 384
    root = tmp_path / "indexes"
    result = build_index(reuters_slice(30), "minilm", embedder, root=root, options=CorpusOptions(chunk_words=40))
    assert 50 <= result.manifest.passages <= 200
    assert result.manifest.embedder == "all-MiniLM-L6-v2" and result.manifest.dim == 384
    index = Index.open("minilm", root, embedder=embedder)
    vectors = index.vectors(range(len(index)))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    target = index.passage(7)
    for mode in MODES:
        hits = index.search(target.text, k=3, mode=mode)
        assert hits[0].passage.id == target.id and hits[0].cosine > 0.99, mode
    # Meaning, not words: these paraphrases share no content word with the passage they should find
    # (BM25 ranks other documents first for both).
    for query, source in [("residential property market slump", "corpus.jsonl:4"),
                          ("perfume company goes public", "corpus.jsonl:14")]:
        assert index.search(query, k=1, mode="dense")[0].passage.source == source, query
        assert index.search(query, k=1, mode="bm25")[0].passage.source != source, query


def test_one_text_takes_the_direct_path_and_gets_sentence_transformers_own_vector():
    embedder = get_embedder()
    texts = ["Oil prices rose on Tuesday", "A", "The central bank kept interest rates unchanged " * 60]  # the last truncated
    assert embedder._plain  # MiniLM: transformer, mean pooling, unit length
    for text in texts:
        reference = embedder._model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        np.testing.assert_allclose(embedder.encode([text]), reference, atol=1e-5)
    np.testing.assert_allclose(embedder.encode(texts)[1:2], embedder.encode(texts[1:2]), atol=1e-5)


@pytest.fixture(scope="module")
def int8_home(tmp_path_factory):
    """One SEEDBED_HOME for the module, so the int8 model is exported once (about 30 s on 2 CPUs)."""
    return tmp_path_factory.mktemp("int8-home")


def test_the_int8_embedder_is_exported_once_and_agrees_with_fp32(int8_home, tmp_path, reuters_slice, monkeypatch):
    monkeypatch.setenv("SEEDBED_HOME", str(int8_home))
    int8 = get_embedder("all-MiniLM-L6-v2-int8")
    exported = int8_home / "embedders" / "all-MiniLM-L6-v2-int8" / "model-int8.onnx"
    assert int8.id == "all-MiniLM-L6-v2-int8" and int8.dim == 384 and exported.is_file()
    stamp = exported.stat().st_mtime_ns
    assert get_embedder("all-MiniLM-L6-v2-int8") and exported.stat().st_mtime_ns == stamp  # reused, not re-made
    texts = [p.text for p in iter_passages(REUTERS, CorpusOptions())][:40]
    cosine = np.sum(int8.encode(texts) * get_embedder().encode(texts), axis=1)
    assert cosine.mean() > 0.985 and cosine.min() > 0.95, cosine
    assert int8.encode([]).shape == (0, 384)
    root = tmp_path / "indexes"
    build_index(reuters_slice(20), "int8", int8, root=root)
    index = Index.open("int8", root)  # the manifest names the int8 embedder, so queries are embedded with it
    assert index.manifest.embedder == "all-MiniLM-L6-v2-int8" and index.embedder.id == "all-MiniLM-L6-v2-int8"
    target = index.passage(3)
    assert index.search(target.text, k=1, mode="dense")[0].passage.id == target.id
    with pytest.raises(IndexMismatch):
        Index.open("int8", root, embedder=get_embedder())


def test_the_int8_embedder_without_onnx_runtime_says_how(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(RuntimeSetupError, match=r"seedbed\[onnx\]"):
        get_embedder("all-MiniLM-L6-v2-int8")


def test_a_build_and_an_add_leave_one_compacted_table_version(tmp_path, reuters_slice, monkeypatch):
    import engine.index.builder as builder
    from engine.index import store

    monkeypatch.setattr(builder, "BATCH", 16)  # many batches, written as one stream
    root = tmp_path / "indexes"
    build_index(reuters_slice(60, name="a.jsonl"), "news", HashEmbedder(64), root=root)
    build_index(reuters_slice(120, start=60, name="b.jsonl"), "news", HashEmbedder(64), root=root, add=True)
    lance = root / "news" / "store" / "passages.lance"
    index = Index.open("news", root, embedder=HashEmbedder(64))
    assert len(list((lance / "data").glob("*.lance"))) == 1  # one merged file, not one per batch
    assert len(store.open_table(root / "news").list_versions()) == 1
    assert len(index.passages) > 90 and index.search(index.passage(0).text, k=1)[0].passage.id == index.passage(0).id
    assert entries(root) == ["news"]  # and the writer lock is gone with its writer


def test_embedded_batches_are_written_to_the_table_as_one_stream_in_row_order(tmp_path, corpus, monkeypatch):
    # one append per batch made a fragment and a table version each, and lancedb's memory grew with their
    # number squared; the build streams every batch into one write instead
    monkeypatch.setattr(builder, "BATCH", 4)
    writes, real = [], store.append_stream
    monkeypatch.setattr(store, "append_stream", lambda table, dim, batches: (
        writes.append([]), real(table, dim, (writes[-1].append(b.column("row").to_pylist()) or b for b in batches))))
    result = build_index(corpus, "news", HashEmbedder(64), root=tmp_path)
    total = result.manifest.passages
    assert len(writes) == 1 and len(writes[0]) == -(-total // 4) > 10
    assert [row for batch in writes[0] for row in batch] == list(range(total))
    lance = tmp_path / "news" / "store" / "passages.lance"
    assert len(list((lance / "data").glob("*.lance"))) == 1
    index = Index.open("news", tmp_path, embedder=HashEmbedder(64))
    expected = [p.id for p in iter_passages(corpus, CorpusOptions())]
    assert [index.passage(row).id for row in range(total)] == expected
    assert index.search(index.passage(total - 1).text, k=1, mode="dense")[0].passage.id == expected[-1]
