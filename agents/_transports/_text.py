"""Legacy ``/v1/completions`` replies read as chat replies.

Base (non-instruction) models are asked over ``/v1/completions`` with a ``prompt``;
their replies carry ``choices[].text`` and the parallel-list logprobs layout. Both
transports turn them into the chat shape here, so one reader (``completion_from_openai``)
and one stream assembler serve both endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_text_request(body: Mapping[str, Any]) -> bool:
    """A body with a ``prompt`` (and no ``messages``) goes to ``/completions``."""
    return "prompt" in body and "messages" not in body


def _logprobs(raw: object) -> object:
    if not isinstance(raw, Mapping) or "content" in raw:
        return raw
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or []
    content: list[dict[str, Any]] = []
    for i, token in enumerate(tokens):
        top = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
        content.append({
            "token": token,
            "logprob": values[i] if i < len(values) and values[i] is not None else 0.0,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()],
        })  # fmt: skip
    return {"content": content}


def as_chat_reply(data: Any) -> Any:
    """A ``text_completion`` body in the ``chat.completion`` shape; others unchanged.

    Example:
        >>> reply = {"object": "text_completion", "choices": [{"index": 0, "text": " Paris"}]}
        >>> as_chat_reply(reply)["choices"][0]["message"]
        {'role': 'assistant', 'content': ' Paris'}
    """
    if not isinstance(data, Mapping):
        return data
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return data
    if isinstance(choices[0], Mapping) and "message" in choices[0]:
        return data  # a chat reply: the common case, decided by its first choice
    if not all(isinstance(c, Mapping) and "text" in c and "message" not in c for c in choices):
        return data
    converted: list[dict[str, Any]] = []
    for c in choices:
        choice = {k: v for k, v in c.items() if k != "text"}
        choice["message"] = {"role": "assistant", "content": c["text"]}
        if choice.get("logprobs") is not None:
            choice["logprobs"] = _logprobs(choice["logprobs"])
        converted.append(choice)
    return {**data, "choices": converted}


def as_chat_chunk(data: Any) -> Any:
    """A streamed ``text_completion`` event as a chat chunk (``text`` -> ``delta``,
    its parallel-list logprobs -> the chat layout, so ``on_token`` gets its tokens).

    Example:
        >>> top = [{" Paris": -0.1, " Lyon": -2.5}]
        >>> lp = {"tokens": [" Paris"], "token_logprobs": [-0.1], "top_logprobs": top}
        >>> event = {"choices": [{"index": 0, "text": " Paris", "logprobs": lp}]}
        >>> chunk = as_chat_chunk(event)["choices"][0]
        >>> chunk["delta"], chunk["logprobs"]["content"][0]["top_logprobs"][1]
        ({'content': ' Paris'}, {'token': ' Lyon', 'logprob': -2.5})
    """
    if not isinstance(data, Mapping):
        return data
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(
        isinstance(c, Mapping) and "text" in c and "delta" not in c for c in choices
    ):
        return data
    converted: list[dict[str, Any]] = []
    for c in choices:
        choice = {k: v for k, v in c.items() if k not in ("text", "logprobs")}
        choice["delta"] = {"content": c["text"]}
        if c.get("logprobs") is not None:
            choice["logprobs"] = _logprobs(c["logprobs"])
        converted.append(choice)
    return {**data, "choices": converted}
