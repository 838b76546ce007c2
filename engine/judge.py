"""Label verification inside the rounds: after each round, an LLM judge names the label each new
example fits (`engine.verify` builds and reads the judge's requests); the task's policy keeps,
drops or relabels it, so what is dropped is topped up by the next round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.calls import OnProgress, Progress, call_all
from engine.llm.runner import ChatLLM
from engine.types import Example, Request, TaskSpec

if TYPE_CHECKING:  # the rounds' record, which the judge adds its rejections and held-back requests to
    from engine.cache import CachedJournal
    from engine.journal import Journal
    from engine.plan import SynthOptions
    from engine.rounds import Outcomes

__all__ = ["RoundJudge"]


class RoundJudge:
    """Label verification round by round: an LLM judge says which label fits each new example."""

    def __init__(self, task: TaskSpec, llm: ChatLLM, journal: Journal | CachedJournal, options: SynthOptions,
                 progress: Progress, on_progress: OnProgress | None) -> None:
        from engine.prompts import load_template
        from engine.verify import JUDGE_TEMPLATE

        self.task, self.llm, self.journal, self.options = task, llm, journal, options
        self.progress, self.on_progress = progress, on_progress
        self.template = load_template(JUDGE_TEMPLATE, options.prompts_dir)
        self.judged: list[Example] = []
        self.verdicts: list[str | None] = []

    def check(self, pairs: list[tuple[Example, Request]], outcomes: Outcomes) -> list[tuple[Example, Request]]:
        """Apply the task's policy to `pairs`; dropped ones become rejections in `outcomes`.

        A judge call that failed after retries counts as an unreadable verdict. An example whose judge
        call the token or cost cap held back is held back with it (its generation request goes to
        `outcomes.unsent`), so a re-run with a larger cap checks it instead of dropping it.
        """
        from engine.verify import apply_policy, parse_verdict, plan_verification

        if not pairs:
            return []
        requests = plan_verification(self.task, [example for example, _ in pairs], self.template,
                                     self.options.structured_output)
        answers = call_all(requests, self.llm, self.journal, self.options.concurrency, self.progress,
                           self.on_progress, budgeted=False)
        held = [r.id in self.progress.unsent for r in requests]
        outcomes.unsent.extend(request for (_, request), h in zip(pairs, held) if h)
        pairs = [pair for pair, h in zip(pairs, held) if not h]
        requests = [r for r, h in zip(requests, held) if not h]
        examples = [example for example, _ in pairs]
        if not pairs:
            return []
        verdicts = [parse_verdict(r, answers[r.id], self.task) if r.id in answers else None for r in requests]
        self.judged.extend(examples)
        self.verdicts.extend(verdicts)
        outcomes.verdicts.update({(e.provenance.request_id, e.text): v for e, v in zip(examples, verdicts)})
        result = apply_policy(examples, verdicts, self.task.verify)
        outcomes.rejections.extend(result.rejections)
        kept = iter(result.kept)
        return [(next(kept), request) for (_, request), record in zip(pairs, result.records) if record.action != "dropped"]

    def summary(self) -> dict | None:
        """Agreement and actions over every example judged in the run."""
        from engine.verify import apply_policy

        return apply_policy(self.judged, self.verdicts, self.task.verify).summary() if self.judged else None
