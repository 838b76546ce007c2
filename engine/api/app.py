"""The HTTP API of `seedbed serve`: search, grounded chat completions, synthesis jobs, health.

A thin adapter (see DESIGN.md): it validates, calls engine functions and turns SeedbedErrors into
JSON errors with a stable `code`; no stack trace ever reaches a client. Everything under /v1 needs
`Authorization: Bearer KEY` unless the server was started with `--no-auth` (loopback only).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine import __version__
from engine.api.jobs import JobManager, JobNotFound
from engine.api import review
from engine.api.schemas import ChatRequest, JobRequest, ReviewRequest, SearchRequest
from engine.errors import ConfigError, LLMError, LLMFatalError, SeedbedError
from engine.retrieval.ground import GUARDED_ANSWER, filter_hits, ground
from engine.types import SamplingParams

__all__ = ["ServeConfig", "create_app", "ApiError"]

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class ServeConfig:
    """What the server serves and how it guards it.

    Args:
        indexes: loaded indexes by name (the first is the default).
        api_keys: accepted keys; empty with `auth=False` only.
        auth: require a key on /v1 routes.
        jobs_dir: where synthesis jobs live.
        cache_dir: the shared LLM cache folder jobs use (None: no cache).
        max_body_bytes: larger request bodies are refused with 413.
        cors_origins: origins allowed by CORS (none by default).
        datasets: finished run folders to review, by name (jobs' datasets are reviewable too).
    """

    indexes: dict[str, Any]
    api_keys: frozenset[str] = frozenset()
    auth: bool = True
    jobs_dir: Path = Path("jobs")
    cache_dir: Path | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    cors_origins: tuple[str, ...] = ()
    datasets: dict[str, Path] = field(default_factory=dict)  # name -> a finished run's output folder


class ApiError(Exception):
    """An error for the client: HTTP status, a stable code, and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def create_app(config: ServeConfig, llm, job_llm=None) -> FastAPI:
    """The FastAPI app. `llm` answers chat requests; `job_llm` (default `llm`) runs synthesis jobs."""
    if config.auth and not config.api_keys:
        raise ConfigError("the API needs at least one key (--api-key-file or SEEDBED_SERVE_KEYS), or --no-auth on loopback")
    jobs = JobManager(config.jobs_dir, job_llm or llm, config.indexes, config.cache_dir)
    app = FastAPI(title="Seedbed", version=__version__, openapi_url="/openapi.json", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(jobs))
    app.state.jobs, app.state.config, app.state.llm = jobs, config, llm
    _install_guards(app, config)
    guard = Depends(_auth(config))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "version": __version__, "indexes": sorted(config.indexes)}

    @app.get("/v1/indexes", dependencies=[guard])
    def indexes() -> dict:
        return {"indexes": [_facts(name, index) for name, index in config.indexes.items()]}

    @app.post("/v1/search", dependencies=[guard])
    async def search(body: SearchRequest) -> dict:
        name, index = _pick(config, body.index)
        fetch = body.k if not body.filters else min(len(index), body.k * 10)
        hits = await run_in_threadpool(index.search, body.query, min(fetch, len(index)), body.mode)
        hits = filter_hits(hits, body.filters)[:body.k]
        return {"index": name, "mode": body.mode, "hits": [_hit(hit) for hit in hits]}

    @app.post("/v1/chat/completions", dependencies=[guard])
    async def chat(body: ChatRequest):
        name, index = _pick(config, body.index)
        messages = [m.model_dump() for m in body.messages]
        grounded = await run_in_threadpool(ground, index, messages, body.k, body.mode, body.filters)
        params = SamplingParams(temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_tokens, seed=body.seed)
        citations = [_citation(n, hit) for n, hit in enumerate(grounded.hits, start=1)]
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": llm.model}
        if body.stream:
            return StreamingResponse(_stream(llm, grounded, params, meta, name, citations),
                                     media_type="text/event-stream")
        answer = await llm.complete(grounded.messages, params)
        text, finish, seedbed = _guarded(grounded, answer.text, answer.finish_reason, name, citations)
        return {**meta, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                          "total_tokens": answer.prompt_tokens + answer.completion_tokens},
                "seedbed": seedbed}

    @app.post("/v1/jobs", dependencies=[guard], status_code=202)
    async def submit(body: JobRequest) -> dict:
        job = await run_in_threadpool(jobs.submit, body.task, body.index, body.max_calls)
        return _job(job)

    @app.get("/v1/jobs/{job_id}", dependencies=[guard])
    def job(job_id: str) -> dict:
        return _job(jobs.get(job_id))

    @app.delete("/v1/jobs/{job_id}", dependencies=[guard])
    def cancel(job_id: str) -> dict:
        return _job(jobs.cancel(job_id))

    @app.get("/v1/jobs/{job_id}/dataset", dependencies=[guard])
    def dataset(job_id: str, format: str = "jsonl"):
        if format not in ("jsonl", "parquet"):
            raise ApiError(422, "invalid_request", f"format={format!r}; use jsonl or parquet")
        path = jobs.dataset(job_id, format)
        media = "application/x-ndjson" if format == "jsonl" else "application/vnd.apache.parquet"
        return FileResponse(path, media_type=media, filename=f"{job_id}.{format}")

    @app.get("/review", include_in_schema=False)
    def review_page():
        return FileResponse(Path(__file__).with_name("review.html"), media_type="text/html")

    @app.get("/v1/datasets", dependencies=[guard])
    def datasets() -> dict:
        named = [{"id": name, "kind": "run", "path": str(path)} for name, path in config.datasets.items()]
        done = [{"id": job["id"], "kind": "job"} for job in jobs.list() if job["state"] == "done"]
        return {"datasets": named + done}

    @app.get("/v1/datasets/{dataset_id}/examples", dependencies=[guard])
    def examples(dataset_id: str, label: str | None = None, reason: str | None = None,
                 min_copy_rate: float | None = None, max_copy_rate: float | None = None) -> dict:
        rows = review.load_rows(_dataset_folder(config, jobs, dataset_id))
        chosen = review.select(rows, label, reason, min_copy_rate, max_copy_rate)
        return {"id": dataset_id, "total": len(rows), "rows": chosen,
                "labels": sorted({r["label"] for r in rows if r.get("label")}),
                "reasons": sorted({r["reason"] for r in rows if r.get("reason")})}

    @app.post("/v1/datasets/{dataset_id}/review", dependencies=[guard])
    def record(dataset_id: str, body: ReviewRequest) -> dict:
        return review.record_review(_dataset_folder(config, jobs, dataset_id), body.row_id, body.verdict, body.note)

    return app


