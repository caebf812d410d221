"""Rendering is bounded: a template cannot run long or grow large, and every
failure is a PromptError naming the template."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from concilium._errors import PromptError
from concilium.prompts import PromptLibrary

COSTLY = {
    "repeat": "{{ 'x' * 10**9 }}",
    "repeat_list": "{{ [1] * 10**9 }}",
    "power": "{{ 7 ** 10000000 }}",
    "power_tower": "{{ 9 ** 99 ** 99 ** 99 }}",  # Jinja's ** is left-associative
    "big_range": "{% for i in range(10**9) %}{% endfor %}",
    "nested_ranges": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "range_in_loop": "{% for i in range(10000) %}{{ range(10000)|sum }}{% endfor %}",
    "padding_filter": "{{ 'x'|center(10**9) }}",
    "padding_method": "{{ 'x'.ljust(10**9) }}",
    "percent_width": "{{ '%01000000000d' % 1 }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "doubling_concat": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling_plus": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "replace": "{{ ('x' * 200000)|replace('x', 'y' * 200000) }}",
    "join": "{{ range(10000)|join('y' * 100000) }}",
    "output": "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
}


@pytest.mark.parametrize("source", COSTLY.values(), ids=list(COSTLY))
def test_costly_templates_are_refused_within_bounds(source: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PromptError, match="too costly to render") as info:
        PromptLibrary().render_string(source)
    assert "'<inline>'" in str(info.value) and "make the template smaller" in str(info.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ 'a' + 1 }}", "TypeError"),
        ("{% include 'no/such.j2' %}", "'no/such.j2', which does not exist"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses without end"),
        ("{{ nope }}", "variables given: none"),
        ("{% for %}", "inline prompt line 1"),
        ("{{ lipsum(10**5) }}", "variables given"),
    ],
)
def test_rendering_failures_are_prompt_errors(source: str, said: str) -> None:
    with pytest.raises(PromptError, match=r"fix|remove|variables given") as info:
        PromptLibrary().render_string(source)
    assert said in str(info.value)


def test_a_template_file_including_itself_names_the_template(tmp_path: Path) -> None:
    (tmp_path / "loop.j2").write_text("{% include 'loop.j2' %}")
    with pytest.raises(PromptError, match="'loop' recurses without end"):
        PromptLibrary([tmp_path]).render("loop")


def test_ordinary_templates_render_as_before(tmp_path: Path) -> None:
    source = (
        "{% for x in items %}{{ loop.index }}. {{ x|upper }}{% if not loop.last %}, {% endif %}"
        "{% else %}none{% endfor %} | {{ '%03d' % 7 }} {{ '{:>4}'.format('ab') }} "
        "{{ items|join(', ') }} {{ 'ab' * 2 }} {{ 2 ** 10 }} {{ 'a' ~ 'b' }}"
    )
    lib = PromptLibrary()
    assert lib.render_string(source, items=["a", "b"]) == "1. A, 2. B | 007   ab a, b abab 1024 ab"
    assert lib.render_string(source, items=[]).startswith("none |")
    long_document = "word " * 50_000  # prompts with a long document still render
    assert len(lib.render_string("{{ doc|trim }}", doc=long_document)) == len(long_document) - 1
