"""``FakeModel``: an in-process model for unit tests. It is a test double.

It answers from a script (a list of replies per agent, consumed one per call, so the
i-th entry is the agent's i-th round) or from a function, and keeps every request it
got. It plugs in as a transport, so everything else (ledger, budget, record, spans)
runs for real. For tests over real HTTP use the simulated server instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._model import Capabilities, ModelSpec
from ._types import Choice, Completion, TokenLogprob, Usage

ReplyFn = Callable[[str, int, list[dict[str, Any]]], str]


@dataclass(frozen=True)
class FakeRequest:
    agent: str
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]


class FakeModel:
    """Scripted or computed replies, in process.

    Args:
        replies: per agent name, one reply (always) or a list (one per call).
        fn: ``fn(agent, call_index, messages) -> text`` for everything unscripted.
        default: the reply when neither applies.

    Example:
        >>> fake = FakeModel({"a": ["first", "second"]})
        >>> spec = fake.spec()
        >>> spec.model
        'fake/fake'
    """

    def __init__(
        self,
        replies: Mapping[str, str | Sequence[str]] | None = None,
        *,
        fn: ReplyFn | None = None,
        default: str = "(fake model reply)",
        capabilities: Capabilities | None = None,
    ):
        self.replies = {
            k: [v] if isinstance(v, str) else list(v) for k, v in (replies or {}).items()
        }
        self.fn = fn
        self.default = default
        self.capabilities = capabilities or Capabilities()
        self.requests: list[FakeRequest] = []
        self._calls: defaultdict[str, int] = defaultdict(int)

    def spec(self, name: str = "fake", **kwargs: Any) -> ModelSpec:
        return ModelSpec(f"fake/{name}", transport=self, capabilities=self.capabilities, **kwargs)

    def requests_of(self, agent: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.agent == agent]

    def _next(self, agent: str, messages: list[dict[str, Any]]) -> str:
        index = self._calls[agent]
        self._calls[agent] += 1
        script = self.replies.get(agent)
        if script:
            return script[min(index, len(script) - 1)]
        if self.fn is not None:
            return self.fn(agent, index, messages)
        return self.default

    async def chat(
        self,
        spec: ModelSpec,
        api_base: str | None,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> Completion:
        agent = headers.get("X-Concilium-Agent", "")
        self.requests.append(FakeRequest(agent, dict(body)))
        messages = list(body["messages"])
        texts = [self._next(agent, messages) for _ in range(int(body.get("n", 1)))]
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(
            choices=tuple(
                Choice(
                    text=t,
                    finish_reason="stop",
                    logprobs=tuple(TokenLogprob(w, -0.1) for w in t.split())
                    if body.get("logprobs")
                    else None,
                )
                for t in texts
            ),
            usage=Usage(prompt_tokens, sum(len(t.split()) for t in texts)),
            model=spec.served_name,
            id=f"fake-{len(self.requests)}",
        )
