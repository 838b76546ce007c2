"""Peers side by side: the same chat requests through Seedbed, Curator, distilabel and NeMo Data Designer.

Every tool sends the same `--requests` chat requests (a fixed system message and a numbered user
message each; temperature 0.8, top_p 0.95, max_tokens 64) at the same `--concurrency`, through its
own high-level API with its own resume turned on, to the same endpoint:

- Seedbed: `engine.calls.call_all` with a `Journal` and `OpenAIChat`, the path every `seedbed synth`
  round sends through (no prompt building, parsing or filters: the peers do none either);
- Curator (`bespokelabs-curator`): a `curator.LLM` subclass, `backend="openai"`, responses cached in
  its working dir (its resume); rate limits set far above the endpoint's, `max_concurrent_requests`;
- distilabel: `LoadDataFromDicts >> ChatGeneration(OpenAILLM)`, `input_batch_size` = concurrency
  (its async LLM sends one batch at a time), `pipeline.run(use_cache=True)` (its resume);
- Data Designer (`data-designer`): a seed DataFrame and one `LLMTextColumnConfig`,
  `max_parallel_requests` = concurrency, `create(..., resume=ResumeMode.IF_POSSIBLE)`, its default
  row group (`buffer_size` 1000) as the resume unit.

Each peer is installed from PyPI into its own venv under `--venvs` (reused across runs) and run
there as a subprocess from a driver this script writes into a temp folder; Seedbed runs the same
way with this interpreter. Every tool gets only loopback URLs and HF_HUB_OFFLINE / telemetry-off
variables (Curator's PostHog and Data Designer's NeMo telemetry would otherwise retry unreachable
hosts). What the peers need offline: Curator's tiktoken `cl100k_base` file is taken from the copy
litellm ships; distilabel 1.5.3 needs `requests` installed beside it; Data Designer's token
statistics of the finished dataset want a tiktoken download and are skipped with a warning. A peer
that cannot be installed or cannot finish gets a row saying why instead of numbers.

Endpoints (`--endpoints`): `fake`, `engine.testing.FakeOpenAIServer` answering after `--latency`
seconds; `fake429`, the same with a rate-limit episode: the 2 x concurrency chat requests that
arrive from a quarter of the run on get 429 with Retry-After 1 s; `llama`, the embedded
llama-server with SmolLM2-135M (`--llama-requests`, fewer: it is CPU-bound on this machine) behind
a recording proxy. The fake endpoints run in this process (a fresh one per tool run) and record
each chat request's messages as it arrives and when its 200 answer is written. Data Designer sends
every message's content as a list of text parts, which the real API and llama-server accept; the
fake endpoint here joins them into the plain string it takes.

Measured per tool and endpoint, in a clean run: wall seconds from process start to exit, the
seconds before its first request arrives (imports, setup), requests/s (requests / wall), peak RSS
of its whole process tree (the sum over its session's processes, sampled every 0.1 s), the chat
requests the endpoint received (retries, 429s and probes included), and a check that every one of
the messages was answered as sent. Then the kill test in a fresh folder: SIGKILL to the tool's
process group once the endpoint has answered half the requests, the same command again in the same
folder, and from the endpoint's record: the requests answered before the kill, and how many of
them the restart sent again (paid twice), in all and among those answered at least 0.5 s before
the kill (time enough to store an answer: a re-send there is the tool's design, not an answer
caught in flight). A run that sends nothing and gets no answer for `--stall` seconds is killed
and reported as stalled (distilabel 1.5.3's restart from its cache does this here, as in
argilla-io/distilabel#1065). The floor (requests x latency / concurrency) is printed for the fake
endpoints; ratios are Seedbed's over each peer's. Run it on a quiet machine: every tool and the
endpoint share its cores.

Usage:
    python benchmarks/bench_peers.py [--requests 1000] [--latency 0.05] [--concurrency 16]
        [--peers seedbed,curator,distilabel,data-designer] [--endpoints fake,fake429,llama]
        [--llama-requests 100] [--venvs /tmp/seedbed-peer-venvs] [--stall 60] [--no-kill] [--keep] [--record]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from engine.errors import RuntimeSetupError
from engine.testing import FakeOpenAIServer, Fault

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
SYSTEM = "You write one short, factual news headline. Answer with the headline only."
TOPICS = ("oil prices", "a football final", "a central bank decision", "a new phone", "wheat exports",
          "an election", "a chip factory", "a heat wave", "a merger", "a space launch")
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64, "seed": 0}
SETTLED_S = 0.5  # answers written this long before the kill had time to be stored: re-sending them is by design
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "NEMO_TELEMETRY_ENABLED": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DO_NOT_TRACK": "1",
               "ANONYMIZED_TELEMETRY": "false", "TELEMETRY_ENABLED": "false",
               "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}

# (PyPI requirements, distribution whose version is reported) per peer; Seedbed runs in this venv.
# distilabel 1.5.3 imports `requests` without declaring it.
PEERS = {"seedbed": None, "curator": (["bespokelabs-curator"], "bespokelabs-curator"),
         "distilabel": (["distilabel[openai]", "requests"], "distilabel"),
         "data-designer": (["data-designer"], "data-designer")}

# The drivers: each reads the spec (base_url, model, api_key, concurrency, work, requests, sampling)
# from argv[1], sends every request through its tool, and prints {"answers": n} as its last line.
DRIVER_HEAD = "import json, sys\nfrom pathlib import Path\nspec = json.loads(Path(sys.argv[1]).read_text())\n" \
              "work, rows, s, c = Path(spec['work']), spec['requests'], spec['sampling'], spec['concurrency']\n" \
              "work.mkdir(parents=True, exist_ok=True)\n"
DRIVERS = {
    "seedbed": """
