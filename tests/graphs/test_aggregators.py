import pytest

from concilium.graphs._aggregators import (
    answer_format,
    extract_boxed,
    extract_last_number,
    extract_option,
)
from concilium.graphs.kit import majority_vote, normalize_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{84}", "84"),
        ("\\boxed{1,234.50} then \\boxed{7}", "7"),
        ("nested \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("no box, but 12 then 84.0", "84"),  # the reference GSM fallback: last number
        ("nothing numeric", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_last_number_and_option() -> None:
    assert extract_last_number("from 3 apples to -2.50 dollars") == "-2.5"
    assert extract_option("(A) is wrong, I pick (c)") == "C"
    assert extract_option("no option") is None


def test_normalize_number() -> None:
    assert normalize_number(" 1,000 ") == "1000"
    assert normalize_number("$3.10") == "3.1"
    assert normalize_number("abc") is None


def test_regex_and_field_formats() -> None:
    assert answer_format({"regex": r"ANSWER:\s*(\w+)"}).extract("x ANSWER: yes. ANSWER: no") == "no"
    assert (
        answer_format({"field": "answer"}).extract('noise {"answer": 42, "confidence": 1}') == "42"
    )


def test_unknown_format_suggests_a_close_name() -> None:
    with pytest.raises(ValueError, match="did you mean 'boxed'"):
        answer_format("boxd")


def test_majority_vote_ties_go_to_the_first_seen() -> None:
    vote = majority_vote(["8", "7", "7", "8"])
    assert vote.winner == "8" and vote.counts == {"8": 2, "7": 2}


def test_majority_vote_ignores_abstentions() -> None:
    vote = majority_vote([None, "3", None])
    assert vote.winner == "3" and vote.abstained == 2 and vote.agreement == 1.0
    empty = majority_vote([None])
    assert empty.winner is None and empty.agreement == 0.0


@pytest.mark.parametrize(
    "echo",
    [
        "answer",
        "<answer>",
        "{answer}",
        "{{ answer }}",
        "\\boxed{answer}",
        "Your answer",
        "[final answer].",
    ],
)
def test_an_echo_of_the_placeholder_abstains_in_the_vote(echo):
    tally = majority_vote([echo, echo, echo, "Paris"])
    assert tally.winner == "Paris"
    assert tally.counts == {"Paris": 1}
    assert tally.abstained == 3


def test_an_echo_of_an_instruction_line_abstains_but_real_answers_count():
    instructions = "Answer with the capital city only.\nQ: France\nA:"
    tally = majority_vote(
        ["Answer with the capital city only.", "Paris", "Lyon", "Paris"], instructions
    )
    assert tally.as_dict() == {"winner": "Paris", "counts": {"Paris": 2, "Lyon": 1}, "abstained": 1,
                               "agreement": round(2 / 3, 4)}  # fmt: skip
    # short answers that happen to appear in the prompt ("A", "8") still vote
    assert majority_vote(["8", "8"], "3 + 5 = 8\nA:").winner == "8"


def test_only_echoes_leave_no_winner():
    assert majority_vote(["answer", "\\boxed{answer}", None]).as_dict()["winner"] is None
