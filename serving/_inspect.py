"""An Inspect AI model provider: ``inspect eval TASK --model concilium/<workflow>``.

Inspect finds it through the package's ``inspect_ai`` entry point (pyproject.toml), so
nothing needs importing. It sends each ``generate()`` to a running ``concilium serve
api`` (the URL from ``--model-base-url`` or ``CONCILIUM_BASE_URL``, a key from
``CONCILIUM_API_KEY`` when the server has one) as a chat-completions request, and
reads back the answer as the assistant's text, the agents' turns and the vote as its
reasoning, usage, and the run's votes and transcript as the output's ``metadata``.
Generation settings go as the request's fields, so the server honours or refuses
each one (a tool-using solver gets its 400: a workflow calls its own tools).
"""

from __future__ import annotations

import os
from typing import Any

import openai
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    Content,
    ContentReasoning,
    ContentText,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

BASE_URL_VAR = "CONCILIUM_BASE_URL"
API_KEY_VAR = "CONCILIUM_API_KEY"

# GenerateConfig field -> the chat-completions field it is sent as
_FIELDS = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "seed": "seed",
    "stop_seqs": "stop",
    "num_choices": "n",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "logit_bias": "logit_bias",
    "logprobs": "logprobs",
    "top_logprobs": "top_logprobs",
    "reasoning_effort": "reasoning_effort",
}


class ServerRefused(RuntimeError):
    """``serve api`` answered a request with an error (its message says why)."""


class ConciliumAPI(ModelAPI):
    """The workflow ``model_name`` of a ``concilium serve api`` server."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 (Inspect's signature)
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [API_KEY_VAR], config)
        if model_args:
            raise ValueError(
                f"concilium/{model_name} takes no model args, got {sorted(model_args)}; "
                f"give the server with --model-base-url or {BASE_URL_VAR}"
            )
        url = base_url or os.environ.get(BASE_URL_VAR)
        if not url:
            raise ValueError(
                f"concilium/{model_name} answers through a running `concilium serve api`: "
                f"start one and give its URL with --model-base-url or {BASE_URL_VAR} "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        key = api_key or os.environ.get(API_KEY_VAR) or "none"
        self.client = openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        body = _request(self.model_name, input, tools, config)
        try:
            reply = await self.client.chat.completions.create(**body)
        except openai.APIStatusError as exc:  # the server's own words, not the SDK's repr
            detail = exc.body.get("message") if isinstance(exc.body, dict) else None
            raise ServerRefused(
                f"concilium serve api answered {exc.status_code}: {detail or exc.message}"
            ) from None
        usage = reply.usage
        choices = [
            ChatCompletionChoice(
                message=ChatMessageAssistant(
                    content=_content(choice.message),
                    model=self.model_name,
                    source="generate",
                ),
                stop_reason="stop",
            )
            for choice in reply.choices
        ]
        return ModelOutput(
            model=self.model_name,
            choices=choices,
            usage=None
            if usage is None
            else ModelUsage(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
            ),
            metadata={"concilium": (reply.model_extra or {}).get("concilium")},
        )

    async def aclose(self) -> None:
        await self.client.close()


def _request(
    model: str, input: list[ChatMessage], tools: list[ToolInfo], config: GenerateConfig
) -> dict[str, Any]:
    """The chat-completions request for one ``generate()``: the conversation as text,
    each generation setting that is set, and the tools if the solver offers any (so
    the server refuses them by name)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.text} for m in input],
    }
    for name, field in _FIELDS.items():
        value = getattr(config, name)
        if value is not None:
            body[field] = value
    if config.response_schema is not None:
        schema = config.response_schema
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema.name, "schema": schema.json_schema.model_dump()},
        }
    if tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description}}
            for t in tools
        ]
    return body


def _content(message: Any) -> list[Content]:
    """The assistant message as Inspect keeps it: the reasoning trace, then the answer."""
    trace = (message.model_extra or {}).get("reasoning_content")
    text = ContentText(text=message.content or "")
    return [ContentReasoning(reasoning=trace), text] if trace else [text]


modelapi(name="concilium")(ConciliumAPI)
