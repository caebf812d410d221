"""``serve api`` speaks the Responses API and the completions API by the chat rules,
and shows the method's work in the fields standard clients keep.

``concilium serve api`` runs as a subprocess against the simulated server (a test
double) in this process; the requests come from the official ``openai`` client.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio

from concilium.serving import ManagedProcess, SimServer

QUESTION = "What is 12 * 7?"
DEBATE_TURNS = [f"[round {r} {a}]" for r in (1, 2) for a in ("alice", "bob", "carol")]


async def start(workflow: str, backend: str) -> ManagedProcess:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", workflow,
            "--backend", backend, "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=120)  # fmt: skip
    return await proc.start()


def client(api: ManagedProcess) -> openai.AsyncOpenAI:
    assert api.url is not None
    return openai.AsyncOpenAI(base_url=api.url, api_key="unused", max_retries=0)


async def bodies(sim: SimServer) -> list[dict[str, Any]]:
    return [r["body"] for r in await sim.requests()]


@pytest_asyncio.fixture
async def api(sim: SimServer) -> AsyncIterator[ManagedProcess]:
    proc = await start("examples/debate.yaml", backend=sim.url)
    yield proc
    await proc.stop()


def turns(trace: str) -> list[str]:
    """The speaker tag of each line of a reasoning trace."""
    return [line.split("] ")[0] + "]" for line in trace.splitlines()]


async def test_a_response_carries_the_debate_as_reasoning_and_its_answer(
    api: ManagedProcess, sim: SimServer
) -> None:
    reply = await client(api).responses.create(
        model="debate", input=QUESTION, instructions="Answer in digits.", max_output_tokens=40
    )
    reasoning, message = reply.output
    assert reasoning.type == "reasoning" and message.type == "message"
    trace = reasoning.summary[0].text
    assert turns(trace) == [*DEBATE_TURNS, "[votes]"]
    concilium = (reply.model_extra or {})["concilium"]
    counts = concilium["votes"]["counts"]
    assert trace.splitlines()[-1].startswith(f"[votes] {max(counts, key=counts.get)} x")
    assert reply.output_text == concilium["answer"]
    assert reply.usage is not None and reply.usage.output_tokens > 0
    sent = await bodies(sim)
    assert len(sent) == 6 and all(b["max_tokens"] <= 40 for b in sent)


async def test_a_streamed_response_sends_each_turn_as_reasoning_before_the_answer(
    api: ManagedProcess,
) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    final: Any = None
    async with await client(api).responses.create(
        model="debate", input=[{"role": "user", "content": QUESTION}], stream=True
    ) as events:
        async for event in events:
            kinds.append(event.type)
            if event.type == "response.reasoning_summary_text.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                final = event.response
    assert turns("".join(deltas)) == [*DEBATE_TURNS, "[votes]"]
    assert kinds.index("response.output_text.delta") > max(
        i for i, k in enumerate(kinds) if k == "response.reasoning_summary_text.delta"
    )
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == (final.model_extra or {})["concilium"]["answer"]


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("tools", [{"type": "function", "name": "f", "parameters": {}}], "tools="),
        ("max_output_tokens", 0, "max_output_tokens"),
        ("previous_response_id", "resp_1", "previous_response_id"),
        ("reasoning", {"effort": "high"}, "reasoning.effort"),
        ("text", {"format": {"type": "json_schema", "name": "b", "schema": {"type": 5}}},
         "text.format.schema"),
        ("seed", 1, "unknown field 'seed'"),
    ],
)  # fmt: skip
async def test_a_responses_field_a_workflow_cannot_honour_is_a_400_naming_it(
    api: ManagedProcess, sim: SimServer, field: str, value: Any, named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client(api).responses.create(
            model="debate", input=QUESTION, extra_body={field: value}
        )
    assert named in caught.value.body["message"]  # type: ignore[index]
    assert await sim.requests() == []


async def test_a_responses_json_schema_shapes_and_checks_the_answer(api: ManagedProcess) -> None:
    reply = await client(api).responses.create(
        model="debate",
        input=QUESTION,
        text={"format": {"type": "json_schema", "name": "n", "schema": {"type": "number"}}},
    )
    assert json.loads(reply.output_text) == 84


async def test_a_completion_answers_its_prompt_and_refuses_what_it_cannot_do(
    api: ManagedProcess, sim: SimServer
) -> None:
    reply = await client(api).completions.create(
        model="debate", prompt=QUESTION, max_tokens=30, seed=3
    )
    assert reply.object == "text_completion"
    assert reply.choices[0].text == (reply.model_extra or {})["concilium"]["answer"]
    sent = await bodies(sim)
    assert len(sent) == 6 and {b["max_tokens"] <= 30 for b in sent} == {True}
    for refused, named in [
        ({"stream": True}, "stream is not supported"),
        ({"prompt": [QUESTION, QUESTION]}, "one prompt per request"),
        ({"echo": True}, "echo is not supported"),
        ({"logprobs": 2}, "logprobs"),
    ]:
        with pytest.raises(openai.BadRequestError, match=re.escape(named)):
            await client(api).completions.create(
                **{"model": "debate", "prompt": QUESTION, **refused}
            )


async def test_a_chat_answer_carries_the_reasoning_trace_and_models_their_description(
    api: ManagedProcess,
) -> None:
    reply = await client(api).chat.completions.create(
        model="debate", messages=[{"role": "user", "content": QUESTION}]
    )
    trace = (reply.choices[0].message.model_extra or {})["reasoning_content"]
    assert turns(trace) == [*DEBATE_TURNS, "[votes]"]
    models = await client(api).models.list()
    assert [(m.id, (m.model_extra or {})["description"]) for m in models.data] == [
        ("debate", "Three solvers debate for two rounds (the first answer counts as round 1).")
    ]


async def test_an_answer_outside_text_format_is_a_502_or_a_streamed_error_event(
    api: ManagedProcess,
) -> None:
    obj: Any = {"format": {"type": "json_schema", "name": "o", "schema": {"type": "object"}}}
    with pytest.raises(openai.APIStatusError) as caught:
        await client(api).responses.create(model="debate", input=QUESTION, text=obj)
    assert caught.value.status_code == 502
    assert "outside the response_format" in str(caught.value)

    events: list[Any] = []
    async with await client(api).responses.create(
        model="debate", input=QUESTION, text=obj, stream=True
    ) as stream:
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert "response.reasoning_summary_text.delta" in kinds  # the work, then the failure
    assert "response.output_text.delta" not in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert "outside the response_format" in events[-2].message
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.code == "invalid_answer_format"
