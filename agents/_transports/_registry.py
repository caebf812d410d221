"""Which transport a ``ModelSpec``'s calls take: the one place that decides.

``ModelSpec.transport`` is a transport's name, ``"auto"``, or an object (a test
double). ``"auto"`` takes the first transport in ``AUTO`` whose rule claims the
spec, and litellm, which reaches every provider, when none does. Adding a
transport is one module in this package plus its line in ``NAMED`` (and in
``AUTO`` if ``"auto"`` should pick it).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from concilium._errors import UserError

from .._model import ModelSpec, SendsChat
from ._base import ChatOnly, Transport
from ._direct import DirectTransport
from ._litellm import LiteLLMTransport

direct = DirectTransport()
litellm = LiteLLMTransport()  # imports litellm on its first call only

NAMED: dict[str, Transport] = {"direct": direct, "litellm": litellm}

# In order: (rule, transport). OpenAI-compatible servers with a URL (vLLM, SGLang,
# llama.cpp, the simulated server) get raw aiohttp: ~0.4 ms of CPU per call, not ~3.5.
AUTO: tuple[tuple[Callable[[ModelSpec], bool], Transport], ...] = (
    (lambda spec: spec.openai_compatible, direct),
)
FALLBACK: Transport = litellm

_chat_only: set[type] = set()  # classes of transport objects without stream


def transport_for(spec: ModelSpec) -> Transport:
    """The transport a spec's calls take (see ``ModelSpec.transport``).

    Example:
        >>> spec = ModelSpec("hosted_vllm/gemma", api_base="http://127.0.0.1:8000/v1")
        >>> (
        ...     type(transport_for(spec)).__name__,
        ...     type(transport_for(ModelSpec("openai/gpt-4o"))).__name__,
        ... )
        ('DirectTransport', 'LiteLLMTransport')
    """
    choice = spec.transport
    if choice == "auto":
        for claims, transport in AUTO:
            if claims(spec):
                return transport
        return FALLBACK
    if isinstance(choice, str):
        transport = NAMED.get(choice)
        if transport is None:
            close = difflib.get_close_matches(choice, [*NAMED, "auto"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"model {spec.model!r} names transport {choice!r}, which does not exist.{hint} "
                f"Transports: {['auto', *NAMED]}"
            )
        return transport
    return _full(choice)


def _full(obj: SendsChat) -> Transport:
    """An object given as ``ModelSpec(transport=...)`` as a full ``Transport``: as it
    is when it has the whole protocol, else behind ``ChatOnly``."""
    if type(obj) not in _chat_only and isinstance(obj, Transport):
        return obj
    _chat_only.add(type(obj))  # the common case (FakeModel): skip the protocol check next time
    return ChatOnly(obj)


async def aclose() -> None:
    """Release the network resources concilium holds on the running loop."""
    await direct.aclose()
