"""The pattern kit: what a pattern needs beyond ``Graph``, the way the built-in ones
are written (``graphs/patterns/``) and a pattern of your own can be.

* asking: ``ask`` keys each model call ``<node path>/<agent>/<tag>`` so a resumed run
  replays it, ``use_tool`` does the same for a tool call, and ``turn`` records a
  ``Turn`` in the transcript (and sends it as an event);
* options and prompts: ``PatternOptions`` (answer format, prompt library, name),
  ``solve_messages``, ``user``, ``prompt_library``, ``distinct_names``;
* the conversation: ``conversation`` (what every call gets: the input's ``history``,
  its system message, earlier turns and few-shot examples, then the step's prompt
  as the last user message; docs/methods.md, "Conversation"), ``with_system`` (a
  role added to the conversation's system message);
* answers and votes: ``AnswerFormat``, ``majority_vote``, ``report_vote``,
  ``sample_turns``, ``normalize_number``; a trace's confidence from its top-k
  logprobs (DeepConf): ``trace_confidences``, ``DEEPCONF_WINDOW``, ``DEEPCONF_TOP_K``,
  and while it streams, ``WindowConfidence``, ``deepconf_threshold``;
* a ``kind:`` for workflow files: a ``PatternSpec`` subclass (agent slots typed
  ``AgentSlot``, ``answer`` an ``AnswerSpec``) and a build function registered with
  ``register_pattern``, which gets a ``Builder``.

Example:
    >>> from concilium.agents import Agent, FakeModel
    >>> from concilium.graphs import END, START, Graph, run_sync
    >>> from concilium.graphs.kit import PatternOptions, ask, conversation, turn
    >>> opts = PatternOptions("boxed", name="ask_once")
    >>> agent = Agent("a", FakeModel(fn=lambda agent, i, msgs: "\\\\boxed{4}").spec())
    >>> async def solve(state, ctx):
    ...     reply = await ask(ctx, agent, conversation(state, state["question"]), "solve")
    ...     entry = turn(
    ...         ctx,
    ...         reply,
    ...         text=reply.text,
    ...         answer=opts.fmt.extract(reply.text),
    ...         prompt=state["question"],
    ...     )
    ...     return {"answer": entry["answer"], "transcript": [entry]}
    >>> g = Graph(opts.name).add_node("solve", solve, writes=["answer", "transcript"])
    >>> run_sync(g.add_edge(START, "solve").add_edge("solve", END), "2+2?").answer
    '4'
"""

from ._aggregators import AnswerFormat, majority_vote, normalize_number
from ._confidence import (
    DEEPCONF_TOP_K,
    DEEPCONF_WINDOW,
    WindowConfidence,
    deepconf_threshold,
    trace_confidences,
)
from ._events import Turn
from ._kit import (
    PatternOptions,
    Respondent,
    ask,
    conversation,
    distinct_names,
    history,
    prompt_library,
    report_vote,
    sample_turns,
    solve_messages,
    turn,
    use_tool,
    user,
    with_system,
)
from ._registry import AgentSlot, AnswerSpec, Builder, PatternSpec, register_pattern

__all__ = [
    # asking, and recording what was said
    "Respondent",
    "ask",
    "use_tool",
    "turn",
    "Turn",
    # options and prompts
    "PatternOptions",
    "solve_messages",
    "user",
    "prompt_library",
    # the conversation every call gets (docs/methods.md, "Conversation")
    "conversation",
    "history",
    "with_system",
    "distinct_names",
    # answers and votes
    "AnswerFormat",
    "majority_vote",
    "report_vote",
    "sample_turns",
    "normalize_number",
    "trace_confidences",
    "DEEPCONF_WINDOW",
    "DEEPCONF_TOP_K",
    "WindowConfidence",
    "deepconf_threshold",
    # a kind: for workflow files
    "PatternSpec",
    "AgentSlot",
    "AnswerSpec",
    "register_pattern",
    "Builder",
]
