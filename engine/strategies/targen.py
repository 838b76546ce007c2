"""TarGEN (Gupta et al., 2023): seedless, multi-step generation with a self-correction pass.

`setup` has the LLM list diverse contexts for the task's domain, then label-agnostic instance
seeds within each context, and writes both to `targen_seeds.json`. `plan_counts` grounds each
request in one (context, seed) pair and asks for an example of one label. The pair depends on the
task seed and the sample index only, so at a given sample index every label is written from the
same seed and no context carries a label signal. `review` asks the LLM (greedy) which label each
kept example fits (without telling it the label the example was written for), then keeps,
relabels or drops it. Every stage request is content-addressed, so
a re-run into the same folder is answered from the journal.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine import filters
from engine.errors import ConfigError, LLMFatalError
from engine.prompts import Template, load_template
from engine.strategies.answers import (
    ANSWER_SCHEMA, LIST_SCHEMA, ListStyle, decode_json, distinct, object_schema, read_list, strip_fences, whole_items,
)
from engine.strategies.base import Ask, LabelOnlyStrategy, Review, derive_seed, parse_text_answer
from engine.strategies.planning import (
    check_flags, choose_templates, int_option, render_request, sample_indexes, task_templates,
)
from engine.strategies.targen_state import NAME, SEEDS_FILE, SeedPool, write_seeds
from engine.types import Completion, Example, LabelSpec, Rejection, Request, SamplingParams, TaskSpec
from engine.verify import check_labels, parse_verdict

__all__ = ["CONTEXTS", "CORRECT", "GENERATE", "SEEDS", "SEEDS_FILE", "SeedPool", "TarGEN", "parse_list"]

CONTEXTS, SEEDS, GENERATE, CORRECT = "targen/contexts", "targen/seeds", "targen/generate", "targen/correct"
MAX_LIST_REQUESTS = 3  # per list: the first request, then follow-ups for a shortfall only
MAX_ITEMS = 50
ITEMS = ListStyle(max_words=60)  # contexts and seeds: a longer "item" is prose the model wrote around its list
DEFAULT_CONTEXT_HINT = "the settings, subjects or situations in which such a text is typically written"
DEFAULT_SEED_HINT = "a specific, concrete situation a text in this context could be about"
# Greedy decoding: a verdict should not change between runs.
CORRECT_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64, seed=0)
_NONE = "none"
_NONE_ANSWERS = {"none", "none of them", "none of the labels", "none of these", "no label", "neither"}


class TarGEN(LabelOnlyStrategy):
    """Contexts -> instance seeds -> label-constrained examples -> self-correction.

    Args:
        structured_output: ask for JSON (`{"text"}`, `{"items"}`, `{"label"}`) through JSON schemas.
        contexts: how many contexts setup asks for (1..50).
        seeds_per_context: how many instance seeds setup asks for per context (1..50).
        self_correct: run the self-correction review (keep, relabel or drop each example).
        context_hint: what a context is for this task, e.g. "a film genre with an era or setting".
        seed_hint: what an instance seed is for this task; for a topic task, one that names people and
            a place but no event (what happens is the label's to decide), e.g. "a place, a date and
            the people involved, with no event".

    Raises:
        ConfigError: an option of the wrong type or out of range.
    """

    name = NAME
    plans_before_setup = False

    def __init__(self, structured_output: bool = False, contexts: int = 6, seeds_per_context: int = 5,
                 self_correct: bool = True, context_hint: str = DEFAULT_CONTEXT_HINT, seed_hint: str = DEFAULT_SEED_HINT):
        self.contexts = int_option(self.name, "contexts", contexts, MAX_ITEMS)
        self.seeds_per_context = int_option(self.name, "seeds_per_context", seeds_per_context, MAX_ITEMS)
        check_flags(self.name, self_correct=self_correct, structured_output=structured_output)
        for option, value, example in (("context_hint", context_hint, "a film genre with an era or setting"),
                                       ("seed_hint", seed_hint, "a place, a date and the people involved, with no event")):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"targen option {option}={value!r} is not allowed; give a non-empty phrase, e.g. {example!r}")
        self.structured_output, self.self_correct = structured_output, self_correct
        self.context_hint, self.seed_hint = context_hint.strip(), seed_hint.strip()
        self.pool: SeedPool | None = None  # set by setup; plan_counts draws from it
        self._templates: dict[str, Template] = {}

    # --- templates -------------------------------------------------------------------------------

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        """System + generation template (targen/generate unless the task names its own), then the stage templates."""
        stages = (CONTEXTS, SEEDS, CORRECT) if self.self_correct else (CONTEXTS, SEEDS)
        return task_templates(task, self.name, GENERATE) + stages

    def load_templates(self, task: TaskSpec, root: Path | None = None) -> dict[str, Template]:
        """Load every template (and check the labels self-correction must tell apart); review reuses them."""
        self._check_task(task)
        self._templates = super().load_templates(task, root)
        return dict(self._templates)

    def _stage(self, task: TaskSpec, templates: Mapping[str, Template], name: str) -> tuple[Template, ...]:
        """The task's system template (if any) followed by `name`: the messages of one step."""
        return choose_templates(templates, (task.system_template, name))

    def _check_task(self, task: TaskSpec) -> None:
        if not self.self_correct:
            return
        check_labels(task, ())
        clash = [s.name for s in task.labels if filters.normalize(s.name) in _NONE_ANSWERS]
        if clash:
            raise ConfigError(f"task {task.name!r}: label {clash[0]!r} reads as self-correction's 'none' answer; "
                              "rename the label or set strategy_options.self_correct: false")

    # --- steps 1 and 2: contexts and instance seeds ------------------------------------------------

    def setup(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, workdir: Path) -> dict[str, Any]:
        """Ask for contexts, then instance seeds per context; keep them for planning and write SEEDS_FILE.

        Raises:
            LLMFatalError: no usable context or no usable seed came back (the model or endpoint is unusable).
        """
        self._check_task(task)
        self._templates = {**self._templates, **templates}
        asked = Counter[str]()
        contexts = self._collect(task, templates, ask, CONTEXTS, [{}], [self.contexts], asked)[0]
        seeds = self._collect(task, templates, ask, SEEDS, [{"context": c} for c in contexts],
                              [self.seeds_per_context] * len(contexts), asked) if contexts else []
        self.pool = SeedPool(tuple(c for c, s in zip(contexts, seeds) if s), tuple(tuple(s) for s in seeds if s))
        report = {"contexts": len(self.pool.contexts), "seeds": sum(map(len, self.pool.seeds)),
                  "contexts_asked": self.contexts, "seeds_per_context_asked": self.seeds_per_context,
                  "contexts_without_seeds": [c for c, s in zip(contexts, seeds) if not s],
                  "requests": dict(asked), "file": SEEDS_FILE}
        path = write_seeds(workdir, task.name, self.pool, report)
        if not self.pool.contexts:
            step = SEEDS if contexts else CONTEXTS
            raise LLMFatalError(f"targen setup got no usable items from {asked[step]} {step} request(s): the answers "
                                f"failed or held no list; see {path}, check the endpoint, "
                                "or raise sampling.max_tokens")
        return report

    def _collect(self, task: TaskSpec, templates: Mapping[str, Template], ask: Ask, step: str,
                 jobs: list[dict[str, str]], wants: list[int], asked: Counter) -> list[list[str]]:
        """One list per job: up to MAX_LIST_REQUESTS requests each, later ones asking for the shortfall only."""
        chosen = self._stage(task, templates, step)
        found: list[list[str]] = [[] for _ in jobs]
        for attempt in range(MAX_LIST_REQUESTS):
            open_jobs = [j for j, want in enumerate(wants) if len(found[j]) < want]
            if not open_jobs:
                break
            requests = {j: self._list_request(task, chosen, step, jobs[j], found[j], wants[j], attempt) for j in open_jobs}
            answers = ask(list(requests.values()))
            asked[step] += len(requests)
            for j, request in requests.items():
                if request.id in answers:
                    found[j] = distinct([*found[j], *list_items(answers[request.id])])[:wants[j]]
        return found

    def _list_request(self, task: TaskSpec, chosen: tuple[Template, ...], step: str, job: Mapping[str, str],
                      known: list[str], want: int, attempt: int) -> Request:
        count = want - len(known)
        context = {"task_description": task.description or task.name, "output_kind": task.output.kind,
                   "context_hint": self.context_hint, "seed_hint": self.seed_hint, "count": count, "avoid": "some" if known else "none",
                   "known": "\n".join(f"- {item}" for item in known),
                   "answer_format": "json" if self.structured_output else "text", **job}
        per_item = 40 if step == CONTEXTS else 64
        sampling = dataclasses.replace(task.sampling, max_tokens=64 + per_item * count,
                                       seed=derive_seed(task.seed, self.name, step, job.get("context", ""), attempt))
        schema = LIST_SCHEMA if self.structured_output else None
        return render_request(f"{self.name}/{step}", "", chosen, context, sampling, attempt, schema)

    # --- step 3: label-constrained generation ------------------------------------------------------

    def plan_counts(self, task: TaskSpec, counts: Mapping[str, int], templates: Mapping[str, Template],
                    start: Mapping[str, int] | None = None, history: Sequence[Example] = ()) -> list[Request]:
        """`counts[label]` requests per label with sample indexes from `start[label]`, each grounded in
        the (context, seed) pair at that index of the pool's rotation.

        Raises:
            ConfigError: setup has not run, a label the task does not have, a negative count or start,
                or a template missing from `templates`.
        """
        if self.pool is None or not self.pool.contexts:
            raise ConfigError("targen plans from the contexts and seeds its setup stage writes; call "
                              "strategy.setup(task, templates, ask, workdir) first (seedbed synth does)")
        indexes = sample_indexes(task, counts, start)
        chosen = self._stage(task, templates, self._main_template(task))
        pairs = self.pool.pairs(task.seed)
        return [self._generate_request(task, label, index, chosen, pairs[index % len(pairs)])
                for label, planned in indexes for index in planned]

    def _main_template(self, task: TaskSpec) -> str:
        return self.template_names(task)[1 if task.system_template else 0]

    def _generate_request(self, task: TaskSpec, label: LabelSpec, index: int, chosen: tuple[Template, ...],
                          pair: tuple[int, int]) -> Request:
        assert self.pool is not None
        context = {"output_kind": task.output.kind, "min_words": task.output.min_words, "max_words": task.output.max_words,
                   "label": label.name, "verbalization": label.verbalization,
                   "answer_format": "json" if self.structured_output else "text",
                   "context": self.pool.contexts[pair[0]], "instance_seed": self.pool.seeds[pair[0]][pair[1]]}
        sampling = dataclasses.replace(task.sampling, seed=derive_seed(task.seed, self.name, label.name, index))
        schema = ANSWER_SCHEMA if self.structured_output else None
        grounding = (("context", context["context"]), ("seed", context["instance_seed"]))
        return render_request(self.name, label.name, chosen, context, sampling, index, schema, grounding=grounding)

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> Example | Rejection:
        """Clean the answer and run the per-answer filters (there is no passage to compare with)."""
        return parse_text_answer(request, completion, task.output)

    # --- step 4: self-correction -------------------------------------------------------------------

    def review(self, task: TaskSpec, examples: list[tuple[Example, Request]], ask: Ask) -> Review:
        """Ask which label each example fits: keep it (its own), relabel it (another) or drop it (none,
        or an unreadable answer) with reason `self_correction_dropped`. An example whose check got
        no answer (failed after retries, or over the budget) is held: a re-run checks it."""
        if not self.self_correct:
            return Review(list(examples), [], {"self_correction": "off"})
        template = self._templates.get(CORRECT) or load_template(CORRECT)
        checks = [self._correct_request(task, example, template) for example, _ in examples]
        answers = ask(checks) if checks else {}
        kept, rejections, records, held = [], [], [], []
        for (example, request), check in zip(examples, checks):
            # no answer (failed, or over the budget): neither kept nor dropped, a re-run checks it
            verdict, (action, cause) = _verdict(check, answers[check.id], task) if check.id in answers else (None, ("held", "unanswered"))
            records.append({"request_id": example.provenance.request_id, "label": example.label,
                            "verdict": verdict, "action": action, "cause": cause})
            if action == "held":
                held.append((example, request, check))
            elif action == "dropped":
                rejections.append(Rejection(example.label, "self_correction_dropped", example.text,
                                            _DROP_DETAIL[cause], example.provenance))
            else:
                kept.append((dataclasses.replace(example, label=verdict) if action == "relabelled" else example, request))
        return Review(kept, rejections, _review_report(records), held)

    def _correct_request(self, task: TaskSpec, example: Example, template: Template) -> Request:
        labels = "\n".join(f"{i}. {s.name}: {s.verbalization}" for i, s in enumerate(task.labels, start=1))
        context = {"output_kind": task.output.kind, "labels": labels,
                   "answer_format": "json" if self.structured_output else "text", "text": example.text.strip()}
        sampling = dataclasses.replace(CORRECT_SAMPLING, seed=derive_seed(task.seed, self.name, "correct"))
        schema = _verdict_schema(task) if self.structured_output else None
        return render_request(f"{self.name}/correct", example.label, (template,), context, sampling, 0, schema)


_DROP_DETAIL = {
    "none": "self-correction found that the text fits none of the labels",
    "unreadable": "self-correction's answer named no single label",
}


def _verdict(check: Request, completion: Completion, task: TaskSpec) -> tuple[str | None, tuple[str, str]]:
    """(label named or None, (action, cause)); never raises."""
    if _says_none(completion.text):
        return None, ("dropped", "none")
    verdict = parse_verdict(check, completion, task)
    if verdict is None:
        return None, ("dropped", "unreadable")
    return verdict, (("kept", "fits") if verdict == check.label else ("relabelled", "fits_other"))


def _says_none(raw: str) -> bool:
    body = strip_fences(raw)
    value = decode_json(body)
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        body = value["label"]
    first = next((filters.normalize(line) for line in body.splitlines() if filters.normalize(line)), "")
    first = re.sub(r"^(?:the )?(?:label|answer|verdict)(?: is)? ", "", first)
    return first in _NONE_ANSWERS or first.startswith(("none ", "neither "))


def _verdict_schema(task: TaskSpec) -> dict[str, Any]:
    enum = [spec.name for spec in task.labels] + [_NONE]
    return object_schema("label", {"type": "string", "enum": enum}, title="verdict")


def _review_report(records: list[dict[str, Any]]) -> dict[str, Any]:
    actions = Counter(r["action"] for r in records)
    moves = Counter(f"{r['label']}->{r['verdict']}" for r in records if r["action"] == "relabelled")
    dropped = Counter(r["cause"] for r in records if r["action"] == "dropped")
    return {"self_correction": "on", "checked": len(records) - actions["held"], "kept": actions["kept"],
            "held_unchecked": actions["held"], "relabelled": actions["relabelled"], "relabelled_by_pair": dict(sorted(moves.items())),
            "dropped": actions["dropped"], "dropped_by_cause": dict(sorted(dropped.items())), "examples": records}


# --- list answers -----------------------------------------------------------------------------------


def parse_list(raw: str) -> list[str]:
    """The items of a list answer (see `answers.read_list`), never raising; not yet deduplicated."""
    return read_list(raw, ITEMS)


def list_items(completion: Completion) -> list[str]:
    """`parse_list` of an answer; a cut-off answer (finish_reason 'length') loses its last, partial item."""
    return whole_items(parse_list(completion.text), completion.finish_reason)
