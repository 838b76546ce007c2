"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no input may cause a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from engine.api import ServeConfig, create_app
from engine.testing import ScriptedLLM

KEY = "f" * 24


def test_no_input_causes_a_server_error(hash_index, tmp_path):
    config = ServeConfig(indexes={"reuters": hash_index.index}, api_keys=frozenset({KEY}), jobs_dir=tmp_path / "jobs")
    app = create_app(config, ScriptedLLM(respond=lambda messages: "An answer [1]."))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error])

        fuzz()
