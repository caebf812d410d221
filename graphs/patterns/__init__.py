"""Parallel-reasoning patterns, each a short module built from the public API of
``concilium.graphs`` and ``concilium.agents`` (write your own the same way).

Example:
    >>> from concilium.graphs.patterns import debate, self_consistency
    >>> callable(debate) and callable(self_consistency)
    True
"""

from ._common import Respondent
from ._debate import debate
from ._self_consistency import self_consistency

__all__ = ["Respondent", "debate", "self_consistency"]
