"""SynthesizRR's refine step: rewrite each retrieved passage into one example of its label.

One request per (label, hit), in the order given. All requests for a label share every token
before the passage, so the llama.cpp server's prefix cache serves that part once per label.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from engine import filters
from engine.errors import ConfigError
from engine.prompts import Template
from engine.strategies.answers import ANSWER_SCHEMA, cut_passage  # ANSWER_SCHEMA is also exported from here
from engine.strategies.base import Strategy, derive_seed, parse_text_answer
from engine.strategies.planning import choose_templates, render_request
from engine.types import Completion, Example, Hit, LabelSpec, Rejection, Request, TaskSpec

__all__ = ["SynthesizRR", "ANSWER_SCHEMA"]

log = logging.getLogger(__name__)

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
        demo_ranks: how many of the passages closest to a seed may become demonstrations (paper: 2).
            They are chosen among the label's picks (in its band, assigned to it), not from a
            search of the whole index, whose top hits for a seed may belong to another label.
        demo_min_similarity, demo_max_similarity: the seed-passage cosine band for demonstrations;
            by default the task's retrieval band. The paper's 0.5-0.9 is for Contriever: with
            MiniLM a seed's best passage in the news mix lies at cosine 0.18-0.49, so 0.5 left every
            label of the AG News spec without a single demonstration. A label with seeds and no
            demonstration in the band is logged and runs zero-shot.
        max_demonstrations: most demonstrations per prompt (rank-1 pairs of every seed first), so
            the prompt fits small context windows; each is a whole passage (~200 tokens).
    """

    name = "synthesizrr"

    def __init__(self, structured_output: bool = False, variant: str = "refine", demo_ranks: int = 2,
                 demo_min_similarity: float | None = None, demo_max_similarity: float | None = None,
                 max_demonstrations: int = 4):
        if variant not in VARIANTS:
            raise ConfigError(f"strategy_options.variant={variant!r}; use one of {list(VARIANTS)}")
        if not isinstance(demo_ranks, int) or demo_ranks < 1:
            raise ConfigError(f"strategy_options.demo_ranks={demo_ranks!r} must be a positive integer (paper: 2)")
        if not isinstance(max_demonstrations, int) or max_demonstrations < 1:
            raise ConfigError(f"strategy_options.max_demonstrations={max_demonstrations!r} must be a positive integer")
        for name, bound in (("demo_min_similarity", demo_min_similarity), ("demo_max_similarity", demo_max_similarity)):
            if bound is not None and (not isinstance(bound, (int, float)) or not -1.0 <= bound <= 1.0):
                raise ConfigError(f"strategy_options.{name}={bound!r} must be a cosine between -1 and 1, or left out "
                                  "for the task's retrieval band")
        if demo_min_similarity is not None and demo_max_similarity is not None and demo_min_similarity >= demo_max_similarity:
            raise ConfigError("strategy_options.demo_min_similarity must be below demo_max_similarity")
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
        """Passages to rewrite per label; with RetrICL also the demonstration pairs, taken out of them."""
        from engine.retrieval.retrieve import retrieve_for_task

        if self.variant != "retricl":
            return retrieve_for_task(index, task, per_label)
        picks, report = retrieve_for_task(index, task, per_label + self.max_demonstrations)
        self._demos = {}
        for spec in task.labels:
            self._demos[spec.name], used = self._demonstrations(index, task, spec, picks[spec.name])
            kept = [hit for hit in picks[spec.name] if hit.passage.id not in used][:per_label]
            picks[spec.name] = [dataclasses.replace(hit, rank=rank) for rank, hit in enumerate(kept, start=1)]
            counts = report.per_label[spec.name]
            counts["demonstrations"] = len(self._demos[spec.name])
            counts["assigned"] = max(0, counts["assigned"] - len(used))  # coverage counts what is left to rewrite
            counts["picked"] = len(kept)
        return picks, report

    def drop_demonstrations(self, near) -> dict[str, int]:
        dropped = {}
        for label, pairs in self._demos.items():
            clean = [(passage, seed) for passage, seed in pairs if not near(passage)]
            dropped[label], self._demos[label] = len(pairs) - len(clean), clean
        return dropped

    def _demonstrations(self, index, task: TaskSpec, spec: LabelSpec,
                        hits: list[Hit]) -> tuple[list[tuple[str, str]], set[str]]:
        """Each seed's closest passages among the label's own picks (so a demonstration's passage is one the
        label's retrieval accepted: in its band and assigned to it), as (passage, seed) pairs, and their ids."""
        import numpy as np

        low = task.retrieval.min_similarity if self.demo_band[0] is None else self.demo_band[0]
        high = task.retrieval.max_similarity if self.demo_band[1] is None else self.demo_band[1]
        if not spec.seeds or not hits:
            return [], set()
        cosines = index.embed_queries(list(spec.seeds)) @ index.vectors([index.row_of(h.passage.id) for h in hits]).T
        ranked = []  # (rank, seed order, hit): every seed's rank-1 pair comes before any rank-2 pair
        for order, row in enumerate(cosines):
            closest = [j for j in np.argsort(-row, kind="stable") if low <= row[j] <= high][:self.demo_ranks]
            ranked += [(rank, order, j) for rank, j in enumerate(closest, start=1)]
        pairs, used = [], set()
        for _, order, j in sorted(ranked, key=lambda item: item[:2]):
            if hits[j].passage.id not in used and len(pairs) < self.max_demonstrations:
                used.add(hits[j].passage.id)  # two seeds closest to the same passage: one demonstration
                pairs.append((cut_passage(hits[j].passage.text, task.retrieval.passage_tokens), spec.seeds[order]))
        if not pairs:
            log.warning("RetrICL: label %r has no demonstration (none of its picked passages lies within cosine "
                        "%.2f-%.2f of a seed); it runs zero-shot. Lower strategy_options.demo_min_similarity to give "
                        "it some", spec.name, low, high)
        return pairs, used

    def plan(
        self,
        task: TaskSpec,
        hits_by_label: Mapping[str, list[Hit]],
        templates: Mapping[str, Template],
    ) -> list[Request]:
        """One Request per (label, hit), labels in the order given, hits in retrieval order.

        Raises:
            ConfigError: a label unknown to the task, a template missing from `templates`, a
                template needing a variable this strategy does not provide, or a template showing the
                seed examples (`synthesizrr/seeded`) with a label that has none.
        """
        chosen = choose_templates(templates, self.template_names(task))
        shows_seeds = [t.id for t in chosen if "seed_examples" in t.variables]
        requests: list[Request] = []
        for label_name, hits in hits_by_label.items():
            label = _label(task, label_name)
            if shows_seeds and not label.seeds and hits:
                raise ConfigError(f"label {label.name!r} has no seeds, and template {shows_seeds[0]} shows each label's "
                                  "seed examples: add `seeds:` to the label or use template synthesizrr/refine")
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
        """Clean the answer and run the filters, then reject an answer that repeats the prompt's instructions."""
        passage = request.hit.passage.text if request.hit else None
        prompt = "\n".join(content for _, content in request.messages)
        return parse_text_answer(request, completion, task.output, passage, check=lambda text: _echo(text, prompt, passage or ""))


def _echo(text: str, prompt: str, passage: str) -> tuple[str, str] | None:
    if filters.echoes_prompt(text, prompt, passage):
        return "echoes_prompt", "the answer repeats the prompt's instructions instead of writing the text"
    return None


def _label(task: TaskSpec, name: str) -> LabelSpec:
    try:
        return task.label(name)
    except KeyError:
        known = [spec.name for spec in task.labels]
        raise ConfigError(
            f"hits were given for label {name!r}, which task {task.name!r} does not have; labels: {known}"
        ) from None
