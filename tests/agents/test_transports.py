"""Transports: one protocol (whole and streamed calls), one registry that picks a
transport for a spec, and no import cycle inside ``concilium.agents``."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from concilium import UserError
from concilium._errors import MalformedReplyError
from concilium.agents import Agent, Completion, FakeModel, ModelSpec
from concilium.agents._transports import (
    ChatOnly,
    DirectTransport,
    LiteLLMTransport,
    Transport,
    transport_for,
)
from concilium.agents.sim import Latency, Rule, SimConfig
from concilium.serving import SimServer

AGENTS = Path(__file__).resolve().parents[2] / "agents"
PACKAGE = "concilium.agents"


# ------------------------------------------------------------------ the registry


def test_auto_takes_the_direct_transport_for_openai_compatible_urls_and_litellm_otherwise() -> None:
    assert isinstance(
        transport_for(ModelSpec("hosted_vllm/m", api_base="http://127.0.0.1:8000/v1")),
        DirectTransport,
    )
    assert isinstance(
        transport_for(ModelSpec("openai/m", api_base="http://127.0.0.1:8000/v1")), DirectTransport
    )
    assert isinstance(
        transport_for(ModelSpec("hosted_vllm/m")), LiteLLMTransport
    )  # no URL: litellm
    assert isinstance(
        transport_for(ModelSpec("anthropic/claude", api_base="http://x/v1")), LiteLLMTransport
    )
    assert isinstance(
        transport_for(ModelSpec("anthropic/claude", transport="direct")), DirectTransport
    )
    assert isinstance(
        transport_for(ModelSpec("hosted_vllm/m", api_base="http://h/v1", transport="litellm")),
        LiteLLMTransport,
    )


def test_an_unknown_transport_name_says_which_exist() -> None:
    with pytest.raises(
        UserError,
        match=r"transport 'drect'.*Did you mean 'direct'\?.*\['auto', 'direct', 'litellm'\]",
    ):
        transport_for(ModelSpec("hosted_vllm/m", transport="drect"))  # type: ignore[arg-type]  # the mistake tested


class Streaming:
    """A test double with the whole protocol."""

    streams = True

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion:
        return await FakeModel(default="a b c").chat(spec, api_base, body, headers)

    async def stream(self, spec: ModelSpec, api_base: str | None, body: Mapping[str, Any],
                     headers: Mapping[str, str], on_text: Any) -> Completion:  # fmt: skip
        for word in ("a ", "b ", "c"):
            on_text(word)
        return await self.chat(spec, api_base, body, headers)


def test_an_object_with_the_whole_protocol_is_used_as_it_is_and_one_with_chat_only_is_adapted() -> (
    None
):
    streaming = Streaming()
    assert transport_for(ModelSpec("x/m", transport=streaming)) is streaming
    fake = FakeModel()
    adapted = transport_for(fake.spec())
    assert isinstance(adapted, ChatOnly) and not adapted.streams and adapted.inner is fake
    assert isinstance(DirectTransport(), Transport) and isinstance(adapted, Transport)


# ------------------------------------------------------------------ streaming


async def test_direct_streams_deltas_and_litellm_says_it_cannot_and_sends_the_whole_text_once() -> (
    None
):
    text = "one two three four five six"
    config = SimConfig(
        latency=Latency(ttft=0, per_token=0.001), rules=[Rule(agent="a", replies=[text])]
    )
    async with SimServer(config) as sim:
        direct: list[str] = []
        via_litellm: list[str] = []
        one = await Agent("a", sim.spec(transport="direct")).run(
            "q", key="d", on_text=direct.append
        )
        two = await Agent("a", sim.spec(transport="litellm")).run(
            "q", key="l", on_text=via_litellm.append
        )
        bodies = [r["body"] for r in await sim.requests()]
    assert DirectTransport.streams and not LiteLLMTransport.streams
    assert len(direct) > 1 and "".join(direct) == one.text == text
    assert via_litellm == [text] and two.text == text
    assert bodies[0]["stream"] is True and "stream" not in bodies[1]


async def test_a_streaming_test_double_streams_and_a_chat_only_one_gives_one_delta() -> None:
    deltas: list[str] = []
    await Agent("a", ModelSpec("x/m", transport=Streaming())).run("q", on_text=deltas.append)
    assert deltas == ["a ", "b ", "c"]
    deltas.clear()
    reply = await Agent("a", FakeModel({"a": "whole reply"}).spec()).run("q", on_text=deltas.append)
    assert deltas == ["whole reply"] == [reply.text]


# ------------------------------------------------------------------ no import cycle


def _module_name(path: Path) -> str:
    parts = path.relative_to(AGENTS).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """Modules of ``concilium.agents`` that ``path`` imports anywhere (functions and
    ``TYPE_CHECKING`` blocks included), plus the packages those imports initialise."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            # importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b
            pieces = target.split(".")
            for i in range(2, len(pieces) + 1):
                prefix = ".".join(pieces[:i])
                inside = name == prefix or name.startswith(prefix + ".")
                if prefix in modules and not inside:
                    found.add(prefix)
    return found


def test_agents_modules_import_each_other_without_a_cycle() -> None:
    paths = sorted(AGENTS.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports_of(p, modules) for p in paths}
    # the parser sees edges
    assert f"{PACKAGE}._model" in graph[f"{PACKAGE}._transports._registry"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycle = [*trail[trail.index(imported) :], imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*trail, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not graph[f"{PACKAGE}._model"] & {
        m for m in modules if m.startswith(f"{PACKAGE}._transports")
    }


async def test_a_malformed_litellm_reply_names_the_model_and_the_server_without_credentials() -> (
    None
):
    class _Reply:
        def model_dump(self) -> dict[str, Any]:
            return {"choices": []}

    class _FakeLiteLLM:
        async def acompletion(self, **kwargs: Any) -> _Reply:
            return _Reply()

    transport = LiteLLMTransport()
    transport._litellm = _FakeLiteLLM()  # pyright: ignore[reportPrivateUsage]
    base = "http://user:secret@h:1/v1"
    with pytest.raises(MalformedReplyError) as info:
        await transport.chat(ModelSpec("openai/m", api_base=base), base, {"messages": []}, {})
    assert info.value.model == "openai/m" and "secret" not in (info.value.api_base or "")
    assert info.value.api_base is not None and "h:1" in info.value.api_base
