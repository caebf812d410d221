"""``concilium.app.load``: a workflow file, a spec, a mapping or a Python graph, plus
dotted overrides, built once; every bad target is a clear ``UserError``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from concilium._errors import UserError, WorkflowError
from concilium.app import load, parse_override
from concilium.graphs import Graph

ROOT = Path(__file__).resolve().parents[2]
VOTE = str(ROOT / "examples/self_consistency.yaml")

GRAPH_MODULE = """
from concilium.agents import Agent, ModelSpec
from concilium.graphs.patterns import self_consistency

solver = Agent("solver", ModelSpec("hosted_vllm/m", api_base="http://127.0.0.1:9/v1"))
review = self_consistency(solver, samples=2, name="review")
not_a_graph = 42
"""


def test_overrides_change_the_parsed_file_before_it_is_validated() -> None:
    wf = load(VOTE, overrides=[parse_override("workflow.samples=3")])
    assert wf.spec is not None and wf.spec.workflow.samples == 3
    assert load(VOTE, overrides={"workflow.samples": 5}).spec.workflow.samples == 5  # type: ignore[union-attr]
    assert load(VOTE).spec.workflow.samples == 8  # type: ignore[union-attr]  # the file's own value


def test_override_values_are_read_as_yaml_scalars_and_bad_ones_name_the_fix() -> None:
    assert parse_override("a.b=0.5").value == 0.5
    assert parse_override("a.b=true").value is True
    assert parse_override("a.b=hello").value == "hello"
    with pytest.raises(UserError, match=r"write key\.path=value"):
        parse_override("workflow.samples")


def test_a_misspelt_parent_lists_the_keys_and_a_misspelt_leaf_is_the_schema_s_to_name() -> None:
    with pytest.raises(UserError, match="no key 'workflw' in the file; the keys there are"):
        load(VOTE, overrides={"workflw.samples": 3})
    with pytest.raises(WorkflowError, match=r"Did you mean 'samples'") as caught:
        load(VOTE, overrides={"workflow.sampels": 3})
    assert caught.value.file == VOTE and caught.value.line is not None  # still file:line
    with pytest.raises(WorkflowError, match="samples"):
        load(VOTE, overrides={"workflow.samples": "many"})


def test_a_python_graph_by_file_or_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_graphs.py").write_text(GRAPH_MODULE)
    by_file = load(f"{tmp_path / 'my_graphs.py'}:review")
    assert by_file.spec is None and by_file.name == "review" and by_file.kind == "graph"
    assert isinstance(by_file.graph, Graph) and by_file.fingerprint is None
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load("my_graphs:review").name == "review"


def test_bad_python_targets_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "my_graphs.py").write_text(GRAPH_MODULE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    target = f"{tmp_path / 'my_graphs.py'}"
    with pytest.raises(UserError, match=r"'not_a_graph' in .* is a int; name a concilium Graph"):
        load(f"{target}:not_a_graph")
    with pytest.raises(UserError, match="is nothing"):
        load(f"{target}:missing")
    with pytest.raises(UserError, match=r"importing .*broken\.py failed: RuntimeError: boom"):
        load(f"{tmp_path / 'broken.py'}:graph")
    with pytest.raises(UserError, match="no such Python file"):
        load(f"{tmp_path / 'nowhere.py'}:graph")
    with pytest.raises(UserError, match="a Python graph takes its values in code"):
        load(f"{target}:review", overrides={"workflow.samples": 3})


def test_a_mapping_or_a_spec_builds_like_the_file(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """
        name: vote
        models: {m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}}
        agents: {a: {model: m}}
        workflow: {kind: self_consistency, agent: a, samples: 3}
        """
    )
    import yaml

    data = yaml.safe_load(text)
    from_data = load(data, overrides={"workflow.samples": 4})
    assert from_data.spec is not None and from_data.spec.workflow.samples == 4
    assert data["workflow"]["samples"] == 3  # the caller's mapping is not changed
    again = load(from_data.spec)
    assert again.spec == from_data.spec


@pytest.mark.parametrize("backend", ["sim", "url"])
def test_one_run_reads_and_builds_its_workflow_file_once(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is read and built once per command, whatever the backend: binding hands
    the built workflow its endpoints in memory (load-time side effects, such as listing
    an MCP server's tools, happen once)."""
    import asyncio

    from click.testing import CliRunner

    from concilium.app import _source
    from concilium.cli import main
    from concilium.serving import SimServer

    reads: list[str] = []
    builds: list[str] = []
    read, build = _source.read_workflow_text, _source.build_workflow

    def counted_read(path: object, file: str) -> str:
        reads.append(file)
        return read(path, file)  # type: ignore[arg-type]

    def counted_build(spec: object, **options: object) -> object:
        builds.append(str(options.get("file")))
        return build(spec, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(_source, "read_workflow_text", counted_read)
    monkeypatch.setattr(_source, "build_workflow", counted_build)

    async def serve_and_run() -> object:
        async with SimServer() as sim:
            where = sim.url if backend == "url" else "sim"
            args = ["run", VOTE, "--backend", where, "--input", "What is 6 * 7?", "--json"]
            return await asyncio.to_thread(CliRunner().invoke, main, args)

    result = asyncio.run(serve_and_run())
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert reads == [VOTE] and builds == [VOTE]
