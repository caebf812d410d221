import pytest

from concilium.tools import NotArithmetic, evaluate, find_expression, format_number


@pytest.mark.parametrize(
    "text, value", [("12 * 7", 84), ("(3 + 4) / 2", 3.5), ("-2 ** 2", -4), ("7 // 2 % 3", 0)]
)
def test_evaluate(text: str, value: float) -> None:
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "hostile",
    ["__import__('os').system('true')", "a + 1", "(1).__class__", "9 ** 9 ** 9", "1 / 0", "[1, 2]"],
)
def test_hostile_or_invalid_input_is_refused(hostile: str) -> None:
    with pytest.raises(NotArithmetic):
        evaluate(hostile)


def test_find_expression_and_format() -> None:
    assert find_expression("What is 12 * 7?") == "12 * 7"
    assert find_expression("In 2024, 3 x 5 cats") == "3*5"
    assert find_expression("no math here 42") is None
    assert format_number(0.1 + 0.2) == "0.3" and format_number(84.0) == "84"
