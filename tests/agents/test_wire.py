"""The OpenAI wire format: bodies the official client parses, and a round trip
through ``completion_from_openai``."""

from __future__ import annotations

import json
import re

import openai.types
import openai.types.chat
import pytest

from concilium._errors import MalformedReplyError
from concilium.agents import Choice, Completion, TokenLogprob, Usage, wire
from concilium.agents import _types as types_module
from concilium.agents._types import completion_from_openai


def test_a_chat_completion_parses_with_the_openai_types_and_reads_back() -> None:
    call = wire.tool_call("call-1", "search", {"query": "lighthouse"})
    lp: wire.LogprobsBody = {
        "content": [wire.token_logprob("hi", -0.5, [("hi", -0.5), ("ho", -2.0)])]
    }
    body = wire.chat_completion(
        "r1", "m", [wire.chat_choice(0, "hi", logprobs=lp), wire.chat_choice(1, None, "tool_calls", tool_calls=[call])],
        wire.usage(3, 2), created=7, system_fingerprint="x",
    )  # fmt: skip
    parsed = openai.types.chat.ChatCompletion.model_validate(body)
    assert parsed.usage is not None and parsed.usage.total_tokens == 5
    calls = parsed.choices[1].message.tool_calls
    assert calls and isinstance(calls[0], openai.types.chat.ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "search"
    assert json.loads(calls[0].function.arguments) == {"query": "lighthouse"}
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
    lp: wire.LogprobsBody = {"content": [wire.token_logprob("a", -1.0, [("a", -1.0), ("b", -3.0)])]}
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


def test_replies_with_extension_fields_read_and_bad_shapes_say_where() -> None:
    body = wire.chat_completion(
        "r", "m", [wire.chat_choice(0, None, "tool_calls", tool_calls=[wire.tool_call("c", "f", {})])],
        wire.usage(3, 1), created=0, system_fingerprint="x", kv_transfer_params=None,
    )  # fmt: skip
    body["usage"]["prompt_tokens_details"] = None  # vLLM's extension fields
    completion = completion_from_openai(body)
    assert completion.choices[0].text == "" and completion.choices[0].tool_calls[0]["id"] == "c"
    assert (
        completion_from_openai({"choices": [{"message": {"content": "a"}}], "usage": None}).usage
        == Usage()
    )
    for bad, where in [
        ({"choices": [{"message": {"content": "a"}}], "usage": {"completion_tokens": -2}}, "usage.completion_tokens"),
        ({"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": True}}, "usage.prompt_tokens"),
        ({"choices": [{"message": {"content": "a"}, "logprobs": {"content": [{"logprob": "x"}]}}]}, "logprobs.content[0].logprob"),
        ({"choices": []}, "choices: empty"),
        ({"choices": [{"index": -1, "message": {}}]}, "choices[0].index"),
    ]:  # fmt: skip
        with pytest.raises(MalformedReplyError, match=re.escape(where)) as info:
            completion_from_openai(bad, "http://u:secret@h/v1", model="m")
        assert "secret" not in str(info.value) and not info.value.retryable
    with pytest.raises(MalformedReplyError) as info:
        completion_from_openai({"choices": []}, status=502)
    assert info.value.retryable


def _both_readers(body: object) -> tuple[object, object]:
    """``completion_from_openai`` with and without its plain-reply fast path: a
    ``Completion`` or the ``MalformedReplyError`` message from each."""

    def read() -> object:
        try:
            return completion_from_openai(body, "http://h/v1", model="m")  # type: ignore[arg-type]
        except MalformedReplyError as exc:
            return str(exc)

    fast = read()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(types_module, "_plain_completion", lambda data, replica: None)
        slow = read()
    return fast, slow


def test_the_plain_reply_fast_path_reads_exactly_as_the_checked_reader() -> None:
    ok = {"id": "r", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "84"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}  # fmt: skip
    common = [
        ok,
        {**ok, "id": None, "model": None, "usage": None, "system_fingerprint": "x"},
        {**ok, "usage": {"prompt_tokens": None}},
        {
            "choices": [
                {"index": 2, "message": {"content": "c"}},
                {"index": 0, "message": {"content": None}},
                {"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
            ]
        },
        {"choices": [{"message": {"content": "déjà vu ☃"}}]},
    ]
    for body in common:
        assert types_module._plain_completion(body, None) is not None, (
            body
        )  # it takes the fast path
    others = [
        {"choices": [{"message": {"content": "\ud800"}}]},  # a lone surrogate
        {"choices": [{"message": {"content": 42}}]},
        {"choices": [{"message": {"content": "a"}, "index": True}]},
        {"choices": [{"message": {"content": "a"}, "index": None}]},
        {"choices": [{"message": {"content": "a"}, "index": 2**53 + 1}]},
        {"choices": [{"message": {"content": "a"}, "finish_reason": 3}]},
        {"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": 1.0}},
        {"choices": [{"message": {"content": "a"}}], "usage": {"completion_tokens": -1}},
        {"choices": [{"message": {"content": "a"}}], "usage": []},
        {"choices": [{"message": {"content": "a"}}], "id": 7},
        {
            "choices": [
                {
                    "message": {"content": "a"},
                    "logprobs": {"content": [{"token": "a", "logprob": -0.1}]},
                }
            ]
        },
        {"choices": [{"message": {"content": None, "tool_calls": [wire.tool_call("c", "f", {})]}}]},
        {"choices": [{"text": "no message"}]},
        {"choices": [{"message": "text"}]},
        {"choices": ["x"]},
        {"choices": []},
        {"choices": None},
        {},
        [],
        "not a body",
    ]
    for body in common + others:
        fast, slow = _both_readers(body)
        assert fast == slow, body
