"""SynthesizRR's refine step: rewrite each retrieved passage into one example of its label.

One request per (label, hit), in the order given. All requests for a label share every token
before the passage, so the llama.cpp server's prefix cache serves that part once per label.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError
from engine.prompts import Template
from engine.strategies.answers import ANSWER_SCHEMA, cut_passage  # ANSWER_SCHEMA is also exported from here
from engine.strategies.base import Strategy, derive_seed, parse_text_answer
from engine.strategies.planning import choose_templates, render_request
from engine.types import Completion, Example, Hit, LabelSpec, Rejection, Request, TaskSpec

__all__ = ["SynthesizRR", "ANSWER_SCHEMA"]

VARIANTS = ("refine", "retricl")
RETRICL_TEMPLATE = "synthesizrr/retricl"
DEMO_TEMPLATE = "synthesizrr/retricl_demo"


class SynthesizRR(Strategy):
    """Retrieve-then-refine.

    Args:
        structured_output: ask for `{"text": ...}` through the endpoint's JSON-schema response
            format (llama-server, vLLM, OpenAI support it; llama-cpp-python's server does not).
        variant: 'refine' (zero-shot rewrite) or 'retricl' (the paper's RetrICL: each seed
            example's top-ranked passages, paired with the seed, become in-context
            demonstrations of "passage -> example of the label"; lower-ranked passages are the
            ones rewritten). A label without seeds runs zero-shot.
        demo_ranks: how many top-ranked passages per seed may become demonstrations (paper: 2).
        demo_min_similarity, demo_max_similarity: the cosine band for demonstrations (paper: 0.5-0.9).
        max_demonstrations: most demonstrations per prompt (rank-1 pairs of every seed first), so
            the prompt fits small context windows; each is a whole passage (~200 tokens).
    """

    name = "synthesizrr"

    def __init__(self, structured_output: bool = False, variant: str = "refine", demo_ranks: int = 2,
                 demo_min_similarity: float = 0.5, demo_max_similarity: float = 0.9, max_demonstrations: int = 4):
        if variant not in VARIANTS:
            raise ConfigError(f"strategy_options.variant={variant!r}; use one of {list(VARIANTS)}")
        if not isinstance(demo_ranks, int) or demo_ranks < 1:
            raise ConfigError(f"strategy_options.demo_ranks={demo_ranks!r} must be a positive integer (paper: 2)")
        if not isinstance(max_demonstrations, int) or max_demonstrations < 1:
            raise ConfigError(f"strategy_options.max_demonstrations={max_demonstrations!r} must be a positive integer")
        if not -1.0 <= demo_min_similarity < demo_max_similarity <= 1.0:
            raise ConfigError("strategy_options.demo_min_similarity must be below demo_max_similarity (paper: 0.5, 0.9)")
        self.structured_output = structured_output
        self.variant = variant
        self.demo_ranks = demo_ranks
        self.demo_band = (demo_min_similarity, demo_max_similarity)
        self.max_demonstrations = max_demonstrations
        self._demos: dict[str, list[tuple[str, str]]] = {}  # label -> [(passage, seed)], set by retrieve()

    def template_names(self, task: TaskSpec) -> tuple[str, ...]:
        if self.variant == "retricl" and task.template == "synthesizrr/refine":
            return tuple(name for name in (task.system_template, RETRICL_TEMPLATE) if name)
        return super().template_names(task)

    def load_templates(self, task: TaskSpec, root=None) -> dict[str, Template]:
        templates = super().load_templates(task, root)
        if self.variant == "retricl":
            from engine.prompts import load_template

            templates[DEMO_TEMPLATE] = load_template(DEMO_TEMPLATE, root)
        return templates

    def retrieve(self, index, task: TaskSpec, per_label: int):
        """Passages to rewrite per label; with RetrICL also the demonstration pairs, kept out of them."""
        from engine.retrieval.retrieve import retrieve_for_task

        if self.variant != "retricl":
            return retrieve_for_task(index, task, per_label)
        self._demos = {spec.name: self._demonstrations(index, task, spec) for spec in task.labels}
        used = {passage for pairs in self._demos.values() for passage, _ in pairs}
        picks, report = retrieve_for_task(index, task, per_label + len(used))
        for spec in task.labels:
            budget = task.retrieval.passage_tokens
            kept = [hit for hit in picks[spec.name] if cut_passage(hit.passage.text, budget) not in used][:per_label]
            picks[spec.name] = [dataclasses.replace(hit, rank=rank) for rank, hit in enumerate(kept, start=1)]
            report.per_label[spec.name]["demonstrations"] = len(self._demos[spec.name])
            report.per_label[spec.name]["picked"] = len(kept)
        return picks, report

    def _demonstrations(self, index, task: TaskSpec, spec: LabelSpec) -> list[tuple[str, str]]:
        low, high = self.demo_band
        ranked = []  # (rank, seed order, pair): every seed's rank-1 pair comes before any rank-2 pair
        for order, seed in enumerate(spec.seeds):
            for hit in index.search(seed, k=self.demo_ranks, mode=task.retrieval.mode):
                if hit.rank <= self.demo_ranks and low <= (hit.cosine or 0.0) <= high:
                    ranked.append((hit.rank, order, (cut_passage(hit.passage.text, task.retrieval.passage_tokens), seed)))
        pairs, seen = [], set()
        for _, _, pair in sorted(ranked, key=lambda item: item[:2]):
            if pair[0] not in seen:  # two seeds finding the same passage: one demonstration
                seen.add(pair[0])
                pairs.append(pair)
        return pairs[:self.max_demonstrations]

    def plan(
        self,
        task: TaskSpec,
        hits_by_label: Mapping[str, list[Hit]],
        templates: Mapping[str, Template],
    ) -> list[Request]:
        """One Request per (label, hit), labels in the order given, hits in retrieval order.

        Raises:
            ConfigError: a label unknown to the task, a template missing from `templates`, or a
                template needing a variable this strategy does not provide.
        """
        chosen = choose_templates(templates, self.template_names(task))
        requests: list[Request] = []
        for label_name, hits in hits_by_label.items():
            label = _label(task, label_name)
            demos = self._demo_text(label.name, templates)
            uses: Counter[str] = Counter()
            for hit in hits:
                sample_index = uses[hit.passage.id]
                uses[hit.passage.id] += 1
                requests.append(self._request(task, label, hit, sample_index, chosen, demos))
        return requests

    def _demo_text(self, label: str, templates: Mapping[str, Template]) -> str:
        """The label's demonstrations rendered with the demo template (empty without RetrICL or seeds)."""
        pairs = self._demos.get(label, []) if self.variant == "retricl" else []
        demo = templates.get(DEMO_TEMPLATE)
        if not pairs or demo is None:
            return ""
        rendered = [demo.render(n=i, passage=passage, example=seed)[-1][1].strip()
                    for i, (passage, seed) in enumerate(pairs, start=1)]
        return "\n\n".join(rendered)

    def _request(self, task: TaskSpec, label: LabelSpec, hit: Hit, sample_index: int,
                 templates: tuple[Template, ...], demos: str = "") -> Request:
        seed = derive_seed(task.seed, self.name, label.name, hit.passage.id, sample_index)
        sampling = dataclasses.replace(task.sampling, seed=seed)
        schema = ANSWER_SCHEMA if self.structured_output else None
        return render_request(self.name, label.name, templates, self._context(task, label, hit, demos), sampling,
                              sample_index, schema, hit)

    def _context(self, task: TaskSpec, label: LabelSpec, hit: Hit, demos: str = "") -> dict[str, Any]:
        # Every variable a refine template may use; a template declares the subset it needs.
        return {
            "task_name": task.name,
            "task_description": task.description,
            "label": label.name,
            "verbalization": label.verbalization,
            "seed_examples": "\n".join(f"- {seed}" for seed in label.seeds),
            "output_kind": task.output.kind,
            "min_words": task.output.min_words,
            "max_words": task.output.max_words,
            "answer_format": "json" if self.structured_output else "text",
            "passage": cut_passage(hit.passage.text, task.retrieval.passage_tokens),
            "demonstrations": "few" if demos else "zero",
            "examples": demos,
        }

    def parse(self, request: Request, completion: Completion, task: TaskSpec) -> Example | Rejection:
        """Clean the answer and run the filters; an Example, or a Rejection with reason and detail."""
        passage = request.hit.passage.text if request.hit else None
        return parse_text_answer(request, completion, task.output, passage)


def _label(task: TaskSpec, name: str) -> LabelSpec:
    try:
        return task.label(name)
    except KeyError:
        known = [spec.name for spec in task.labels]
        raise ConfigError(
            f"hits were given for label {name!r}, which task {task.name!r} does not have; labels: {known}"
        ) from None