from engine.calls import Progress, call_all
from engine.ids import request_id
from engine.journal import Journal
from engine.llm.client import OpenAIChat
from engine.types import Request, SamplingParams

sampling = SamplingParams(**s)
requests = []
for row in rows:
    messages = tuple((m["role"], m["content"]) for m in row["messages"])
    requests.append(Request(request_id("bench-peers", "", messages, sampling, 0), "", messages, "bench", "", sampling))
llm = OpenAIChat(spec["base_url"], spec["model"], api_key=spec["api_key"])
with Journal(work / "journal.jsonl") as journal:
    answers = call_all(requests, llm, journal, c, Progress(), None)
print(json.dumps({"answers": len(answers)}))
""",
    "curator": """
# Curator counts tokens with tiktoken's cl100k_base, which tiktoken downloads; litellm (a Curator
# dependency) ships that file, and importing this module points TIKTOKEN_CACHE_DIR at it.
from litellm.litellm_core_utils import default_encoding  # noqa: F401
from bespokelabs import curator

class Chat(curator.LLM):
    def prompt(self, row):
        return row["messages"]

    def parse(self, row, response):
        return {"id": row["id"], "answer": response}

llm = Chat(model_name=spec["model"], backend="openai",
           generation_params={"temperature": s["temperature"], "top_p": s["top_p"], "max_tokens": s["max_tokens"],
                              "seed": s["seed"]},
           backend_params={"base_url": spec["base_url"], "api_key": spec["api_key"], "max_concurrent_requests": c,
                           "max_requests_per_minute": 10**7, "max_tokens_per_minute": 10**10})
out = llm(rows, working_dir=str(work / "curator"))
print(json.dumps({"answers": len(out.dataset if hasattr(out, "dataset") else out)}))
""",
    "distilabel": """
from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import ChatGeneration

if __name__ == "__main__":
    with Pipeline(name="bench-peers", cache_dir=work / "distilabel") as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=c)
        llm = OpenAILLM(model=spec["model"], base_url=spec["base_url"], api_key=spec["api_key"],
                        generation_kwargs={"temperature": s["temperature"], "top_p": s["top_p"],
                                           "max_new_tokens": s["max_tokens"]})
        load >> ChatGeneration(llm=llm, input_batch_size=c)
    distiset = pipeline.run(use_cache=True)
    print(json.dumps({"answers": sum(len(split) for d in distiset.values() for split in d.values())}))
