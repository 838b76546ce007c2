"""Token and cost caps: a run stops cleanly at the cap, never passes it, and continues with a larger one."""

from __future__ import annotations

import pytest

from engine.dataset import read_dataset
from engine.errors import ConfigError
from engine.pipeline import SynthOptions

from test_pipeline import TASK, call_keys, run

MAX_TOKENS = TASK.sampling.max_tokens


def test_the_first_round_is_estimated_from_the_rendered_prompts(hash_index, tmp_path):
    result, llm = run(hash_index, tmp_path / "out", prices=(1.0, 2.0))
    estimate = result.manifest["estimate"]
    first_round = len(TASK.labels) * TASK.examples_per_label
    assert estimate["requests"] == first_round
    assert estimate["completion_tokens_max"] == first_round * MAX_TOKENS
    prompt_chars = sum(len(text) for call in llm.calls[:first_round] for _, text in call.messages)
    assert estimate["prompt_tokens"] == pytest.approx(prompt_chars / 4, rel=0.05)
    assert estimate["cost_max"] == pytest.approx((estimate["prompt_tokens"] + 2 * estimate["completion_tokens_max"]) / 1e6)
    spent = result.manifest["cost_this_run"]
    assert spent == pytest.approx((result.prompt_tokens + 2 * result.completion_tokens) / 1e6)


def test_a_token_cap_stops_cleanly_below_it_and_a_larger_cap_continues(hash_index, tmp_path):
    whole, whole_llm = run(hash_index, tmp_path / "whole", concurrency=1)
    total_calls = len(whole_llm.calls)
    cap = 3 * MAX_TOKENS + 400  # room for about three requests, counted at their max_tokens
    capped, llm = run(hash_index, tmp_path / "out", concurrency=2, max_tokens_total=cap)
    assert 0 < len(llm.calls) < total_calls
    assert capped.prompt_tokens + capped.completion_tokens <= cap
    assert capped.manifest["counts"]["unsent_over_token_or_cost_cap"] > 0
    resumed, llm2 = run(hash_index, tmp_path / "out", concurrency=1, max_tokens_total=10**6)
    assert len(llm2.calls) == total_calls - len(llm.calls)  # nothing paid twice
    assert not set(call_keys(llm)) & set(call_keys(llm2))
    assert resumed.manifest["counts"]["unsent_over_token_or_cost_cap"] == 0
    assert read_dataset(tmp_path / "out").equals(read_dataset(tmp_path / "whole"))


def test_a_cost_cap_counts_prices_per_million_tokens(hash_index, tmp_path):
    prices = (1000.0, 1000.0)  # $0.001 per token
    capped, llm = run(hash_index, tmp_path / "out", concurrency=1, prices=prices, max_cost=1.5)
    assert capped.manifest["cost_this_run"] <= 1.5 and capped.manifest["counts"]["unsent_over_token_or_cost_cap"] > 0
    assert len(llm.calls) >= 1


@pytest.mark.parametrize(("options", "message"), [
    ({"max_cost": 1.0}, "--price-in"),
    ({"max_tokens_total": 0}, "max-tokens-total=0"),
    ({"max_calls": -1}, "max-calls=-1"),
])
def test_bad_caps_are_config_errors(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        SynthOptions(out=tmp_path, **options)
