"""concilium installs beside packages that need ``openai`` 3 (the OpenAI Agents SDK,
Inspect's OpenAI provider): the pinned litellm admits it, and it is what is installed.

Checked from the installed packages' own metadata (no network): ``pip install
concilium openai-agents`` resolving is this, plus openai-agents' ``openai>=3``.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version


def _requirement(package: str, name: str) -> Requirement:
    found = [Requirement(r) for r in metadata.requires(package) or []]
    (req,) = [r for r in found if r.name == name and r.marker is None]
    return req


def test_the_pinned_litellm_admits_openai_3() -> None:
    assert Version("3.63.0") in _requirement("litellm", "openai").specifier


def test_concilium_pins_litellm_exactly_and_never_a_compromised_release() -> None:
    pin = _requirement("concilium", "litellm")
    (spec,) = pin.specifier
    assert spec.operator == "==" and spec.version not in ("1.82.7", "1.82.8")
    assert metadata.version("litellm") == spec.version


def test_openai_3_is_what_runs_beside_it() -> None:
    assert Version(metadata.version("openai")).major == 3
