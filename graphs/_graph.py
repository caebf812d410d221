"""``Graph``: nodes, edges and a typed state with reducers, compiled to LangGraph.

The builder knows nothing about debate or voting. Nodes are async functions from the
state to an update (a dict of the keys they declared in ``writes``); fan-out returns
``Branch`` values that become LangGraph ``Send`` tasks, so each branch is its own task
and is checkpointed on its own. Every key a parallel node writes must have a reducer;
that is checked in ``compile()``, where the message can say which node and key, not
at run time as LangGraph's ``InvalidUpdateError``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from concilium._errors import GraphError

from ._context import current_run, node_scope
from .reducers import append, merge

if TYPE_CHECKING:
    from concilium.agents import Endpoints

State = Mapping[str, Any]
Reducer = Callable[[Any, Any], Any]
NodeFn = Callable[..., Awaitable[Mapping[str, Any] | None]]


# Keys every concilium graph has: the input question (and chat messages), the final
# answer, and what the result reports.
BASE_STATE: dict[str, Reducer | None] = {
    "question": None,
    "messages": None,
    "answer": None,
    "text": None,  # a full reply that carries the answer (when the graph stands in for an agent)
    "votes": None,
    "transcript": append,
    "details": merge,
}


@dataclass(frozen=True)
class Branch:
    """One parallel task: run ``node`` with ``payload`` as its input."""

    node: str
    payload: Mapping[str, Any]


RouteFn = Callable[[State], str | Sequence[str] | Sequence[Branch]]


@dataclass
class _Node:
    name: str
    fn: NodeFn
    writes: frozenset[str]
    wants_ctx: bool
    parallel: bool = False


@dataclass
class _Route:
    source: str
    fn: RouteFn
    targets: tuple[str, ...]


@dataclass
class Graph:
    """A graph builder over a typed state.

    Args:
        name: the workflow name (spans, transcripts).
        state: extra state keys and their reducers (``None``: last value wins).

    Example:
        >>> g = Graph("hello")
        >>> async def greet(state):
        ...     return {"answer": "hi " + state["question"]}
        >>> _ = (
        ...     g.add_node("greet", greet, writes=["answer"])
        ...     .add_edge(START, "greet")
        ...     .add_edge("greet", END)
        ... )
        >>> from concilium.graphs import run_sync
        >>> run_sync(g, "there").answer
        'hi there'
    """

    name: str
    state: Mapping[str, Reducer | None] = field(default_factory=dict)
    nodes: dict[str, _Node] = field(default_factory=dict, init=False, repr=False)
    edges: list[tuple[str, str]] = field(default_factory=list, init=False, repr=False)
    routes: list[_Route] = field(default_factory=list, init=False, repr=False)
    _compiled: Any = field(default=None, init=False, repr=False)
    endpoints: Endpoints | None = field(default=None, init=False, repr=False)
    """Where this graph's model calls go once bound (see ``served_at``); ``None``: each
    agent's own ``api_base``."""

    def served_at(self, endpoints: Endpoints | None) -> Graph:
        """This graph with every model call sent to ``endpoints``: a copy that shares
        the nodes (and the compiled graph, once compiled); nothing is rebuilt.

        Example:
            >>> from concilium.agents import Endpoints
            >>> g = Graph("g")
            >>> g.served_at(Endpoints("http://127.0.0.1:9/v1")).endpoints.api_base
            ('http://127.0.0.1:9/v1',)
            >>> g.endpoints is None
            True
        """
        bound = copy.copy(self)
        bound.endpoints = endpoints
        return bound

    @property
    def channels(self) -> dict[str, Reducer | None]:
        return {**BASE_STATE, **self.state}

    # ------------------------------------------------------------------ building

    def add_node(
        self,
        name: str,
        action: NodeFn | Graph,
        *,
        writes: Sequence[str] = (),
        parallel: bool = False,
        inputs: Callable[[State], Mapping[str, Any]] | None = None,
        output: str = "answer",
    ) -> Graph:
        """Add a node: an async function ``fn(state[, ctx]) -> update``, or a graph.

        ``writes`` lists the state keys the node may update. ``parallel=True``
        marks a branch node (the target of ``Branch`` tasks): every key it writes
        must have a reducer.

        A graph node runs the inner graph on ``inputs(state)`` (default: the
        question and messages), writes its answer to ``output`` and appends its
        transcript to this graph's, with the node name in each entry's path.
        """
        if name in self.nodes or name in (START, END):
            raise GraphError(
                f"graph {self.name!r}: node name {name!r} is already used; pick another"
            )
        if isinstance(action, Graph):
            self.nodes[name] = _Node(
                name,
                _subgraph_node(action, name, inputs, output),
                frozenset({output, "transcript", "details"}),
                wants_ctx=False,
                parallel=parallel,
            )
            return self
        if not inspect.iscoroutinefunction(action):
            raise GraphError(
                f"graph {self.name!r}: node {name!r} must be an async function "
                f"(async def), got {action!r}"
            )
        params = inspect.signature(action).parameters
        self.nodes[name] = _Node(
            name, action, frozenset(writes), wants_ctx=len(params) >= 2, parallel=parallel
        )
        return self

    def add_edge(self, source: str, target: str) -> Graph:
        """``target`` runs after ``source`` (several targets of one source run in parallel)."""
        self.edges.append((source, target))
        return self

    def add_route(self, source: str, route: RouteFn, targets: Sequence[str]) -> Graph:
        """After ``source``, ``route(state)`` picks node name(s) or ``Branch`` tasks.

        ``targets`` lists every node the route may return (END included), so the
        graph can be checked and drawn before it runs.
        """
        self.routes.append(_Route(source, route, tuple(targets)))
        return self

    def add_fanout(
        self, source: str, target: str, branches: Callable[[State], Sequence[Mapping[str, Any]]]
    ) -> Graph:
        """After ``source``, run ``target`` (a ``parallel`` node) once per payload."""
        return self.add_route(
            source, lambda state: [Branch(target, p) for p in branches(state)], [target]
        )

    # ----------------------------------------------------------------- checking

    def parallel_nodes(self) -> set[str]:
        """Nodes that may run in the same step as a sibling: branch nodes and the
        targets of a source with several static edges."""
        parallel = {n.name for n in self.nodes.values() if n.parallel}
        by_source: dict[str, list[str]] = {}
        for source, target in self.edges:
            by_source.setdefault(source, []).append(target)
        for targets in by_source.values():
            if len(targets) > 1:
                parallel.update(t for t in targets if t != END)
        return parallel

    def check(self) -> None:
        """Raise ``GraphError`` if the graph cannot run as written."""
        known = set(self.nodes) | {START, END}
        for source, target in self.edges:
            for end, label in ((source, "source"), (target, "target")):
                if end not in known:
                    raise GraphError(self._unknown(end, f"edge {source!r} -> {target!r} {label}"))
        for route in self.routes:
            if route.source not in known:
                raise GraphError(self._unknown(route.source, "route source"))
            for target in route.targets:
                if target not in known:
                    raise GraphError(self._unknown(target, f"route from {route.source!r}"))
        if not any(s == START for s, _ in self.edges) and not any(
            r.source == START for r in self.routes
        ):
            raise GraphError(f"graph {self.name!r} has no entry; add_edge(START, 'first_node')")
        channels = self.channels
        for node in self.nodes.values():
            for key in node.writes:
                if key not in channels:
                    raise GraphError(
                        f"graph {self.name!r}: node {node.name!r} writes {key!r}, which is not "
                        f"a state key; declare it: Graph(..., state={{{key!r}: None}})"
                    )
        for name in sorted(self.parallel_nodes()):
            for key in sorted(self.nodes[name].writes):
                if channels[key] is None:
                    raise GraphError(
                        f"graph {self.name!r}: node {name!r} runs in parallel and writes "
                        f"{key!r}, which has no reducer; parallel writes would conflict. "
                        f"Declare one: Graph(..., state={{{key!r}: reducers.append}}) (or merge/add; "
                        "from concilium.graphs import reducers)"
                    )

    def _unknown(self, name: str, where: str) -> str:
        import difflib

        close = difflib.get_close_matches(name, list(self.nodes), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; nodes are {sorted(self.nodes)}"
        return f"graph {self.name!r}: {where} names unknown node {name!r}{hint}"

    # ---------------------------------------------------------------- compiling

    def compile(self, checkpointer: Any = None) -> Any:
        """Check the graph and compile it to a LangGraph ``CompiledStateGraph``.

        The graph is compiled once; each checkpointer gets a shallow copy of that,
        which is not kept: a cache keyed by checkpointer would keep every run's
        closed checkpointer (a ``state_path`` opens one per run) alive for as long
        as the graph, in a server for ever.
        """
        if self._compiled is None:
            self._compiled = self._build()
        if checkpointer is None:
            return self._compiled
        return self._compiled.copy({"checkpointer": checkpointer})

    def _build(self) -> Any:
        self.check()
        fields = {
            key: (Annotated[Any, reducer] if reducer is not None else Any)
            for key, reducer in self.channels.items()
        }
        schema = TypedDict(f"{self.name}_state", fields, total=False)  # type: ignore[misc]
        builder = StateGraph(schema)
        for node in self.nodes.values():
            builder.add_node(node.name, _wrap(self.name, node))
        for source, target in self.edges:
            builder.add_edge(source, target)
        for route in self.routes:
            builder.add_conditional_edges(route.source, _route_fn(self, route), list(route.targets))
        return builder.compile(name=self.name)

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (``concilium graph``)."""
        return self.compile().get_graph().draw_mermaid()


def _route_fn(graph: Graph, route: _Route) -> Callable[[State], Any]:
    def pick(state: State) -> Any:
        result = route.fn(state)
        if isinstance(result, str):
            return result
        out: list[Any] = []
        for item in result:
            if isinstance(item, Branch):
                node = graph.nodes.get(item.node)
                if node is None or not node.parallel:
                    raise GraphError(
                        f"graph {graph.name!r}: route from {route.source!r} sent a Branch to "
                        f"{item.node!r}, which is not a parallel node; "
                        f"add it with add_node(..., parallel=True)"
                    )
                out.append(Send(item.node, dict(item.payload)))
            else:
                out.append(item)
        return out

    return pick


def _wrap(graph_name: str, node: _Node) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The LangGraph node: scope (path, events), call, check the update's keys."""

    async def run_node(state: dict[str, Any]) -> dict[str, Any]:
        ctx = current_run()
        with node_scope(node.name):
            ctx.emit({"type": "node_started", "node": node.name})
            update = await (node.fn(state, ctx) if node.wants_ctx else node.fn(state))
            ctx.emit({"type": "node_finished", "node": node.name})
        update = dict(update or {})
        extra = set(update) - node.writes
        if extra:
            raise GraphError(
                f"graph {graph_name!r}: node {node.name!r} wrote {sorted(extra)} but declared "
                f"writes={sorted(node.writes)}; add them to writes= in add_node"
            )
        return update

    run_node.__name__ = node.name
    return run_node


def _subgraph_node(
    inner: Graph,
    name: str,
    inputs: Callable[[State], Mapping[str, Any]] | None,
    output: str,
) -> NodeFn:
    async def run_subgraph(state: State) -> dict[str, Any]:
        from ._runtime import invoke_graph

        given = (
            dict(inputs(state))
            if inputs
            else {
                "question": state.get("question"),
                "messages": state.get("messages"),
            }
        )
        result = await invoke_graph(inner, given)
        return {
            output: result.get("answer"),
            "transcript": list(result.get("transcript") or ()),
            "details": {name: {"votes": result.get("votes"), **(result.get("details") or {})}},
        }

    return run_subgraph
