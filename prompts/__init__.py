"""What agents are told: prompt templates as files, rendered in a sandbox.

Example:
    >>> from concilium.prompts import PromptLibrary
    >>> "\\\\boxed" in PromptLibrary().render(
    ...     "debate/initial", question="2+2?", answer_format="in the form \\\\boxed{answer}"
    ... )
    True
"""

from ._library import PromptLibrary

__all__ = ["PromptLibrary"]
