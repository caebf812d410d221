import asyncio

import pytest

from concilium.tools import ToolError
from concilium.tools._arithmetic import NotArithmetic, evaluate, find_expression, format_number
from concilium.tools._builtin import CALCULATOR, calculator


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


TOWERS = [
    "((9**99)**99)**99",
    "(((9**99)**99)**99)**99",
    "((((9**99)**99)**99)**99)**99",
    "9**9**9**9",
    "((2**5000)*(2**5000))*(2**5000)",
    "(10**2000)**(10**2000)",
]


@pytest.mark.parametrize("tower", TOWERS)
def test_a_power_tower_is_refused_before_it_is_built(tower: str) -> None:
    with pytest.raises(
        NotArithmetic, match=r"would have more than 10,000 bits; the calculator's limit"
    ):
        evaluate(tower)


async def test_towers_through_the_tool_return_errors_while_the_event_loop_keeps_running() -> None:
    ticks = 0
    finished = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not finished.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def ask_all() -> list[str]:
        errors: list[str] = []
        for tower in TOWERS:
            with pytest.raises(ToolError) as caught:
                await CALCULATOR({"expression": tower})
            errors.append(str(caught.value))
            seen = ticks
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert ticks > seen  # the loop ran the ticker between two calculator calls
        finished.set()
        return errors

    _, errors = await asyncio.gather(ticker(), ask_all())
    assert all("limit is 10,000 bits" in e and "did not finish" not in e for e in errors)
    assert ticks >= len(TOWERS)


@pytest.mark.parametrize(
    "expression, message",
    [
        ("1 / 0", "division by zero in 1 / 0"),
        ("7 // (3 - 3)", r"division by zero in 7 // \(3 - 3\)"),
        ("5 % 0.0", "division by zero in 5 % 0.0"),
        ("0 ** -1", r"division by zero in 0 \*\* -1"),
        ("(-8) ** 0.5", r"\(-8\) \*\* 0.5 is a complex number; the calculator works with real numbers"),
        ("1e308 * 10", r"1e308 \* 10 is too large for a float \(over 1.8e308\)"),
        ("10.0 ** 400", r"10.0 \*\* 400 is too large for a float"),
        ("2 ** 3000 / 3", r"2 \*\* 3000 / 3 is too large for a float"),
        ("(10 ** 400) ** -1", "too large for a float"),
        ("1e999 + 1", "the number 1e999 is too large for a float"),
        ("2 ** 9999 * 4", r"2 \*\* 9999 \* 4 would have more than 10,000 bits"),
        ("2 ** 10000", r"2 \*\* 10000 has more than 10,000 bits"),
        ("1 +* 2", "does not parse"),
        ("1" * 501, "longer than 500 characters"),
    ],
)  # fmt: skip
def test_every_arithmetic_failure_is_a_clean_message(expression: str, message: str) -> None:
    with pytest.raises(NotArithmetic, match=message):
        evaluate(expression)
    with pytest.raises(ToolError, match=r"^calculator: "):
        calculator(expression)


def test_results_up_to_the_limit_are_exact_and_printable() -> None:
    # 2**9999 has 3,010 digits: under Python's 4,300-digit limit for int -> str
    assert len(calculator("2 ** 9999")) == 3010
    assert calculator("(2 ** 5000) * (2 ** 4999) - 2 ** 9999") == "0"
    assert calculator("(9 ** 99) ** 2 // 9 ** 197") == "9"
    assert calculator("2 ** -10000") == "0"
