"""Coverage before paying, label assignment, and per-label fallback, on real text with real embeddings.

The index holds a slice of the bundled news mix: Reuters business stories and 20 Newsgroups hockey
posts, embedded with the real MiniLM model. A task with Business, Sports and Space labels finds the
first two covered and Space not; the LLM is the scripted fake, so the tests are about routing.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from engine.retrieval.coverage import SUPPORTED, THIN, UNSUPPORTED, assess, routing
from engine.errors import CoverageError
from engine.testing import ScriptedLLM
from engine.pipeline import SynthOptions, plan, synthesize
from engine.retrieval.retrieve import retrieve_for_task
from engine.types import LabelSpec, OutputSpec, QualityParams, RetrievalParams, SamplingParams, TaskSpec

from conftest import REPO

MIX = REPO / "corpora" / "news-mix" / "news_mix.jsonl"
LABELS = (
    LabelSpec("Business", "business news about companies, markets, earnings, trade, the economy and finance"),
    LabelSpec("Sports", "sports news about ice hockey teams, players, games and results"),
    LabelSpec("Space", "space exploration news about NASA missions, satellites, rockets and astronomy",
              seeds=("NASA delayed the shuttle launch after engineers found a faulty fuel valve.",
                     "Astronomers spotted a comet that will pass close to Earth next spring.",
                     "The European Space Agency placed a new weather satellite into orbit on Tuesday.",
                     "Engineers at the Jet Propulsion Laboratory lost contact with the Mars probe overnight.",
                     "A Soviet cosmonaut returned to Earth after a record eleven months aboard the Mir station.",
                     "The Hubble telescope sent back sharp images of a distant galaxy cluster.")),
)


def make_task(**changes) -> TaskSpec:
    retrieval = RetrievalParams(min_similarity=0.2, max_similarity=0.9, mode="hybrid", label_margin=0.05)
    base = TaskSpec(name="mix", labels=LABELS, output=OutputSpec("news headline", min_words=4, max_words=14),
                    examples_per_label=4, sampling=SamplingParams(max_tokens=40), retrieval=retrieval, seed=3)
    return TaskSpec(**{**base.__dict__, **changes})


def build_mix_index(folder):
    """60 Reuters stories and 40 rec.sport.hockey posts from the news mix, real MiniLM vectors."""
    from engine.embed import get_embedder
    from engine.index.builder import build_index
    from engine.index.reader import Index

    rows = [json.loads(line) for line in MIX.read_text(encoding="utf-8").splitlines()]
    reuters = [r for r in rows if r["source"] == "reuters21578" and r["group"]][:60]
    hockey = [r for r in rows if r["group"] == "rec.sport.hockey"][:40]
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "mix.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in reuters + hockey), encoding="utf-8")
    embedder = get_embedder()
    build_index(corpus, "mix", embedder, root=folder / "indexes")
    return Index.open("mix", folder / "indexes", embedder=embedder)


@pytest.fixture(scope="module")
def mix_index(tmp_path_factory):
    return build_mix_index(tmp_path_factory.mktemp("mix"))


def source_of(hit) -> str:
    return hit.passage.metadata.get("source", "")


def test_label_assignment_keeps_passages_of_the_label_only(mix_index):
    picks, report = retrieve_for_task(mix_index, make_task(), per_label=8)
    assert len(picks["Sports"]) == 8 and len(picks["Business"]) == 8
    assert {source_of(h) for h in picks["Sports"]} == {"20newsgroups-train"}
    assert {source_of(h) for h in picks["Business"]} == {"reuters21578"}
    # Space has no passages of its own: what its queries find belongs to Sports or Business
    assert report.per_label["Space"]["assigned"] < 4
    assert sum(report.per_label["Space"]["lost_to"].values()) > 0


def test_without_assignment_the_uncovered_label_is_filled_with_other_labels_passages(mix_index):
    off = make_task(retrieval=RetrievalParams(min_similarity=0.1, max_similarity=0.9, assign_labels=False))
    picks, _ = retrieve_for_task(mix_index, off, per_label=8)
    assert len(picks["Space"]) == 8  # the premise: the band alone lets hockey and business passages through


def test_verdicts_follow_the_counts():
    task = make_task(examples_per_label=10)
    counts = lambda assigned, **kw: {"assigned": assigned, "candidates_in_band": 50, "min_similarity_used": 0.2,  # noqa: E731
                                     "lost_to": kw.get("lost_to", {}), "relaxed_from": kw.get("relaxed_from")}
    report = {"Business": counts(25), "Sports": counts(12, relaxed_from=0.3),
              "Space": counts(3, lost_to={"Sports": 30, "Business": 4})}
    coverage = assess(task, report, wanted=20)
    assert [coverage[n].verdict for n in ("Business", "Sports", "Space")] == [SUPPORTED, THIN, UNSUPPORTED]
    assert "relaxed from 0.30 to 0.20" in coverage["Sports"].reason
    assert "only 3 passages belong to it, 10 needed" in coverage["Space"].reason
    assert "30 of its 37 candidates belong to Sports" in coverage["Space"].reason
    with pytest.raises(CoverageError, match=r"cannot support label\(s\) Space of task 'mix'.*fallback: attrprompt"):
        routing(task, coverage, "mix")
    assert routing(make_task(fallback="fewgen"), coverage, "mix") == {
        "Business": "synthesizrr", "Sports": "synthesizrr", "Space": "fewgen"}


def test_an_unsupported_label_without_fallback_stops_before_any_call_or_file(mix_index, tmp_path):
    llm = ScriptedLLM()
    out = tmp_path / "run"
    with pytest.raises(CoverageError) as caught:
        synthesize(make_task(), mix_index, llm, SynthOptions(out=out))
    message = str(caught.value)
    assert "\n" not in message and "Space" in message and "Sports" not in message.split("(")[0]
    assert llm.calls == [] and not out.exists()


def test_plan_makes_no_call_and_routes_the_unsupported_label_to_the_fallback(mix_index):
    synth_plan = plan(make_task(fallback="fewgen"), mix_index, SynthOptions(out=REPO / "never-written"))
    assert synth_plan.coverage["Sports"].verdict == SUPPORTED and synth_plan.coverage["Business"].verdict == SUPPORTED
    assert synth_plan.coverage["Space"].verdict == UNSUPPORTED
    assert [(p.strategy.name, p.labels) for p in synth_plan.parts] == [("synthesizrr", ("Business", "Sports")),
                                                                        ("fewgen", ("Space",))]
    estimate = synth_plan.estimate(make_task(fallback="fewgen"))
    assert estimate["requests"] == 12 and estimate["prompt_tokens"] > 0 and estimate["tokens_unknown_for"] == []
    assert not (REPO / "never-written").exists()


def test_a_fallback_run_writes_one_dataset_saying_which_strategy_made_each_example(mix_index, tmp_path):
    # the scripted LLM's fewgen answers share a long prefix, so near-duplicate removal is off here
    task = make_task(fallback="fewgen", fallback_options={"shots": 2}, quality=QualityParams(near_duplicate=0.0))
    result = synthesize(task, mix_index, ScriptedLLM(), SynthOptions(out=tmp_path / "run"))
    assert result.kept == {"Business": 4, "Sports": 4, "Space": 4}
    frame = pl.read_parquet(result.files["parquet"])
    made = dict(zip(*frame.group_by("label").agg(pl.col("strategy").unique()).to_dict(as_series=False).values()))
    assert {label: sorted(s) for label, s in made.items()} == {
        "Business": ["synthesizrr"], "Sports": ["synthesizrr"], "Space": ["fewgen"]}
    space = frame.filter(pl.col("label") == "Space")
    assert space["passage_id"].is_null().all()
    assert all("cannot support the label" in reason and "only" in reason for reason in space["strategy_reason"])
    assert frame.filter(pl.col("label") != "Space")["strategy_reason"].to_list() == [""] * 8
    manifest = json.loads(result.files["manifest"].read_text(encoding="utf-8"))
    assert manifest["coverage"]["Space"]["verdict"] == UNSUPPORTED
    assert manifest["routes"]["Space"]["strategy"] == "fewgen" and manifest["routes"]["Sports"]["strategy"] == "synthesizrr"
    # resuming pays nothing and writes the same dataset
    again = synthesize(task, mix_index, ScriptedLLM(), SynthOptions(out=tmp_path / "run"))
    assert again.calls == 0 and pl.read_parquet(again.files["parquet"]).equals(frame)


def test_seedbed_plan_prints_coverage_and_the_estimate(mix_index, tmp_path):
    from click.testing import CliRunner

    from engine.cli import main

    spec = tmp_path / "task.yaml"
    spec.write_text(
        "name: mix\noutput: {kind: news headline, min_words: 4, max_words: 14}\nexamples_per_label: 4\nfallback: fewgen\n"
        "retrieval: {min_similarity: 0.2, label_margin: 0.05}\nlabels:\n"
        + "".join(f"  - name: {s.name}\n    verbalization: {s.verbalization}\n    seeds: {json.dumps(list(s.seeds))}\n"
                  for s in LABELS), encoding="utf-8")
    root = mix_index.folder.parent
    result = CliRunner().invoke(main, ["plan", str(spec), "--index", "mix", "--root", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("coverage of index 'mix' for task 'mix' (4 examples per label, 8 passages wanted")
    space = next(line for line in lines if line.strip().startswith("Space"))
    assert "unsupported" in space and "fewgen" in space
    assert "estimate for the first round: 12 requests" in result.stdout and "min on qwen2.5-coder-1.5b" in result.stdout
    no_fallback = spec.read_text(encoding="utf-8").replace("fallback: fewgen\n", "")
    spec.write_text(no_fallback, encoding="utf-8")
    stopped = CliRunner().invoke(main, ["plan", str(spec), "--index", "mix", "--root", str(root)])
    assert stopped.exit_code == 1 and "cannot support label(s) Space" in stopped.stderr and "Traceback" not in stopped.output
    filtered = spec.read_text(encoding="utf-8").replace("examples_per_label: 4\n", "examples_per_label: 4\nfallback: fewgen\n"
                                                                                  "quality: {confidence_keep: 0.8}\n")
    spec.write_text(filtered, encoding="utf-8")
    gathering = CliRunner().invoke(main, ["plan", str(spec), "--index", "mix", "--root", str(root)])
    assert gathering.stdout.splitlines()[0].startswith(  # the filter gathers 4 / 0.8 = 5 per label, 10 passages wanted
        "coverage of index 'mix' for task 'mix' (4 examples per label (gathering 5 for the confidence filter, which "
        "keeps 80%), 10 passages wanted")
    assert "estimate for the first round: 15 requests" in gathering.stdout
