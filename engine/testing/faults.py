"""The faults FakeOpenAIServer can inject, what it records, and the OpenAI-shaped bodies it sends."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

__all__ = ["Fault", "RecordedRequest", "Schedule", "chat_response", "error_body", "send"]


@dataclass(frozen=True)
class Fault:
    """One way to misbehave on one chat request; build it with the class methods.

    Attributes:
        kind: "slow" (answer normally after `seconds` more), "drop" (close the socket without a
            response), "status" (an OpenAI-style error), or "garbage" (200 with a non-JSON body).
        seconds: extra delay for "slow".
        status: HTTP status for "status".
        message: the error message for "status", or the body for "garbage".
        error_type: the error's `type` field for "status".
        retry_after: seconds sent as Retry-After (and retry-after-ms) with "status", if any.
        content_type: the Content-Type of a "garbage" body.
    """

    kind: Literal["slow", "drop", "status", "garbage"]
    seconds: float = 0.0
    status: int = 500
    message: str = "internal server error"
    error_type: str = "server_error"
    retry_after: float | None = None
    content_type: str = "text/html"

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer correctly, but `seconds` later (beyond the client's timeout, it times out)."""
        return cls("slow", seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without a byte of response."""
        return cls("drop")

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0) -> Fault:
        """429 with Retry-After: `retry_after` seconds."""
        return cls("status", status=429, message="rate limit reached", error_type="rate_limit_error", retry_after=retry_after)

    @classmethod
    def error(cls, status: int = 500, message: str = "internal server error", error_type: str | None = None,
              retry_after: float | None = None) -> Fault:
        """An OpenAI-style error body with this status (401, 400, a context overflow, 500, 503...)."""
        kind = error_type or ("server_error" if status >= 500 else "invalid_request_error")
        return cls("status", status=status, message=message, error_type=kind, retry_after=retry_after)

    @classmethod
    def garbage(cls, body: str = "<html><body>502 Bad Gateway</body></html>", content_type: str = "text/html") -> Fault:
        """200 OK with a body that is not a chat completion (a proxy's HTML page, by default)."""
        return cls("garbage", message=body, content_type=content_type)

    def apply(self, handler: BaseHTTPRequestHandler) -> None:
        """Misbehave on `handler`'s connection (every kind but "slow", which the server handles)."""
        if self.kind == "drop":
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif self.kind == "garbage":
            send(handler, 200, self.message.encode(), self.content_type)
        else:
            headers = {}
            if self.retry_after is not None:
                headers = {"Retry-After": str(max(1, math.ceil(self.retry_after))),
                           "retry-after-ms": str(int(self.retry_after * 1000))}
            send(handler, self.status, json.dumps(error_body(self.message, self.error_type, self.status)).encode(),
                 "application/json", headers)


Schedule = Mapping[int, Fault] | Sequence["Fault | None"] | Callable[[int, Any], "Fault | None"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received.

    Attributes:
        number: the chat request's number (from 1), or 0 for other routes.
        method: GET or POST.
        path: the route, e.g. /v1/chat/completions.
        body: the parsed JSON body, or None.
        fault: the injected fault's kind, if any.
        received_at: time.monotonic() on arrival.
    """

    number: int
    method: str
    path: str
    body: Any = field(repr=False)
    fault: str | None
    received_at: float


def error_body(message: str, error_type: str, code: int | None = None) -> dict[str, Any]:
    """An OpenAI-style error payload: {"error": {"message", "type", "code"}}."""
    return {"error": {"message": message, "type": error_type, "code": code}}


def chat_response(messages: list[dict[str, str]], text: str, model: str) -> dict[str, Any]:
    """A chat.completion body for `text`, with word counts as token usage."""
    prompt_tokens = sum(len(m["content"].split()) for m in messages)
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, content_type: str,
         headers: Mapping[str, str] | None = None) -> None:
    """Write one complete response; a client that already hung up (it timed out) is not an error."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True
