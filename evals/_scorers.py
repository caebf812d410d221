"""Scorers: decide whether a model's answer matches the gold answer.

Built-in scorers are chosen by name (``exact``, ``numeric``, ``option``, ``contains``,
``regex:PATTERN``); any object with the :class:`Scorer` protocol can be passed from the
Python API. Names never resolve to code through ``importlib`` or ``eval``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from concilium._errors import UserError

__all__ = [
    "Scorer",
    "ExactScorer",
    "NumericScorer",
    "OptionScorer",
    "RegexScorer",
    "ContainsScorer",
    "scorer_from_name",
    "default_scorer",
    "SCORER_NAMES",
]

SCORER_NAMES = ("exact", "numeric", "option", "regex:PATTERN", "contains")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_PUNCT = str.maketrans("", "", string.punctuation)


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores an answer against a gold answer (``choices`` for multiple choice)."""

    def __call__(self, answer: str, gold: str, choices: Sequence[str] | None = None) -> bool: ...


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces.

    Example:
        >>> normalise("  The Paris. ")
        'paris'
    """
    words = text.lower().translate(_PUNCT).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def _number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class ExactScorer:
    """Equal after :func:`normalise`.

    Example:
        >>> ExactScorer()("paris!", "Paris")
        True
    """

    def __call__(self, answer: str, gold: str, choices: Sequence[str] | None = None) -> bool:
        return normalise(answer) == normalise(gold)


@dataclass(frozen=True)
class NumericScorer:
    """The answer's last number is within ``tolerance`` (absolute or relative) of the gold.

    Example:
        >>> NumericScorer()("so it is 1,024.0", "1024")
        True
    """

    tolerance: float = 1e-6

    def __call__(self, answer: str, gold: str, choices: Sequence[str] | None = None) -> bool:
        got, want = _number(answer), _number(gold)
        if got is None or want is None:
            return False
        return abs(got - want) <= self.tolerance * max(1.0, abs(want))


@dataclass(frozen=True)
class OptionScorer:
    """Multiple choice: the answer names the gold option by letter (A, B, ...) or by its text.

    Example:
        >>> OptionScorer()("(B)", "B", ["cat", "dog"])
        True
    """

    def _letter(self, text: str, choices: Sequence[str] | None) -> str | None:
        cleaned = text.strip().strip("()[].:").strip()
        if len(cleaned) == 1 and cleaned.isalpha():
            return cleaned.upper()
        match = re.match(r"^\(?([A-Za-z])[).:]", text.strip())
        if match:
            return match.group(1).upper()
        if choices:
            for index, choice in enumerate(choices):
                if normalise(choice) == normalise(text):
                    return chr(ord("A") + index)
        return None

    def __call__(self, answer: str, gold: str, choices: Sequence[str] | None = None) -> bool:
        want = self._letter(gold, choices)
        return want is not None and self._letter(answer, choices) == want


@dataclass(frozen=True)
class RegexScorer:
    """The answer matches ``pattern`` (``{gold}`` in the pattern stands for the escaped gold).

    Example:
        >>> RegexScorer(r"^\\s*{gold}\\b")(" 42 apples", "42")
        True
    """

    pattern: str

    def __call__(self, answer: str, gold: str, choices: Sequence[str] | None = None) -> bool:
        pattern = self.pattern.replace("{gold}", re.escape(gold))
        return re.search(pattern, answer) is not None


@dataclass(frozen=True)
class ContainsScorer:
    """The normalised gold occurs in the normalised answer.

    Example:
        >>> ContainsScorer()("It is Paris, of course", "paris")
        True
    """

    def __call__(self, answer: str, gold: str, choices: Sequence[str] | None = None) -> bool:
        want = normalise(gold)
        return bool(want) and want in normalise(answer)


def scorer_from_name(name: str) -> Scorer:
    """A built-in scorer from its CLI name.

    Example:
        >>> scorer_from_name("numeric")("3.0", "3")
        True
    """
    if name.startswith("regex:"):
        pattern = name[len("regex:") :]
        try:
            re.compile(pattern.replace("{gold}", "x"))
        except re.error as err:
            raise UserError(f"--scorer {name!r}: bad regular expression ({err})") from None
        return RegexScorer(pattern)
    table: dict[str, Scorer] = {
        "exact": ExactScorer(),
        "numeric": NumericScorer(),
        "option": OptionScorer(),
        "contains": ContainsScorer(),
    }
    if name not in table:
        raise UserError(f"unknown scorer {name!r}; choose one of {', '.join(SCORER_NAMES)}")
    return table[name]


def default_scorer(golds: Sequence[str], has_choices: bool = False) -> Scorer:
    """``option`` when records have choices, ``numeric`` when every gold is a number, else exact.

    Example:
        >>> type(default_scorer(["1", "2.5"])).__name__
        'NumericScorer'
    """
    if has_choices:
        return OptionScorer()
    if golds and all(_NUMBER.fullmatch(g.strip()) for g in golds):
        return NumericScorer()
    return ExactScorer()
