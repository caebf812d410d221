"""Two Inspect tasks run by tests/clients/test_inspect.py through ``inspect eval``."""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import match
from inspect_ai.solver import generate, use_tools
from inspect_ai.tool import tool

QUESTIONS = [("What is 12 * 7?", "84"), ("What is 9 + 10?", "19"), ("What is 6 * 6?", "36")]


@task
def arithmetic() -> Task:
    """Plain generate(): the workflow answers, match() scores."""
    return Task(
        dataset=[Sample(input=q, target=a) for q, a in QUESTIONS],
        solver=generate(),
        scorer=match(),
    )


@tool
def add():  # Inspect reads the tool's signature and docstring
    async def execute(x: int, y: int) -> int:
        """Add two numbers.

        Args:
            x: the first number
            y: the second number
        """
        return x + y

    return execute


@task
def with_tools() -> Task:
    """A solver that offers the model a tool: the server refuses it with a 400."""
    return Task(
        dataset=[Sample(input="What is 12 + 7? Use the tool.", target="19")],
        solver=[use_tools(add()), generate()],
        scorer=match(),
    )
