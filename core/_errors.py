"""The error hierarchy, split by who has to act on it.

* ``UserError`` — the person writing a workflow or calling the API made a mistake
  (bad YAML, unknown agent, graph without a reducer). Raised at load/build time, the
  CLI prints it without a traceback and exits 2.
* ``ModelError`` — something a model (or its server) did: a failed call, an output
  that does not parse. Carries model, status and whether a retry could help.
* ``RunError`` — the run itself stopped: the budget ran out, a server did not start.

Every message says what happened, the bad value, and the fix.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides that can
# make a terminal show text in another order than it has
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    r"""``text`` safe to print on a terminal: control characters (but newline and tab)
    shown as escapes, so a model's or a server's text cannot move the cursor, recolour
    or rewrite the user's terminal.

    Example:
        >>> print(escape_controls("red \x1b[31mtext\r\nnext line"))
        red \x1b[31mtext\x0d
        next line
    """
    return _CONTROLS.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class ConciliumError(Exception):
    """Base class of every error concilium raises on purpose."""


# ---------------------------------------------------------------------------- user


class UserError(ConciliumError):
    """A mistake in a workflow, a graph or an API call; fix the input and retry."""


class WorkflowError(UserError):
    """A workflow file is invalid. ``file`` and ``line`` say where."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        self.detail = message
        where = file or "<workflow>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


class GraphError(UserError):
    """A graph is wired wrongly (unknown node, missing reducer, no entry)."""


class PromptError(UserError):
    """A prompt template is missing or failed to render."""


# --------------------------------------------------------------------------- model


class ModelError(ConciliumError):
    """Something went wrong on the model side of a call."""


class ModelCallError(ModelError):
    """A model call failed.

    Attributes:
        model: the model string of the call.
        status: HTTP status when there was one (``None`` for connection errors).
        retryable: whether retrying the same call could succeed.
        retry_after: seconds the server asked to wait before a retry (its
            ``Retry-After`` header on a 429 or 503), else ``None``.
        detail: the message without the model/status prefix.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        status: int | None = None,
        retryable: bool = False,
        api_base: str | None = None,
        connection_failed: bool = False,
        retry_after: float | None = None,
    ):
        self.connection_failed = connection_failed  # no server answered: another replica may
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)
        self.detail = message
        self.model = model
        self.status = status
        self.retryable = retryable
        self.api_base = api_base
        status_text = f"status {status}" if status is not None else "no response"
        where = f" at {api_base}" if api_base else ""
        kind = "retryable" if retryable else "not retryable"
        # the message may quote what a server sent: never raw control characters
        message = escape_controls(message)
        super().__init__(f"model {model!r}{where}: {status_text} ({kind}): {message}")


class MalformedReplyError(ModelCallError):
    """A server answered, but its reply cannot be used: not JSON, the wrong shape
    (no choices, a number for the text, negative token counts), or over the size cap.

    Retryable only when the server also said it failed (a 5xx status): a server that
    sends a malformed reply with 200 would most likely send it again.

    Example:
        >>> err = MalformedReplyError(
        ...     "choices: empty", model="m", status=200, api_base="http://h/v1"
        ... )
        >>> isinstance(err, ModelCallError), err.retryable
        (True, False)
    """


class OutputParseError(ModelError):
    """A model's reply did not match the output schema, even after one repair turn."""

    def __init__(self, message: str, *, agent: str, text: str):
        self.agent = agent
        self.text = text
        shown = text if len(text) <= 300 else text[:300] + "..."
        super().__init__(f"agent {agent!r}: {message}\nreply was: {shown!r}")


# ----------------------------------------------------------------------------- run


class RunError(ConciliumError):
    """A run stopped before it finished."""


class BudgetExceeded(RunError):
    """The run's budget (calls, tokens or tool calls) cannot pay for the next call.

    Raised before the call is sent. ``used`` is what finished calls spent,
    ``reserved`` what the calls still in flight may spend, ``needed`` what the
    refused call asked for (0 when unknown).
    """

    def __init__(self, what: str, used: int, limit: int, *, reserved: int = 0, needed: int = 0):
        self.what = what
        self.used = used
        self.limit = limit
        self.reserved = reserved
        self.needed = needed
        held = f" and {reserved} reserved by calls in flight" if reserved else ""
        asked = f"; the next call needs up to {needed}" if needed else ""
        super().__init__(
            f"budget exceeded: {used} {what} used{held}, the limit is {limit}{asked}; "
            f"raise the budget (max_{what}) or {_SMALLER.get(what, 'make the workflow smaller')}"
        )


_SMALLER = {"tokens": "lower the agents' max_tokens or the number of samples"}


class ServerError(RunError):
    """A server concilium started (simulated or real engine) failed or did not get ready."""
