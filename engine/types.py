"""Frozen value types shared by every stage of Seedbed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Passage",
    "Hit",
    "LabelSpec",
    "OutputSpec",
    "SamplingParams",
    "RetrievalParams",
    "TaskSpec",
    "Completion",
    "Provenance",
    "Example",
    "Rejection",
    "Request",
]


@dataclass(frozen=True)
class Passage:
    """One chunk of a corpus document, as stored in an index."""

    id: str
    text: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Hit:
    """A passage returned by a search, with its score and 1-based rank.

    `cosine` is the dense cosine similarity to the query when known (hybrid and dense modes),
    used by the similarity band in retrieval.
    """

    passage: Passage
    score: float
    rank: int
    query: str = ""
    cosine: float | None = None


@dataclass(frozen=True)
class LabelSpec:
    """A label, what it means in words, optional human seed examples, and optional retrieval queries.

    `queries` only steer retrieval (e.g. the beats a broad label covers: "oil and energy prices",
    "airlines"); no prompt shows them.
    """

    name: str
    verbalization: str
    seeds: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    """What each synthetic example is: its kind (e.g. 'news headline') and its length bounds."""

    kind: str
    min_words: int = 3
    max_words: int = 60
    # An answer over max_words, or cut off at max_tokens, keeps its whole sentences that fit
    # (provenance `trimmed`) instead of being rejected as too_long / truncated.
    fit_sentences: bool = True


@dataclass(frozen=True)
class SamplingParams:
    """LLM sampling parameters; `seed` makes a request reproducible where the server honours it."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 128
    seed: int = 0
    # Server-specific sampling parameters sent in the request body as they are (llama.cpp's min_p,
    # xtc_probability, dry_multiplier; vLLM's min_p, repetition_penalty): sorted (name, value) pairs.
    extra: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The parameters as sent; `extra` only when set, so ids made before it existed stay the same."""
        out: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """The inverse of `as_dict`."""
        values = dict(data)
        extra = values.pop("extra", None) or {}
        return cls(**values, extra=tuple(sorted(extra.items())))


@dataclass(frozen=True)
class RetrievalParams:
    """How passages are picked per label (defaults from the SynthesizRR paper)."""

    min_similarity: float = 0.4
    max_similarity: float = 0.9
    candidates: int = 200
    mode: str = "hybrid"
    mmr_lambda: float = 0.5
    # What MMR calls relevance: the cosine to the query (the paper), the label-assignment margin,
    # or both summed ("both" prefers passages that are near the label and far from the others).
    mmr_relevance: str = "cosine"
    max_reuse: int = 1
    # Label assignment: a candidate is kept for label y only when its similarity to y's queries
    # beats its similarity to every other label's queries by at least this margin (measured by
    # benchmarks/bench_label_margin.py); assign_labels=False turns the check off.
    assign_labels: bool = True
    label_margin: float = 0.05
    # How far below min_similarity the lower bound may be relaxed when a label has too few
    # passages (in steps of 0.05; every relaxation is reported). 0, the default, never relaxes:
    # passages far from every label's queries have a margin over the others without being about any.
    relax_limit: float = 0.0
    # The longest passage a prompt carries, in tokens (about 4 characters each), cut at a sentence
    # end: the paper caps at 400; a one-sentence summary needs far less, and prompt tokens are what
    # a CPU server spends its time on.
    passage_tokens: int = 400
    # Ask the LLM one short yes/no question per passage before rewriting it (engine/retrieval/screen.py):
    # "is it mainly about this label rather than the others?"; a "no" keeps it out of every prompt.
    screen: bool = False


@dataclass(frozen=True)
class QualityParams:
    """Filters on generated examples (see engine/quality.py).

    Attributes:
        near_duplicate: MinHash Jaccard threshold for near-duplicates and reference leaks (0 turns
            near-duplicate removal off; a reference set is still checked).
        grounding: ungrounded named entities: drop the example, flag (count) only, or off.
        confidence_keep: the cartography filter (engine/cartography.py): the fraction of each
            label's examples kept, by a student's confidence in their label (paper: 0.83; 0: off).
            A run gathers examples_per_label / confidence_keep per label first, so the filter ends
            at the target (`TaskSpec.gathered_per_label`).
        stock_phrases: drop an example when more than this share of its distinct word 4-grams are
            each in 2 or more kept examples (0: off; 1 or 2 of 242 human IMDb reviews exceed 0.04).
    """

    near_duplicate: float = 0.0  # opt-in (0.7 recommended, the AG News spec sets it)
    grounding: str = "drop"
    confidence_keep: float = 0.0
    stock_phrases: float = 0.0


@dataclass(frozen=True)
class TaskSpec:
    """A synthesis task: labels, output kind, how many examples, and how to sample."""

    name: str
    labels: tuple[LabelSpec, ...]
    output: OutputSpec
    examples_per_label: int = 10
    strategy: str = "synthesizrr"
    template: str = "synthesizrr/refine"
    system_template: str = "system"
    sampling: SamplingParams = SamplingParams()
    retrieval: RetrievalParams = RetrievalParams()
    seed: int = 0
    description: str = ""
    strategy_options: dict[str, Any] = field(default_factory=dict)
    verify: str = ""  # "" (off), "drop", "relabel" or "keep": the label-verification policy
    # What makes the labels the corpus cannot support: "" stops the run before any call (naming
    # them), or a label-only strategy ("attrprompt", "fewgen") run for those labels in the same run.
    fallback: str = ""
    fallback_options: dict[str, Any] = field(default_factory=dict)
    quality: QualityParams = QualityParams()

    @property
    def gathered_per_label(self) -> int:
        """Examples a run gathers per label before the confidence filter: `examples_per_label`, or
        that over `quality.confidence_keep` (rounded up) so the filter's cut ends at the target."""
        keep = self.quality.confidence_keep
        return math.ceil(self.examples_per_label / keep - 1e-9) if keep else self.examples_per_label

    def label(self, name: str) -> LabelSpec:
        for spec in self.labels:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True)
