"""Small tasks with answers known by construction, generated from a seed (``concilium
tasks list|make``): capitals, antonyms, sums, sequences, arithmetic.

Example:
    >>> from concilium.evals.tasks import make_task, task_names
    >>> "capitals" in task_names(), make_task("sums", 1, seed=3)[0]["id"]
    (True, 'sums-0000')
"""

from ._tasks import describe_task, make_task, task_names

__all__ = ["task_names", "describe_task", "make_task"]
