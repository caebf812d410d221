"""The pattern registry: one self-registering unit per pattern, loaded from YAML by a
generic loader that sits above the patterns."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import pytest
from pydantic import Field

from concilium import WorkflowError
from concilium.graphs import END, START, Graph, _registry, run
from concilium.graphs._registry import SlotAgent, pattern_kinds
from concilium.graphs.kit import AgentSlot, Builder, PatternSpec, register_pattern
from concilium.graphs.workflows import WorkflowSpec, load_workflow, parse_workflow

YAML = """\
name: loud
models:
  m: {model: hosted_vllm/x, api_base: http://127.0.0.1:1/v1}
agents:
  a: {model: m}
  b: {model: m}
workflow:
  kind: shout
  agent: {kind: self_consistency, agent: a, samples: 3}
  times: 2
"""


class ShoutSpec(PatternSpec):
    """A user's pattern: ask one agent (or a nested pattern), answer in capitals."""

    kind: Literal["shout"]
    agent: AgentSlot
    times: int = Field(default=1, ge=1, le=5)


def shout(agent: SlotAgent, times: int, name: str) -> Graph:
    async def ask(state: dict[str, Any]) -> dict[str, Any]:
        reply = await agent.run(state["question"], key="shout")
        return {"answer": " ".join([reply.text.upper()] * times)}

    return (
        Graph(name)
        .add_node("ask", ask, writes=["answer"])
        .add_edge(START, "ask")
        .add_edge("ask", END)
    )


def build_shout(spec: ShoutSpec, b: Builder) -> Graph:
    return shout(b.slot(spec.agent, "agent"), spec.times, b.name)


@pytest.fixture
def with_shout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers ``shout`` for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    register_pattern(ShoutSpec)(build_shout)


def test_importing_the_graph_core_imports_no_pattern_and_no_loader() -> None:
    code = (
        "import sys, concilium.graphs\n"
        "print(sorted(m for m in sys.modules if m.startswith(('concilium.graphs.patterns', 'concilium.graphs.workflows'))))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_builtin_kind_is_registered() -> None:
    assert {"debate", "self_consistency", "plan_and_execute", "react", "synthesis"} <= set(
        pattern_kinds()
    )
    assert len(pattern_kinds()) >= 16


def test_a_duplicate_kind_is_refused() -> None:
    class AnotherDebate(PatternSpec):
        kind: Literal["debate"]

    before = pattern_kinds()
    with pytest.raises(
        ValueError, match=r"'debate' is registered already .*DebateSpec.*another kind"
    ):
        register_pattern(AnotherDebate)(lambda spec, b: Graph("x"))
    assert pattern_kinds() == before


def test_a_spec_needs_one_literal_kind() -> None:
    class Vague(PatternSpec):
        kind: str

    with pytest.raises(TypeError, match="one Literal string"):
        register_pattern(Vague)


async def test_a_user_pattern_loads_from_yaml_nests_and_runs(
    with_shout: None, sim: Any, tmp_path: Any
) -> None:
    spec, _, _ = parse_workflow(YAML, "loud.yaml")
    assert isinstance(spec.workflow, ShoutSpec) and isinstance(spec.workflow.agent, PatternSpec)
    assert spec.workflow.agent.kind == "self_consistency"
    path = tmp_path / "loud.yaml"
    path.write_text(YAML)
    wf = load_workflow(path, api_base=sim.url)
    result = await run(wf.graph, "What is 12 * 7?")
    answer = str(result.answer)
    assert answer.isupper() and answer.count("84") == 2  # shouted twice
    (request,) = await sim.requests()
    assert request["body"]["n"] == 3  # the nested self-consistency's samples


def test_builtins_nest_a_pattern_registered_after_them(with_shout: None) -> None:
    text = YAML.replace(
        "  kind: shout\n  agent: {kind: self_consistency, agent: a, samples: 3}\n  times: 2\n",
        "  kind: debate\n  agents: [a, {kind: shout, agent: b, times: 9}]\n",
    )
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text, "nest.yaml")
    err = info.value
    assert (
        err.file == "nest.yaml" and err.line == 9 and "times" in str(err) and "(got 9)" in str(err)
    )
    spec, _, _ = parse_workflow(text.replace("times: 9", "times: 2"), "nest.yaml")
    assert spec.workflow.kind == "debate" and isinstance(
        dict(spec.workflow)["agents"][1], ShoutSpec
    )


def test_a_user_pattern_reports_errors_with_file_and_line(with_shout: None) -> None:
    with pytest.raises(WorkflowError) as info:
        parse_workflow(YAML.replace("  times: 2", "  tims: 2"), "loud.yaml")
    assert info.value.line == 10 and "Did you mean 'times'?" in str(info.value)
    with pytest.raises(WorkflowError) as info:
        parse_workflow(YAML.replace("kind: shout", "kind: shuot"), "loud.yaml")
    assert str(info.value).startswith("loud.yaml:8:") and "Did you mean 'shout'?" in str(info.value)


def test_unknown_nested_kind_suggests_with_its_line() -> None:
    text = (
        YAML.replace("kind: shout", "kind: debate")
        .replace("  times: 2\n", "")
        .replace(
            "  agent: {kind: self_consistency, agent: a, samples: 3}\n",
            "  agents:\n    - a\n    - {kind: self_consistncy, agent: b}\n",
        )
    )
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text, "deep.yaml")
    assert info.value.line == 11 and "unknown kind 'self_consistncy'" in str(info.value)
    assert "Did you mean 'self_consistency'?" in str(info.value)


def test_the_json_schema_lists_every_registered_kind(with_shout: None) -> None:
    schema = WorkflowSpec.model_json_schema()
    union = schema["$defs"]["PatternSpec"]
    assert (
        set(union["discriminator"]["mapping"]) == set(pattern_kinds())
        and "shout" in pattern_kinds()
    )
    assert schema["properties"]["workflow"]["$ref"] == "#/$defs/PatternSpec"
    slot = schema["$defs"]["DebateSpec"]["properties"]["agents"]["items"]["anyOf"]
    assert {"$ref": "#/$defs/PatternSpec"} in slot  # nested patterns are described
    assert "SimConfig" in schema["$defs"]  # simulate: is part of the schema


def test_simulate_is_checked_with_file_and_line() -> None:
    text = (
        YAML.replace("kind: shout", "kind: self_consistency")
        .replace("  times: 2\n", "")
        .replace("  agent: {kind: self_consistency, agent: a, samples: 3}\n", "  agent: a\n")
    )
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text + "simulate:\n  statistical: {accuracy: 3}\n", "sim.yaml")
    assert (
        info.value.line == 11
        and "simulate.statistical.accuracy" in str(info.value)
        and "(got 3)" in str(info.value)
    )
