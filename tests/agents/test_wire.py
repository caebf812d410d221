"""The OpenAI wire format: bodies the official client parses, and a round trip
through ``completion_from_openai``."""

from __future__ import annotations

import json

import openai.types
import openai.types.chat

from concilium.agents import Choice, Completion, TokenLogprob, Usage, completion_from_openai, wire


def test_a_chat_completion_parses_with_the_openai_types_and_reads_back() -> None:
    call = wire.tool_call("call-1", "search", {"query": "lighthouse"})
    lp = {"content": [wire.token_logprob("hi", -0.5, [("hi", -0.5), ("ho", -2.0)])]}
    body = wire.chat_completion(
        "r1", "m", [wire.chat_choice(0, "hi", logprobs=lp), wire.chat_choice(1, None, "tool_calls", tool_calls=[call])],
        wire.usage(3, 2), created=7, system_fingerprint="x",
    )  # fmt: skip
    parsed = openai.types.chat.ChatCompletion.model_validate(body)
    assert parsed.usage is not None and parsed.usage.total_tokens == 5
    assert parsed.choices[1].message.tool_calls[0].function.name == "search"  # type: ignore[index]
    assert json.loads(parsed.choices[1].message.tool_calls[0].function.arguments) == {
        "query": "lighthouse"
    }  # type: ignore[index]
    completion = completion_from_openai(body)
    assert completion.choices[0].logprobs == (
        TokenLogprob("hi", -0.5, (("hi", -0.5), ("ho", -2.0))),
    )
    assert completion.choices[1].finish_reason == "tool_calls" and completion.usage == Usage(3, 2)


def test_completion_to_json_is_a_chat_completion_that_reads_back_equal() -> None:
    original = Completion(
        (Choice("a b", "stop", (TokenLogprob("a", -0.1, (("a", -0.1),)), TokenLogprob("b", -0.2))),),
        Usage(4, 2), model="m", id="x",
    )  # fmt: skip
    body = original.to_json()
    assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] == 6
    openai.types.chat.ChatCompletion.model_validate(body)
    assert completion_from_openai(body) == original


def test_chunks_text_completions_errors_and_model_lists() -> None:
    first = wire.chunk(
        "r", "m", [wire.delta_choice(0, {"role": "assistant", "content": ""})], created=1
    )
    last = wire.chunk(
        "r", "m", [wire.delta_choice(0, {}, "stop")], created=1, usage=wire.usage(1, 1)
    )
    for event in (first, last):
        openai.types.chat.ChatCompletionChunk.model_validate(event)
    assert wire.sse(last).startswith(b"data: {") and wire.sse(last).endswith(b"}\n\n")
    lp = {"content": [wire.token_logprob("a", -1.0, [("a", -1.0), ("b", -3.0)])]}
    text = wire.text_completion(
        "r", "m", [wire.text_choice(0, "a", logprobs=lp)], wire.usage(1, 1), created=1
    )
    parsed = openai.types.Completion.model_validate(text)
    assert parsed.choices[0].logprobs is not None and parsed.choices[0].logprobs.top_logprobs == [
        {"a": -1.0, "b": -3.0}
    ]
    assert (
        wire.error("no model 'x'; models: ['m']", "invalid_request_error", "model_not_found")[
            "error"
        ]["code"]
        == "model_not_found"
    )
    models = wire.model_list([wire.model_card("m", "me", max_model_len=4096)])
    assert (
        openai.types.Model.model_validate(models["data"][0]).id == "m"
        and models["data"][0]["max_model_len"] == 4096
    )


def test_message_text_joins_content_parts() -> None:
    assert (
        wire.message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "a b"
    )
    assert wire.message_text(None) == "" and wire.message_text("x") == "x"
