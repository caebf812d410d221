"""How a request reaches a server: one module per transport behind one protocol,
chosen by one registry (the layout of httpx's ``_transports``).

* ``_base``: the ``Transport`` protocol (whole and streamed calls), status errors.
* ``_direct``: ``DirectTransport``, raw aiohttp for OpenAI-compatible servers.
* ``_litellm``: ``LiteLLMTransport``, every other provider; the only module that
  imports litellm or maps its exceptions.
* ``_registry``: ``transport_for(spec)``, which of them a spec's calls take.
"""

from ._base import RETRYABLE_STATUS, ChatOnly, OnText, Transport, WholeTextStream, status_error
from ._direct import DirectTransport
from ._litellm import LiteLLMTransport, map_litellm_error
from ._registry import aclose, transport_for

__all__ = [
    "Transport",
    "OnText",
    "DirectTransport",
    "LiteLLMTransport",
    "ChatOnly",
    "WholeTextStream",
    "transport_for",
    "aclose",
    "status_error",
    "map_litellm_error",
    "RETRYABLE_STATUS",
]
