"""Content-addressed identities of LLM requests, and the per-request sampling seeds derived from a task's seed.

A layer below the strategies and the verification judge, which both build requests: a request's
id is the hash of everything (except the model) that determines its answer, so the journal and
the cache never pay for the same answer twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from engine.types import SamplingParams

__all__ = ["request_id", "derive_seed"]


def request_id(
    strategy: str,
    template_sha256: str,
    messages: tuple[tuple[str, str], ...],
    sampling: SamplingParams,
    sample_index: int,
    json_schema: Mapping[str, Any] | None = None,
) -> str:
    """Content hash of everything (except the model) that determines an answer."""
    payload = {
        "strategy": strategy,
        "template_sha256": template_sha256,
        "messages": [list(message) for message in messages],
        "sampling": sampling.as_dict(),
        "sample_index": sample_index,
        "json_schema": json_schema,
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def derive_seed(task_seed: int, *parts: Any) -> int:
    """A per-request sampling seed: stable for the same inputs, different across requests (0..2**31-1)."""
    encoded = json.dumps([task_seed, *parts], ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(encoded.encode("utf-8")).digest()[:8], "big") % (2**31)
