"""`seedbed init`, the bundled data (`bundled:` names) and `--prompts`: a project outside the checkout."""

from __future__ import annotations

import json
import os

import pytest

from engine import resources
from engine.config import load_task
from engine.errors import RuntimeSetupError

from test_cli import assert_clean_error, built, invoke  # noqa: F401 (built is a fixture)


def test_init_writes_a_starter_spec_that_loads_and_never_overwrites(tmp_path):
    result = invoke("init", tmp_path / "proj")
    assert result.exit_code == 0, result.output
    task = load_task(tmp_path / "proj" / "task.yaml")
    assert task.name == "starter" and task.fallback == "fewgen" and len(task.labels) == 2
    assert not (tmp_path / "proj" / "prompts").exists()
    again = invoke("init", tmp_path / "proj")
    assert_clean_error(again, "task.yaml already exists", "init never overwrites")


def test_init_prompts_copies_every_bundled_template(tmp_path):
    result = invoke("init", tmp_path, "--prompts")
    assert result.exit_code == 0, result.output
    bundled = sorted(p.relative_to(resources.bundled("prompts")) for p in resources.bundled("prompts").rglob("*.md"))
    copied = sorted(p.relative_to(tmp_path / "prompts") for p in (tmp_path / "prompts").rglob("*.md"))
    assert copied == bundled and len(copied) > 10


def test_the_starter_spec_runs_as_is_with_the_fake_llm_and_edited_prompts_are_used(built, tmp_path):  # noqa: F811
    root, _, _ = built
    assert invoke("init", tmp_path, "--prompts").exit_code == 0
    system = tmp_path / "prompts" / "system.md"
    system.write_text(system.read_text(encoding="utf-8").replace("### system\n", "### system\nMARKER-OWN-TEMPLATE. "),
                      encoding="utf-8")
    out = tmp_path / "runs" / "first"
    result = invoke("synth", tmp_path / "task.yaml", "--index", "news", "--out", out, "--fake", "--root", root,
                    "--prompts", tmp_path / "prompts")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "dataset.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["label"] for r in rows} == {"business", "other"}
    # provenance names the combined system+refine hash: it is the one of the edited system template
    from engine.prompts import combined_identity, load_template

    own = combined_identity((load_template("system", tmp_path / "prompts"), load_template("synthesizrr/refine", tmp_path / "prompts")))
    shipped = combined_identity((load_template("system", resources.bundled("prompts")),
                                 load_template("synthesizrr/refine", resources.bundled("prompts"))))
    retrieved = [r for r in rows if r["strategy"] == "synthesizrr"]
    assert retrieved and {r["template_sha256"] for r in retrieved} == {own[1]} and own[1] != shipped[1]
    assert "SEEDBED_PROMPTS" not in os.environ  # the command's --prompts does not outlive it


def test_bundled_names_resolve_and_a_wrong_one_lists_the_choices(tmp_path):
    result = invoke("plan", "bundled:ag_nws", "--strategy", "fewgen")
    assert result.exit_code == 2 and "no bundled task 'ag_nws'" in result.output and "ag_news" in result.output
    missing = invoke("index", "bundled:reuters", "--name", "x", "--root", tmp_path)
    assert missing.exit_code == 2 and "choose one of news-mix, news-mix-small, reuters-sample" in missing.output
    fewgen = invoke("synth", "bundled:ag_news", "--strategy", "fewgen", "--out", tmp_path / "f", "--fake", "-n", "1")
    assert fewgen.exit_code == 0, fewgen.output


def test_prompts_must_be_a_folder(tmp_path):
    result = invoke("plan", "bundled:ag_news", "--strategy", "fewgen", "--prompts", tmp_path / "nope")
    assert result.exit_code == 2 and "is not a folder of prompt templates" in result.output


def test_resources_prefer_the_wheel_copy_and_fail_clearly_when_nothing_is_there(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "_PACKAGE", tmp_path / "site" / "engine")
    with pytest.raises(RuntimeSetupError, match="bundled prompts are missing from this install"):
        resources.bundled("prompts")
    (tmp_path / "site" / "engine" / "_bundled" / "prompts").mkdir(parents=True)
    assert resources.bundled("prompts") == tmp_path / "site" / "engine" / "_bundled" / "prompts"
    monkeypatch.setenv("SEEDBED_PROMPTS", str(tmp_path / "mine"))
    assert resources.prompts_dir() == tmp_path / "mine"
