"""Retrieval screening (`retrieval.screen: true`): one short yes/no LLM question per retrieved
passage before it is rewritten: is it about this label?

Label assignment (engine/retrieval/retrieve.py) compares embeddings; the screen asks the model that will do
the rewriting, and a "no" keeps the passage out of every prompt (the next retrieved passage takes
its place). The question is greedy, a few tokens, and its request id is a content hash: answers are
journalled and cached like every call, so a resumed run or a second run over the same index asks
nothing again. An answer that is neither yes nor no keeps the passage (it is counted): label
assignment already vetted it, and noise is not evidence against it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable

from engine.calls import Progress, call_all
from engine.strategies.answers import cut_passage
from engine.ids import derive_seed, request_id
from engine.types import Completion, Hit, Request, SamplingParams, TaskSpec

__all__ = ["SCREEN_TEMPLATE", "SCREEN_SAMPLING", "plan_screen", "parse_answer", "Screen"]

SCREEN_TEMPLATE = "retrieval/screen"
SCREEN_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=4, seed=0)
_NAMESPACE = "screen"
_ANSWER = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def plan_screen(task: TaskSpec, label: str, hits: list[Hit], template) -> list[Request]:
    """One yes/no request per hit, in order; the passage is cut as the refine prompt cuts it."""
    spec = next(s for s in task.labels if s.name == label)
    sampling = dataclasses.replace(SCREEN_SAMPLING, seed=derive_seed(task.seed, _NAMESPACE))
    requests = []
    for hit in hits:
        messages = template.render_from({
            "label": spec.verbalization or spec.name,
            "passage": cut_passage(hit.passage.text, task.retrieval.passage_tokens),
        })
        rid = request_id(_NAMESPACE, template.sha256, messages, sampling, 0)
        requests.append(Request(rid, label, messages, template.id, template.sha256, sampling, hit=hit))
    return requests


def parse_answer(completion: Completion | None) -> bool | None:
    """True for yes, False for no, None when the answer is neither (or the call failed)."""
    if completion is None:
        return None
    match = _ANSWER.match(completion.text or "")
    return None if match is None else match.group(1).lower() == "yes"


@dataclass
class Screen:
    """Screens retrieved passages for a run and counts the answers per label."""

    task: TaskSpec
    llm: object
    journal: object
    options: object
    progress: Progress
    on_progress: Callable | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self):
        from engine.prompts import load_template

        self.template = load_template(SCREEN_TEMPLATE, getattr(self.options, "prompts_dir", None))

    def keep(self, windows: dict[str, list[Hit]]) -> dict[str, list[Hit]]:
        """The hits of each label's window the model says belong to the label, in order (one batch)."""
        planned = {label: plan_screen(self.task, label, hits, self.template) for label, hits in windows.items() if hits}
        requests = [request for batch in planned.values() for request in batch]
        answers = call_all(requests, self.llm, self.journal, self.options.concurrency, self.progress,
                           self.on_progress, budgeted=False) if requests else {}
        kept: dict[str, list[Hit]] = {}
        for label, batch in planned.items():
            count = self.counts.setdefault(label, {"screened": 0, "yes": 0, "no": 0, "unreadable": 0})
            kept[label] = []
            for request in batch:
                verdict = parse_answer(answers.get(request.id))
                count["screened"] += 1
                count["yes" if verdict else "no" if verdict is False else "unreadable"] += 1
                if verdict is not False:
                    kept[label].append(request.hit)
        return kept

    def report(self) -> dict[str, dict[str, int]]:
        """Per label: passages screened, answered yes / no, and unreadable answers (kept)."""
        return {label: dict(count) for label, count in self.counts.items()}