def _dataset_folder(config: ServeConfig, jobs: JobManager, dataset_id: str) -> Path:
    if dataset_id in config.datasets:
        return config.datasets[dataset_id]
    job = jobs.get(dataset_id)  # JobNotFound (404) for anything else, path-like ids included
    if job["state"] != "done":
        raise ApiError(409, "not_ready", f"job {dataset_id} is {job['state']}; review it when it is done")
    return jobs.folder / dataset_id / "out"


def _lifespan(jobs: JobManager):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        resumed = jobs.start()
        if resumed:
            log.info("resuming %d unfinished job(s): %s", len(resumed), ", ".join(resumed))
        yield
        jobs.stop()

    return lifespan


def _auth(config: ServeConfig):
    def check(request: Request) -> None:
        if not config.auth:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(key.strip(), k) for k in config.api_keys):
            raise ApiError(401, "unauthorized", "missing or wrong API key; send `Authorization: Bearer KEY`")

    return check


def _install_guards(app: FastAPI, config: ServeConfig) -> None:
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return _error(413, "body_too_large", f"request bodies are limited to {config.max_body_bytes} bytes")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        return _error(422, "invalid_request", problems or "invalid request body")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(SeedbedError)
    async def seedbed_error(request: Request, exc: SeedbedError):
        if isinstance(exc, JobNotFound):
            return _error(404, "job_not_found", str(exc))
        if isinstance(exc, LLMError):
            status = 502 if isinstance(exc, LLMFatalError) else 503
            return _error(status, "llm_unavailable", f"the LLM endpoint failed: {exc}")
        return _error(400, "bad_request", str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")


def _pick(config: ServeConfig, name: str | None):
    if not config.indexes:
        raise ApiError(503, "no_index", "the server has no index loaded; start it with --index NAME")
    name = name or next(iter(config.indexes))
    if name not in config.indexes:
        raise ApiError(404, "index_not_found", f"index {name!r} is not loaded; loaded: {sorted(config.indexes)}")
    return name, config.indexes[name]


def _facts(name: str, index) -> dict:
    manifest = index.manifest
    return {"name": name, "passages": len(index), "embedder": getattr(manifest, "embedder", None),
            "engine_version": getattr(manifest, "engine_version", None),
            "corpus_fingerprint": getattr(manifest, "corpus_fingerprint", None)}


def _hit(hit) -> dict:
    return {"id": hit.passage.id, "rank": hit.rank, "score": hit.score, "cosine": hit.cosine,
            "text": hit.passage.text, "source": hit.passage.source, "metadata": hit.passage.metadata or {}}


def _citation(n: int, hit) -> dict:
    return {"n": n, "id": hit.passage.id, "score": hit.score, "source": hit.passage.source,
            "text": hit.passage.text[:500]}


def _job(job: dict) -> dict:
    return {k: job.get(k) for k in ("id", "state", "created", "updated", "index", "progress", "result", "error", "resumed")}


def _guarded(grounded, text: str, finish: str, index_name: str, citations: list) -> tuple[str, str, dict]:
    """The answer, or GUARDED_ANSWER with finish_reason 'content_filter' and the reason when it must be withheld."""
    reason = grounded.check(text)
    if reason is None:
        return text, finish, {"index": index_name, "citations": citations}
    log.warning("grounded answer withheld: %s", reason)
    return GUARDED_ANSWER, "content_filter", {"index": index_name, "citations": citations, "guard": reason}


async def _stream(llm, grounded, params, meta, index_name, citations):
    """OpenAI-style server-sent events: role, text pieces, the finish with Seedbed's citations, [DONE].

    When a cited passage gives orders, the answer is checked whole before any of it is sent.
    """
    messages = grounded.messages
    def event(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
        chunk = {**meta, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **(extra or {})}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    finish, seedbed = "stop", {"index": index_name, "citations": citations}
    try:
        if hasattr(llm, "stream") and not grounded.gives_orders:
            async for piece in llm.stream(messages, params):
                yield event({"content": piece})
        else:
            answer = await llm.complete(messages, params)
            text, finish, seedbed = _guarded(grounded, answer.text, "stop", index_name, citations)
            yield event({"content": text})
    except SeedbedError as exc:  # headers are sent: report in-band, as OpenAI does
        yield f"data: {json.dumps({'error': {'code': 'llm_unavailable', 'message': str(exc)}})}\n\n"
        return
    yield event({}, finish, {"seedbed": seedbed})
    yield "data: [DONE]\n\n"
