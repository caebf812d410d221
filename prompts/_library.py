"""Prompt templates as files, loaded by name and rendered in Jinja2's sandbox.

A name like ``"debate/round"`` is the file ``debate/round.j2``. A user's folders are
searched before the built-in ``templates/`` folder, so a file with the same name
overrides a built-in prompt. Rendering uses a bounded ``SandboxedEnvironment`` with
``StrictUndefined``: a template can read the variables it is given and nothing else,
a missing variable is an error, not an empty string, and a template cannot make the
process run long or grow large (see ``_bounds``). Every failure while loading or
rendering is a ``PromptError`` naming the template.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from concilium._errors import PromptError

from ._bounds import MAX_OUTPUT, BoundedSandbox, TemplateTooCostly, work_budget

BUILTIN_DIR = Path(__file__).parent / "templates"
SUFFIX = ".j2"


class PromptLibrary:
    """Named templates from the user's folders, then the built-in ones.

    Example:
        >>> lib = PromptLibrary()
        >>> "debate/round" in lib.names()
        True
        >>> lib.render(
        ...     "self_consistency/solve", question="1+1?", answer_format="as a number"
        ... ).splitlines()[-1]
        '1+1?'
    """

    def __init__(self, search_paths: Iterable[str | Path] = ()):
        self.paths = [Path(p) for p in search_paths] + [BUILTIN_DIR]
        self._env = BoundedSandbox(
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
            raise PromptError(
                f"prompt {name!r} line {exc.lineno}: {exc.message}; fix the template's syntax"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptError(f"prompt {name!r} cannot be read: {exc}; save it as UTF-8") from None
        return self.render_template(template, name, variables)

    def check(self, name: str) -> None:
        """Load template ``name`` and the templates it includes, imports or extends
        by a literal name, without rendering: a syntax error or a missing template is
        a ``PromptError`` (what ``concilium validate`` can know before a run).

        Example:
            >>> PromptLibrary().check("debate/round")
        """
        pending, seen = [name + SUFFIX], set[str]()
        while pending:
            file = pending.pop()
            if file in seen:
                continue
            seen.add(file)
            try:
                source = self._env.loader.get_source(self._env, file)[0] if self._env.loader else ""
                refs = jinja2.meta.find_referenced_templates(self._env.parse(source, file))
            except jinja2.TemplateNotFound:
                if file == name + SUFFIX:
                    raise self._missing(name) from None
                raise PromptError(
                    f"prompt {name!r} includes or imports {file!r}, which does not exist; "
                    "fix the name or add the template"
                ) from None
            except jinja2.TemplateSyntaxError as exc:
                raise PromptError(
                    f"prompt {name!r}: {exc.name or file} line {exc.lineno}: {exc.message}; "
                    "fix the template's syntax"
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise PromptError(
                    f"prompt {name!r} cannot be read: {exc}; save it as UTF-8"
                ) from None
            pending.extend(ref for ref in refs if ref is not None)

    def render_string(self, source: str, **variables: Any) -> str:
        """Render an inline template (a system prompt written in a workflow file).

        Example:
            >>> PromptLibrary().render_string("You are {{ agent }}.", agent="ann")
            'You are ann.'
        """
        try:
            template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(
                f"inline prompt line {exc.lineno}: {exc.message}; fix the template's syntax"
            ) from None
        return self.render_template(template, "<inline>", variables)

    @staticmethod
    def render_template(template: jinja2.Template, name: str, variables: dict[str, Any]) -> str:
        """Render within the bounds; every failure is a ``PromptError`` naming ``name``."""
        parts: list[str] = []
        size = 0
        try:
            with work_budget():
                for part in template.generate(**variables):
                    size += len(part)
                    if size > MAX_OUTPUT:
                        raise TemplateTooCostly(
                            f"it renders to more than {MAX_OUTPUT // 1024} KiB of text"
                        )
                    parts.append(part)
        except jinja2.UndefinedError as exc:
            given = ", ".join(sorted(variables)) or "none"
            raise PromptError(
                f"prompt {name!r} uses a variable it was not given ({exc.message}); "
                f"variables given: {given}"
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise PromptError(
                f"prompt {name!r} tried something the sandbox forbids: {exc}"
            ) from None
        except TemplateTooCostly as exc:
            raise PromptError(
                f"prompt {name!r} is too costly to render: {exc}; make the template smaller"
            ) from None
        except jinja2.TemplateNotFound as exc:
            raise PromptError(
                f"prompt {name!r} includes or imports {exc.name!r}, which does not exist; "
                "fix the name or add the template"
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(
                f"prompt {name!r}: the template {exc.name!r} it uses has a syntax error at line "
                f"{exc.lineno}: {exc.message}; fix it"
            ) from None
        except RecursionError:
            raise PromptError(
                f"prompt {name!r} recurses without end (a macro calling itself or a template "
                "including itself); remove the cycle"
            ) from None
        except Exception as exc:  # the template's own expression failed (1/0, 'a' + 1, ...)
            raise PromptError(
                f"prompt {name!r} failed while rendering: {type(exc).__name__}: {exc}; "
                "fix the expression in the template"
            ) from None
        return "".join(parts).strip()


default_library = PromptLibrary()


def render(name: str, **variables: Any) -> str:
    """Render a built-in (or default-library) template by name."""
    return default_library.render(name, **variables)
