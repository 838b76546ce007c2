"""Reading model answers, shared by every strategy; nothing here raises on bad model output.

One-example answers: `extract_text` takes the `text` field of a JSON answer, `clean_text` strips
what models wrap around an example. Setup steps: `read_list` reads short items from a JSON array or
a numbered or bulleted list (a `ListStyle` holds where strategies differ), `parse_yes_no` a yes/no
judgement. Several examples per answer: `read_objects` takes the objects of a JSON array. The JSON
schemas that ask for these answers live here too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from engine import filters
from engine.types import OutputSpec

__all__ = ["ANSWER_SCHEMA", "LIST_SCHEMA", "SHORT_KIND_MAX_WORDS", "ListStyle", "clean_text", "decode_json", "distinct",
           "extract_text", "object_schema", "parse_yes_no", "read_list", "read_objects", "strip_fences", "whole_items"]


def object_schema(key: str, value: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    """The JSON schema of an object with one required key, `key`, titled `title` (default: `key`)."""
    return {"title": title or key, "type": "object", "properties": {key: value}, "required": [key],
            "additionalProperties": False}


# Sent as the OpenAI `json_schema` response format when structured output is on.
ANSWER_SCHEMA: dict[str, Any] = object_schema("text", {"type": "string"}, title="example")
LIST_SCHEMA: dict[str, Any] = object_schema("items", {"type": "array", "items": {"type": "string"}})

_FENCE = re.compile(r"^\s*```[\w-]*\s*$")
_DECODER = json.JSONDecoder()


def strip_fences(raw: str) -> str:
    """`raw` without markdown code-fence lines (```json) and without surrounding whitespace."""
    return "\n".join(line for line in raw.strip().splitlines() if not _FENCE.match(line)).strip()


def decode_json(text: str) -> Any:
    """`text` decoded as JSON, or None where it is not valid JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _first_json(body: str) -> tuple[int, Any]:
    """Where the first JSON array or object of `body` starts (-1: none), and its value (None: not valid JSON)."""
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    if start < 0:
        return start, None
    try:
        return start, _DECODER.raw_decode(body, start)[0]
    except ValueError:
        return start, None


# --- one example per answer ----------------------------------------------------------------------

SHORT_KIND_MAX_WORDS = 30  # kinds this short (headlines, titles, queries) keep only their first line
_PREAMBLE = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|here(?:'s| is| are))\b", re.IGNORECASE)
_INLINE_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|of course|okay)[,!.]?\s*)?here(?:'s| is) (?:a|an|the|your|one)\b[^:\n]{0,60}:\s*",
    re.IGNORECASE,
)
_GENERIC_PREFIXES = ("headline", "title", "review", "answer", "output", "text", "example", "response", "summary")
_MARKDOWN_LEAD = re.compile(r"^(?:#{1,6}\s+|[-*\u2022]\s+|\d+[.)]\s+|>\s*)")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "`": "`"}
_WORD_COUNT_NOTE = re.compile(r"\s*\(\s*\d+\s+words?\s*\)\s*$", re.IGNORECASE)
_JSON_TEXT_FIELD = re.compile(r'"text"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)


def extract_text(raw: str) -> tuple[str, str]:
    """The answer's text: the `text` field of a JSON object answer, else the raw text.

    Returns:
        (text, detail): detail is '' or a note on how a broken JSON answer was read.
    """
    body = strip_fences(raw)
    if not body.startswith("{"):
        return raw, ""
    value = decode_json(body)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"], ""
    match = _JSON_TEXT_FIELD.search(body)
    if match:
        try:
            return json.loads(f'"{match.group(1)}"'), "broken JSON answer; took its text field"
        except ValueError:
            return match.group(1), "broken JSON answer; took its text field unescaped"
    return raw, "answer was not the requested JSON; read it as plain text"


def clean_text(text: str, output: OutputSpec) -> tuple[str, bool]:
    """Strip what models wrap around an answer: preambles, 'Headline:' labels, markdown, quotes.

    Short kinds (max_words <= SHORT_KIND_MAX_WORDS) keep only the first remaining line.

    Returns:
        (clean text, whether later lines were dropped): when lines were dropped, a cut-off
        (finish_reason 'length') tail does not make the kept text truncated.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not _FENCE.match(line)]
    while len(lines) > 1 and _PREAMBLE.match(lines[0]) and lines[0].rstrip("*").endswith(":"):
        lines.pop(0)
    prefixes = _label_prefix(output.kind)
    cleaned = [_clean_line(line, prefixes) for line in lines]
    cleaned = [line for line in cleaned if line]
    if output.max_words <= SHORT_KIND_MAX_WORDS:
        return (cleaned[0] if cleaned else ""), len(cleaned) > 1
    return "\n".join(cleaned), False


def _label_prefix(kind: str) -> re.Pattern[str]:
    words = [word for word in kind.lower().split() if len(word) >= 3]
    names = sorted({*_GENERIC_PREFIXES, kind.lower(), *words}, key=len, reverse=True)
    alternatives = "|".join(re.escape(name) for name in names if name)
    bold = r"(?:\*\*|__)?"
    return re.compile(rf"^{bold}(?:{alternatives})(?:\s*\d+)?\s*{bold}\s*:\s*{bold}\s*", re.IGNORECASE)


def _clean_line(line: str, prefixes: re.Pattern[str]) -> str:
    line = _INLINE_PREAMBLE.sub("", line)
    line = _MARKDOWN_LEAD.sub("", line)
    line = prefixes.sub("", line)
    line = line.replace("**", "").replace("__", "")
    line = _WORD_COUNT_NOTE.sub("", line)
    return " ".join(_strip_quotes(line.strip()).split())


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and not _quote_inside(text):
        text = text[1:-1].strip()
    return text


def _quote_inside(text: str) -> bool:
    # An apostrophe between letters (Rashford's) is not a closing quote.
    inner = text[1:-1]
    marks = {text[0], text[-1]}
    return any(
        ch in marks and not (0 < i < len(inner) - 1 and inner[i - 1].isalpha() and inner[i + 1].isalpha())
        for i, ch in enumerate(inner)
    )


# --- lists of short items, and yes/no -------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*\u2022+]\s+|\(?\d{1,3}[.):]\s+|[a-z][.)]\s+)")
_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|here (?:are|is)|let me know|i hope|note)\b", re.IGNORECASE
)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ITEM_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "`": "`"}
_LIST_KEYS = ("items", "labels")  # the keys of the list objects strategies ask for: never items themselves


@dataclass(frozen=True)
class ListStyle:
    """Where strategies read list items differently; everything else about a list answer is shared.

    Attributes:
        max_words: a longer item is prose the model wrote around its list, and is dropped.
        trailing: characters stripped from the end of every item.
        scalars: numbers (and other non-strings) in a JSON array are items, as text; else they are dropped.
    """

    max_words: int
    trailing: str = ",;"
    scalars: bool = False


def read_list(raw: str, style: ListStyle) -> list[str]:
    """The items of a list answer, never raising: a JSON array (or an object holding one, or a cut-off
    array's quoted strings), else one item per line with bullets, numbering, quotes, markdown,
    headings and chatter ('Here are 5 contexts:') removed. Items are not deduplicated (see `distinct`)."""
    body = strip_fences(raw)
    items = _json_items(body, style)
    if items is None:
        items = [_clean_item(line, style.trailing) for line in body.splitlines()]
        items = [item for item in items if item and not item.endswith(":") and not _CHATTER.match(item)]
    return [item for item in items if _usable(item, style.max_words)]


def distinct(items: list[str]) -> list[str]:
    """`items` without repeats: the first of those that read the same (case, punctuation and spacing aside)."""
    seen: set[str] = set()
    return [item for item in items if not (filters.normalize(item) in seen or seen.add(filters.normalize(item)))]


def whole_items(items: list[str], finish_reason: str) -> list[str]:
    """`items` less the last one when the answer was cut off (finish_reason 'length'): it may be partial."""
    return items[:-1] if finish_reason == "length" else items


def parse_yes_no(raw: str) -> bool | None:
    """True for a yes, False for a no (plain or `{"answer": ...}`), None for anything else."""
    body = strip_fences(raw)
    value = decode_json(body)
    if isinstance(value, dict):
        body = str(value.get("answer", ""))
    words = re.sub(r"^(?:the )?answer(?: is)? ", "", filters.normalize(body)).split()
    return {"yes": True, "no": False}.get(words[0] if words else "")


def _json_items(body: str, style: ListStyle) -> list[str] | None:
    start, value = _first_json(body)
    lead = body[:start].rstrip()
    if start < 0 or (lead and ("\n" in lead or not lead.endswith(":"))):
        return None  # JSON comes first, or right after one lead-in line like "Here are the values:"
    if value is None:  # cut off mid-array: the complete quoted strings, if any
        quoted = [_clean_item(_unescape(m), style.trailing) for m in _QUOTED.findall(body[start:])
                  if m.lower() not in _LIST_KEYS]
        return quoted or None
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list):
        return None
    return [_clean_item(_item_text(v, style.scalars), style.trailing) for v in value]


def _item_text(value: Any, scalars: bool) -> str:
    if isinstance(value, dict):  # [{"context": "...", "description": "..."}]
        return ": ".join(str(v) for v in value.values() if isinstance(v, (str, int, float)))
    if isinstance(value, str):
        return value
    return str(value) if scalars else ""


def _unescape(quoted: str) -> str:
    try:
        return json.loads(f'"{quoted}"')
    except ValueError:
        return quoted


def _clean_item(line: str, trailing: str) -> str:
    line = _BULLET.sub("", line.strip()).replace("**", "").replace("__", "").strip().rstrip(trailing).strip()
    while len(line) >= 2 and _ITEM_QUOTES.get(line[0]) == line[-1] and not {line[0], line[-1]} & set(line[1:-1]):
        line = line[1:-1].strip()
    return " ".join(line.split())


def _usable(item: str, max_words: int) -> bool:
    return bool(filters.normalize(item)) and not filters.refusal(item) and filters.word_count(item) <= max_words


# --- several JSON objects per answer ----------------------------------------------------------------

_WRAPPER = re.compile(r'\{\s*"examples"\s*:\s*\[')
_NEXT_OBJECT = re.compile(r"\}\s*,?\s*\{")


def read_objects(raw: str) -> tuple[list[Any], list[str]]:
    """The items of the JSON array in a model answer, tolerating fences, text around it, a
    `{"examples": [...]}` wrapper, one object per line, and a cut-off or broken object.

    Returns:
        (decoded items, text fragments that were not valid JSON, in answer order).
    """
    body = strip_fences(raw)
    start, value = _first_json(body)
    if start < 0:
        return [], []
    if isinstance(value, list):
        return value, []
    if isinstance(value, dict) and set(value) == {"examples"} and isinstance(value["examples"], list):
        return value["examples"], []
    wrapper = _WRAPPER.match(body, start)
    items, broken = _scan(body, wrapper.end() if wrapper else start + (body[start] == "["))
    return (items, broken) if items or broken or value is not None else ([], [body[start:].strip()])


def _scan(body: str, pos: int) -> tuple[list[Any], list[str]]:
    items, broken = [], []
    while (at := body.find("{", pos)) >= 0:
        try:
            value, pos = _DECODER.raw_decode(body, at)
            items.append(value)
        except ValueError:
            following = _NEXT_OBJECT.search(body, at + 1)
            if following is None:
                broken.append(body[at:].strip())
                break
            broken.append(body[at:following.start() + 1].strip())
            pos = following.end() - 1
    return items, broken


# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by space; not after
# an initial ("U.S.", "J.") or a common abbreviation.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_ABBREVIATION = re.compile(r"(?:\b[A-Z]\.|\b(?:Mr|Mrs|Ms|Dr|St|Inc|Co|Corp|Ltd|Jr|Sr|vs|No|Gen|Gov|Sen|Rep|Jan|Feb|Mar|Apr|"
                           r"Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.)$")


def sentences(text: str) -> list[str]:
    """Split text into sentences, keeping initials and common abbreviations inside them."""
    parts, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        head = text[start:match.start()].rstrip("\"')]")
        if _ABBREVIATION.search(head):
            continue
        parts.append(text[start:match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    return parts + ([tail] if tail else [])


def fit_sentences(text: str, output: OutputSpec, cut_off: bool) -> tuple[str, bool]:
    """Keep whole sentences within `max_words`, and drop a fragment the server cut off.

    An answer a little over the length, or cut off at max_tokens, usually holds complete sentences
    that fit; keeping those instead of rejecting the answer saves the call. Nothing is kept that the
    model did not write, and the result must still reach `min_words` (else the text is unchanged
    and the usual filters reject it).

    Returns:
        (text, whether it was shortened).
    """
    parts = sentences(text)
    if cut_off and parts and not re.search(r"[.!?][\"')\]]*$", parts[-1]):
        parts = parts[:-1]  # the sentence the server stopped inside
    elif len(text.split()) <= output.max_words:
        return text, False
    kept, words = [], 0
    for part in parts:
        if words + len(part.split()) > output.max_words:
            break
        kept.append(part)
        words += len(part.split())
    if not kept or words < output.min_words:
        return text, False
    return " ".join(kept), True


def cut_passage(text: str, tokens: int) -> str:
    """The passage's leading whole sentences within about `tokens` tokens (4 characters each).

    A first sentence longer than the budget is cut at the last word that fits.
    """
    text = text.strip()
    limit = tokens * 4
    if len(text) <= limit:
        return text
    kept = ""
    for sentence in sentences(text):
        if len(kept) + len(sentence) + 1 > limit:
            break
        kept = f"{kept} {sentence}".strip()
    return kept or text[:limit].rsplit(" ", 1)[0]