""",
    "data-designer": """
import pandas as pd
import data_designer.config as dd
from data_designer.interface import DataDesigner

frame = pd.DataFrame([{"id": r["id"], "system": r["messages"][0]["content"], "user": r["messages"][1]["content"]}
                      for r in rows])
provider = dd.ModelProvider(name="bench", endpoint=spec["base_url"], provider_type="openai", api_key=spec["api_key"])
params = dd.ChatCompletionInferenceParams(temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"],
                                          max_parallel_requests=c, extra_body={"seed": s["seed"]})
builder = dd.DataDesignerConfigBuilder(model_configs=[dd.ModelConfig(alias="m", model=spec["model"], provider="bench",
                                                                     inference_parameters=params)])
builder.with_seed_dataset(dd.DataFrameSeedSource(df=frame))
builder.add_column(dd.LLMTextColumnConfig(name="answer", prompt="{{ user }}", system_prompt="{{ system }}", model_alias="m"))
designer = DataDesigner(artifact_path=work / "artifacts", model_providers=[provider])
result = designer.create(builder, num_records=len(rows), dataset_name="bench", resume=dd.ResumeMode.IF_POSSIBLE)
print(json.dumps({"answers": len(result.load_dataset())}))
""",
}


def make_requests(n: int) -> list[dict]:
    return [{"id": f"r{i:05d}", "messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": f"Write one news headline about {TOPICS[i % len(TOPICS)]}, story {i}."}]}
            for i in range(n)]


class Recorder:
    """What an endpoint saw: each chat request's messages in arrival order, and which were answered (200)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.arrived: list[str] = []
        self.answered: dict[str, float] = {}  # messages -> when its answer was written
        self.sampling: dict[str, tuple] = {}  # messages -> (temperature, top_p, max_tokens, seed) sent
        self.first: float | None = None
        self.last = 0.0  # when a request last arrived or was answered

    def arrive(self, body) -> str | None:
        if not isinstance(body, dict):
            return None
        key = json.dumps(body.get("messages"), sort_keys=True)
        with self.lock:
            self.first = self.first or time.monotonic()
            self.last = time.monotonic()
            self.arrived.append(key)
            self.sampling[key] = tuple(body.get(k) for k in ("temperature", "top_p", "max_tokens", "seed"))
        return key

    def answer(self, key: str | None) -> None:
        if key is not None:
            with self.lock:
                self.last = time.monotonic()
                self.answered.setdefault(key, self.last)


def plain_text(body):
    """The body with OpenAI content-part lists ([{"type": "text", "text": ...}], as Data Designer sends every
    message) joined into the plain string the fake endpoint accepts; the real API and llama-server take both."""
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        for message in body["messages"]:
            if isinstance(message, dict) and isinstance(message.get("content"), list):
                message["content"] = "".join(part.get("text", "") for part in message["content"] if isinstance(part, dict))
    return body


