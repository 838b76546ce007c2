"""Distributed synthesis on Ray: each round's requests answered by a pool of Ray actors (`--ray [ADDRESS]`).

What is Ray's and what is ours. Ray runs the workers: a pool of actors (`--ray-workers`) started
once per run (as soon as the LLM is opened, before the run plans, since a worker process takes
seconds to start), on whichever nodes the cluster offers; it restarts an actor that dies and re-runs the
batch it held (`max_restarts`, `max_task_retries`), and carries batches and answers between driver
and workers. Ours is everything that makes the answers safe and the run identical to a local one:
each actor sends its batch through the same OpenAI-compatible client (`engine.llm.client.OpenAIChat`,
with its retries) over one endpoint or a `engine.llm.replicas.ReplicaPool` of several, and appends
every answer to its own journal shard in the run folder (`journal.d/`, `engine.journal`) the
moment it arrives. So a killed actor loses only what it had in flight (its successor reads the
shards and skips what was answered), a killed driver loses the same, and re-running the command
pays only for requests no shard holds (`engine.llm.shards.ShardWriter`). When the run folder is on
S3 (`--out s3://...`), the shard folder is the bucket's `journal.d/` and each actor uploads its
shard itself, so a worker on any node makes its answers durable where a re-run on any machine finds
them (a killed driver then loses what was in flight and at most the last second of answers). With a
local run folder on a cluster of several nodes, the actors of other nodes write their shards on
their own disks, where a re-run of a killed driver cannot see them; the run warns once and names
the fix (an s3:// run folder). The driver hands each answer to the round loop exactly as the
in-process runner does, so rounds, filters and the written dataset are the local code, in plan
order.

Why actors and not a Ray Dataset per round: a synthesis runs several rounds (top-ups for rejected
examples follow from the answers before them), and a Ray Data pipeline starts its actor pool for
each execution; measured here, that was about a minute per round on the 2-core machine under
load, against milliseconds of work. Ray Data's LLM processors (`ray.data.llm`) are not used for
the same reason, and because their HTTP processor keeps no journal: a lost worker or driver would
pay its answers again. Indexing, a single pass, is where Ray Data fits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, LLMError, LLMFatalError, LLMPromptTooLongError, LLMRetryableError
from engine.types import Completion, Request, SamplingParams

__all__ = ["RayLLM", "ray_module", "RAY_HINT"]

log = logging.getLogger(__name__)
RAY_HINT = 'Ray is not installed; install the extra: pip install "seedbed[ray]"'


def ray_module():
    """`import ray`, or a one-line ConfigError with the install hint."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(RAY_HINT) from exc
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` ("local" or None: start one in this process, if none runs).

    Raises:
        ConfigError: Ray missing, or the cluster cannot be reached (the message names the address).
    """
    ray = ray_module()
    local = address in (None, "", "local")
    if not local:
        _reachable(address)
    if ray.is_initialized():  # this process already joined or started one (tests, notebooks)
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                              "logging_level": logging.ERROR}  # its start-up warnings (token auth) would break the bar
    if local:
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=256 * 1024**2)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if local else f"the Ray cluster at {address}"
        raise ConfigError(f"cannot start or join {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                          "check the address (ray://HOST:10001 or HOST:6379) and that the cluster is up") from exc


def _reachable(address: str) -> None:
    """Fail in seconds, with the fix, when nothing listens at a HOST:PORT or ray://HOST:PORT address
    (Ray itself retries for minutes, printing warnings)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r} is not a cluster address; give HOST:PORT (the head's GCS, usually "
                          "port 6379), ray://HOST:10001 (Ray Client), or --ray alone for a local cluster")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it there with "
                          "`ray start --head`, or check the host and port") from exc


class RayLLM:
    """The run's LLM, with batches of planned requests answered on a Ray cluster.

    `complete` and `check` (single calls) go to the driver's own client `local`; `run_many` (every
    round's unanswered requests, see `engine.calls.call_all`) goes to `workers` Ray actors, each
    with `ceil(concurrency / workers)` requests in flight against `endpoints`.

    Args:
        local: the driver's client (same model and endpoints).
        endpoints: (base URL, API key) per replica; keys travel to the actors, never to a log.
        address: the Ray cluster ("local" starts one here).
        workers: actors answering requests.
        timeout, max_retries: each actor client's settings (as OpenAIChat's).
        batch_size: requests per batch handed to an actor (default: 8 x its requests in flight).
    """

    def __init__(self, local: Any, endpoints: Sequence[tuple[str, str]], *, address: str | None = "local",
                 workers: int = 2, timeout: float = 300.0, max_retries: int = 4, batch_size: int | None = None):
        if workers < 1:
            raise ConfigError(f"--ray-workers={workers}; give at least 1")
        if not endpoints:
            raise ConfigError("--ray needs an endpoint the workers can reach; give --base-url URL")
        self.local, self.model = local, local.model
        self.endpoints = [(url, key) for url, key in endpoints]
        self.address, self.workers, self.timeout, self.max_retries = address, workers, timeout, max_retries
        self.batch_size = batch_size
        self._pool: list = []  # the run's actors
        self._pool_key: tuple[int, str, bool] | None = None  # (in flight per actor, shard folder, adaptive) they serve
        connect(address)
        self.start()

    def start(self) -> None:
        """Start the actors now, in the background: a worker process takes 1.5-4 s to start on 2 cores,
        so `seedbed synth --ray` starts them before it plans, and the plan hides that wait. They open
        their journal shards on their first batch (`_Answerer.answer`), so starting touches no file."""
        if not self._pool:
            remote = ray_module().remote(num_cpus=0.25, max_restarts=-1, max_task_retries=-1)(_Answerer)
            self._pool = [remote.remote(self.endpoints, self.model, self.timeout, self.max_retries)
                          for _ in range(self.workers)]

    def __repr__(self) -> str:
        return f"RayLLM({self.address}, workers={self.workers}, endpoints={[url for url, _ in self.endpoints]})"

    async def complete(self, messages: list[dict[str, str]], params: SamplingParams,
                       json_schema: dict[str, Any] | None = None) -> Completion:
        return await self.local.complete(messages, params, json_schema)

    async def check(self) -> tuple[str, ...]:
        return await self.local.check()

    async def release_loop(self) -> None:
        release = getattr(self.local, "release_loop", None)
        if release is not None:
            await release()

    async def close(self) -> None:
        self.shutdown()
        await self.local.close()

    def run_many(self, requests: Sequence[Request], concurrency: int, on_result, shards: Path | str) -> None:
        """Answer `requests` on the cluster; hand each result to `on_result` as its batch comes back.

        Each actor has `ceil(concurrency / workers)` requests in flight and two batches at hand, so
        it never waits for the driver between batches. With an `AdaptiveLimit` (`--concurrency auto`),
        each actor learns its own number in flight, up to `ceil(limit.max / workers)`. `shards`: the
        journal's shard folder, a local path or an s3:// URI (see the module docstring).

        Raises:
            LLMFatalError: an actor met a fatal endpoint error (everything answered before is in the shards).
        """
        if not requests:
            return
        ray = ray_module()
        adaptive = not isinstance(concurrency, int)
        per_worker = max(1, math.ceil((concurrency.max if adaptive else concurrency) / self.workers))
        size = self.batch_size or per_worker * 4
        actors = self._actors(ray, per_worker, shards, adaptive)
        setup = self._pool_key  # what the actors serve, sent with each batch (see _Answerer.answer)
        by_id = {request.id: request for request in requests}
        batches = [[(r.id, _encode_request(r)) for r in requests[i:i + size]] for i in range(0, len(requests), size)]
        pending = iter(batches)
        running: dict[Any, Any] = {}  # object ref -> actor
        for actor in actors:
            for batch in (next(pending, None), next(pending, None)):
                if batch is not None:
                    running[actor.answer.remote(batch, setup)] = actor
        fatal = None
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            batch = next(pending, None)
            if batch is not None and fatal is None:
                running[actor.answer.remote(batch, setup)] = actor
            for request_id, kind, payload in ray.get(done[0]):
                request = by_id[request_id]
                if kind == "ok":
                    on_result(request, Completion.from_dict(json.loads(payload)))
                elif kind == "too_long":
                    on_result(request, LLMPromptTooLongError(payload))
                else:
                    fatal = payload if kind == "fatal" else fatal
                    on_result(request, LLMRetryableError(payload))
        if fatal:
            raise LLMFatalError(fatal)

    def _actors(self, ray, per_worker: int, shards: Path | str, adaptive: bool = False) -> list:
        """The run's actors, set to serve `shards` with `per_worker` in flight: the ones `start` began,
        or fresh ones if they already served another shard folder or load."""
        from engine.remote import is_remote

        key = (per_worker, str(shards), adaptive)
        if self._pool_key != key:
            if self._pool_key is not None:
                self.shutdown()
            self.start()
            if not is_remote(shards):
                Path(shards).mkdir(parents=True, exist_ok=True)
                _warn_if_other_nodes(ray, self._pool, shards)
            self._pool_key = key
        return self._pool

    def shutdown(self) -> None:
        """Stop the run's actors (their shards stay: they are the journal). Each first closes its shard
        (on S3: its last part uploaded, its local copy deleted); one that does not answer in 30 s is
        killed all the same (what it holds was uploaded after its last batch)."""
        pool, self._pool, self._pool_key = self._pool, [], None
        if pool:
            ray = ray_module()
            ray.wait([actor.close.remote() for actor in pool], num_returns=len(pool), timeout=30)
            for actor in pool:
                ray.kill(actor, no_restart=True)


class _Answerer:
    """A Ray actor's work: answer batches through the client, journalling each answer in its own shard.

    Its methods are coroutines, so Ray runs it as an async actor: the batches queued on it run
    together on one event loop (no gap between batches) under one gate of `per_worker` requests in
    flight, and the client keeps its connections from batch to batch. With `adaptive`, the batches
    are sent by the in-process runner (`engine.llm.runner.run_requests`) under one `AdaptiveLimit`
    they share, learning between 1 and `per_worker` in flight from this actor's own 429s, timeouts
    and latencies (each actor backs off on its own, as TCP senders do). A fixed gate is a plain
    semaphore: through the runner, 2,000 requests ran 6 % slower (benchmarks/bench_ray.py).
    """

    def __init__(self, endpoints, model: str, timeout: float, max_retries: int):
        import engine.llm.client  # noqa: F401  (imported while the actor starts, not on its first batch)
        import engine.llm.runner  # noqa: F401
        import engine.llm.shards  # noqa: F401

        self.endpoints, self.model, self.timeout, self.max_retries = endpoints, model, timeout, max_retries
        self.setup: tuple[int, str, bool] | None = None  # (in flight, shard folder, adaptive) it serves; see open

    def open(self, per_worker: int, shards: str, adaptive: bool) -> None:
        """Set up the clients and the journal shard for batches of `per_worker` in flight, journalled in
        `shards`. Done on the first batch, not on start: the actor is started before the run plans
        (before the run folder is locked), and a restarted actor opens again on its next batch."""
        from engine.llm.adaptive import AdaptiveLimit
        from engine.llm.client import OpenAIChat
        from engine.llm.replicas import ReplicaPool
        from engine.llm.shards import ShardWriter

        self.limit = AdaptiveLimit(min(4, per_worker), max=per_worker) if adaptive else None
        self.per_worker, self.gate = per_worker, None  # the fixed gate is made in the actor's event loop
        clients = [OpenAIChat(url, self.model, api_key=key, timeout=self.timeout, max_retries=self.max_retries,
                              on_retry=self.limit.on_retry if adaptive else None) for url, key in self.endpoints]
        self.llm = clients[0] if len(clients) == 1 else ReplicaPool(clients)
        self.shard = ShardWriter(shards)
        # earlier shards (a dead predecessor's included): their answers are not paid again
        self.known = self.shard.known
        self.journal = self.shard.journal
        self.setup = (per_worker, shards, adaptive)

    async def answer(self, batch: list[tuple[str, str]], setup: tuple[int, str, bool]) -> list[tuple[str, str, str]]:
        """(request id, kind, payload) per request: kind ok (payload: the completion as JSON),
        too_long, failed or fatal (payload: the error). `setup`: `open`'s arguments, applied on the
        actor's first batch (one actor serves one setup: RayLLM starts new ones for another)."""
        from engine.llm.runner import run_requests

        if self.setup is None:
            self.open(*setup)
        out: dict[str, tuple[str, str]] = {}
        to_send = []
        for request_id, text in batch:
            found = self.known.get((request_id, self.model))
            if found is not None:
                out[request_id] = ("ok", json.dumps(asdict(found)))
            else:
                to_send.append(_decode_request(request_id, text))

        def record(request: Request, result: Completion | LLMError) -> None:
            if isinstance(result, LLMFatalError):  # the endpoint is gone: the driver stops the run
                out[request.id] = ("fatal", str(result))
            elif isinstance(result, LLMError):
                self.journal.record_failed(request.id, self.model, str(result))
                out[request.id] = ("too_long" if isinstance(result, LLMPromptTooLongError) else "failed", str(result))
            else:
                self.journal.record_ok(request.id, self.model, result)
                self.known[(request.id, self.model)] = result
                out[request.id] = ("ok", json.dumps(asdict(result)))
            self.shard.upload_soon()

        try:
            if self.limit is not None:
                await run_requests(self.llm, to_send, concurrency=self.limit, on_result=record)
            else:
                await asyncio.gather(*(self._gated(request, record) for request in to_send))
        except LLMFatalError as error:  # the endpoint is gone: the driver stops the run
            for request in to_send:
                out.setdefault(request.id, ("fatal", str(error)))
        self.journal.sync()
        await self.shard.upload_now()
        return [(request_id, *out[request_id]) for request_id, _ in batch]

    async def close(self) -> None:
        """Close this actor's shard before it is killed (see `ShardWriter.close`); one that never had a
        batch has none."""
        if self.setup is not None:
            await self.shard.close()

    def node(self) -> str:
        """The Ray node this actor runs on."""
        return ray_module().get_runtime_context().get_node_id()

    async def _gated(self, request: Request, record) -> None:
        """One request under the fixed gate, its answer or error (a fatal one included) recorded."""
        if self.gate is None:
            self.gate = asyncio.Semaphore(self.per_worker)
        async with self.gate:
            try:
                result = await self.llm.complete(request.chat_messages(), request.sampling, request.json_schema)
            except LLMError as error:
                result = error
        record(request, result)


def _warn_if_other_nodes(ray, actors: list, shards: Path | str) -> None:
    """Warn once when actors run on nodes other than the driver's while the shard folder is a local path."""
    here = ray.get_runtime_context().get_node_id()
    if any(node != here for node in ray.get([actor.node.remote() for actor in actors])):
        log.warning("workers on other nodes journal their answers in %s on their own disks, where a re-run after a "
                    "killed driver cannot see them (it would pay for those answers again); put the run folder on "
                    "storage every node reaches: --out s3://BUCKET/PREFIX", shards)


def _encode_request(request: Request) -> str:
    """What an actor needs to send a request (not its passage or provenance), as JSON."""
    return json.dumps({"messages": request.messages, "sampling": asdict(request.sampling), "schema": request.json_schema},
                      ensure_ascii=False)


def _decode_request(request_id: str, text: str) -> Request:
    data = json.loads(text)
    return Request(id=request_id, label="", messages=tuple((role, content) for role, content in data["messages"]),
                   template_id="", template_sha256="", sampling=SamplingParams.from_dict(data["sampling"]),
                   json_schema=data["schema"])
