"""``--backend``: where a session sends model calls, parsed in one place.

``sim`` is the simulated server (a test double that says so), ``local`` the embedded
engine, a URL any OpenAI-compatible server (vLLM, its router, SGLang, a hosted API),
and nothing at all each model's own ``api_base``. A :class:`Session` starts what the
backend needs and binds workflows to it in memory.

Example:
    >>> Backend.parse("sim").label
    "simulated server -- a test double; its replies are not a model's"
    >>> Backend.parse("http://127.0.0.1:8000/v1").url
    'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from concilium._errors import UserError

__all__ = ["Backend"]

BackendKind = Literal["models", "sim", "local", "url"]

SIM_LABEL = "simulated server -- a test double; its replies are not a model's"
LOCAL_LABEL = "embedded engine -- Gemma 3 270M base on vLLM's CPU build: real tokens, weak answers"


@dataclass(frozen=True)
class Backend:
    """Where model calls go.

    Attributes:
        kind: ``models`` (each model's own ``api_base``), ``sim`` (the simulated
            server, a test double), ``local`` (the embedded engine) or ``url`` (one
            OpenAI-compatible server for every model).
        url: the server's URL when ``kind`` is ``url``.
    """

    kind: BackendKind = "models"
    url: str | None = None

    @classmethod
    def parse(cls, value: str | Backend | None) -> Backend:
        """Read a ``--backend`` value: ``sim``, ``local``, an http(s) URL, or ``None``.

        Raises:
            UserError: for anything else, with the values that work.

        Example:
            >>> Backend.parse(None).kind, Backend.parse("local").kind
            ('models', 'local')
        """
        if value is None or isinstance(value, Backend):
            return value or cls()
        if value in ("sim", "local"):
            return cls(value)
        if value.startswith(("http://", "https://")):
            return cls("url", value)
        raise UserError(
            f"{value!r} is not a backend; use 'sim', 'local' or a URL such as http://127.0.0.1:8000/v1"
        )

    @property
    def label(self) -> str:
        """What answers, in words (what the CLI shows beside a run)."""
        if self.kind == "sim":
            return SIM_LABEL
        if self.kind == "local":
            return LOCAL_LABEL
        if self.kind == "url":
            return f"the OpenAI-compatible server at {self.url}"
        return "each model's own server, as the workflow says"

    @property
    def notice(self) -> str | None:
        """The ``(backend: ...)`` line shown above a run's output: for the simulated
        server and the embedded engine, whose replies must not pass for a real model's."""
        return f"(backend: {self.label})" if self.kind in ("sim", "local") else None
