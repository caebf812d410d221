"""The litellm transport: the only module that imports litellm or maps its exceptions.

litellm reaches every provider. It is imported on first use (it takes 2-4 s to
import) with its local cost map, so it never tries to fetch a price list from the
internet. It does not stream here (``streams = False``): a streamed call gets the
whole text as one delta when the call is done.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from concilium._errors import ModelCallError

from .._model import ModelSpec
from .._redact import redact, scrub
from .._types import Completion, completion_from_openai
from ._base import RETRYABLE_STATUS, WholeTextStream, retry_after_seconds, status_error
from ._text import as_chat_reply, is_text_request

# Fields of the OpenAI body litellm takes as keyword arguments; the rest go in
# extra_body so server-specific fields (vLLM's structured_outputs) pass through.
_KNOWN = frozenset(
    {
        "messages", "prompt", "temperature", "top_p", "n", "stop", "max_tokens", "seed",
        "logprobs", "top_logprobs", "response_format", "tools", "tool_choice",
        "presence_penalty", "frequency_penalty", "user", "parallel_tool_calls",
    }
)  # fmt: skip

_RETRYABLE_NAMES = frozenset(
    {
        "Timeout", "APIConnectionError", "RateLimitError", "ServiceUnavailableError",
        "InternalServerError", "BadGatewayError",
    }
)  # fmt: skip


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as exc:  # pragma: no cover - litellm is a hard dependency
        raise ModelCallError(
            "litellm is not installed; pip install 'concilium' (it depends on litellm)",
            model="?",
        ) from exc
    litellm.suppress_debug_info = True
    return litellm


def map_litellm_error(spec: ModelSpec, api_base: str | None, exc: Exception) -> ModelCallError:
    """Turn any litellm exception into a ``ModelCallError``.

    Example:
        >>> class RateLimitError(Exception):
        ...     status_code = 429
        >>> map_litellm_error(ModelSpec("openai/m"), None, RateLimitError("slow")).retryable
        True
    """
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    headers = getattr(getattr(exc, "response", None), "headers", None)
    wait = retry_after_seconds(headers.get("retry-after")) if isinstance(headers, Mapping) else None
    if isinstance(status, int) and status >= 400 and name not in _RETRYABLE_NAMES:
        return status_error(spec, api_base, status, str(exc), wait)
    retryable = name in _RETRYABLE_NAMES or (isinstance(status, int) and status in RETRYABLE_STATUS)
    return ModelCallError(
        f"{name}: {scrub(str(exc))}",
        model=spec.model,
        status=status if isinstance(status, int) else None,
        retryable=retryable,
        api_base=api_base and redact(api_base),
        retry_after=wait if retryable else None,
    )


class LiteLLMTransport(WholeTextStream):
    """Chat completions through ``litellm.acompletion`` (every provider)."""

    def __init__(self) -> None:
        self._litellm: Any = None

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion:
        if self._litellm is None:
            self._litellm = _import_litellm()
        kwargs: dict[str, Any] = {k: v for k, v in body.items() if k in _KNOWN}
        extra = {k: v for k, v in body.items() if k not in _KNOWN}
        if extra:
            kwargs["extra_body"] = extra
        api_key = spec.api_key
        if api_key is None and api_base is not None and spec.provider == "openai":
            api_key = "not-needed"  # OpenAI-compatible local servers ignore it
        # a base model's prompt goes to /v1/completions (litellm's text_completion)
        call = (
            self._litellm.atext_completion if is_text_request(body) else self._litellm.acompletion
        )
        try:
            response = await call(
                model=spec.model,
                api_base=api_base,
                api_key=api_key,
                extra_headers=dict(headers),
                timeout=spec.timeout,
                num_retries=0,  # the ledger retries, with its own policy
                **kwargs,
            )
        except Exception as exc:
            raise map_litellm_error(spec, api_base, exc) from exc
        return completion_from_openai(
            as_chat_reply(response.model_dump()), replica=api_base, model=spec.model
        )
