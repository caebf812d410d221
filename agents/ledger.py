"""The call ledger: every model and tool call of a run goes through one, which
budgets it, retries it when that can help, traces it and keeps its response in the
call record (request hash -> response), so a resumed run repeats no completed call.

``run`` (``concilium.graphs``) opens a ledger per run; code that calls agents outside
a run, or measures them, opens its own with ``use_ledger`` and ``reset_ledger``.

Example:
    >>> import asyncio
    >>> from concilium.agents import Agent, FakeModel
    >>> from concilium.agents.ledger import CallLedger, reset_ledger, use_ledger
    >>> ledger = CallLedger()
    >>> token = use_ledger(ledger)
    >>> reply = asyncio.run(Agent("a", FakeModel().spec()).run("hi"))
    >>> reset_ledger(token)
    >>> ledger.calls
    1
"""

from ._ledger import CallLedger, current_ledger, reset_ledger, use_ledger
from ._record import CallRecord, SqliteCallRecord
from ._supervised import supervise

__all__ = [
    "CallLedger",
    "current_ledger",
    "use_ledger",
    "reset_ledger",
    "CallRecord",
    "SqliteCallRecord",
    "supervise",
]
