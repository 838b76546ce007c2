"""Task specs: the shipped AG News spec loads; YAML and TOML agree; every mistake is a ConfigError
that names the file, the field and the fix."""

from __future__ import annotations

import re

import pytest
import yaml

from engine.config import load_task, parse_task, task_to_dict
from engine.files import validate_name
from engine.errors import ConfigError
from engine.types import LabelSpec, OutputSpec, RetrievalParams, SamplingParams, TaskSpec

from conftest import REPO

AG_NEWS = REPO / "benchmarks" / "tasks" / "ag_news.yaml"

YAML_SPEC = """\
name: tiny-news
description: Two topics.
output:
  kind: news headline
  min_words: 4
  max_words: 14
examples_per_label: 3
labels:
  - name: Sports
    verbalization: sports news
    seeds: [Lakers beat the Celtics in overtime]
  - name: Business
    verbalization: business news
sampling:
  temperature: 0.5
  max_tokens: 40
retrieval:
  mode: bm25
  min_similarity: 0.2
  max_similarity: 0.8
seed: 7
"""

TOML_SPEC = """\
name = "tiny-news"
description = "Two topics."
examples_per_label = 3
seed = 7

[output]
kind = "news headline"
min_words = 4
max_words = 14

[[labels]]
name = "Sports"
verbalization = "sports news"
seeds = ["Lakers beat the Celtics in overtime"]

[[labels]]
name = "Business"
verbalization = "business news"

[sampling]
temperature = 0.5
max_tokens = 40

[retrieval]
mode = "bm25"
min_similarity = 0.2
max_similarity = 0.8
"""


def spec(tmp_path, text: str, name: str = "task.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def minimal(**overrides) -> dict:
    raw = {
        "name": "t",
        "labels": [{"name": "A", "verbalization": "about a"}, {"name": "B", "verbalization": "about b"}],
        "output": {"kind": "headline"},
    }
    raw.update(overrides)
    return raw


def test_ag_news_spec_loads_with_its_values():
    raw = yaml.safe_load(AG_NEWS.read_text(encoding="utf-8"))  # compared with the file, so tuning it keeps this green
    task = load_task(AG_NEWS)
    assert task.name == "ag_news" == raw["name"]
    assert [label.name for label in task.labels] == ["World", "Sports", "Business", "Sci/Tech"]
    assert [list(label.seeds) for label in task.labels] == [item["seeds"] for item in raw["labels"]]
    assert all(label.seeds and label.verbalization for label in task.labels)
    assert task.output == OutputSpec(**raw["output"])
    assert task.sampling == SamplingParams(**raw["sampling"])
    assert task.retrieval == RetrievalParams(**raw["retrieval"])
    assert task.seed == raw["seed"] and task.examples_per_label == raw["examples_per_label"]
    assert task.strategy == "synthesizrr" and task.template == "synthesizrr/refine"


def test_yaml_and_toml_give_the_same_task(tmp_path):
    from_yaml = load_task(spec(tmp_path, YAML_SPEC, "task.yaml"))
    from_toml = load_task(spec(tmp_path, TOML_SPEC, "task.toml"))
    assert from_yaml == from_toml
    assert task_to_dict(from_yaml) == task_to_dict(from_toml)
    assert from_yaml.labels[0] == LabelSpec("Sports", "sports news", ("Lakers beat the Celtics in overtime",))
    assert from_yaml.output == OutputSpec("news headline", 4, 14)
    assert from_yaml.retrieval.mode == "bm25" and from_yaml.retrieval.candidates == 200  # default kept


def test_yml_extension_and_labels_as_mapping(tmp_path):
    text = "name: m\noutput: headline\nlabels:\n  Pos: positive review\n  Neg: {verbalization: negative review, seeds: [awful]}\n"
    task = load_task(spec(tmp_path, text, "m.yml"))
    assert task.labels == (LabelSpec("Pos", "positive review"), LabelSpec("Neg", "negative review", ("awful",)))
    assert task.output.kind == "headline"


def test_typo_in_top_level_key_names_file_key_and_suggestion(tmp_path):
    path = spec(tmp_path, YAML_SPEC.replace("examples_per_label", "exmaples_per_label"))
    with pytest.raises(ConfigError) as info:
        load_task(path)
    message = str(info.value)
    assert str(path) in message
    assert "'exmaples_per_label'" in message
    assert "did you mean 'examples_per_label'?" in message


def test_unknown_label_key_names_its_position(tmp_path):
    path = spec(tmp_path, YAML_SPEC.replace("    verbalization: business news", "    verbalisation: business news"))
    with pytest.raises(ConfigError) as info:
        load_task(path)
    message = str(info.value)
    assert str(path) in message
    assert "labels[1].verbalisation" in message
    assert "did you mean 'verbalization'?" in message


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [("sampling", "temprature", "temperature"), ("retrieval", "max_similarty", "max_similarity"),
     ("output", "max_wrods", "max_words")],
)
def test_unknown_key_inside_a_section(section, key, suggestion):
    raw = minimal(**{section: {"kind": "headline", key: 1} if section == "output" else {key: 1}})
    with pytest.raises(ConfigError, match=re.escape(f"unknown key '{section}.{key}' (did you mean '{suggestion}'?)")):
        parse_task(raw, source="spec.yaml")


