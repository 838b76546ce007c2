"""FakeOpenAIServer: a real OpenAI-compatible HTTP server on loopback that misbehaves on cue.

For fault-injection tests and benchmarks: the real client, real sockets, scripted failures.

    with FakeOpenAIServer(schedule={1: Fault.rate_limit(0.2), 2: Fault.drop()}) as srv:
        llm = OpenAIChat(srv.base_url, srv.model)

It serves POST /v1/chat/completions (a deterministic answer built from the last user message, as
ScriptedLLM's default, with token counts) and GET /v1/models. Chat requests are numbered from 1
in arrival order; `schedule` picks a Fault for a number (a mapping or a sequence) or by a rule
(a callable). `capacity` hides a concurrency limit: past it, requests get 429 (`overload="reject"`)
or slow down quadratically, as a thrashing server does (`overload="slow"`). Every request is
recorded (`requests`, `count`, `max_in_flight`) and, with `log_path`, appended as a JSON line,
so calls made by another process can be counted. Request bodies are parsed as JSON, never run.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from engine.errors import ConfigError
from engine.testing.fake import default_answer
from engine.testing.faults import Fault, RecordedRequest, Schedule, chat_response, error_body, send

__all__ = ["FakeOpenAIServer", "Fault", "RecordedRequest", "Schedule", "read_request_log"]

_MAX_BODY = 8 * 1024 * 1024
_KEEP_RECORDS = 100_000


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 in background threads; use it as a context manager.

    Args:
        schedule: faults for chat requests: {number: Fault} or [Fault | None, ...] (numbers from 1),
            or a callable(number, body) -> Fault | None.
        capacity: hidden concurrency; None means unlimited.
        overload: past capacity, "reject" answers 429 with Retry-After `overload_retry_after`;
            "slow" multiplies the latency by (in_flight / capacity) ** 2.
        latency: seconds each chat answer takes.
        model: the model name served and listed.
        api_key: when set, other bearer tokens get 401.
        log_path: append one JSON line per request received (number, method, path, fault, time).
        prefix_cache: report `usage.prompt_tokens_details.cached_tokens` as llama-server does: the
            longest word prefix this prompt shares with one of the last `prefix_cache` prompts
            (its slots); 0 (the default) reports no cache at all.

    Raises:
        ConfigError: capacity < 1, negative latency, or an unknown overload mode.
    """

    def __init__(
        self,
        schedule: Schedule | None = None,
        *,
        capacity: int | None = None,
        overload: Literal["reject", "slow"] = "reject",
        overload_retry_after: float = 1.0,
        latency: float = 0.0,
        model: str = "fake-model",
        api_key: str | None = None,
        log_path: Path | str | None = None,
        prefix_cache: int = 0,
    ):
        if (capacity is not None and capacity < 1) or latency < 0 or overload not in ("reject", "slow"):
            raise ConfigError(
                f"need capacity >= 1 or None, latency >= 0 and overload 'reject' or 'slow'; "
                f"got capacity={capacity}, latency={latency}, overload={overload!r}"
            )
        self.schedule, self.capacity, self.overload = schedule, capacity, overload
        self.overload_retry_after, self.latency, self.model = overload_retry_after, latency, model
        self._api_key = api_key
        self.log_path = Path(log_path) if log_path else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._records: list[RecordedRequest] = []
        self._count = self._in_flight = self._max_in_flight = self._admitted = 0
        self._connections: set[Any] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log: Any = None
        self.prefix_cache = prefix_cache
        self._slots: list[list[str]] = []  # the last prompts, as words, newest last

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAIServer:
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        if self.log_path:
            self._log = open(self.log_path, "a", encoding="utf-8")
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()  # cuts scripted sleeps short
        if self._httpd is not None:
            self._httpd.shutdown()
            with self._lock:
                connections = list(self._connections)
            for connection in connections:  # idle keep-alive threads would otherwise linger
                _close_quietly(connection)
            self._httpd.server_close()
        if self._log is not None:
            self._log.close()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, for OpenAIChat's base_url."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running; use it in a `with` block")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # --- what was received -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (all routes), oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def count(self) -> int:
        """How many chat requests arrived."""
        with self._lock:
            return self._count

    @property
    def max_in_flight(self) -> int:
        """The most chat requests handled at the same moment."""
        with self._lock:
            return self._max_in_flight

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat requests, in arrival order."""
        return [r.body for r in self.requests if r.number and isinstance(r.body, dict)]

    # --- serving ---------------------------------------------------------------------------

    def handle(self, handler: _Handler, method: str) -> None:
        """Answer one HTTP request (called by the handler thread)."""
        body = _read_json(handler)
        route = handler.path.split("?", 1)[0].rstrip("/")
        if self._api_key and handler.headers.get("Authorization") != f"Bearer {self._api_key}":
            self._record(method, route, body, None)
            return _send_json(handler, 401, error_body("invalid api key", "authentication_error"))
        if (method, route) == ("GET", "/v1/models"):
            self._record(method, route, body, None)
            return _send_json(handler, 200, {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})
        if (method, route) != ("POST", "/v1/chat/completions"):
            self._record(method, route, body, None)
            return _send_json(handler, 404, error_body(f"no route {method} {route}", "not_found_error"))
        _, fault = self._arrive(method, route, body)
        try:
            self._serve_chat(handler, body, fault)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _arrive(self, method: str, route: str, body: Any) -> tuple[int, Fault | None]:
        with self._lock:
            self._count += 1
            number = self._count
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        fault = self._fault_for(number, body)
        self._record(method, route, body, fault, number)
        return number, fault

    def _fault_for(self, number: int, body: Any) -> Fault | None:
        schedule = self.schedule
        if schedule is None:
            return None
        if callable(schedule):
            return schedule(number, body)
        if isinstance(schedule, Mapping):
            return schedule.get(number)
        return schedule[number - 1] if number <= len(schedule) else None

    def _serve_chat(self, handler: _Handler, body: Any, fault: Fault | None) -> None:
        if fault is not None and fault.kind != "slow":
            return fault.apply(handler)
        if not isinstance(body, dict) or not _valid_messages(body.get("messages")):
            return _send_json(handler, 400, error_body("'messages' must be a list of {role, content}", "invalid_request_error"))
        delay = self._admit()
        if delay is None:
            headers = {"Retry-After": f"{max(1, round(self.overload_retry_after))}",
                       "retry-after-ms": f"{int(self.overload_retry_after * 1000)}"}
            return _send_json(handler, 429, error_body("server busy: too many requests in flight", "rate_limit_error"), headers)
        try:
            self._stopping.wait(delay + (fault.seconds if fault else 0.0))
            text = default_answer(body["messages"])
            if body.get("response_format"):
                text = json.dumps({"text": text})
            response = chat_response(body["messages"], text, self.model)
            if self.prefix_cache:
                response["usage"]["prompt_tokens_details"] = {"cached_tokens": self._cached(body["messages"])}
            _send_json(handler, 200, response)
        finally:
            with self._lock:
                self._admitted -= 1

    def _cached(self, messages: list[dict[str, str]]) -> int:
        """Words of this prompt a prefix cache with `prefix_cache` slots would hold already."""
        words = [w for m in messages for w in m["content"].split()]
        with self._lock:
            best = max((_common_prefix(words, slot) for slot in self._slots), default=0)
            self._slots = [*self._slots, words][-self.prefix_cache:]
        return best

    def _admit(self) -> float | None:
        """Latency for one more admitted request, or None when it must be rejected (over capacity)."""
        with self._lock:
            load = self._admitted + 1
            if self.capacity is not None and load > self.capacity and self.overload == "reject":
                return None
            self._admitted = load
        if self.capacity is None or load <= self.capacity:
            return self.latency
        return self.latency * (load / self.capacity) ** 2

    def _record(self, method: str, route: str, body: Any, fault: Fault | None, number: int = 0) -> None:
        record = RecordedRequest(number, method, route, body, fault.kind if fault else None, time.monotonic())
        with self._lock:
            if len(self._records) < _KEEP_RECORDS:
                self._records.append(record)
            if self._log is not None:
                entry = {"number": number, "method": method, "path": route, "fault": record.fault, "time": time.time()}
                self._log.write(json.dumps(entry) + "\n")
                self._log.flush()

    def track(self, connection: Any, opened: bool) -> None:
        """Remember open connections, so exiting can close idle keep-alive ones."""
        with self._lock:
            (self._connections.add if opened else self._connections.discard)(connection)


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def read_request_log(path: Path | str) -> list[dict[str, Any]]:
    """The entries a FakeOpenAIServer wrote to `log_path` (possibly from another process)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # socketserver's default backlog of 5 resets connections past a few dozen clients
    fake: FakeOpenAIServer

    def handle_error(self, request, client_address) -> None:
        # A client that goes away mid-connection (killed in a resume test, a dropped socket) is
        # expected here: no traceback for it. Anything else is still printed.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake.track(self.connection, True)

    def finish(self) -> None:
        self.server.fake.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.fake.handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.fake.handle(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read `requests` instead


def _read_json(handler: BaseHTTPRequestHandler) -> Any:
    length = min(int(handler.headers.get("Content-Length") or 0), _MAX_BODY)
    raw = handler.rfile.read(length) if length > 0 else b""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _valid_messages(messages: Any) -> bool:
    return isinstance(messages, list) and bool(messages) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    )


def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    send(handler, status, json.dumps(payload).encode(), "application/json", headers)


def _close_quietly(connection: Any) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
