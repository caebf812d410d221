"""``Session``: parsing ``--backend``, what it says it is, and binding built workflows
to it in memory (the simulated server is real HTTP here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concilium._errors import ModelCallError, UserError
from concilium.agents import Endpoints
from concilium.agents.sim import SimConfig
from concilium.app import Backend, Session, load
from concilium.graphs import run
from concilium.serving import SimServer

ROOT = Path(__file__).resolve().parents[2]
DEBATE = str(ROOT / "examples/debate.yaml")
VOTE = str(ROOT / "examples/self_consistency.yaml")


def test_parse_accepts_sim_local_and_urls_and_refuses_the_rest_with_the_fix() -> None:
    assert Backend.parse(None) == Backend("models")
    assert Backend.parse("sim").kind == "sim" and Backend.parse("local").kind == "local"
    assert Backend.parse("https://example.org/v1") == Backend("url", "https://example.org/v1")
    with pytest.raises(UserError, match="'simm' is not a backend; use 'sim', 'local' or a URL"):
        Backend.parse("simm")


def test_the_simulated_server_says_it_is_a_test_double() -> None:
    assert (
        Backend.parse("sim").notice
        == "(backend: simulated server -- a test double; its replies are not a model's)"
    )
    assert "embedded engine" in (Backend.parse("local").notice or "")
    assert Backend.parse("http://127.0.0.1:1/v1").notice is None and Backend().notice is None
    assert "http://127.0.0.1:1/v1" in Backend.parse("http://127.0.0.1:1/v1").label


async def test_binding_keeps_the_built_workflow_and_what_was_changed_in_memory() -> None:
    """The bug this layer exists for: a workflow changed in memory (an override) runs
    with its change on every backend, because binding rebuilds nothing."""
    built = load(VOTE, overrides={"workflow.samples": 3})
    async with SimServer(SimConfig(seed=1)) as sim, Session(sim.url) as session:
        bound = await session.bind(built)
        assert bound.graph is not built.graph and bound.agents is built.agents
        assert bound.spec is built.spec and built.endpoints is None
        result = await session.run(built, "What is 6 * 7?")
        received = sim.app.log if sim.app else []
    assert [r["body"].get("n") for r in received] == [3]
    assert sum(result.votes["counts"].values()) == 3  # type: ignore[index]


async def test_sim_gives_each_simulate_section_one_server_for_the_session() -> None:
    debate, vote = load(DEBATE), load(VOTE)
    async with Session("sim") as session:
        first = await session.bind(debate)
        second = await session.bind(vote)
        again = await session.bind(load(DEBATE))
        assert first.endpoints and second.endpoints and again.endpoints
        assert first.endpoints.api_base != second.endpoints.api_base  # their own simulate:
        assert again.endpoints.api_base == first.endpoints.api_base  # the same one, kept
        assert session.starts == 2
        result = await session.run(first, "What is 12 * 7?")
        assert result.calls == 6 and all(
            "[simulated reply]" in t["text"] for t in result.transcript
        )
    # the session's servers are gone: a call now fails to connect
    with pytest.raises(ModelCallError, match="connection failed"):
        await run(second.graph, "What is 12 * 7?")


async def test_a_url_rebinds_every_model_and_none_keeps_the_file_s_servers() -> None:
    original = load(DEBATE)
    async with Session("http://127.0.0.1:9/v1") as session:
        wf = await session.bind(original)
    assert wf.endpoints is not None and wf.endpoints.api_base == ("http://127.0.0.1:9/v1",)
    spec = next(iter(original.models.values()))
    assert wf.endpoints.resolve(spec).replicas == ("http://127.0.0.1:9/v1",)
    assert wf.endpoints.resolve(spec) is wf.endpoints.resolve(spec)  # one pool per deployment
    async with Session() as session:
        assert await session.bind(original) is original


def test_endpoints_can_serve_every_model_under_one_name() -> None:
    spec = next(iter(load(DEBATE).models.values()))
    engine = Endpoints(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], served_name="gemma")
    bound = engine.resolve(spec)
    assert bound.served_name == "gemma" and len(bound.replicas) == 2
    assert bound.capabilities == spec.capabilities and bound.timeout == spec.timeout


async def test_local_without_the_engine_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCILIUM_ENGINE_HOME", str(tmp_path))
    async with Session("local") as session:
        with pytest.raises(UserError, match="concilium engine install"):
            await session.bind(load(DEBATE))
        # a failed start is tried again by the next bind, not remembered as failed
        with pytest.raises(UserError, match="concilium engine install"):
            await session.bind(load(DEBATE))
        assert session.starts == 2