def test_duplicate_label_is_rejected():
    raw = minimal(labels=[{"name": "A", "verbalization": "x"}, {"name": "A", "verbalization": "y"}])
    with pytest.raises(ConfigError, match="label 'A' appears twice"):
        parse_task(raw, source="spec.yaml")


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"examples_per_label": "ten"}, "examples_per_label", "'ten'"),
        ({"seed": "abc"}, "seed", "'abc'"),
        ({"sampling": {"max_tokens": "many"}}, "sampling.max_tokens", "'many'"),
        ({"sampling": {"temperature": True}}, "sampling.temperature", "True"),
        ({"retrieval": {"candidates": 2.5}}, "retrieval.candidates", "2.5"),
        ({"retrieval": {"screen": "sometimes"}}, "retrieval.screen", "'sometimes'"),
        ({"quality": {"confidence_keep": "most"}}, "quality.confidence_keep", "'most'"),
        ({"output": {"kind": "headline", "max_words": "long"}}, "output.max_words", "'long'"),
    ],
)
def test_bad_types_name_field_and_value(overrides, field, value):
    with pytest.raises(ConfigError) as info:
        parse_task(minimal(**overrides), source="spec.yaml")
    message = str(info.value)
    assert message.startswith("spec.yaml: ")
    assert field in message and value in message


def test_numbers_written_as_whole_floats_or_numeric_strings_are_accepted():
    task = parse_task(minimal(examples_per_label=4.0, sampling={"max_tokens": "64"}), source="s")
    assert task.examples_per_label == 4 and task.sampling.max_tokens == 64


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"output": {"kind": "headline", "min_words": 10, "max_words": 5}}, "must satisfy 1 <= min <= max"),
        ({"output": {"kind": "headline", "min_words": 0}}, "must satisfy 1 <= min <= max"),
        ({"retrieval": {"min_similarity": 0.9, "max_similarity": 0.4}}, "must satisfy -1 <= min < max <= 1"),
        ({"retrieval": {"max_similarity": 1.5}}, "must satisfy -1 <= min < max <= 1"),
        ({"retrieval": {"mode": "sparse"}}, "use dense, bm25 or hybrid"),
        ({"retrieval": {"mmr_lambda": 2}}, "must be between 0 and 1"),
        ({"retrieval": {"mmr_relevance": "fame"}}, "retrieval.mmr_relevance='fame'; use cosine, margin or both"),
        ({"retrieval": {"max_reuse": 0}}, "must be at least 1"),
        ({"quality": {"confidence_keep": 1.5}}, "quality.confidence_keep=1.5 must be between 0 (off, the default) and 1"),
        ({"examples_per_label": 0}, "examples_per_label must be at least 1"),
        ({"output": {"kind": "  "}}, "output.kind must say what to write"),
    ],
)
def test_bounds_are_checked(overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_task(minimal(**overrides), source="spec.yaml")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["not", "a", "mapping"], "must be a mapping of keys, got list"),
        ({"labels": [{"name": "A", "verbalization": "a"}], "output": "x"}, "missing required key 'name'"),
        (minimal(labels=[]), "'labels' must be a non-empty list"),
        (minimal(labels=[{"name": "A"}]), "needs a non-empty 'name' and 'verbalization'"),
        (minimal(labels=["A"]), "labels[0] must be a mapping"),
        (minimal(labels=[{"name": "A", "verbalization": "a", "seeds": ["ok", ""]}]), "labels[0].seeds must be a list"),
        (minimal(labels=[{"name": "A", "verbalization": "a", "queries": "oil"}]),
         "labels[0].queries must be a list of non-empty strings, got 'oil'"),
        (minimal(name="../escape"), "invalid task name '../escape'"),
    ],
)
def test_structural_mistakes(raw, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_task(raw, source="spec.yaml")


@pytest.mark.parametrize("name", ["reuters-sample", "a", "ag_news.v2", "A1-b_c.d"])
def test_valid_names_pass_through(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\\b", "/abs", ".hidden", "with space", "x" * 129, "tab\t"])
def test_invalid_names_are_rejected(name):
    with pytest.raises(ConfigError, match=r"invalid index name .*no '/'"):
        validate_name(name)


def test_validate_name_rejects_non_strings_and_names_what():
    with pytest.raises(ConfigError, match="invalid task name None"):
        validate_name(None, "task name")  # type: ignore[arg-type]


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"task spec {missing} does not exist")):
        load_task(missing)


