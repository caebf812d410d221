"""What agents are told: prompt templates as files, rendered in a sandbox.

Example:
    >>> from concilium.prompts import render
    >>> "\\\\boxed" in render(
    ...     "debate/initial", question="2+2?", answer_format="in the form \\\\boxed{answer}"
    ... )
    True
"""

from ._library import BUILTIN_DIR, PromptLibrary, default_library, render

__all__ = ["PromptLibrary", "default_library", "render", "BUILTIN_DIR"]
