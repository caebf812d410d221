"""A multi-turn few-shot chat through ``serve api`` (issue 22): each agent of the
served workflow gets the system message, the shots in order and the question last
(docs/methods.md, "Conversation"), and a seeded request asked twice gets the same
answer and transcript from the simulated server."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from concilium.serving import ManagedProcess, SimServer

SYSTEM = "You are a careful assistant. Keep answers short."
SHOTS = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "What is 4 * 6?"},
    {"role": "assistant", "content": "24"},
]
QUESTION = "What is 12 * 7?"
REQUEST = [{"role": "system", "content": SYSTEM}, *SHOTS, {"role": "user", "content": QUESTION}]


async def serve(backend: str) -> ManagedProcess:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", "examples/debate.yaml",
            "examples/self_consistency.yaml", "--backend", backend, "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=60)  # fmt: skip
    return await proc.start()


async def ask(proc: ManagedProcess, model: str, **fields: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=str(proc.url), timeout=60) as client:
        reply = await client.post(
            "/chat/completions", json={"model": model, "messages": REQUEST, **fields}
        )
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_each_agent_of_a_served_workflow_gets_the_whole_conversation(sim: SimServer) -> None:
    proc = await serve(sim.url)
    try:
        for model in ("debate", "self_consistency"):
            await sim.reset()
            await ask(proc, model)
            requests = await sim.requests()
            assert requests
            for request in requests:
                sent = request["body"]["messages"]
                assert sent[0] == {"role": "system", "content": SYSTEM}, (model, sent)
                assert sent[1:5] == SHOTS and sent[-1]["role"] == "user", (model, sent)
                assert QUESTION in sent[5]["content"] and "\\boxed{" in sent[5]["content"]
    finally:
        await proc.stop()


async def test_a_seeded_request_asked_twice_gets_the_same_run(sim: SimServer) -> None:
    proc = await serve(sim.url)
    try:
        first, second = [await ask(proc, "debate", seed=11) for _ in range(2)]
    finally:
        await proc.stop()
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    said = [[t["text"] for t in reply["concilium"]["transcript"]] for reply in (first, second)]
    assert said[0] == said[1] and len(said[0]) == 6
