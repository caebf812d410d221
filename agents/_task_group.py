"""``task_group``: the one way concilium runs calls side by side.

An ``asyncio.TaskGroup`` whose first failure cancels the siblings, waits for them to
finish, and is then raised as itself instead of wrapped in an ``ExceptionGroup``, so
``except ModelCallError`` works around a fan-out as around a single call. It lives
with the agents (``Agent.run`` splits ``n`` over it) and the graphs build their
``RunContext.gather``/``map``/``map_until``/``task_group`` on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` whose failure is raised as the first exception itself
    (later ones added to it as a note). A failure of the block counts as the first:
    the tasks' errors can only come after it, raised while they were being cancelled.

    Example:
        >>> async def fail():
        ...     raise ValueError("bad")
        >>> async def demo():
        ...     async with task_group() as group:
        ...         group.create_task(asyncio.sleep(3600))
        ...         group.create_task(fail())
        >>> try:
        ...     asyncio.run(demo())
        ... except ValueError as exc:
        ...     print(exc)
        bad
    """
    raised: list[BaseException] = []
    try:
        async with asyncio.TaskGroup() as group:
            try:
                yield group
            except BaseException as exc:
                raised.append(exc)
                raise
    except BaseExceptionGroup as failed:
        first = first_failure(failed, raised[0] if raised else None)
    else:
        return
    raise first


def first_failure(
    failed: BaseExceptionGroup[BaseException], cause: BaseException | None = None
) -> BaseException:
    """The first exception raised, or ``cause`` when the group holds it (later ones,
    raised while the siblings were being cancelled, are added to it as a note)."""
    leaves = _leaves(failed)
    # TaskGroup lists errors in the order the tasks failed: the first is the cause
    first = next((e for e in leaves if e is cause), leaves[0])
    others = [e for e in leaves if e is not first]
    if others:
        first.add_note(f"(and {len(others)} more failures in the same task group: "
                       f"{'; '.join(f'{type(e).__name__}: {e}' for e in others[:3])})")  # fmt: skip
    return first


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
