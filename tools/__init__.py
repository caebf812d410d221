"""What agents can do: the tool registry, the LLMCompiler plan parser and DAG executor.

Nothing is here yet: typed tools and parallel tool dispatch are the subject of their
own issue (LLMCompiler-style planner, event-driven executor). The package exists so
the import layering (prompts, tools <- agents <- graphs <- serving) is fixed from the
start.
"""

__all__: list[str] = []
