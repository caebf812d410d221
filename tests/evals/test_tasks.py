"""The shipped task generators: seeded, distinct, answers that follow from their parts."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from concilium.evals.tasks import describe_task, make_task, task_names

NAMES = ["capitals", "antonyms", "sums", "sequences", "arithmetic"]


def test_the_shipped_tasks() -> None:
    assert task_names() == NAMES
    for name in NAMES:
        assert describe_task(name)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_items_other_seed_other_items(name: str) -> None:
    assert make_task(name, 40, seed=3) == make_task(name, 40, seed=3)
    assert make_task(name, 40, seed=3) != make_task(name, 40, seed=4)


@pytest.mark.parametrize("name", NAMES)
def test_items_have_stable_ids_distinct_questions_and_string_answers(name: str) -> None:
    items = make_task(name, 50)
    assert [item["id"] for item in items] == [f"{name}-{i:04d}" for i in range(50)]
    assert len({item["question"] for item in items}) == 50
    for item in items:
        assert set(item) == {"id", "question", "answer", "metadata"}
        assert isinstance(item["answer"], str) and item["answer"]
        assert item["question"] == item["question"].strip() and "\n" not in item["question"]


def _recompute(name: str, question: str, meta: dict[str, Any]) -> str:
    """The answer again, from the metadata, and the question rebuilt from it."""
    if name == "capitals":
        assert question == f"What is the capital of {meta['country']}?"
        return meta["capital"]
    if name == "antonyms":
        assert question == f"What is the opposite of {meta['word']}?"
        return meta["opposite"]
    if name == "sums":
        a, b = meta["a"], meta["b"]
        assert 0 <= a <= 9 and 0 <= b <= 9 and question == f"What is {a} + {b}?"
        return str(a + b)
    if name == "sequences":
        shown = meta["shown"]
        steps = {y - x for x, y in itertools.pairwise(shown)}
        assert len(shown) == 4 and steps == {meta["step"]} and meta["step"] > 0
        assert question == "What comes next: " + ", ".join(map(str, shown)) + ","
        return str(shown[-1] + meta["step"])
    numbers = [meta[key] for key in "abcdef"]
    assert all(0 <= x <= 30 for x in numbers)
    assert question == "What is the result of {}+{}*{}+{}-{}*{}?".format(*numbers)
    expression = re.fullmatch(r"What is the result of ([0-9+*\-]+)\?", question)
    assert expression is not None
    return str(eval(expression.group(1)))  # digits and + * - only, checked above


@pytest.mark.parametrize("name", NAMES)
def test_answers_follow_from_the_metadata(name: str) -> None:
    for item in make_task(name, 50, seed=11):
        assert item["answer"] == _recompute(name, item["question"], item["metadata"])


def test_word_tasks_have_no_repeated_word_and_no_ambiguous_pair() -> None:
    capitals = make_task("capitals", 70)
    assert len({item["metadata"]["country"] for item in capitals}) == 70
    antonyms = make_task("antonyms", 64)
    words = [item["metadata"]["word"] for item in antonyms]
    assert len(set(words)) == 64
    # no word is asked in one item and the answer of another (which would pose it both ways)
    assert not set(words) & {item["answer"] for item in antonyms}


def test_asking_too_much_or_a_wrong_name_says_the_fix() -> None:
    with pytest.raises(ValueError, match=r"100 distinct items.*n <= 100"):
        make_task("sums", 101)
    with pytest.raises(ValueError, match="Did you mean 'capitals'"):
        make_task("capital", 5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        make_task("sums", -1)
    assert make_task("sums", 0) == []
    assert len(make_task("arithmetic", 500)) == 500  # unbounded: no limit below it