class RecordingFake(FakeOpenAIServer):
    """FakeOpenAIServer that tells a Recorder each chat request's arrival and its written 200 answer."""

    def __init__(self, recorder: Recorder, **kwargs):
        super().__init__(**kwargs)
        self.recorder = recorder

    def _serve_chat(self, handler, body, fault):
        body = plain_text(body)
        key = self.recorder.arrive(body)
        super()._serve_chat(handler, body, fault)
        if fault is None or fault.kind == "slow":
            self.recorder.answer(key)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._forward("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._forward("POST")

    def _forward(self, method: str) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        key = None
        if method == "POST" and self.path.rstrip("/").endswith("/chat/completions"):
            try:
                key = self.server.recorder.arrive(plain_text(json.loads(raw or b"null")))
            except ValueError:
                pass
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=900)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        upstream.request(method, self.path, body=raw, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.getheader("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            return
        if response.status == 200:
            self.server.recorder.answer(key)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def recording_proxy(upstream_url: str, recorder: Recorder):
    """A loopback HTTP proxy to `upstream_url` that records chat requests; yields its base URL."""
    parts = urlsplit(upstream_url)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    server.daemon_threads, server.request_queue_size = True, 256
    server.upstream, server.recorder = (parts.hostname, parts.port), recorder
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{parts.path}"
    finally:
        server.shutdown()
        server.server_close()


def tree_rss(session: int) -> int:
    """Bytes resident in every process of this session (the tool and all its workers)."""
    total = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == session:
                total += int(fields[21]) * PAGE
    return total


def run_tool(cmd: list[str], env: dict, log: Path, recorder: Recorder, args, kill_at: int | None = None) -> dict:
    """Run a driver in its own session; SIGKILL its process group once `kill_at` requests are answered,
    or as stalled once it has neither sent nor been answered anything for `args.stall` seconds."""
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    peak, ticks, killed = 0, 0, None
    while process.poll() is None:
        if ticks % 5 == 0:
            peak = max(peak, tree_rss(process.pid))
        ticks += 1
        if kill_at is not None and killed is None and len(recorder.answered) >= kill_at:
            os.killpg(process.pid, signal.SIGKILL)
            killed = time.monotonic()
        elif time.monotonic() - max(started, recorder.last) > args.stall:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return {"error": f"stalled: no request sent or answered for {args.stall:.0f}s, killed"}
        time.sleep(0.02)
    wall = time.monotonic() - started
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind
    except ProcessLookupError:
        pass
    result = {"wall_s": round(wall, 2), "peak_rss_mib": round(peak / 2**20, 1), "rc": process.returncode,
              "startup_s": round(recorder.first - started, 2) if recorder.first and recorder.first > started else None}
    if killed is not None:
        with recorder.lock:
            result["answered_before_kill"] = {key: killed - at for key, at in recorder.answered.items() if at <= killed}
    elif process.returncode != 0:
        result["error"] = last_error(log)
    else:
        result["answers"] = answers_line(log)
    return result


def last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def answers_line(log: Path) -> int | None:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith('{"answers"'):
            return json.loads(line)["answers"]
    return None


def ensure_peer(name: str, venvs: Path) -> tuple[str, str]:
    """(python, version) for a peer, installing it into its own venv on first use; raises RuntimeError(why)."""
    if PEERS[name] is None:
        return sys.executable, "this checkout"
    requirements, dist = PEERS[name]
    venv = venvs / name
    python, marker = venv / "bin" / "python", venv / "bench-peers-installed.txt"
    if not marker.exists() or marker.read_text() != " ".join(requirements):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"installing {' '.join(requirements)} into {venv} ...", flush=True)
        pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError(f"pip install failed: {(pip.stderr.strip().splitlines() or ['?'])[-1]}")
        marker.write_text(" ".join(requirements))
    version = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                             capture_output=True, text=True, check=True)
    return str(python), version.stdout.strip()


class Endpoint:
    """Starts a recorded endpoint per tool run; `llama` keeps one llama-server up for all of them."""

    def __init__(self, kind: str, args, n: int):
        self.kind, self.args, self.n = kind, args, n
        self.llama = None

    def __enter__(self):
        if self.kind == "llama":
            from engine.runtime.server import LocalServer, ServerConfig

            self.llama = LocalServer.from_catalog("smollm2-135m", ServerConfig(parallel=self.args.concurrency)).__enter__()
        return self

    def __exit__(self, *exc):
        if self.llama is not None:
            self.llama.__exit__(*exc)

    @contextmanager
    def serve(self, recorder: Recorder):
        """(base_url, model, api_key) of a fresh recorded endpoint."""
        if self.llama is not None:
            with recording_proxy(self.llama.base_url, recorder) as url:
                yield url, self.llama.model, self.llama.api_key or "none"
            return
        schedule = None
        if self.kind == "fake429":
            start, burst = self.n // 4, 2 * self.args.concurrency
            schedule = lambda number, body: Fault.rate_limit(1.0) if start < number <= start + burst else None  # noqa: E731
        with RecordingFake(recorder, latency=self.args.latency, schedule=schedule, api_key="bench-key") as server:
            yield server.base_url, server.model, "bench-key"


