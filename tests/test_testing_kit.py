"""The public test kit (engine.testing): what it exports works as its docstring says."""

from __future__ import annotations


import pytest

import engine.testing as kit

from conftest import require_small_model


def test_the_kit_exports_its_documented_names():
    assert set(kit.__all__) == {"ScriptedLLM", "ScriptedCall", "default_answer", "FakeOpenAIServer", "Fault",
                                "read_request_log", "local_llm", "TEST_MODEL"}
    assert kit.TEST_MODEL == "smollm2-135m"


def test_the_docstring_example_runs_a_task_spec_offline(hash_index, tmp_path):
    from engine.config import load_task
    from engine.pipeline import SynthOptions, synthesize

    from conftest import REPO

    spec = REPO / "benchmarks" / "tasks" / "starter.yaml"
    task = load_task(spec)
    llm = kit.ScriptedLLM()
    result = synthesize(task, hash_index.index, llm, SynthOptions(out=tmp_path / "run"))
    assert all(n == task.examples_per_label for n in result.kept.values())
    assert len(llm.calls) == result.calls


def test_the_fake_server_answers_through_the_real_client():
    import asyncio

    from engine.llm.client import OpenAIChat
    from engine.types import SamplingParams

    with kit.FakeOpenAIServer() as server:
        llm = OpenAIChat(server.base_url, server.model)
        answer = asyncio.run(llm.complete([{"role": "user", "content": "Write a headline.\n\nPassage:\nOil prices rose."}],
                                          SamplingParams(max_tokens=20)))
        assert answer.text and server.count == 1


@pytest.mark.integration
def test_local_llm_starts_the_small_model_and_stops_it():
    require_small_model()
    import asyncio

    from engine.types import SamplingParams

    with kit.local_llm() as llm:
        answer = asyncio.run(llm.complete([{"role": "user", "content": "Say hello."}], SamplingParams(max_tokens=8)))
        assert answer.completion_tokens > 0
