"""One error tree for Seedbed.

    SeedbedError                  anything Seedbed raises on purpose
    ├── ConfigError               a task spec, option or name is wrong
    │   └── CoverageError         the index cannot support some labels and the task has no fallback
    ├── CorpusError               a corpus file is missing, unreadable or empty
    ├── IndexStoreError           an index on disk cannot be used
    │   ├── IndexNotFound         no index under that name
    │   └── IndexMismatch         built with another embedder / engine version
    ├── LLMError                  the LLM endpoint failed
    │   ├── LLMRetryableError     timeouts, resets, 429, 5xx: worth another try
    │   ├── LLMFatalError         401, 400, unreachable after retries: stop the run
    │   └── LLMPromptTooLongError one prompt exceeds the context window: reject that request only
    ├── RuntimeSetupError         the embedded llama.cpp server or a model cannot be prepared
    └── MetricUnavailable         a benchmark metric cannot be computed on this input (the report says why)

Library code raises these; only the CLI and the server turn them into exit codes or HTTP
statuses. Every message says what was wrong, the value received, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "SeedbedError",
    "ConfigError",
    "CoverageError",
    "CorpusError",
    "IndexStoreError",
    "IndexNotFound",
    "IndexMismatch",
    "LLMError",
    "LLMRetryableError",
    "LLMFatalError",
    "LLMPromptTooLongError",
    "RuntimeSetupError",
    "MetricUnavailable",
]


class SeedbedError(Exception):
    """Base of every error Seedbed raises on purpose."""


class ConfigError(SeedbedError):
    """A task spec, CLI option or name is invalid."""


class CoverageError(ConfigError):
    """Labels the index cannot support, in a task without a `fallback`: raised before any LLM call."""


class CorpusError(SeedbedError):
    """A corpus cannot be read: missing, unknown format, undecodable, empty."""


class IndexStoreError(SeedbedError):
    """An index on disk cannot be opened or written."""


class IndexNotFound(IndexStoreError):
    """No index exists under the requested name."""


class IndexMismatch(IndexStoreError):
    """The index was built with a different embedder or an incompatible engine version."""


class LLMError(SeedbedError):
    """The LLM endpoint failed."""


class LLMRetryableError(LLMError):
    """A transient failure (timeout, reset, 429, 5xx); `retry_after` is in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class LLMFatalError(LLMError):
    """A failure that another try will not fix (bad key, bad request, endpoint unreachable)."""


class LLMPromptTooLongError(LLMError):
    """One request's prompt does not fit the model's context: that request is rejected, the run goes on."""


class RuntimeSetupError(SeedbedError):
    """The embedded llama.cpp server or a local model cannot be built, verified or started."""


class MetricUnavailable(SeedbedError):
    """A metric cannot be computed for a stated reason (too few samples, one label): reported, not fatal."""
