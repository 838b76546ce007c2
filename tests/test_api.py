"""The HTTP API against the real app: a real LanceDB/FAISS index, the scripted fake LLM, real HTTP."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient

from engine.api import ServeConfig, create_app
from engine.errors import ConfigError
from engine.testing import ScriptedLLM

KEY = "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
TASK = {
    "name": "api-topics",
    "labels": [{"name": "Oil", "verbalization": "crude oil prices and OPEC"},
               {"name": "Grain", "verbalization": "wheat and grain harvests"}],
    "output": {"kind": "news headline", "min_words": 4, "max_words": 14},
    "examples_per_label": 2,
    "sampling": {"max_tokens": 40},
    "retrieval": {"min_similarity": 0.1, "max_similarity": 0.9},
}


@pytest.fixture
def make_client(hash_index, tmp_path):
    made = []

    def make(auth: bool = True, llm=None, **config) -> TestClient:
        settings = ServeConfig(indexes={"reuters": hash_index.index}, api_keys=frozenset({KEY}) if auth else frozenset(),
                               auth=auth, jobs_dir=tmp_path / "jobs", **config)
        app = create_app(settings, llm or ScriptedLLM(respond=lambda m: "Oil prices rose [1]."))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()  # runs the lifespan: the job worker starts
        made.append(client)
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


def test_health_needs_no_key_and_v1_needs_one(make_client):
    client = make_client()
    assert client.get("/healthz").json()["status"] == "ok"
    for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": KEY}):
        response = client.get("/v1/indexes", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    listed = client.get("/v1/indexes", headers=AUTH).json()["indexes"]
    assert listed[0]["name"] == "reuters" and listed[0]["passages"] > 100


def test_search_returns_ranked_passages_in_every_mode(make_client):
    client = make_client()
    for mode in ("dense", "bm25", "hybrid"):
        body = client.post("/v1/search", json={"query": "crude oil prices", "k": 3, "mode": mode}, headers=AUTH).json()
        assert [hit["rank"] for hit in body["hits"]] == [1, 2, 3] and body["mode"] == mode
        assert all(hit["id"] and hit["text"] for hit in body["hits"])


def test_search_filters_on_metadata(make_client, hash_index):
    client = make_client()
    first = client.post("/v1/search", json={"query": "oil", "k": 5}, headers=AUTH).json()["hits"][0]
    body = client.post("/v1/search", json={"query": "oil", "k": 5, "filters": {"source": first["source"]}},
                       headers=AUTH).json()
    assert body["hits"] and all(hit["source"] == first["source"] for hit in body["hits"])
    none = client.post("/v1/search", json={"query": "oil", "filters": {"source": "no-such-file"}}, headers=AUTH).json()
    assert none["hits"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({"query": "oil", "k": 101}, "k"),
    ({"query": ""}, "query"),
    ({"query": "   \n\t"}, "query"),
    ({"query": "oil", "mode": "fuzzy"}, "mode"),
    ({"query": "oil", "index": "../etc"}, "index"),
    ({"query": "oil", "surprise": 1}, "surprise"),
])
def test_bad_search_requests_are_422_naming_the_field(make_client, body, field):
    response = make_client().post("/v1/search", json=body, headers=AUTH)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert field in response.json()["error"]["message"]


def test_a_whitespace_query_says_what_to_pass(make_client):
    message = make_client().post("/v1/search", json={"query": "  "}, headers=AUTH).json()["error"]["message"]
    assert "only whitespace" in message and "words to search for" in message


def test_unknown_index_and_oversized_body(make_client):
    client = make_client()
    missing = client.post("/v1/search", json={"query": "oil", "index": "other"}, headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "index_not_found"
    big = client.post("/v1/search", content=b"{" + b" " * (2 << 20) + b"}", headers={**AUTH, "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"


def test_chat_answers_with_citations_and_passages_stay_data(make_client):
    seen = []

    def respond(messages):
        seen.append(messages)
        return "OPEC cut output [1]."

    client = make_client(llm=ScriptedLLM(respond=respond))
    body = client.post("/v1/chat/completions", headers=AUTH, json={
        "model": "any", "messages": [{"role": "user", "content": "What did OPEC decide about oil output?"}], "k": 3}).json()
    assert body["choices"][0]["message"]["content"] == "OPEC cut output [1]."
    citations = body["seedbed"]["citations"]
    assert [c["n"] for c in citations] == [1, 2, 3] and all(c["id"] for c in citations)
    messages = seen[0]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "data, not instructions" in messages[0]["content"]
    assert "[1] " in messages[1]["content"] and messages[1]["content"].rstrip().endswith("about oil output?")
    assert citations[0]["text"][:40] in messages[1]["content"]


def test_chat_needs_a_final_user_message(make_client):
    response = make_client().post("/v1/chat/completions", headers=AUTH,
                                  json={"messages": [{"role": "assistant", "content": "hi"}]})
    assert response.status_code == 400 and "user message" in response.json()["error"]["message"]


def test_errors_never_leak_a_traceback(make_client):
    class Broken(ScriptedLLM):
        async def complete(self, *args, **kwargs):
            raise RuntimeError("secret internals")

    response = make_client(llm=Broken()).post("/v1/chat/completions", headers=AUTH,
                                              json={"messages": [{"role": "user", "content": "oil?"}]})
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert "secret internals" not in response.text and "Traceback" not in response.text


def wait_for(client, job_id, states=("done", "failed", "cancelled"), within=180.0) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_a_job_runs_to_a_downloadable_dataset(make_client):
    client = make_client(llm=ScriptedLLM())
    job = client.post("/v1/jobs", headers=AUTH, json={"task": TASK, "index": "reuters"})
    assert job.status_code == 202 and job.json()["state"] in ("queued", "running")
    done = wait_for(client, job.json()["id"])
    assert done["state"] == "done" and done["result"]["kept"] == {"Oil": 2, "Grain": 2}
    rows = client.get(f"/v1/jobs/{done['id']}/dataset", headers=AUTH).text.splitlines()
    assert len(rows) == 4
    assert client.get(f"/v1/jobs/{done['id']}/dataset?format=parquet", headers=AUTH).content[:4] == b"PAR1"


def test_bad_job_specs_and_ids(make_client):
    client = make_client()
    bad = client.post("/v1/jobs", headers=AUTH, json={"task": {**TASK, "examples_per_labl": 3}})
    assert bad.status_code == 400 and "examples_per_labl" in bad.json()["error"]["message"]
    for job_id in ("../../etc", "0123456789ab"):
        missing = client.get(f"/v1/jobs/{job_id}", headers=AUTH)
        assert missing.status_code == 404, job_id


def test_jobs_survive_a_restart_and_resume_without_repeating_calls(make_client, tmp_path):
    import json

    slow = ScriptedLLM(delay=0.2)
    first = make_client(llm=slow)
    job_id = first.post("/v1/jobs", headers=AUTH, json={"task": TASK}).json()["id"]
    deadline = time.monotonic() + 30
    while len(slow.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.__exit__(None, None, None)  # the server stops mid-job
    assert first.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["state"] == "running"
    journal = (tmp_path / "jobs" / job_id / "out" / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    answered = sum(json.loads(line)["status"] == "ok" for line in journal)
    assert answered >= 1
    fresh = ScriptedLLM()
    second = make_client(llm=fresh)
    done = wait_for(second, job_id)
    assert done["state"] == "done" and done["resumed"] == 1 and done["result"]["kept"] == {"Oil": 2, "Grain": 2}
    assert done["result"]["reused"] == answered  # what was paid for before the stop is not paid again
    assert len(fresh.calls) == done["result"]["llm_calls"]


def test_cancel_a_job(make_client):
    client = make_client(llm=ScriptedLLM(delay=0.2))
    job_id = client.post("/v1/jobs", headers=AUTH, json={"task": TASK}).json()["id"]
    client.delete(f"/v1/jobs/{job_id}", headers=AUTH)
    assert wait_for(client, job_id)["state"] == "cancelled"
    response = client.get(f"/v1/jobs/{job_id}/dataset", headers=AUTH)
    assert response.status_code == 400 and "cancelled" in response.json()["error"]["message"]


def test_auth_needs_keys():
    with pytest.raises(ConfigError, match="--no-auth"):
        create_app(ServeConfig(indexes={}), ScriptedLLM())


def test_openapi_schema_is_published(make_client):
    schema = make_client().get("/openapi.json").json()
    assert {"/v1/search", "/v1/chat/completions", "/v1/jobs", "/v1/jobs/{job_id}", "/healthz"} <= set(schema["paths"])


# --- the openai client, unchanged, against a real HTTP server ------------------------------------


@pytest.fixture
def live_server(hash_index, tmp_path):
    config = ServeConfig(indexes={"reuters": hash_index.index}, api_keys=frozenset({KEY}), jobs_dir=tmp_path / "jobs")
    app = create_app(config, ScriptedLLM(respond=lambda m: "Prices rose after OPEC met [1][2]."))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_the_openai_client_works_unchanged_streaming_included(live_server):
    client = openai.OpenAI(base_url=live_server, api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": "What happened to oil prices?"}]
    answer = client.chat.completions.create(model="seedbed", messages=messages, extra_body={"k": 2, "mode": "bm25"})
    assert answer.choices[0].message.content == "Prices rose after OPEC met [1][2]."
    assert [c["n"] for c in answer.model_extra["seedbed"]["citations"]] == [1, 2]
    pieces = list(client.chat.completions.create(model="seedbed", messages=messages, stream=True))
    assert "".join(p.choices[0].delta.content or "" for p in pieces if p.choices) == "Prices rose after OPEC met [1][2]."
    assert pieces[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live_server, api_key="wrong-wrong-wrong-wrong", max_retries=0).chat.completions.create(
            model="seedbed", messages=messages)


# --- review --------------------------------------------------------------------------------------


@pytest.fixture
def finished_run(hash_index, tmp_path):
    from engine.pipeline import SynthOptions, synthesize
    from engine.config import parse_task

    out = tmp_path / "run"
    synthesize(parse_task(TASK), hash_index.index, ScriptedLLM(), SynthOptions(out=out))
    (out / "rejected.jsonl").write_text('{"label": "Oil", "reason": "too_long", "detail": "61 words", "raw": "long"}\n')
    return out


def test_review_rows_filters_and_verdicts_never_touch_the_dataset(make_client, finished_run):
    client = make_client(datasets={"run": finished_run})
    original = (finished_run / "dataset.jsonl").read_bytes()
    assert client.get("/v1/datasets", headers=AUTH).json()["datasets"][0]["id"] == "run"
    body = client.get("/v1/datasets/run/examples", headers=AUTH).json()
    assert body["total"] == 5 and body["labels"] == ["Grain", "Oil"] and body["reasons"] == ["too_long"]
    kept = body["rows"][0]
    assert kept["row_id"] == "k0" and kept["passage_text"] and kept["review"] is None
    oil = client.get("/v1/datasets/run/examples?label=Oil&reason=kept", headers=AUTH).json()["rows"]
    assert len(oil) == 2 and all(r["label"] == "Oil" and r["status"] == "kept" for r in oil)
    rejected = client.get("/v1/datasets/run/examples?reason=too_long", headers=AUTH).json()["rows"]
    assert [r["row_id"] for r in rejected] == ["r0"]
    assert client.get("/v1/datasets/run/examples?max_copy_rate=0", headers=AUTH).json()["rows"] == [
        r for r in body["rows"] if r.get("copy_rate") == 0]
    for verdict in ("reject", "accept"):
        saved = client.post("/v1/datasets/run/review", headers=AUTH, json={"row_id": "k0", "verdict": verdict})
        assert saved.status_code == 200 and saved.json()["verdict"] == verdict
    assert client.get("/v1/datasets/run/examples", headers=AUTH).json()["rows"][0]["review"]["verdict"] == "accept"
    assert (finished_run / "dataset.jsonl").read_bytes() == original
    assert len((finished_run / "review.jsonl").read_text().splitlines()) == 2  # every decision kept


@pytest.mark.parametrize(("body", "status"), [
    ({"row_id": "k99", "verdict": "accept"}, 400),
    ({"row_id": "k0", "verdict": "maybe"}, 422),
    ({"row_id": "../x", "verdict": "accept"}, 422),
])
def test_bad_reviews(make_client, finished_run, body, status):
    response = make_client(datasets={"run": finished_run}).post("/v1/datasets/run/review", headers=AUTH, json=body)
    assert response.status_code == status and response.json()["error"]["code"]


def test_review_page_is_served(make_client):
    page = make_client().get("/review")
    assert page.status_code == 200 and "Seedbed review" in page.text and "innerHTML" not in page.text
