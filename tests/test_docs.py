"""The product's documentation stands alone: no file points at notes users never get,
every ``docs/...md#anchor`` link resolves to a heading, and docs/methods.md has a
section for every registered pattern kind whose defaults table matches the code."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
METHODS = DOCS / "methods.md"

# Files that exist only beside the project, never in what users get.
PRIVATE = ("METHODS.md", "METHODS-2.md", "ENGINE.md", "shared/reference", "../shared")
SCANNED_SUFFIXES = (".py", ".md", ".toml", ".yaml", ".yml", ".j2", ".html", ".js")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_NOT_ANCHOR = re.compile(r"[^\w\- ]")
# docs/<page>.md, optionally #anchor, as the README and docstrings write it
_DOCS_REF = re.compile(r"(?<![\w/.-])docs/([\w./-]+?\.md)(?:#([\w-]+))?")
# a Markdown link inside a docs page: (page.md#anchor), (#anchor), (../docs/x.md)
_MD_LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)")


def tracked_files() -> list[Path]:
    """The files git tracks (present in the work tree), or every file if there is no git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def shipped_text_files() -> Iterator[Path]:
    """Tracked text files (code, docs, workflows, templates) and Makefiles outside tests/."""
    for path in tracked_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "tests":
            continue
        if path.suffix in SCANNED_SUFFIXES or path.name == "Makefile":
            yield path


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, link text kept, punctuation
    other than hyphens and underscores dropped, spaces to hyphens.

    Example:
        >>> anchor("Self-consistency"), anchor("`kind:` names (and [links](x.md))")
        ('self-consistency', 'kind-names-and-links')
    """
    text = _INLINE_LINK.sub(r"\1", heading.strip()).lower()
    return _NOT_ANCHOR.sub("", text).replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, int, str]]:
    """(line index, level, anchor) of every heading outside code fences, repeated
    anchors numbered as GitHub does (``name``, ``name-1``, ...)."""
    found: list[tuple[int, int, str]] = []
    seen: dict[str, int] = {}
    fenced = False
    for i, line in enumerate(markdown.splitlines()):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            base = anchor(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.append((i, len(match.group(1)), f"{base}-{count}" if count else base))
    return found


def anchors(page: Path) -> set[str]:
    return {a for _, _, a in headings(page.read_text())}


def test_nothing_points_at_files_users_do_not_get() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in shipped_text_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(private in line for private in PRIVATE)
    ]
    assert offenders == [], (
        "these lines point at notes that are not part of the product; link the matching "
        "docs/ page instead (docs/methods.md#<method>, docs/engine.md):\n" + "\n".join(offenders)
    )


def docs_references() -> Iterator[tuple[str, Path, str | None]]:
    """(where, target, anchor) of every ``docs/...md`` reference in the code and the
    README, and of every relative link in the docs pages (to a page, an anchor, a
    file or a folder of the repository)."""
    for path in shipped_text_files():
        rel = path.relative_to(ROOT)
        text = path.read_text(errors="replace")
        in_docs = rel.parts[0] == "docs"
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{rel}:{number}"
            if not in_docs:
                for match in _DOCS_REF.finditer(line):
                    yield where, DOCS / match.group(1), match.group(2)
                continue
            for match in _MD_LINK.finditer(line):
                target, fragment = match.group(1), match.group(2)
                if target.startswith(("http:", "https:", "mailto:")):
                    continue
                yield where, (path.parent / target).resolve() if target else path, fragment


def test_every_docs_link_resolves() -> None:
    broken = []
    checked = 0
    for where, page, fragment in docs_references():
        checked += 1
        if not page.exists():
            broken.append(f"{where}: no file {page.relative_to(ROOT)}")
        elif fragment is not None and page.suffix == ".md" and fragment not in anchors(page):
            broken.append(f"{where}: {page.relative_to(ROOT)} has no heading #{fragment}")
    assert checked > 0
    assert broken == [], "broken documentation links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert {"methods.md", "engine.md"} <= set(pages)
    assert [p for p in pages if f"](docs/{p}" not in readme] == []


# -- docs/methods.md against the pattern registry ----------------------------------


def registered() -> dict[str, type[BaseModel]]:
    """Each built-in kind and its spec: the ``PatternSpec`` subclasses the pattern
    modules define (each registers its kind; tests/graphs checks the registry)."""
    import concilium.graphs.patterns  # noqa: F401  (defines the built-in specs)
    from concilium.graphs.kit import PatternSpec

    specs: dict[str, type[BaseModel]] = {}
    todo: list[type[PatternSpec]] = list(PatternSpec.__subclasses__())
    while todo:
        spec = todo.pop()
        todo.extend(spec.__subclasses__())
        kind = get_args(spec.model_fields["kind"].annotation)
        if spec.__module__.startswith("concilium.graphs.patterns.") and len(kind) == 1:
            specs[kind[0]] = spec
    return specs


def sections(markdown: str) -> dict[str, str]:
    """Each heading's anchor -> its text up to the next heading of its level or above."""
    lines = markdown.splitlines()
    marks = headings(markdown)
    out: dict[str, str] = {}
    for n, (start, level, name) in enumerate(marks):
        end = next((i for i, lv, _ in marks[n + 1 :] if lv <= level), len(lines))
        out[name] = "\n".join(lines[start:end])
    return out


def shown(value: Any) -> str:
    """A default as the methods page writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.model_dump().items()) + "}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def default_of(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return shown(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return shown(field.default)


def fields_table(section: str) -> dict[str, str]:
    """field -> default from the section's ``| field | default | meaning |`` table."""
    lines = section.splitlines()
    try:
        start = next(
            i for i, ln in enumerate(lines) if re.match(r"\|\s*field\s*\|\s*default\s*\|", ln)
        )
    except StopIteration:
        return {}
    table: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        table[cells[0].strip("`")] = cells[1].strip("`")
    return table


@pytest.fixture(scope="module")
def methods_sections() -> dict[str, str]:
    return sections(METHODS.read_text())


def test_methods_page_has_a_section_for_every_kind(methods_sections: dict[str, str]) -> None:
    missing = [
        f"{kind}: no heading whose anchor is #{kind.replace('_', '-')}"
        for kind in registered()
        if kind.replace("_", "-") not in methods_sections
    ]
    unnamed = [
        f"#{kind.replace('_', '-')} does not say `kind: {kind}`"
        for kind in registered()
        if kind.replace("_", "-") in methods_sections
        and f"`kind: {kind}`" not in methods_sections[kind.replace("_", "-")]
    ]
    assert missing + unnamed == []


def test_methods_page_defaults_are_the_codes(methods_sections: dict[str, str]) -> None:
    wrong = []
    for kind, spec in registered().items():
        section = methods_sections.get(kind.replace("_", "-"), "")
        written = fields_table(section)
        actual = {
            name: default_of(field)
            for name, field in spec.model_fields.items()
            if name not in ("kind", "name")
        }
        if written != actual:
            wrong.append(f"{kind}: the page says {written}, the code has {actual}")
    assert wrong == [], "docs/methods.md defaults differ from the specs:\n" + "\n".join(wrong)
