"""Early-stopping rules replayed on planted sample orders, every figure computed by hand
(the rules: Adaptive-Consistency's beta, majority and entropy criteria, ESC's window)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from concilium.evals._cost import SamplingCost
from concilium.evals._replay import (
    STOP_RULES,
    ReplayItem,
    StopPoint,
    beta_probability,
    beta_stop,
    entropy_stop,
    fixed_stop,
    majority_stop,
    replay_rules,
    window_stop,
)


def _stop(
    rule: Callable[..., StopPoint], stream: str | list[str | None], *args: float
) -> tuple[int, str | None]:
    point = rule(list(stream), *args)
    return point.samples, point.answer


# ------------------------------------------------------------------------ beta


@pytest.mark.parametrize(
    ("b", "min_a", "p_at_stop"),
    [(0, 4, 0.96875), (1, 6, 0.9648), (2, 8, 0.9673), (3, 9, 0.9539), (4, 11, 0.9616),
     (5, 12, 0.9519)],
)  # fmt: skip
def test_beta_needs_the_reference_majority_for_each_runner_up(
    b: int, min_a: int, p_at_stop: float
) -> None:
    """P(Bin(a+b+1, 1/2) <= a) reaches 0.95 first at these a (the authors' table)."""
    assert min(a for a in range(60) if beta_probability(a, b) >= 0.95) == min_a
    assert beta_probability(min_a, b) == pytest.approx(p_at_stop, abs=1e-4)
    # by hand for b = 0: a = 4 gives 1 - 1/32; a = 3 gives 1 - 1/16 < 0.95
    assert beta_probability(4, 0) == 1 - 1 / 32 and beta_probability(3, 0) == 1 - 1 / 16


@pytest.mark.parametrize(
    ("stream", "stop", "answer"),
    [("AAAA", 4, "A"), ("ABAAAAA", 7, "A"), ("ABCAAAAA", 8, "A"), ("ABABAAAAAA", 10, "A")],
)
def test_beta_stops_where_the_reference_does(stream: str, stop: int, answer: str) -> None:
    assert _stop(beta_stop, stream) == (stop, answer)
    assert beta_stop(list(stream)).stopped


def test_beta_counts_no_vote_for_unparseable_samples_and_may_never_stop() -> None:
    # two unparseable samples, then A A A A: a = 4 at the 6th sample
    assert _stop(beta_stop, [None, None, "A", "A", "A", "A"]) == (6, "A")
    point = beta_stop(list("ABAB"))  # P(2, 2) = 1/2: the budget runs out
    assert (point.samples, point.stopped, point.tied, point.answer) == (4, False, ("A", "B"), "A")
    assert beta_stop([None, None]).tied == () and beta_stop([None]).answer is None
    assert _stop(beta_stop, "AAA", 0.9) == (3, "A")  # P(3, 0) = 15/16 >= 0.9


# -------------------------------------------------------------- majority, entropy


def test_majority_rule_by_hand() -> None:
    assert _stop(majority_stop, "ABAAA") == (5, "A")  # 4/5 = 0.8
    assert _stop(majority_stop, "AA") == (2, "A")  # 2/2, and more than one sample
    assert majority_stop(["A"]).stopped is False  # one sample never stops
    # the share counts the unparseable sample: 1/2, 2/3, 3/4, then 4/5
    assert _stop(majority_stop, [None, "A", "A", "A", "A"]) == (5, "A")


def test_entropy_rule_by_hand_with_the_reference_phantom_answer() -> None:
    # A B A A A: H(4/5, 1/5) = 0.7219 <= 0.75 at 5; at 4, H(3/4, 1/4) = 0.811
    assert _stop(entropy_stop, "ABAAA") == (5, "A")
    # all agreeing: the reference scores [c, 1], so H(4/5, 1/5) first passes at 4
    assert _stop(entropy_stop, "AAAAAA") == (4, "A")
    point = entropy_stop(list("ABAB"))
    assert (point.samples, point.stopped, point.tied) == (4, False, ("A", "B"))
    assert entropy_stop(["A"]).stopped is False


# --------------------------------------------------------------------------- ESC


def test_esc_stops_after_a_window_that_agrees_with_its_answer() -> None:
    assert _stop(window_stop, "AAAAABBBBB", 5) == (5, "A")
    # windows 1 and 2 disagree inside; window 3 agrees on A although B leads 8 to 7
    assert _stop(window_stop, "BBBBABBBBAAAAAA", 5) == (15, "A")
    # a window of unparseable samples does not agree; the next one does
    assert _stop(window_stop, [None] * 3 + ["B"] * 3, 3) == (6, "B")
    # no full window agrees, the last short one is not tested: all 9, majority of all
    point = window_stop(list("AAAABAAAA"), 5)
    assert (point.samples, point.answer, point.stopped) == (9, "A", False)
    with pytest.raises(ValueError, match="window"):
        window_stop(["A"], 0)


def test_the_fixed_budget_and_bad_input() -> None:
    point = fixed_stop(["B", "A", None])
    assert (point.samples, point.tied, point.answer, point.stopped) == (3, ("B", "A"), "B", False)
    with pytest.raises(ValueError, match="at least one sample"):
        beta_stop([])
    with pytest.raises(ValueError, match="threshold"):
        majority_stop(["A"], 1.5)
    assert [r.label for r in STOP_RULES] == [
        "beta(threshold=0.95)", "majority(threshold=0.8)", "entropy(threshold=0.75)",
        "esc(window=5)",
    ]  # fmt: skip


# ------------------------------------------------------------ over an eval's items


def _right(answer: str) -> bool:
    return answer == "A"


@pytest.mark.parametrize("requests", [1, 5])
def test_samples_accuracy_and_tokens_of_each_rule_by_hand(requests: int) -> None:
    """Two items of 5 samples, gold A, 100 prompt tokens per request. Item 1's samples
    have their own token counts (10, 20, 30, 40, 50; 150 in all); item 2's are not
    known (150 in all too), so they count as k/N of 150 = 30 each."""
    cost = SamplingCost(samples=5, requests=requests, prompt_tokens=100 * requests,
                        completion_tokens=150)  # fmt: skip
    items = [
        ReplayItem(list("AAAAB"), _right, [10, 20, 30, 40, 50], cost),
        ReplayItem(list("ABABB"), _right, [None] * 5, cost),
    ]
    outcomes = {o.rule.name: o for o in replay_rules(items)}
    assert list(outcomes) == ["beta", "majority", "entropy", "esc", "fixed"]

    def prompts(drawn: int) -> int:  # requests paid for `drawn` samples, 100 each
        return 100 * (1 if requests == 1 else drawn)

    # item 1 stops at: beta 4 (a=4, b=0), majority 2 (A A), entropy 4, esc/fixed 5;
    # item 2 never stops (A B A B B: beta P(3,2) = 42/64, majority 3/5, entropy .971)
    # and answers B (wrong); item 1 always answers A (right)
    stops = {"beta": 4, "majority": 2, "entropy": 4, "esc": 5, "fixed": 5}
    for name, drawn in stops.items():
        o = outcomes[name]
        assert o.samples == (drawn + 5) / 2, name
        assert o.accuracy == 0.5 and o.low <= 0.5 <= o.high
        assert o.stopped == (0.5 if drawn < 5 else 0.0)
        exact_1 = prompts(drawn) + sum([10, 20, 30, 40, 50][:drawn])
        expected_2 = prompts(5) + 5 * 30
        assert o.tokens == pytest.approx((exact_1 + expected_2) / 2), name
        calls_1 = 1 if requests == 1 else drawn
        assert o.calls == (calls_1 + (1 if requests == 1 else 5)) / 2
        assert o.tokens_basis == "mixed"
    # beta, one request: item 1 is 100 + 100 = 200 tokens, item 2 is 100 + 150 = 250
    if requests == 1:
        assert outcomes["beta"].tokens == 225.0 and outcomes["majority"].tokens == 190.0


def test_all_known_all_unknown_and_no_cost() -> None:
    cost = SamplingCost(samples=4, requests=1, prompt_tokens=100, completion_tokens=80)
    known = replay_rules([ReplayItem(list("AAAA"), _right, [5, 5, 5, 5], cost)])
    unknown = replay_rules([ReplayItem(list("AAAA"), _right, [None] * 4, cost)])
    # majority stops at 2: exact 100 + 5 + 5; expected 100 + 2 * 80 / 4
    assert (known[1].tokens, known[1].tokens_basis) == (110.0, "exact")
    assert (unknown[1].tokens, unknown[1].tokens_basis) == (140.0, "expected")
    # a rule that fires on the last sample saved nothing: it did not stop early
    esc = {o.rule.name: o for o in replay_rules([ReplayItem(list("AAAAA"), _right, [1] * 5, None)])}  # fmt: skip
    assert (esc["esc"].samples, esc["esc"].stopped, esc["beta"].stopped) == (5, 0.0, 1.0)
    # a tied end (A B): the expected value of a random tie break, 1/2
    tied = replay_rules([ReplayItem(list("AB"), _right, [1, 1], None)])
    assert all(o.accuracy == 0.5 for o in tied)
    assert all(o.tokens is None and o.calls is None and o.tokens_basis is None for o in tied)
