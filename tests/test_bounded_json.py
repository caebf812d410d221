"""JSON from outside is read within bounds: clear errors, never RecursionError."""

from __future__ import annotations

import json

import pytest

from concilium._json import MAX_DEPTH, JsonBoundsError, load_json


def test_well_formed_json_loads_unchanged() -> None:
    text = '{"x": [1, 2.5, {"y": null}], "big": 18446744073709551615}'
    assert load_json(text) == json.loads(text)


def test_nesting_5000_deep_is_a_bounds_error_not_a_recursion_error() -> None:
    with pytest.raises(JsonBoundsError, match="deeper than"):
        load_json("[" * 5000 + "]" * 5000)


def test_nesting_just_past_the_bound_names_the_path() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_json(ok) is not None
    deep = '{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    with pytest.raises(JsonBoundsError, match=r"at \$\.a"):
        load_json(deep)


@pytest.mark.parametrize("literal", ["9" * 5000, "1." + "5" * 400])
def test_a_number_thousands_of_digits_long_is_refused(literal: str) -> None:
    with pytest.raises(JsonBoundsError, match="past the limit"):
        load_json('{"n": ' + literal + "}")


def test_malformed_json_still_raises_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        load_json("{")