def test_bad_extension(tmp_path):
    path = spec(tmp_path, YAML_SPEC, "task.json")
    with pytest.raises(ConfigError, match=r"unknown extension '\.json'; use \.yaml, \.yml or \.toml"):
        load_task(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = spec(tmp_path, "name: [unclosed\nlabels: x\n")
    with pytest.raises(ConfigError, match=re.escape(f"task spec {path}:2:7 is not valid YAML")):
        load_task(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = spec(tmp_path, "name = \n", "task.toml")
    with pytest.raises(ConfigError, match=re.escape(f"task spec {path} is not valid TOML")):
        load_task(path)


def test_non_utf8_spec(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_task(path)


def test_empty_yaml_file_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping of keys, got NoneType"):
        load_task(spec(tmp_path, ""))


def test_parse_task_builds_frozen_spec():
    task = parse_task(minimal(), source="s")
    assert isinstance(task, TaskSpec)
    with pytest.raises(AttributeError):
        task.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides",
    [{"output": {"kind": ["news", "headline"]}}, {"labels": [{"name": "A", "verbalization": {"text": "about a"}}]}],
)
def test_non_string_where_a_string_is_expected_is_an_error(overrides):
    with pytest.raises(ConfigError):
        parse_task(minimal(**overrides), source="spec.yaml")


def test_retrieval_queries_are_read_per_label_and_a_spec_without_them_keeps_its_fingerprint():
    task = parse_task(minimal(labels=[{"name": "A", "verbalization": "about a", "queries": [" oil prices ", "airlines"]},
                                      {"name": "B", "verbalization": "about b"}]), source="spec.yaml")
    assert task.labels[0].queries == ("oil prices", "airlines") and task.labels[1].queries == ()
    labels = task_to_dict(task)["labels"]
    assert list(labels[0]["queries"]) == ["oil prices", "airlines"] and "queries" not in labels[1]


def test_server_specific_sampling_parameters_are_checked_and_change_ids_only_when_set():
    from engine.ids import request_id

    base = {"name": "t", "output": "headline", "labels": [{"name": "A", "verbalization": "a"}]}
    task = parse_task({**base, "sampling": {"temperature": 0.7, "extra": {"xtc_probability": 0.5, "min_p": 0.05}}})
    assert task.sampling.extra == (("min_p", 0.05), ("xtc_probability", 0.5)) and task.sampling.temperature == 0.7
    assert task.sampling.as_dict()["extra"] == {"min_p": 0.05, "xtc_probability": 0.5}
    assert SamplingParams.from_dict(task.sampling.as_dict()) == task.sampling
    assert task_to_dict(task)["sampling"]["extra"] == {"min_p": 0.05, "xtc_probability": 0.5}  # as the spec wrote it
    plain = parse_task(base)
    assert "extra" not in task_to_dict(plain)["sampling"] and "extra" not in plain.sampling.as_dict()  # old fingerprints
    messages = (("user", "hi"),)
    assert request_id("s", "0", messages, plain.sampling, 0) != request_id("s", "0", messages, task.sampling, 0)
    for extra, message in (
        ([1], r"sampling.extra must be a mapping of parameter names to values \(e.g. extra: \{min_p: 0.05\}\), got \[1\]"),
        ({"temperature": 1.0}, r"sampling.extra.temperature cannot be set there; use sampling.temperature"),
        ({"messages": "x"}, r"sampling.extra.messages cannot be set there; Seedbed sets it itself"),
        ({"logit_bias": {"1": 2}}, r"sampling.extra.logit_bias must be a number, string or true/false, got \{'1': 2\}"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_task({**base, "sampling": {"extra": extra}})
