"""JSON a model or a server sends is read within bounds: a reply nested 100,000 deep is
a malformed reply (the model is told, or a clear error), never a RecursionError.

The servers are real aiohttp apps on loopback; the record is a real SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from concilium import UserError
from concilium.agents import Agent, ModelSpec, run_with_tools
from concilium.agents.ledger import SqliteCallRecord
from concilium.tools import Tool, ToolError, ToolRegistry, ToolText
from concilium.tools.evidence import openai_embedder

DEEP = "[" * 100_000 + "]" * 100_000


def _chat(message: dict[str, Any]) -> dict[str, Any]:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "r",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """``/v1/chat/completions``: a tool call whose arguments are nested 100,000 deep,
    then "done"; ``/v1/embeddings``: a body nested 100,000 deep."""
    bodies: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        if len(bodies) == 1:
            call = {
                "id": "c1",
                "type": "function",
                "function": {"name": "get-sum", "arguments": DEEP},
            }
            return web.json_response(_chat({"content": None, "tool_calls": [call]}))
        return web.json_response(_chat({"content": "done"}))

    async def embeddings(request: web.Request) -> web.Response:
        return web.Response(text='{"data": ' + DEEP + "}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", bodies
    finally:
        await runner.cleanup()


async def test_tool_arguments_nested_100000_deep_go_back_to_the_model_as_an_error(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, bodies = server

    def add(a: int, b: int) -> int:
        "Sum."
        return a + b

    tools = ToolRegistry([Tool.from_function(add, name="get-sum")])
    agent = Agent("a", ModelSpec("hosted_vllm/m", api_base=url, transport="direct"))
    out = await run_with_tools(agent, "add", tools)
    assert out.reply.text == "done"
    [call] = out.calls
    assert "nested deeper than 64" in call["error"]
    told = [m for m in bodies[1]["messages"] if m["role"] == "tool"]
    assert told[0]["content"].startswith("error: the arguments of get-sum are not a JSON object")
    assert len(told[0]["content"]) < 1000  # the 200,000 characters are not echoed back


async def test_an_embeddings_reply_nested_100000_deep_is_a_malformed_reply(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = server
    with pytest.raises(ToolError, match=r"malformed reply .*nested deeper than 64"):
        await openai_embedder(url, "bge")(["a text"])


def test_a_record_row_nested_100000_deep_is_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    SqliteCallRecord(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO concilium_calls (digest, response) VALUES ('h', ?)", (DEEP,))
    record = SqliteCallRecord(path)
    try:
        with pytest.raises(UserError, match=r"is damaged .*nested deeper than 64"):
            record.get("h")
    finally:
        record.close()


def test_a_tool_value_the_record_could_not_read_back_is_refused_when_made() -> None:
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper than 64"):
        ToolText("text", deep)
    assert json.loads(json.dumps(ToolText("t", {"ok": [1, 2]}).value)) == {"ok": [1, 2]}
