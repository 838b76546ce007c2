"""The dependency direction of DESIGN.md, enforced: an upward import or a cycle fails here.

types/errors <- corpus, embed, index, llm, runtime, testing, files, ... <- retrieval, strategies, plan,
refine, metrics, ... <- pipeline <- cli*, api (the HTTP server). Nothing imports the CLI or the server; engine never imports
benchmarks or tests. Imports inside functions count too (a lazy import is still a dependency);
only the import graph of top-level imports must be free of cycles.

engine.testing (the public test kit: ScriptedLLM, FakeOpenAIServer, local_llm) is deliberately in
the low layer, beside the client (engine.llm) and the llama.cpp runtime (engine.runtime) it builds
on: `--fake` is chosen in engine.llm.endpoint, so the kit may import only types, errors, the client
and the runtime, never the pipeline or the strategies. Inside the LLM layer the client proper
(client, adaptive, runner) knows neither the runtime nor the kit; only endpoint.py picks one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ENGINE = REPO / "engine"
ADAPTERS = ("engine.cli", "engine.cli_common", "engine.cli_synth", "engine.cli_serve", "engine.cli_bench", "engine.cli_runtime",
            "engine.api")
BASE = ("engine.types", "engine.errors")
LOW = ("engine.corpus", "engine.embed", "engine.index", "engine.llm", "engine.runtime", "engine.testing", "engine.journal",
       "engine.cache", "engine.prompts", "engine.resources", "engine.ids", "engine.files", "engine.injection", "engine.remote")
HIGH = ("engine.pipeline", "engine.plan", "engine.run_folder", "engine.rounds", "engine.calls", "engine.retrieval",
        "engine.strategies", "engine.metrics", "engine.quality", "engine.cartography", "engine.verify", "engine.card",
        "engine.remote_run")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


MODULES = {module_name(p): p for p in ENGINE.rglob("*.py")}


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(rule) -> list[str]:
    found = []
    for name, path in sorted(MODULES.items()):
        for target in sorted(imported(path)):
            if rule(name, target):
                found.append(f"{name} imports {target}")
    return found


def test_nothing_imports_the_cli_or_the_server():
    assert violations(lambda m, t: under(t, ADAPTERS) and not under(m, ADAPTERS)) == []


def test_engine_never_imports_benchmarks_or_tests():
    assert violations(lambda m, t: under(t, ("benchmarks", "tests", "conftest"))) == []


def test_types_and_errors_import_no_other_engine_module():
    assert violations(lambda m, t: under(m, BASE) and t.startswith("engine") and not under(t, BASE)) == []


def test_the_low_layers_never_import_the_ones_above():
    assert violations(lambda m, t: under(m, LOW) and under(t, HIGH + ADAPTERS)) == []


def test_the_client_knows_neither_the_runtime_nor_the_test_kit():
    client = ("engine.llm.client", "engine.llm.adaptive", "engine.llm.runner")
    assert violations(lambda m, t: under(m, client) and under(t, ("engine.runtime", "engine.testing"))) == []


def test_only_the_endpoint_chooser_and_the_kit_import_the_test_kit():
    """Production code reaches the scripted LLM only through `--fake` (engine.llm.endpoint)."""
    assert violations(lambda m, t: under(t, ("engine.testing",)) and not under(m, ("engine.testing", "engine.llm.endpoint"))) == []


def test_the_runtime_does_not_import_the_test_kit():
    assert violations(lambda m, t: under(m, ("engine.runtime",)) and under(t, ("engine.testing",))) == []


def test_the_judge_does_not_depend_on_the_strategies():
    """verify builds requests with engine.ids, a layer down; targen's self-correction uses verify."""
    assert violations(lambda m, t: m in ("engine.verify", "engine.retrieval.screen") and under(t, ("engine.strategies.base",))) == []


def test_top_level_imports_have_no_cycle():
    graph = {}
    for name, path in MODULES.items():
        targets = {t for t in imported(path, top_level_only=True) if t in MODULES and t != name}
        graph[name] = {t for t in targets if not name.startswith(t + ".")}  # a module's own package is not a cycle
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import engine.types\nfrom engine.llm import client\n\ndef f():\n    from engine.pipeline import plan\n",
                      encoding="utf-8")
    assert {"engine.types", "engine.llm", "engine.llm.client", "engine.pipeline", "engine.pipeline.plan"} <= imported(source)
    assert "engine.pipeline" not in imported(source, top_level_only=True)
    assert under("engine.llm.client", LOW) and under("engine.pipeline", HIGH) and not under("engine.llmx", LOW)
