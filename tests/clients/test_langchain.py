"""LangChain's ``ChatOpenAI(...).with_structured_output(Schema)`` against ``serve api``.

The pinned langchain-openai talks to ``concilium serve api`` (a subprocess) serving
tests/clients/city.yaml on the simulated server (a test double) whose answers that
file scripts; it gets the parsed object, or the clear error the docs describe. Over
the Responses API it also keeps the method's work: each sample and the vote.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
import pytest_asyncio
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from concilium.serving import ManagedProcess

CITY = Path(__file__).with_name("city.yaml")
# one server for the module: its replies are scripted by question, not by call order,
# so the tests share it without seeing each other's calls (one start, not four)
pytestmark = pytest.mark.asyncio(loop_scope="module")


class City(BaseModel):
    city: str
    population_millions: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api() -> AsyncIterator[ManagedProcess]:
    argv = [sys.executable, "-P", "-m", "concilium", "serve", "api", str(CITY),
            "--backend", "sim", "--port", "0"]  # fmt: skip
    proc = ManagedProcess("concilium serve api", argv, ready_pattern=r"at (?P<url>http://\S+/v1)",
                          health_url="{url}/health", deadline=120)  # fmt: skip
    yield await proc.start()
    await proc.stop()


def chat(api: ManagedProcess) -> ChatOpenAI:
    return ChatOpenAI(model="city", base_url=api.url, api_key=SecretStr("unused"), max_retries=0)


async def test_structured_output_returns_the_parsed_object(api: ManagedProcess) -> None:
    structured = chat(api).with_structured_output(City)
    city = await structured.ainvoke("What is the capital of France, and its population?")
    assert city == City(city="Paris", population_millions=2.1)


async def test_an_answer_outside_the_schema_is_the_servers_502_naming_it(
    api: ManagedProcess,
) -> None:
    structured = chat(api).with_structured_output(City)
    with pytest.raises(openai.InternalServerError) as caught:
        await structured.ainvoke("What is the capital of Atlantis?")
    assert caught.value.status_code == 502
    assert "outside the response_format" in str(caught.value)
    assert "population_millions" in str(caught.value)  # the missing property


async def test_function_calling_structured_output_is_refused_naming_tools(
    api: ManagedProcess,
) -> None:
    structured = chat(api).with_structured_output(City, method="function_calling")
    with pytest.raises(openai.BadRequestError, match=r"tools=.*call their own tools"):
        await structured.ainvoke("What is the capital of France?")


async def test_the_responses_api_shows_langchain_each_sample_and_the_vote(
    api: ManagedProcess,
) -> None:
    model = chat(api).model_copy(update={"use_responses_api": True})
    question = "What is the capital of France?"
    reply = await model.ainvoke(question)
    reasoning, text = reply.content
    assert isinstance(reasoning, dict) and isinstance(text, dict)
    trace = reasoning["summary"][0]["text"].splitlines()
    assert [line.split("] ")[0] for line in trace] == ["[solver"] * 3 + ["[votes"]
    answer = '{"city": "Paris", "population_millions": 2.1}'
    assert trace[-1] == f"[votes] {answer} x3 -> {answer}"
    assert text["text"] == answer

    streamed = ""  # the summary as it streams, before the answer's text
    async for chunk in model.astream(question):
        for block in chunk.content:
            assert isinstance(block, dict)
            if block["type"] == "reasoning" and block.get("summary"):
                assert "answer" not in streamed
                streamed += block["summary"][0]["text"]
            if block["type"] == "text":
                streamed += "answer"
    assert streamed.count("[solver]") == 3 and streamed.endswith("answer")
