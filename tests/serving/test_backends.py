"""``Backend``: parsing ``--backend``, what it says it is, and binding workflows to it
(the simulated server is real HTTP here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concilium._errors import ModelCallError, UserError
from concilium.agents import aclose
from concilium.graphs import run
from concilium.graphs.workflows import load_workflow
from concilium.serving import Backend

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


async def test_sim_gives_each_workflow_its_own_server_and_stops_them_on_exit() -> None:
    workflows = [load_workflow(DEBATE), load_workflow(VOTE)]
    async with Backend.parse("sim").bind(workflows) as bound:
        bases = [{m.api_base for m in wf.models.values()} for wf in bound]
        assert all(len(b) == 1 for b in bases) and bases[0] != bases[1]
        assert [wf.name for wf in bound] == [wf.name for wf in workflows]
        try:
            result = await run(bound[0].graph, "What is 12 * 7?")
        finally:
            await aclose()
        assert result.calls == 6 and all(
            "[simulated reply]" in t["text"] for t in result.transcript
        )
    # the servers are gone: a call now fails to connect
    try:
        with pytest.raises(ModelCallError, match="connection failed"):
            await run(bound[1].graph, "What is 12 * 7?")
    finally:
        await aclose()


async def test_a_url_rebinds_every_model_and_none_keeps_the_file_s_servers() -> None:
    original = load_workflow(DEBATE)
    async with Backend.parse("http://127.0.0.1:9/v1").bind([original]) as (wf,):
        assert all(
            m.api_base in ("http://127.0.0.1:9/v1", ("http://127.0.0.1:9/v1",))
            for m in wf.models.values()
        )
        assert wf is not original
    async with Backend().bind([original]) as (same,):
        assert same is original


async def test_local_without_the_engine_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCILIUM_ENGINE_HOME", str(tmp_path))
    with pytest.raises(UserError, match="concilium engine install"):
        async with Backend.parse("local").bind([load_workflow(DEBATE)]):
            pass
