"""End to end: `seedbed serve`'s app with the real llama.cpp server (SmolLM2), called by the openai client."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest

from engine.api import ServeConfig, create_app
from engine.runtime.catalog import TEST_MODEL
from engine.llm.client import OpenAIChat
from engine.runtime.server import LocalServer, ServerConfig
from engine.runtime.supervise import SupervisedLLM

from conftest import require_small_model

pytestmark = pytest.mark.integration
KEY = "e2e-key-0123456789abcdef"


@pytest.fixture
def live(hash_index, tmp_path):
    import uvicorn

    require_small_model()
    with LocalServer.from_catalog(TEST_MODEL, ServerConfig(parallel=2), install=False, build=False) as llama:
        llm = SupervisedLLM(OpenAIChat(llama.base_url, llama.model, api_key=llama.api_key), llama)
        config = ServeConfig(indexes={"reuters": hash_index.index}, api_keys=frozenset({KEY}), jobs_dir=tmp_path / "jobs")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(config, llm, llm.clone()), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/v1"
        server.should_exit = True
        thread.join(10)


def test_grounded_chat_with_the_real_llm_plain_and_streamed(live):
    client = openai.OpenAI(base_url=live, api_key=KEY, max_retries=0, timeout=300)
    messages = [{"role": "user", "content": "What happened to crude oil prices?"}]
    answer = client.chat.completions.create(model="seedbed", messages=messages, max_tokens=40, temperature=0,
                                            extra_body={"k": 3})
    assert answer.choices[0].message.content.strip()
    assert answer.usage.prompt_tokens > 100  # the passages went into the prompt
    citations = answer.model_extra["seedbed"]["citations"]
    assert [c["n"] for c in citations] == [1, 2, 3] and all(c["id"] for c in citations)
    pieces = list(client.chat.completions.create(model="seedbed", messages=messages, max_tokens=40, temperature=0,
                                                 stream=True, extra_body={"k": 3}))
    text = "".join(p.choices[0].delta.content or "" for p in pieces if p.choices)
    assert text.strip() and len(pieces) > 3  # really streamed, piece by piece
    assert pieces[-1].model_extra["seedbed"]["citations"] == citations
