"""Deprecated home of the pattern helpers: they are public in ``concilium.graphs``
now (the pattern kit). This shim keeps old imports working while the patterns move
over; import from ``concilium.graphs`` instead."""

from __future__ import annotations

from concilium.graphs import (
    Respondent,
    ask,
    distinct_names,
    is_bare_question,
    last_user_text,
    numbered,
    prompt_library,
    sample_turns,
    solve_messages,
    turn,
    user,
)

library = prompt_library  # the old name

__all__ = [
    "Respondent",
    "ask",
    "distinct_names",
    "is_bare_question",
    "last_user_text",
    "library",
    "numbered",
    "prompt_library",
    "sample_turns",
    "solve_messages",
    "turn",
    "user",
]
