"""Prompt templates as files, loaded by name and rendered in Jinja2's sandbox.

A name like ``"debate/round"`` is the file ``debate/round.j2``. A user's folders are
searched before the built-in ``templates/`` folder, so a file with the same name
overrides a built-in prompt. Rendering uses ``SandboxedEnvironment`` with
``StrictUndefined``: a template can read the variables it is given and nothing else,
and a missing variable is an error, not an empty string.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from concilium._errors import PromptError

BUILTIN_DIR = Path(__file__).parent / "templates"
SUFFIX = ".j2"


class PromptLibrary:
    """Named templates from the user's folders, then the built-in ones.

    Example:
        >>> lib = PromptLibrary()
        >>> "debate/round" in lib.names()
        True
        >>> lib.render("self_consistency/solve", question="1+1?", answer_format="as a number").splitlines()[-1]
        '1+1?'
    """

    def __init__(self, search_paths: Iterable[str | Path] = ()):
        self.paths = [Path(p) for p in search_paths] + [BUILTIN_DIR]
        self._env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(p) for p in self.paths]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )

    def names(self) -> list[str]:
        found: set[str] = set()
        for root in self.paths:
            if root.is_dir():
                found.update(
                    str(p.relative_to(root).with_suffix("")) for p in root.rglob(f"*{SUFFIX}")
                )
        return sorted(found)

    def _missing(self, name: str) -> PromptError:
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = ", ".join(str(p) for p in self.paths)
        return PromptError(
            f"no prompt template named {name!r} (looked for {name}{SUFFIX} in {where}).{hint}"
        )

    def render(self, name: str, **variables: Any) -> str:
        """Render template ``name`` with ``variables``; errors name the template."""
        try:
            template = self._env.get_template(name + SUFFIX)
        except jinja2.TemplateNotFound:
            raise self._missing(name) from None
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"prompt {name!r} line {exc.lineno}: {exc.message}") from None
        return self.render_template(template, name, variables)

    def render_string(self, source: str, **variables: Any) -> str:
        """Render an inline template (a system prompt written in a workflow file)."""
        try:
            template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"inline prompt line {exc.lineno}: {exc.message}") from None
        return self.render_template(template, "<inline>", variables)

    @staticmethod
    def render_template(template: jinja2.Template, name: str, variables: dict[str, Any]) -> str:
        try:
            return template.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            given = ", ".join(sorted(variables)) or "none"
            raise PromptError(
                f"prompt {name!r} uses a variable it was not given ({exc.message}); "
                f"variables given: {given}"
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise PromptError(f"prompt {name!r} tried something the sandbox forbids: {exc}") from None


default_library = PromptLibrary()


def render(name: str, **variables: Any) -> str:
    """Render a built-in (or default-library) template by name."""
    return default_library.render(name, **variables)
