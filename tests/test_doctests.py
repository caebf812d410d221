"""Every docstring example in the package runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import concilium

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(concilium.__path__, "concilium.")
    if not info.name.endswith(("__main__", "_gguf_to_hf"))  # the converter runs in the engine's env
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
