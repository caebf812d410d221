"""Pure aggregation: answer extraction and voting.

Extractors turn a reply into a canonical answer string (or ``None``). Each comes
with the answer-format sentence a prompt should use, so what the prompt asks for is
what the extractor parses. ``majority_vote`` breaks ties by first occurrence, as the
reference debate code does (``docs/methods.md#debate``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from concilium._json import JsonBoundsError, check_depth

Extractor = Callable[[str], "str | None"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_OPTION = re.compile(r"\(([A-Ea-e])\)")


def normalize_number(text: str) -> str | None:
    """``" 1,234.50 "`` -> ``"1234.5"``; ``"84.0"`` -> ``"84"``; non-numbers -> None."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(value.to_integral_value())
    return format(value.normalize(), "f")


def _canonical(text: str) -> str:
    return normalize_number(text) or " ".join(text.split())


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces matched."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in the text, normalized."""
    matches = _NUMBER.findall(text)
    return normalize_number(matches[-1]) if matches else None


def extract_boxed(text: str) -> str | None:
    """The last ``\\boxed{}`` (numbers normalized); without one, the last number
    (the fallback of the reference GSM parser)."""
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return _canonical(boxed)
    return extract_last_number(text)


def extract_option(text: str) -> str | None:
    """The last ``(X)`` option letter, A-E, upper-cased."""
    matches = _OPTION.findall(text)
    return matches[-1].upper() if matches else None


def extract_text(text: str) -> str | None:
    """The whole reply, whitespace folded (for exact-match voting)."""
    folded = " ".join(text.split())
    return folded or None


def regex_extractor(pattern: str) -> Extractor:
    """The last match of ``pattern`` (its first group if it has one)."""
    compiled = re.compile(pattern)

    def extract(text: str) -> str | None:
        matches = list(compiled.finditer(text))
        if not matches:
            return None
        m = matches[-1]
        return _canonical(m.group(1) if compiled.groups else m.group(0))

    return extract


def field_extractor(name: str) -> Extractor:
    """Field ``name`` of the first JSON object in the reply."""

    def extract(text: str) -> str | None:
        decoder = json.JSONDecoder()
        start = text.find("{")
        while start != -1:
            try:
                obj, _ = decoder.raw_decode(text, start)
                check_depth(obj)
            except (RecursionError, JsonBoundsError):  # malformed; the rest is inside it
                return None
            except ValueError:
                start = text.find("{", start + 1)
                continue
            if isinstance(obj, dict) and name in obj:
                return _canonical(str(obj[name]))
            start = text.find("{", start + 1)
        return None

    return extract


@dataclass(frozen=True)
class AnswerFormat:
    """An extractor and the sentence that asks a model for that format."""

    name: str
    extract: Extractor
    instruction: str


EXTRACTORS: dict[str, AnswerFormat] = {
    "boxed": AnswerFormat("boxed", extract_boxed, "as a single value in the form \\boxed{answer}"),
    "last_number": AnswerFormat("last_number", extract_last_number, "as a single number"),
    "option": AnswerFormat("option", extract_option, "as one option letter in the form (X)"),
    "text": AnswerFormat("text", extract_text, "as a short phrase"),
}


def answer_format(spec: str | Mapping[str, str]) -> AnswerFormat:
    """An ``AnswerFormat`` from a name (``"boxed"``), ``{"regex": ...}`` or ``{"field": ...}``.

    Example:
        >>> answer_format("boxed").extract("so \\\\boxed{84.0}")
        '84'
        >>> answer_format({"regex": r"ANSWER: (\\w+)"}).extract("ANSWER: yes")
        'yes'
    """
    if isinstance(spec, str):
        try:
            return EXTRACTORS[spec]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(spec, list(EXTRACTORS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown answer format {spec!r}; {hint}choose one of {sorted(EXTRACTORS)} "
                "or {regex: PATTERN} or {field: NAME}"
            ) from None
    if "regex" in spec:
        try:
            extract = regex_extractor(spec["regex"])
        except re.error as exc:
            raise ValueError(f"answer regex {spec['regex']!r} is invalid: {exc}") from None
        return AnswerFormat("regex", extract, spec.get("instruction", "at the end"))
    if "field" in spec:
        name = spec["field"]
        return AnswerFormat("field", field_extractor(name), f"in the JSON field {name!r}")
    raise ValueError(f"answer format {dict(spec)!r} needs a name, 'regex' or 'field'")


# -------------------------------------------------------------------------- echoes

# The words prompts use as the answer's placeholder ("\\boxed{answer}", "<answer>"):
# a model that returns one of them (a base model echoing its instructions) said nothing.
_PLACEHOLDERS = frozenset(
    {"answer", "your answer", "the answer", "final answer", "your final answer",
     "answer here", "your answer here", "short answer"}
)  # fmt: skip
_WRAPPERS = re.compile(r"^(?:\\boxed\{(.*)\}|<(.*)>|\{\{?(.*?)\}?\}|\[(.*)\]|\((.*)\))$")


def _folded(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split()).strip(" .:!\"'`")


def is_echo(answer: str, instructions: str = "") -> bool:
    """Whether ``answer`` only echoes a prompt's placeholder (``answer``, ``<answer>``,
    ``{answer}``, ``\\boxed{answer}``, ``your answer``) or a verbatim line of
    ``instructions``: such a reply is an abstention, never a vote.

    Example:
        >>> is_echo("\\\\boxed{answer}"), is_echo("<Your answer>"), is_echo("Paris")
        (True, True, False)
        >>> is_echo("Answer with one word.", "Q: France\\nAnswer with one word.")
        True
    """
    text = _folded(answer)
    for _ in range(3):  # unwrap nested brackets: "{<answer>}"
        m = _WRAPPERS.match(text)
        if m is None:
            break
        text = _folded(next(g for g in m.groups() if g is not None))
    if not text or text in _PLACEHOLDERS:
        return True
    lines = {_folded(line) for line in instructions.splitlines()}
    return len(text) > 3 and text in lines


# -------------------------------------------------------------------------- votes


@dataclass(frozen=True)
class Vote:
    """A tally. ``counts`` keeps first-occurrence order; ``winner`` is ``None`` when
    no answer could be extracted at all."""

    winner: str | None
    counts: dict[str, int]
    abstained: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def agreement(self) -> float:
        """The winner's share of the valid answers (0 when there are none)."""
        return self.counts[self.winner] / self.total if self.winner is not None else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "counts": dict(self.counts),
            "abstained": self.abstained,
            "agreement": round(self.agreement, 4),
        }


def majority_vote(answers: Sequence[str | None], instructions: str = "") -> Vote:
    """Most frequent answer; ties go to the one seen first; ``None`` and echoes of
    the prompt (see ``is_echo``; ``instructions`` is the prompt's text) abstain.

    Example:
        >>> majority_vote(["7", "8", "8", "7", None]).as_dict()
        {'winner': '7', 'counts': {'7': 2, '8': 2}, 'abstained': 1, 'agreement': 0.5}
    """
    counts: dict[str, int] = {}
    abstained = 0
    for answer in answers:
        if answer is None or is_echo(answer, instructions):
            abstained += 1
        else:
            counts[answer] = counts.get(answer, 0) + 1
    winner = None
    best = 0
    for answer, count in counts.items():  # insertion order: first seen wins ties
        if count > best:
            winner, best = answer, count
    return Vote(winner, counts, abstained)