class Completion:
    """One answer from an LLM endpoint."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    # Prompt tokens the server took from its prefix (KV) cache instead of evaluating them; None when
    # the endpoint does not say (OpenAI's usage.prompt_tokens_details.cached_tokens, llama-server's too).
    cached_tokens: int | None = None

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "Completion":
        """A completion from its `dataclasses.asdict` form, as the journal, the cache and Ray workers store
        it; keys this version does not know (a newer writer's) are ignored."""
        return cls(**{key: value for key, value in fields.items() if key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Provenance:
    """Where a synthetic example came from: enough to reproduce or audit it."""

    passage_id: str | None
    retrieval_score: float | None
    retrieval_rank: int | None
    cosine: float | None
    query: str | None
    template_id: str
    template_sha256: str
    model: str
    sampling: dict[str, Any]
    seed: int
    prompt_tokens: int
    completion_tokens: int
    request_id: str = ""
    # What a label-only request was grounded in instead of a passage: attrprompt's drawn attributes,
    # targen's context and seed ({name: value}); None when there is nothing beyond the passage.
    grounding: dict[str, str] | None = None
    trimmed: bool = False  # whole sentences kept within max_words, or a cut-off last sentence dropped
    cached_tokens: int | None = None  # of prompt_tokens, those the server served from its prefix cache


@dataclass(frozen=True)
class Example:
    """A kept synthetic example."""

    text: str
    label: str
    provenance: Provenance


@dataclass(frozen=True)
class Rejection:
    """A model answer that was not kept, with the reason (a short stable code) and the raw text."""

    label: str
    reason: str
    raw: str
    detail: str = ""
    provenance: Provenance | None = None


@dataclass(frozen=True)
class Request:
    """One planned LLM call: rendered messages plus what is needed to build provenance.

    `id` is a content hash of everything that determines the answer (messages, model-free
    sampling parameters, sample index), so the same request is never paid for twice.
    """

    id: str
    label: str
    messages: tuple[tuple[str, str], ...]
    template_id: str
    template_sha256: str
    sampling: SamplingParams
    hit: Hit | None = None
    sample_index: int = 0
    json_schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # (name, value) pairs the messages were built from besides a passage, for provenance; the
    # messages already hold them, so they are not part of the id.
    grounding: tuple[tuple[str, str], ...] = field(default=(), compare=False, hash=False)

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]
