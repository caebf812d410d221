"""The OpenAI wire format, as concilium's servers write it: the bodies of a chat or
text completion, their streamed chunks (sent with ``sse``), errors, usage and model
lists, each a JSON-ready dict whose fields are named and shaped in one place. The
simulated server and ``concilium serve api`` build their replies with these; the
client side reads replies with the same module.

Example:
    >>> from concilium.agents import wire
    >>> body = wire.chat_completion("r1", "m", [wire.chat_choice(0, "hi")], wire.usage(3, 1))
    >>> body["choices"][0]["message"]["content"], body["usage"]["total_tokens"]
    ('hi', 4)
"""

from ._wire import (
    SSE_DONE,
    ErrorBody,
    JsonObject,
    LogprobsBody,
    ToolCallBody,
    UsageBody,
    chat_choice,
    chat_completion,
    chunk,
    delta_choice,
    error,
    message_text,
    model_card,
    model_list,
    sse,
    text_choice,
    text_completion,
    token_logprob,
    tool_call,
    usage,
)

__all__ = [
    # the bodies a server sends
    "chat_completion",
    "text_completion",
    "chat_choice",
    "text_choice",
    "chunk",
    "delta_choice",
    "usage",
    "token_logprob",
    "tool_call",
    "error",
    "model_card",
    "model_list",
    "sse",
    "SSE_DONE",
    # reading a message's text
    "message_text",
    # their types
    "JsonObject",
    "UsageBody",
    "LogprobsBody",
    "ToolCallBody",
    "ErrorBody",
]
