"""Rescoring: an eval's summary recomputed from its ``--out`` folder alone, no model call.

``results.jsonl`` holds every item's answer, gold answer (and choices), transcript and
sampled answers, so every figure of the summary (accuracy, majority@k, the confidence
votes, pass@k, the early-stopping replay, the plot) can be computed again, under
another scorer or by a newer concilium, without sending a request. ``summarise(folder)``
is the entry point; ``concilium rescore OUT_DIR`` prints and writes what it returns.

The default scorer is the one the eval chose by the gold answers (``default_scorer``):
it is checked against the verdicts stored in the rows, so an eval run with another
``--scorer`` is not silently rescored with the default one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

from concilium._errors import UserError

from ._runner import RESULTS_FILE, ItemResult, _read_jsonl
from ._scorers import Scorer, default_scorer

__all__ = ["read_folder"]

Predicate = Callable[[str], bool]


def _verdict(row: ItemResult, scorer: Scorer) -> bool:
    answer = row["answer"]
    return answer is not None and bool(scorer(answer, row["gold"], row.get("choices")))


def _predicate_of(scorer: Scorer) -> Callable[[ItemResult], Predicate]:
    def of(row: ItemResult) -> Predicate:
        gold, choices = row["gold"], row.get("choices")
        return lambda answer: bool(scorer(answer, gold, choices))

    return of


def _methods(out: Path, rows: list[ItemResult]) -> list[str]:
    """The eval's method order (its summary's), else the order the rows first name them."""
    seen = list(dict.fromkeys(r["method"] for r in rows))
    try:
        listed = [
            str(m["method"]) for m in json.loads((out / "summary.json").read_text())["methods"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return seen  # no summary yet (an interrupted eval), or not one of ours
    return [m for m in listed if m in seen] or seen


def read_folder(
    out: Path, scorer: Scorer | None = None
) -> tuple[list[ItemResult], list[str], Callable[[ItemResult], Predicate], Scorer]:
    """The rows of an eval folder (the last line of each item and method), its methods
    in order, the predicate of each row's sampled answers under ``scorer``, and the
    scorer that decided (``scorer``, or the default one).

    With a ``scorer``, every row's verdict is decided again; without one, the default
    scorer must agree with the verdicts stored, or the error names the first that
    does not and asks for the eval's ``--scorer``.
    """
    path = out / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{out} holds no {RESULTS_FILE}; give the --out folder of a concilium eval")
    latest: dict[tuple[str, str], ItemResult] = {}
    for line in _read_jsonl(path):
        if isinstance(line, dict) and {"id", "method", "answer", "gold"} <= line.keys():
            latest[(str(line["method"]), str(line["id"]))] = cast(ItemResult, line)
    rows = list(latest.values())
    if not rows:
        raise UserError(f"{path} holds no result rows; run concilium eval with --out {out} first")
    if scorer is None:
        chosen = default_scorer([r["gold"] for r in rows], any(r.get("choices") for r in rows))
        differ = [r for r in rows if _verdict(r, chosen) != bool(r["correct"])]
        if differ:
            r = differ[0]
            raise UserError(
                f"{len(differ)} of {len(rows)} verdicts in {path} differ from the default "
                f"{type(chosen).__name__} (item {r['id']!r} of {r['method']!r}: answer "
                f"{r['answer']!r}, gold {r['gold']!r}, stored correct={r['correct']}); the eval "
                "was scored with another scorer: give it with --scorer NAME"
            )
    else:
        chosen = scorer
        rows = [cast(ItemResult, {**r, "correct": _verdict(r, chosen)}) for r in rows]
    return rows, _methods(out, rows), _predicate_of(chosen), chosen
