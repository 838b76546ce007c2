"""Checks on one model answer. Each returns a short, stable reason code, or None when the answer passes.

Reason codes (counted and reported per run): empty, refusal, too_short, too_long, truncated,
copy_of_passage, echoes_prompt, mentions_passage, repetitive, duplicate; engine/injection.py adds
follows_passage_instructions.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

from engine.types import Example, OutputSpec, Rejection

__all__ = [
    "Deduper",
    "copy_of_passage",
    "copy_rate",
    "echoes_prompt",
    "empty",
    "first_per_label",
    "mentions_passage",
    "normalize",
    "refusal",
    "repeated_share",
    "repetitive",
    "tokens",
    "too_long",
    "too_short",
    "truncated",
    "word_count",
]

_REFUSAL_WINDOW = 240
_REFUSALS = tuple(
    re.compile(pattern)
    for pattern in (
        r"\bas an ai\b",
        r"\bas an? (?:large )?language model\b",
        r"\bi(?: am|'m) (?:an ai|not able to|unable to)\b",
        r"\bi (?:cannot|can ?not|can't|won't|will not|am not able to)\s+(?:help|assist|fulfil|fulfill|comply|"
        r"provide|create|write|generate|produce|do that|complete|continue|engage)",
        r"^\W*(?:i'm |i am )?sorry,? but (?:i|that|this|your|the request)\b",
        r"^\W*(?:i'm|i am) sorry,? (?:i|we) (?:can't|cannot|am unable|won't)\b",
        r"^\W*i apologi[sz]e\b",
        r"\bi must (?:decline|refuse)\b",
        r"\bagainst (?:my|the|our) (?:guidelines|polic(?:y|ies)|programming)\b",
        # declining by talking about the source instead of writing the example (Qwen 1.5B on an
        # off-label passage: "The passage provides no information about a sports-related event, so
        # no news summary can be generated based on it.")
        r"^\W*(?:the|this)\s+(?:given\s+|provided\s+|above\s+|source\s+)?(?:passage|text|article|document)\s+"
        r"(?:(?:provides?|contains?|has|gives?|offers?) no|does(?: not|n't) (?:contain|mention|provide|describe|discuss|"
        r"relate)|is(?: not|n't) (?:about|related))\b",
        r"\b(?:cannot|can ?not|can't|could not|couldn't) be (?:generated|written|created|produced)\b",
    )
)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, punctuation dropped (the unit of copy and dedup checks)."""
    return re.findall(r"\w+", text.lower())


def word_count(text: str) -> int:
    """Whitespace-separated words, as a reader counts them (the unit of OutputSpec bounds)."""
    return len(text.split())


def empty(text: str) -> str | None:
    """'empty' when the answer has no letter or digit at all."""
    return None if any(ch.isalnum() for ch in text) else "empty"


_PLACEHOLDER = re.compile(r"^\s*[<\[{]\s*(?:the|your|an?|insert)\b[^<>\[\]{}]*[>\]}]\s*$", re.IGNORECASE)


def placeholder(text: str) -> str | None:
    """'placeholder' when the model echoed a template slot (e.g. '<the news headline>') instead of writing."""
    return "placeholder" if _PLACEHOLDER.match(text) else None


def refusal(text: str) -> str | None:
    """'refusal' when the start of the answer reads like a model declining the task."""
    head = text[:_REFUSAL_WINDOW].lower().replace("\u2019", "'").strip()
    return "refusal" if any(pattern.search(head) for pattern in _REFUSALS) else None


def too_short(text: str, spec: OutputSpec) -> str | None:
    """'too_short' below `spec.min_words` words."""
    return "too_short" if word_count(text) < spec.min_words else None


def too_long(text: str, spec: OutputSpec) -> str | None:
    """'too_long' above `spec.max_words` words."""
    return "too_long" if word_count(text) > spec.max_words else None


def truncated(finish_reason: str) -> str | None:
    """'truncated' when the server stopped at max_tokens (finish_reason 'length'): the text is cut off."""
    return "truncated" if finish_reason == "length" else None


def copy_rate(example_text: str, passage_text: str, n: int = 8) -> float:
    """Share of the example's tokens covered by n-grams that also occur in the passage.

    For an example shorter than `n` tokens, n shrinks to its length (the whole example must
    occur in the passage to count). 0.0 for an empty example; 1.0 means fully copied.
    """
    example = tokens(example_text)
    if not example:
        return 0.0
    size = min(n, len(example))
    return _covered_share(example, size, _grams(tokens(passage_text), size).__contains__)


def _covered_share(words: list[str], n: int, marks) -> float:
    """Share of `words` inside an n-word sequence for which `marks(sequence)` is true (0.0 for none)."""
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if marks(tuple(words[i : i + n])):
            covered[i : i + n] = [True] * n
    return sum(covered) / len(words) if words else 0.0


def copy_of_passage(
    text: str, passage: str, threshold: float = 0.8, n: int = 8, min_tokens: int = 4
) -> str | None:
    """'copy_of_passage' when at least `threshold` of the example is copied verbatim in n-grams.

    Examples under `min_tokens` tokens are never flagged: a 3-word phrase in a passage is not a copy.
    """
    if len(tokens(text)) < min_tokens:
        return None
    return "copy_of_passage" if copy_rate(text, passage, n) >= threshold else None


