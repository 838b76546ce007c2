"""Request and response bodies of the HTTP API (pydantic), with their limits.

Limits live here so the OpenAPI schema at /openapi.json states them and requests over them get a
422 with the field named, before any work is done.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MAX_K", "MAX_QUERY_CHARS", "SearchRequest", "ChatMessage", "ChatRequest", "JobRequest", "ReviewRequest"]

MAX_K = 100
MAX_QUERY_CHARS = 4000
MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 32_000
Mode = Literal["dense", "bm25", "hybrid"]
IndexName = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="a loaded index; default: the first")
Filters = Field(default=None, max_length=16, description="exact-match filters on `source` and metadata fields")


class SearchRequest(BaseModel):
    """POST /v1/search."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="the words to search for (not only whitespace)")
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: Mode = "hybrid"
    index: str | None = IndexName
    filters: dict[str, str | int | float | bool] | None = Filters

    @field_validator("query")
    @classmethod
    def _has_words(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is only whitespace; pass the words to search for")
        return query


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatRequest(BaseModel):
    """POST /v1/chat/completions: OpenAI's body plus Seedbed's retrieval parameters.

    `index`, `k`, `mode` and `filters` choose what is retrieved (the `openai` client sends them
    with `extra_body=`); unknown OpenAI parameters are accepted and ignored.
    """

    model_config = ConfigDict(extra="ignore")
    model: str = Field(default="", max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=256, ge=1, le=4096)
    seed: int | None = None
    index: str | None = IndexName
    k: int = Field(default=5, ge=1, le=20)
    mode: Mode = "hybrid"
    filters: dict[str, str | int | float | bool] | None = Filters


class JobRequest(BaseModel):
    """POST /v1/jobs: a task spec (the same keys as a YAML spec) and the index to retrieve from."""

    model_config = ConfigDict(extra="forbid")
    task: dict[str, Any]
    index: str | None = IndexName
    max_calls: int | None = Field(default=None, ge=1, le=1_000_000)


class ReviewRequest(BaseModel):
    """POST /v1/datasets/{id}/review: accept or reject one row (k0.. kept, r0.. rejected)."""

    model_config = ConfigDict(extra="forbid")
    row_id: str = Field(pattern=r"^[kr][0-9]{1,7}$")
    verdict: Literal["accept", "reject"]
    note: str = Field(default="", max_length=2000)
