# pyright: strict
"""Small tasks with answers known by construction, generated from a seed.

Nothing is fetched: the word lists are written here and the numbers drawn from
``random.Random(seed)``. The questions are short and regular ("What is the capital
of France?") so a few-shot completion prompt for a small base model can carry them.
Each item is ``{"id", "question", "answer", "metadata"}``; the metadata holds the
parts the question was built from, so the answer can be checked again from them.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["describe_task", "make_task", "task_names"]


# fmt: off
CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("the United Kingdom", "London"), ("Ireland", "Dublin"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Austria", "Vienna"),
    ("Switzerland", "Bern"), ("Denmark", "Copenhagen"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Iceland", "Reykjavik"),
    ("Poland", "Warsaw"), ("the Czech Republic", "Prague"), ("Hungary", "Budapest"),
    ("Greece", "Athens"), ("Russia", "Moscow"), ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Turkey", "Ankara"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"),
    ("Ethiopia", "Addis Ababa"), ("Morocco", "Rabat"), ("Ghana", "Accra"),
    ("Senegal", "Dakar"), ("Tunisia", "Tunis"), ("Algeria", "Algiers"), ("Sudan", "Khartoum"),
    ("Uganda", "Kampala"), ("Zimbabwe", "Harare"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("South Korea", "Seoul"), ("India", "New Delhi"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"), ("the Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"),
    ("Cambodia", "Phnom Penh"), ("Nepal", "Kathmandu"), ("Afghanistan", "Kabul"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Syria", "Damascus"),
    ("Lebanon", "Beirut"), ("Qatar", "Doha"), ("Australia", "Canberra"),
    ("New Zealand", "Wellington"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
    ("Cuba", "Havana"), ("Jamaica", "Kingston"), ("Argentina", "Buenos Aires"),
    ("Chile", "Santiago"), ("Peru", "Lima"), ("Venezuela", "Caracas"), ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"),
)

ANTONYMS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("day", "night"), ("good", "bad"), ("high", "low"), ("left", "right"), ("long", "short"),
    ("rich", "poor"), ("early", "late"), ("wet", "dry"), ("full", "empty"), ("strong", "weak"),
    ("thick", "thin"), ("heavy", "light"), ("black", "white"), ("win", "lose"),
    ("love", "hate"), ("push", "pull"), ("buy", "sell"), ("give", "take"), ("in", "out"),
    ("on", "off"), ("yes", "no"), ("first", "last"), ("top", "bottom"),
    ("inside", "outside"), ("north", "south"), ("east", "west"), ("true", "false"),
    ("alive", "dead"), ("clean", "dirty"), ("loud", "quiet"), ("cheap", "expensive"),
    ("wide", "narrow"), ("deep", "shallow"), ("friend", "enemy"), ("question", "answer"),
    ("before", "after"), ("above", "below"), ("near", "far"), ("always", "never"),
    ("more", "less"), ("many", "few"), ("enter", "exit"), ("asleep", "awake"),
    ("remember", "forget"), ("boy", "girl"), ("man", "woman"), ("king", "queen"),
    ("safe", "dangerous"), ("possible", "impossible"), ("smooth", "rough"),
    ("future", "past"), ("success", "failure"), ("increase", "decrease"),
    ("maximum", "minimum"), ("positive", "negative"), ("odd", "even"),
    ("sunrise", "sunset"), ("floor", "ceiling"), ("hello", "goodbye"),
)
# fmt: on


@dataclass(frozen=True)
class _Task:
    description: str
    size: int | None  # distinct items the task can make; None: more than anyone asks for
    draw: Callable[[int, random.Random], list[tuple[str, str, dict[str, Any]]]]


def _capitals(n: int, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"What is the capital of {country}?", capital, {"country": country, "capital": capital})
        for country, capital in rng.sample(CAPITALS, n)
    ]


def _antonyms(n: int, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"What is the opposite of {word}?", opposite, {"word": word, "opposite": opposite})
        for word, opposite in rng.sample(ANTONYMS, n)
    ]


_DIGIT_PAIRS = [(a, b) for a in range(10) for b in range(10)]


def _sums(n: int, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"What is {a} + {b}?", str(a + b), {"a": a, "b": b})
        for a, b in rng.sample(_DIGIT_PAIRS, n)
    ]


SEQUENCE_STARTS = range(1, 21)
SEQUENCE_STEPS = range(1, 11)
_SEQUENCES = [(start, step) for start in SEQUENCE_STARTS for step in SEQUENCE_STEPS]


def _sequences(n: int, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    items: list[tuple[str, str, dict[str, Any]]] = []
    for start, step in rng.sample(_SEQUENCES, n):
        shown = [start + i * step for i in range(4)]
        question = "What comes next: " + ", ".join(map(str, shown)) + ","
        items.append(
            (question, str(start + 4 * step), {"start": start, "step": step, "shown": shown})
        )
    return items


ARITHMETIC_MAX = 30


def _arithmetic(n: int, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    seen: set[tuple[int, ...]] = set()
    items: list[tuple[str, str, dict[str, Any]]] = []
    while len(items) < n:
        numbers = tuple(rng.randint(0, ARITHMETIC_MAX) for _ in range(6))
        if numbers in seen:
            continue
        seen.add(numbers)
        a, b, c, d, e, f = numbers
        question = f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?"
        metadata: dict[str, Any] = dict(zip("abcdef", numbers, strict=True))
        items.append((question, str(a + b * c + d - e * f), metadata))
    return items


_TASKS: dict[str, _Task] = {
    "capitals": _Task(
        "capital of a well-known country (one word or two)", len(CAPITALS), _capitals
    ),
    "antonyms": _Task("opposite of a common word", len(ANTONYMS), _antonyms),
    "sums": _Task("sum of two one-digit numbers", len(_DIGIT_PAIRS), _sums),
    "sequences": _Task(
        "fifth term of an arithmetic sequence from its first four", len(_SEQUENCES), _sequences
    ),
    "arithmetic": _Task(
        f"Du et al.'s debate arithmetic, a+b*c+d-e*f with integers 0-{ARITHMETIC_MAX}",
        None,
        _arithmetic,
    ),
}


def task_names() -> list[str]:
    """The names of the shipped tasks.

    Example:
        >>> task_names()
        ['capitals', 'antonyms', 'sums', 'sequences', 'arithmetic']
    """
    return list(_TASKS)


def _task(name: str) -> _Task:
    try:
        return _TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"no task named {name!r}; the tasks are {', '.join(_TASKS)}.{hint}"
        ) from None


def describe_task(name: str) -> str:
    """One line saying what a task asks and how many distinct items it can make.

    Example:
        >>> describe_task("sums")
        'sum of two one-digit numbers (100 distinct items)'
    """
    task = _task(name)
    size = "unbounded" if task.size is None else f"{task.size} distinct items"
    return f"{task.description} ({size})"


def make_task(name: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Generate ``n`` distinct items of a task; the same seed gives the same items.

    Args:
        name: One of :func:`task_names`.
        n: How many items, at most the task's number of distinct items.
        seed: Seed of the draw.

    Returns:
        Items ``{"id": f"{name}-{i:04d}", "question", "answer", "metadata"}``.

    Example:
        >>> item = make_task("sums", 3, seed=1)[0]
        >>> item["id"], item["question"], item["answer"], item["metadata"]
        ('sums-0000', 'What is 1 + 7?', '8', {'a': 1, 'b': 7})
    """
    task = _task(name)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    if task.size is not None and n > task.size:
        raise ValueError(
            f"task {name!r} has {task.size} distinct items, so n={n} is too many; "
            f"ask for n <= {task.size}"
        )
    drawn = task.draw(n, random.Random(seed))
    return [
        {"id": f"{name}-{i:04d}", "question": question, "answer": answer, "metadata": metadata}
        for i, (question, answer, metadata) in enumerate(drawn)
    ]