def echoes_prompt(text: str, prompt: str, passage: str = "", threshold: float = 0.2, n: int = 8) -> str | None:
    """'echoes_prompt' when at least `threshold` of the answer repeats the prompt's own wording.

    Counted are n-word spans of the prompt that are not in `passage` (the data the prompt carries, which
    copy_of_passage judges): a small model sometimes hands back the rules it was given, before or
    instead of the text (Qwen2.5-Coder-1.5B did for 11 of its first 54 IMDb edits). Answers under n
    words are never flagged.
    """
    words = tokens(text)
    if len(words) < n:
        return None
    grams = _grams(tokens(prompt), n) - _grams(tokens(passage), n)
    return "echoes_prompt" if grams and _covered_share(words, n, grams.__contains__) >= threshold else None


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


_MENTIONS_PASSAGE = re.compile(
    r"\b(?:the|this|that|given|provided|original|above)\s+(?:given\s+|provided\s+|original\s+|above\s+)?passage'?s?\b(?!\s+of\b)"
    r"|\bthe\s+(?:given|provided|original|above)\s+(?:text|article|post)\b"
    # a review retold from outside: "The reviewer finds...", "The film review expresses a positive opinion"
    r"|\bthe\s+(?:reviewer|writer|author)\s+(?:\w+\s+){0,2}?(?:expresses|finds|found|believes|appreciates|criticizes"
    r"|criticises|praises|states|feels|enjoyed|disliked|mentions|suggests|recommends|describes|notes)\b"
    r"|\bthe\s+(?:film\s+|movie\s+)?review\s+(?:expresses|begins|states|focuses|describes|praises|criticizes|mentions"
    r"|suggests|is\s+(?:positive|negative|favou?rable|unfavou?rable))\b", re.IGNORECASE)


def mentions_passage(text: str) -> str | None:
    """'mentions_passage' when a rewrite talks about its source ("The passage discusses...", "The reviewer
    finds the film...") instead of being an example itself: 11 of 400 synthesizrr AG News examples did
    (news-mix, 2026-12-06), and 7 of 199 synthesizrr and 5 of 200 fewgen IMDb reviews told a review from
    outside (2026-12-07); the filter flags 10 of the 25,000 human IMDb test reviews and 0 of the 7,600 AG
    News test rows."""
    return "mentions_passage" if _MENTIONS_PASSAGE.search(text) else None


REPEAT_N = 5  # words per sequence that `repetitive` looks for twice
REPEAT_MAX = 0.4  # most of an answer's words that may sit in such repeats


def repeated_share(text: str, n: int = REPEAT_N) -> float:
    """Share of the text's tokens inside an n-token sequence that occurs in it more than once (the
    duplicate n-gram fraction of Gopher's quality rules, in tokens rather than characters)."""
    return _repeated_share(tokens(text), n)


def _repeated_share(words: list[str], n: int) -> float:
    seen = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return _covered_share(words, n, lambda gram: seen[gram] > 1)


def repetitive(text: str, threshold: float = REPEAT_MAX, min_tokens: int = 4 * REPEAT_N) -> str | None:
    """'repetitive' when more than `threshold` of the answer repeats itself: a small model's decoding
    loop ("I am an 11-year-old boy who has never seen this movie again." nine times in one IMDb
    review, 2026-12-06). Measured with n = 5 on human text: 3 of 5,000 IMDb test reviews exceed
    0.4; 3 of 200 synthesizrr and 2 of 200 fewgen IMDb reviews did. Answers under `min_tokens`
    tokens are never flagged."""
    words = tokens(text)
    if len(words) < min_tokens:
        return None
    return "repetitive" if _repeated_share(words, REPEAT_N) > threshold else None


def normalize(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form used for exact dedup."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(tokens(folded))


def first_per_label(pairs: list[tuple[Example, Any]], limit: int, why: str) -> tuple[list[tuple[Example, Any]], list[Rejection]]:
    """The first `limit` (example, request) pairs of each label, in order; the rest as `surplus` rejections."""
    kept, surplus, have = [], [], {}
    for example, request in pairs:
        have[example.label] = have.get(example.label, 0) + 1
        if have[example.label] <= limit:
            kept.append((example, request))
        else:
            surplus.append(Rejection(example.label, "surplus", example.text, why, example.provenance))
    return kept, surplus


class Deduper:
    """Remembers the normalised examples seen so far; `check` flags exact duplicates.

    Stores a 16-byte digest per example, so memory grows with the dataset and nothing else.

    Args:
        existing: examples already kept (e.g. from a resumed run), counted as seen.
        per_label: when True, the same text under two labels is not a duplicate.
    """

    def __init__(self, existing: Iterable[tuple[str, str]] = (), *, per_label: bool = False):
        self.per_label = per_label
        self._seen: set[bytes] = set()
        for text, label in existing:
            self.check(text, label)

    def __len__(self) -> int:
        return len(self._seen)

    def _key(self, text: str, label: str) -> bytes:
        scope = label if self.per_label else ""
        return hashlib.blake2b(f"{scope}\x00{normalize(text)}".encode(), digest_size=16).digest()

    def check(self, text: str, label: str = "") -> str | None:
        """'duplicate' if this text (normalised) was seen before; otherwise remember it and return None."""
        key = self._key(text, label)
        if key in self._seen:
            return "duplicate"
        self._seen.add(key)
        return None
