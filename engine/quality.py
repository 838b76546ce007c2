"""Quality filters on generated examples, run on each round's new examples (so what they drop is topped up).

- near_duplicate: MinHash LSH (the `datasketch` library) over word 3-shingles; an example whose
  estimated Jaccard similarity to an earlier kept example is at least `near_duplicate` (default
  0.7: the same sentence with a word or two changed) is dropped, whatever its label. Exact copies
  are caught before this by `filters.Deduper`.
- leaks_reference: with a reference set (`--reference FILE`, e.g. the test split a student will be
  scored on), an example sharing at least 70 % of the 3-shingles of the smaller of it and a
  reference row is dropped, and retrieval drops passages that contain a reference row that way,
  so such a passage never reaches a prompt.
- ungrounded_entity: named entities (people, organisations, places, events, products...) in an
  example written from a passage must appear in that passage or in the task's own text (label
  names, verbalizations, description); an invented one ("George W. Bush" in a rewrite of a 1987
  story quoting Weinberger) is flagged, and by the `grounding: drop` policy the example is dropped.
  The seeds do not count: a rewrite retells its passage, so "Darfur" taken from a seed that a
  RetrICL or `synthesizrr/seeded` prompt showed is as invented as any other name.
  Examples without a passage (label-only strategies) are not checked: they have no source to be
  faithful to.

- stock_phrases: a phrase (word 4-gram) is stock once 2 kept examples use it; an example more
  than `stock_phrases` of whose distinct 4-grams are stock is dropped: a model that closes every
  review with "I highly recommend this movie to anyone who" writes a set that teaches one phrase,
  not a task. Human text sits low (benchmarks/bench_stock_phrases.py): in 242 human IMDb reviews,
  the size of set the IMDb suite gathers, 0.04 drops 1 or 2 and 0.05 at most 1; in 1,000, each
  checked against all before it, the median share is 0.009 and 0.05 drops 34, 0.15 drops 1. The
  check is against every label's kept examples (a stock phrase is stock whatever label it serves),
  in plan order, so a resumed run drops the same examples.

Every filter is counted in the run manifest (`stages.quality`) and the end summary.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from engine.types import Example, Rejection, Request, TaskSpec

__all__ = ["NearDuplicateIndex", "ReferenceGuard", "StockPhrases", "QualityChecks", "GROUNDED_TYPES", "shingles"]

GROUNDED_TYPES = frozenset({"PERSON", "ORG", "GPE", "LOC", "NORP", "FAC", "EVENT", "PRODUCT", "WORK_OF_ART", "LAW"})
_STOP = frozenset({"the", "a", "an", "of", "and", "for", "in", "on", "at", "to", "de", "la", "s"})

Extractor = Callable[[Sequence[str]], list[list[tuple[str, str]]]]


def shingles(text: str, n: int = 3) -> set[bytes]:
    """Word n-grams of the lower-cased text (the whole text when it is shorter than n words)."""
    return set(_ngrams(re.findall(r"\w+", text.lower()), n))


def _ngrams(words: list[str], n: int) -> list[bytes]:
    """The word n-grams in order (the whole text as one when it is shorter than n words)."""
    if len(words) < n:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)]


class NearDuplicateIndex:
    """MinHash LSH over texts: `near(text)` says whether an added text is probably within the threshold."""

    def __init__(self, threshold: float = 0.7, num_perm: int = 128):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch(sorted(shingles(text)))
        return m

    def near(self, text: str) -> list[str]:
        """Keys of added texts whose estimated Jaccard similarity reaches the threshold."""
        if not self._count or not shingles(text):
            return []
        return list(self._lsh.query(self._minhash(text)))

    def add(self, key: str, text: str) -> None:
        if shingles(text) and key not in self._lsh:
            self._lsh.insert(key, self._minhash(text))
            self._count += 1


class ReferenceGuard:
    """Rows no example may copy and no prompt may carry, matched by word 3-shingle containment.

    A text leaks a row when the row's shingles shared with it make up at least `threshold` of the
    smaller of the two shingle sets: a passage that quotes a short test row, or an example that
    restates one, is caught even though their Jaccard similarity is low. An inverted index from
    shingle to rows makes a check cost one lookup per shingle of the text.
    """

    def __init__(self, rows: Iterable[str], threshold: float = 0.7):
        self.threshold = threshold
        self._sizes: list[int] = []
        self._rows_of: dict[bytes, list[int]] = {}
        for row, text in enumerate(rows):
            grams = shingles(text)
            self._sizes.append(len(grams))
            for gram in grams:
                self._rows_of.setdefault(gram, []).append(row)

    def __len__(self) -> int:
        return len(self._sizes)

    def near(self, text: str) -> list[int]:
        """Rows this text leaks (indexes into the reference rows)."""
        grams = shingles(text)
        shared: Counter[int] = Counter(row for gram in grams for row in self._rows_of.get(gram, ()))
        return [row for row, n in shared.items() if n >= self.threshold * max(1, min(len(grams), self._sizes[row]))]


class StockPhrases:
    """Word 4-grams and how many kept examples use each; `share(text)` is the part of a text's
    distinct 4-grams that at least `uses` kept examples already hold."""

    def __init__(self, uses: int = 2, n: int = 4):
        self.uses, self.n = uses, n
        self._count: Counter[bytes] = Counter()

    def share(self, text: str) -> tuple[float, list[str]]:
        """(share of the text's distinct 4-grams that are stock, the stock passages of the text in
        order: overlapping stock 4-grams joined, so a reused closing sentence shows whole)."""
        words = re.findall(r"\w+", text.lower())
        ordered = _ngrams(words, self.n)
        grams = set(ordered)
        stock = {g for g in grams if self._count[g] >= self.uses}
        if not stock:
            return 0.0, []
        covered = [False] * len(words)
        for i, gram in enumerate(ordered if len(words) >= self.n else []):  # a shorter text shows no passage
            if gram in stock:
                covered[i:i + self.n] = [True] * self.n
        spans, start = [], None
        for i, flag in enumerate([*covered, False]):
            if flag and start is None:
                start = i
            elif not flag and start is not None:
                spans.append(" ".join(words[start:i]))
                start = None
        return len(stock) / len(grams), spans

    def add(self, text: str) -> None:
        self._count.update(shingles(text, self.n))


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower().replace(".", "")))


class QualityChecks:
    """The filters above, applied one example at a time in plan order.

    Args:
        task: gives the policy (`task.quality`) and the task's own text for the grounding check.
        reference: a ReferenceGuard of reference rows, or None.
        extractor: texts -> [[(entity, type)]] (e.g. `engine.metrics.entities.spacy_extractor()`);
            called only when grounding is on and an example has a passage; built lazily.
    """

    def __init__(self, task: TaskSpec, reference: ReferenceGuard | None = None,
                 extractor: Callable[[], Extractor] | None = None):
        self.params = task.quality
        self.reference = reference
        self._near = NearDuplicateIndex(self.params.near_duplicate) if self.params.near_duplicate > 0 else None
        self._stock = StockPhrases() if self.params.stock_phrases > 0 else None
        self._make_extractor, self._extractor = extractor, None
        self._task_tokens = _tokens(" ".join([task.description, task.output.kind,
                                              *(f"{s.name} {s.verbalization}" for s in task.labels)]))
        self.counts: Counter[str] = Counter()
        self.grounding = {"checked": 0, "ungrounded": 0, "entities": 0, "ungrounded_entities": 0}
        self._entities: dict[str, list[tuple[str, str]]] = {}  # a round's examples, tagged in one batch

    @property
    def tags_entities(self) -> bool:
        """True when the grounding check tags entities (so tagging early saves time)."""
        return self.params.grounding != "off" and self._make_extractor is not None

    def prefetch(self, pairs: list[tuple[Example, Request]]) -> None:
        """Tag the entities of a round's examples in one batch before they are checked one by one.

        spaCy costs about 90 ms per single-text call and a few ms per text in a batch: checked one at
        a time, a round of 100 examples spent 9 s here while no request was in flight.
        """
        if self.params.grounding == "off" or self._make_extractor is None:
            return
        texts = list(dict.fromkeys(e.text for e, r in pairs if r.hit is not None and e.text not in self._entities))
        if texts:
            self._entities.update(zip(texts, self._tagger()(texts)))

    def check(self, example: Example, request: Request) -> Rejection | None:
        """A Rejection (leaks_reference, near_duplicate, stock_phrases, ungrounded_entity) or None; a kept
        example is remembered."""
        leaked = self.reference.near(example.text) if self.reference is not None else []
        if leaked:
            return self._reject(example, "leaks_reference", f"near-duplicates reference row {leaked[0]}")
        if self._near is not None:
            close = self._near.near(example.text)
            if close:
                return self._reject(example, "near_duplicate", f"near-duplicates example {close[0]}")
        if self._stock is not None:
            share, phrases = self._stock.share(example.text)
            if share > self.params.stock_phrases:
                shown = ", ".join(f'"{p}"' for p in sorted(phrases, key=len, reverse=True)[:3])
                return self._reject(example, "stock_phrases", f"{share:.0%} of its 4-word phrases are each in 2 or more "
                                                              f"kept examples (over {self.params.stock_phrases:.0%}): {shown}")
        invented = self._ungrounded(example, request)
        if invented and self.params.grounding == "drop":
            return self._reject(example, "ungrounded_entity", "not in the passage or the task: " + ", ".join(invented))
        if self._near is not None:
            self._near.add(example.provenance.request_id + "|" + example.text[:40], example.text)
        if self._stock is not None:
            self._stock.add(example.text)
        return None

    def _tagger(self) -> Extractor:
        """The entity tagger, built on first use (loading spaCy's model takes a second or two)."""
        if self._extractor is None:
            self._extractor = self._make_extractor()
        return self._extractor

    def _reject(self, example: Example, reason: str, detail: str) -> Rejection:
        self.counts[reason] += 1
        return Rejection(example.label, reason, example.text, detail, example.provenance)

    def _ungrounded(self, example: Example, request: Request) -> list[str]:
        if self.params.grounding == "off" or request.hit is None or self._make_extractor is None:
            return []
        tagged = self._entities.pop(example.text, None)
        if tagged is None:
            tagged = self._tagger()([example.text])[0]
        entities = [text for text, kind in tagged if kind in GROUNDED_TYPES]
        source = _tokens(request.hit.passage.text) | self._task_tokens
        invented = [e for e in dict.fromkeys(entities) if not (_tokens(e) - _STOP) & source and _tokens(e) - _STOP]
        self.grounding["checked"] += 1
        self.grounding["entities"] += len(entities)
        self.grounding["ungrounded_entities"] += len(invented)
        self.grounding["ungrounded"] += bool(invented)
        if invented:
            self.counts["ungrounded_flagged"] += 1
        return invented

    def report(self) -> dict:
        """Counts per filter and the ungrounded-entity rate (examples with an invented entity / checked)."""
        checked = self.grounding["checked"]
        return {
            "near_duplicate_threshold": self.params.near_duplicate, "grounding_policy": self.params.grounding,
            "stock_phrases_threshold": self.params.stock_phrases,
            "reference_rows": len(self.reference) if self.reference is not None else 0,
            "dropped": {k: v for k, v in self.counts.items() if k != "ungrounded_flagged"},
            "grounding": {**self.grounding,
                          "ungrounded_rate": round(self.grounding["ungrounded"] / checked, 4) if checked else None},
        }