def measure(name: str, python: str, endpoint: Endpoint, requests: list[dict], args, tmp: Path) -> dict:
    """A clean run, then a run killed at half the answers and restarted in the same folder."""
    env = {**os.environ, **OFFLINE_ENV}
    if name == "seedbed":
        env["PYTHONPATH"] = str(ROOT)
    driver = tmp / f"{name}_driver.py"
    driver.write_text(DRIVER_HEAD + DRIVERS[name], encoding="utf-8")

    def start(folder: Path, recorder: Recorder, base_url: str, model: str, api_key: str, kill_at=None) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        spec = {"base_url": base_url, "model": model, "api_key": api_key, "concurrency": args.concurrency,
                "work": str(folder / "work"), "requests": requests, "sampling": SAMPLING}
        (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        env_here = {**env, "HF_HOME": str(folder / "hf"), "DATA_DESIGNER_HOME": str(folder / "dd-home"),
                    "OPENAI_API_KEY": api_key}
        return run_tool([python, str(driver), str(folder / "spec.json")], env_here, folder / "log.txt", recorder,
                        args, kill_at)

    recorder = Recorder()
    with endpoint.serve(recorder) as (url, model, key):
        clean = start(tmp / f"{name}-{endpoint.kind}-clean", recorder, url, model, key)
    clean["chat_requests"] = len(recorder.arrived)
    expected = {json.dumps(r["messages"], sort_keys=True) for r in requests}
    clean["answered"] = len(expected.intersection(recorder.answered))  # of these messages, exactly as sent
    clean["sampling_sent"] = sorted({recorder.sampling[k] for k in expected & recorder.sampling.keys()}, key=str)
    if "error" in clean:
        return clean
    clean["req_per_s"] = round(len(requests) / clean["wall_s"], 2)
    if args.no_kill:
        return clean
    recorder = Recorder()
    folder = tmp / f"{name}-{endpoint.kind}-kill"
    with endpoint.serve(recorder) as (url, model, key):
        killed = start(folder, recorder, url, model, key, kill_at=len(requests) // 2)
        before = killed.get("answered_before_kill")
        if before is None:
            clean["kill"] = {"error": killed.get("error", "the run ended before half its requests were answered")}
            return clean
        sent_before = len(recorder.arrived)
        restarted = start(folder, recorder, url, model, key)
    after = set(recorder.arrived[sent_before:])
    settled = {key for key, ago in before.items() if ago >= SETTLED_S}
    clean["kill"] = {"answered_before_kill": len(before), "sent_after_restart": len(recorder.arrived) - sent_before,
                     "resent": len(after.intersection(before)), "settled": len(settled),
                     "resent_settled": len(after & settled), "restart_wall_s": restarted.get("wall_s"),
                     "complete": len(recorder.answered) >= len(requests) and "error" not in restarted,
                     **({"error": restarted["error"]} if "error" in restarted else {})}
    return clean


def print_table(kind: str, n: int, rows: dict, args) -> None:
    timing = f", latency {args.latency}s, floor {n * args.latency / args.concurrency:.1f}s" if kind != "llama" else ""
    print(f"\n{kind}: {n} requests, concurrency {args.concurrency}{timing}")
    print(f"{'tool':14} {'version':13} {'wall s':>7} {'start s':>7} {'req/s':>7} {'RSS MiB':>7} {'chats':>6} | "
          f"{'killed':>6} {'re-sent':>9} {f're-sent >={SETTLED_S}s':>13} {'restart s':>9}  note")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:14} {r.get('version', ''):13} cannot run: {r['error']}")
            continue
        k = r.get("kill", {})
        notes = [] if r.get("answered") == n else [f"the endpoint answered {r.get('answered')} of the {n} messages"]
        if r.get("answers") not in (None, n):
            notes.append(f"the tool returned {r['answers']} rows")
        if k.get("error"):
            notes.append(f"kill test: {k['error']}")
        elif k and not k["complete"]:
            notes.append("incomplete after restart")
        shown = "resent" in k and "error" not in k  # a restart that failed re-sent nothing, but saved nothing either
        resent = f"{k['resent']}/{k['answered_before_kill']}" if shown else "-"
        settled = f"{k['resent_settled']}/{k['settled']}" if shown else "-"
        print(f"{name:14} {r['version']:13} {r['wall_s']:7.2f} {r['startup_s'] or 0:7.2f} {r['req_per_s']:7.1f} "
              f"{r['peak_rss_mib']:7.0f} {r['chat_requests']:6d} | {k.get('answered_before_kill', '-'):>6} {resent:>9} "
              f"{settled:>13} {k.get('restart_wall_s') or '-':>9}  " + "; ".join(notes))
    wanted = [tuple(SAMPLING[k] for k in ("temperature", "top_p", "max_tokens", "seed"))]
    for name, r in rows.items():
        if r.get("sampling_sent", wanted) != wanted:
            print(f"{name} sent (temperature, top_p, max_tokens, seed) = {r['sampling_sent']}, not {wanted[0]}")
    base = rows.get("seedbed", {})
    for name, r in rows.items():
        if name != "seedbed" and "req_per_s" in r and "req_per_s" in base:
            print(f"seedbed / {name}: req/s {base['req_per_s'] / r['req_per_s']:.2f}x, "
                  f"peak RSS {base['peak_rss_mib'] / r['peak_rss_mib']:.2f}x")


def run_endpoint(kind: str, n: int, peers: dict, args) -> dict:
    """Every peer's measurements against one kind of endpoint, in a folder of its own."""
    requests, rows = make_requests(n), {}
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-peers-{kind}-"))
    try:
        with Endpoint(kind, args, n) as endpoint:
            for name, (python, version) in peers.items():
                if python is None:
                    rows[name] = {"version": "", "error": version}
                    continue
                print(f"{kind}: {name} {version} ...", flush=True)
                rows[name] = {"version": version, **measure(name, python, endpoint, requests, args, tmp)}
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake endpoint takes per answer")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--endpoints", default="fake,fake429,llama")
    parser.add_argument("--llama-requests", type=int, default=100, help="requests per tool against llama-server")
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/seedbed-peer-venvs"))
    parser.add_argument("--stall", type=float, default=60,
                        help="kill a tool run that sends nothing and gets no answer for this many seconds")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill-and-restart test")
    parser.add_argument("--keep", action="store_true", help="keep each endpoint's folder (drivers, logs, tool outputs)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/peers-<date>.json")
    args = parser.parse_args()

    unknown = set(args.peers.split(",")) - PEERS.keys() or set(args.endpoints.split(",")) - {"fake", "fake429", "llama"}
    if unknown:
        parser.error(f"unknown peer or endpoint: {', '.join(sorted(unknown))}")
    peers = {}
    for name in args.peers.split(","):
        try:
            peers[name] = ensure_peer(name, args.venvs)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            peers[name] = (None, str(exc))
    results = {}
    for kind in args.endpoints.split(","):
        n = args.llama_requests if kind == "llama" else args.requests
        try:
            rows = run_endpoint(kind, n, peers, args)
        except RuntimeSetupError as exc:  # llama-server or its model is missing and cannot be had offline
            print(f"\n{kind}: cannot start the endpoint: {exc}")
            results[kind] = {"requests": n, "error": str(exc)}
            continue
        print_table(kind, n, rows, args)
        results[kind] = {"requests": n, "tools": rows}
    if args.record:
        record = {"date": date.today().isoformat(),
                  "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
                  "concurrency": args.concurrency, "fake_latency_s": args.latency, "sampling": SAMPLING,
                  "endpoints": results}
        path = RESULTS / f"peers-{record['date']}.json"
        path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
