"""Workflow files: errors name file, line and fix; examples are valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from concilium import WorkflowError
from concilium.graphs.workflows import WorkflowSpec, load_workflow

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
name: t
models:
  m: {model: hosted_vllm/x, api_base: http://127.0.0.1:1/v1}
agents:
  a: {model: m}
  b: {model: m}
workflow:
  kind: debate
  agents: [a, b]
  rounds: 2
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return load_workflow(path), str(path)


def _error(tmp_path: Path, text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        _load(tmp_path, text)
    return info.value


def test_valid_workflow_builds(tmp_path: Path) -> None:
    wf, _ = _load(tmp_path, GOOD)
    assert wf.name == "t" and sorted(wf.agents) == ["a", "b"]
    assert wf.models["m"].replicas == ("http://127.0.0.1:1/v1",)


def test_misspelt_field_names_line_and_suggestion(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("  rounds: 2", "  rouns: 2"))
    assert err.line == 10 and err.file.endswith("wf.yaml")
    assert "unknown field 'rouns'" in str(err) and "Did you mean 'rounds'?" in str(err)
    assert str(err).startswith(f"{err.file}:10:")


def test_unknown_kind_suggests(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("kind: debate", "kind: debte"))
    assert err.line == 8 and "Did you mean 'debate'?" in str(err)


def test_unknown_agent_reference(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("agents: [a, b]", "agents: [a, bb]"))
    assert err.line == 9 and "no agent named 'bb'" in str(err) and "Did you mean 'b'?" in str(err)


def test_unknown_model_reference(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("b: {model: m}", "b: {model: mm}"))
    assert err.line == 6 and "model 'mm'" in str(err)


def test_bad_value_is_shown(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("rounds: 2", "rounds: 0"))
    assert err.line == 10 and "(got 0)" in str(err)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD.replace("  agents: [a, b]", "  agents: [a, b"))
    assert err.line is not None and "YAML syntax error" in str(err)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD + "  rounds: 3\n")
    assert err.line == 11 and "appears twice" in str(err)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    err = _error(
        tmp_path, GOOD.replace("name: t", "name: !!python/object/apply:os.system ['true']")
    )
    assert err.line == 1


def test_unknown_answer_format_and_prompt(tmp_path: Path) -> None:
    err = _error(tmp_path, GOOD + "  answer: boxd\n")
    assert "did you mean 'boxed'" in str(err)
    err = _error(tmp_path, GOOD + "  prompts: {round: debate/rund}\n")
    assert "Did you mean 'debate/round'?" in str(err)


def test_missing_api_key_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    err = _error(
        tmp_path, GOOD.replace("api_base: http://127.0.0.1:1/v1}", "api_key_env: NO_SUCH_KEY}")
    )
    assert err.line == 3 and "export NO_SUCH_KEY" in str(err)


async def test_user_prompt_folder_overrides_builtins(tmp_path: Path, sim) -> None:
    from concilium.graphs import run

    (tmp_path / "prompts" / "debate").mkdir(parents=True)
    (tmp_path / "prompts" / "debate" / "initial.j2").write_text("MINE: {{ question }}")
    path = tmp_path / "wf.yaml"
    path.write_text(GOOD + "prompts_dir: prompts\n")
    wf = load_workflow(path, api_base=sim.url)
    await run(wf.graph, "2+2?")
    first = (await sim.requests())[0]["body"]["messages"]
    assert first[0]["content"] == "MINE: 2+2?"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    wf = load_workflow(path)
    wf.graph.check()


def test_schema_is_json_schema() -> None:
    schema = WorkflowSpec.model_json_schema()
    assert schema["type"] == "object" and {"models", "agents", "workflow"} <= set(
        schema["required"]
    )


def test_inline_system_jinja_error_points_at_the_system_line(tmp_path: Path) -> None:
    text = GOOD.replace("  a: {model: m}\n", "  a:\n    model: m\n    system: 'Hi {{ name '\n")
    err = _error(tmp_path, text)
    assert err.line == 7 and str(err).startswith(f"{err.file}:7:")
