"""The shared LLM cache: content-addressed, persistent, LRU-evicted, reused across output folders."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.cache import CachedJournal, LLMCache, cache_key, parse_size
from engine.errors import ConfigError
from engine.journal import Journal
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, synthesize
from engine.types import Completion

from engine.dataset import read_dataset
from engine.testing import default_answer

from test_pipeline import TASK


def completion(text: str) -> Completion:
    return Completion(text=text, model="m", prompt_tokens=10, completion_tokens=len(text))


def test_answers_survive_reopening_and_keys_separate_endpoint_model_and_request(tmp_path):
    with LLMCache(tmp_path) as cache:
        cache.put(cache_key("http://a/v1", "m", "r1"), completion("one"))
    with LLMCache(tmp_path) as cache:
        assert cache.get(cache_key("http://a/v1", "m", "r1")) == completion("one")
        assert cache.get(cache_key("http://b/v1", "m", "r1")) is None
        assert cache.get(cache_key("http://a/v1", "m2", "r1")) is None
        assert cache.get(cache_key("http://a/v1", "m", "r2")) is None
        assert (cache.hits, cache.misses) == (1, 3)


def test_least_recently_used_answers_are_evicted_past_the_limit(tmp_path):
    size = len(json.dumps(dataclasses.asdict(completion("x" * 100))))
    with LLMCache(tmp_path, max_bytes=size * 5) as cache:
        for i in range(5):
            cache.put(f"k{i}", completion("x" * 100))
        assert cache.get("k0") is not None  # k0 is now the most recently used
        cache.put("k5", completion("x" * 100))  # over the limit: down to 90 % -> 4 entries
        info = cache.info()
        assert info["entries"] == 4 and info["answer_bytes"] <= size * 5 * 0.9
        assert cache.get("k0") is not None and cache.get("k5") is not None
        assert cache.get("k1") is None and cache.get("k2") is None


def test_info_and_clear(tmp_path):
    with LLMCache(tmp_path) as cache:
        cache.put("a", completion("a"))
        cache.put("a", completion("bb"))  # replaced, not added
        assert cache.info()["entries"] == 1
        assert cache.clear() == 1 and cache.info()["entries"] == 0


def test_a_damaged_row_is_a_miss_not_a_crash(tmp_path):
    with LLMCache(tmp_path) as cache:
        cache.put("a", completion("a"))
        cache._db.execute("UPDATE answers SET completion = 'not json'")
        assert cache.get("a") is None


def test_an_unusable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="SEEDBED_CACHE_DIR"):
        LLMCache(blocker / "cache")


@pytest.mark.parametrize(("text", "size"), [("500MB", 500_000_000), ("2GiB", 2 << 30), ("1e3", 1000), (7, 7)])
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_rejects_nonsense():
    with pytest.raises(ConfigError, match="500MB"):
        parse_size("lots")


def test_cache_hits_are_copied_into_the_run_journal(tmp_path):
    with LLMCache(tmp_path / "c") as cache, Journal(tmp_path / "j.jsonl") as journal:
        cache.put(cache_key("e", "m", "r1"), completion("hit"))
        store = CachedJournal(journal, cache, "e")
        assert store.completed("r1", "m").text == "hit" and store.cache_hits == 1
        store.record_ok("r2", "m", completion("new"))
        assert cache.get(cache_key("e", "m", "r2")).text == "new"
    assert Journal(tmp_path / "j.jsonl").completed("r1", "m").text == "hit"


def run(hash_index, out, cache, task=TASK):
    llm = ScriptedLLM(respond=default_answer)
    options = SynthOptions(out=out, concurrency=2, cache=cache)
    return synthesize(task, hash_index.index, llm, options, endpoint="fake:test"), llm


def test_a_new_output_folder_reuses_every_answer_from_the_cache(hash_index, tmp_path):
    with LLMCache(tmp_path / "cache") as cache:
        first, llm1 = run(hash_index, tmp_path / "a", cache)
        second, llm2 = run(hash_index, tmp_path / "b", cache)
    assert len(llm1.calls) > 0 and len(llm2.calls) == 0
    assert second.manifest["counts"]["reused_from_cache"] == len(llm1.calls)
    assert read_dataset(tmp_path / "b").equals(read_dataset(tmp_path / "a"))


def test_one_changed_label_pays_only_for_that_label(hash_index, tmp_path):
    with LLMCache(tmp_path / "cache") as cache:
        first, llm1 = run(hash_index, tmp_path / "a", cache)
        labels = (*TASK.labels[:2], dataclasses.replace(TASK.labels[2], verbalization="quarterly profits and dividends"))
        second, llm2 = run(hash_index, tmp_path / "b", cache, dataclasses.replace(TASK, labels=labels))
    changed = TASK.labels[2].name
    prompts = [call.messages[-1][1] for call in llm2.calls]
    assert llm2.calls and all("quarterly profits and dividends" in p for p in prompts)
    assert second.kept[changed] == first.kept[changed]
    assert second.manifest["counts"]["reused_from_cache"] >= sum(first.kept.values()) - first.kept[changed]


def test_more_examples_per_label_reuses_the_first_ones(hash_index, tmp_path):
    with LLMCache(tmp_path / "cache") as cache:
        first, llm1 = run(hash_index, tmp_path / "a", cache)
        bigger = dataclasses.replace(TASK, examples_per_label=TASK.examples_per_label + 1)
        second, llm2 = run(hash_index, tmp_path / "b", cache, bigger)
    assert len(llm2.calls) == len(TASK.labels)  # one new example per label, nothing else
    assert second.manifest["counts"]["reused_from_cache"] == len(llm1.calls)
