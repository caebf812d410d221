"""What the simulated server answers (a test double, not a model). No HTTP here.

Rules first: a ``Rule`` whose agent and regex match gives its next scripted reply (a
reply ``TOOL_CALLS: [...]`` becomes OpenAI tool calls). Otherwise the statistical
answerer: with probability ``accuracy`` the right answer (from ``answers`` or a plain
arithmetic question evaluated by a safe parser), else a wrong one; an agent shown
other agents' answers adopts their most common one with probability ``conformity``.
What is asked is the last user message (a few-shot prompt's examples come before it);
when it asks nothing the server knows (a pattern's follow-up: "give your final
answer"), the latest user message before it that does. A request with a JSON schema
gets a JSON object of that schema. Every draw is seeded by (config seed, agent, the
prompt, the request's ``seed`` or else how many times the agent sent this prompt
before, choice), never by arrival order: the same requests give the same replies
however they interleave, and a seeded request the same reply every time.

Example:
    >>> from concilium.agents.sim import SimConfig
    >>> model = SimulatedModel(SimConfig(seed=1))
    >>> body = {"messages": [{"role": "user", "content": "What is 12 * 7?"}]}
    >>> model.answer(body, "alice").choices[0].text.startswith("[simulated reply]")
    True
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from concilium._json import load_json
from concilium.agents import wire
from concilium.agents.sim import SimConfig, TokenConfidence
from concilium.tools import arithmetic_answer

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# "... think the answer is 84." (ReConcile's grouped answers), not "the answer is \boxed{..}"
_ANSWER_IS = re.compile(r"think the answer is (?!\\)([^\s.,;\\]+)")
TOOL_CALLS = "TOOL_CALLS:"


def _seeded(basis: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(basis.encode()).digest()[:8], "big"))


def words(text: str) -> list[str]:
    """The simulated server's tokens: whitespace-separated words."""
    return text.split()


@dataclass(frozen=True)
class SimChoice:
    """One reply: its text, why it stopped, its logprobs and scripted tool calls."""

    text: str
    finish_reason: str = "stop"  # "length" when cut at max_tokens
    logprobs: wire.LogprobsBody | None = None
    tool_calls: list[wire.ToolCallBody] = field(default_factory=list)


@dataclass(frozen=True)
class SimAnswer:
    """The replies to one request, with the prompt as the server counted it."""

    choices: list[SimChoice]
    prompt_words: list[str]

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_words)

    @property
    def completion_tokens(self) -> int:
        return sum(len(words(c.text)) for c in self.choices)


def prompt_texts(body: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(every message's text, the user messages' texts) of a chat body, or the
    prompt twice for a text-completions body."""
    if "messages" not in body:
        prompt = str(body.get("prompt", ""))
        return [prompt], [prompt]
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    texts = [wire.message_text(m.get("content")) for m in messages]
    users = [wire.message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return texts, users


_Q_LINE = re.compile(r"^(?:Q|Question|Input):[ \t]*", re.MULTILINE)
_PEERS = re.compile(r"^Other answers:(.*)$", re.MULTILINE)


def last_block(prompt: str) -> str:
    """What a few-shot completion prompt asks: the text after its last ``Q:``
    (``Question:``, ``Input:``) up to the final answer cue.

    Example:
        >>> last_block("Q: Spain\\nA: Madrid\\n\\nQ: France\\nOther answers: Paris\\nA:")
        'France\\nOther answers: Paris'
    """
    starts = list(_Q_LINE.finditer(prompt))
    block = prompt[starts[-1].end() :] if starts else prompt
    return re.sub(r"\n(?:A|Answer|Output):\s*$", "", block.rstrip()).strip()


def peers(text: str) -> list[str]:
    """The answers listed on ``Other answers: a; b`` lines (a debate round's peers)."""
    return [a.strip() for m in _PEERS.findall(text) for a in re.split(r"[;,]", m) if a.strip()]


def cut_at_stop(text: str, stop: object) -> str:
    """``text`` up to the first stop sequence, as a server applies ``stop``."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    for sequence in stops:
        if isinstance(sequence, str) and sequence and sequence in text:
            text = text[: text.index(sequence)]
    return text


class SimulatedModel:
    """Decides the replies of the simulated server; counts each agent's repeats of a prompt."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._repeats: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._rule_calls: defaultdict[tuple[int, str], int] = defaultdict(int)

    def answer(self, body: Mapping[str, Any], agent: str, *, rid: str = "sim") -> SimAnswer:
        """The replies to one chat or text-completions body from ``agent``.

        Replies are cut at ``max_tokens`` words; logprobs come when the body asks.
        """
        texts, users = prompt_texts(body)
        chat = "messages" in body
        max_tokens = body.get("max_tokens") or self.config.max_tokens
        want_logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
        basis = self._basis(body, agent)
        rng = _seeded(f"{basis}|logprobs")
        choices = []
        n = int(body.get("n") or 1)
        for i, text in enumerate(self.replies(body, agent, users, n, basis=basis)):
            reason = "stop"
            wrong = want_logprobs and self._wrong(text, users)  # before the cut at max_tokens
            if len(words(text)) > max_tokens:
                text, reason = " ".join(words(text)[:max_tokens]), "length"
            choices.append(
                SimChoice(
                    text,
                    reason,
                    self.logprobs(text, top, rng, wrong=wrong) if want_logprobs else None,
                    scripted_tool_calls(text, f"{rid}-{i}") if chat else [],
                )
            )
        return SimAnswer(choices, words(" ".join(texts)))

    # ----------------------------------------------------------------- replies

    def _basis(self, body: Mapping[str, Any], agent: str) -> str:
        """What one request's draws are seeded by: the config's seed, the agent, the
        prompt, and the request's ``seed`` or else the agent's repeats of the prompt."""
        asked = body.get("messages") if "messages" in body else body.get("prompt")
        prompt = hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode())
        digest = prompt.hexdigest()[:16]
        seed = body.get("seed")
        if seed is None:
            repeat = self._repeats[agent, digest]
            self._repeats[agent, digest] += 1
            return f"{self.config.seed}|{agent}|{digest}|{repeat}"
        return f"{self.config.seed}|{agent}|{digest}|s{seed}"

    def _scripted(self, agent: str, user_text: str) -> str | None:
        for index, rule in enumerate(self.config.rules):
            if rule.agent is not None and rule.agent != agent:
                continue
            if rule.match is not None and not re.search(rule.match, user_text):
                continue
            k = (index, agent)
            reply = rule.replies[min(self._rule_calls[k], len(rule.replies) - 1)]
            self._rule_calls[k] += 1
            return reply
        return None

    def _right_answer(self, question: str) -> str | None:
        stat = self.config.statistical
        for pattern, answer in stat.answers.items():
            if re.search(pattern, question):
                return answer
        if stat.arithmetic:
            return arithmetic_answer(question)
        return None

    def _statistical_answer(self, rng: random.Random, question: str, last_user: str) -> str:
        stat = self.config.statistical
        # Other agents' answers in the prompt ("\boxed{answer}" is the format instruction).
        shown = [
            a
            for a in _BOXED.findall(last_user) + _ANSWER_IS.findall(last_user) + peers(last_user)
            if a.strip() and a.strip() != "answer"
        ]
        if shown and rng.random() < stat.conformity:
            return Counter(shown).most_common(1)[0][0]
        right = self._right_answer(question)
        if right is not None and rng.random() < stat.accuracy:
            return right
        if stat.wrong:
            return rng.choice(stat.wrong)
        if right is not None and re.fullmatch(r"-?\d+", right):
            return str(int(right) + rng.choice([-1, 1]) * rng.randint(1, 10))
        return "unknown"

    def _statistical(
        self, rng: random.Random, question: str, last_user: str, body: Mapping[str, Any]
    ) -> str:
        answer = self._statistical_answer(rng, question, last_user)
        schema = _json_schema(body)
        if schema is not None:  # structured output: a JSON object of that schema
            return json.dumps(_fill(schema, schema.get("$defs", {}), rng, answer, ""))
        return self.config.statistical.template.format(answer=answer)

    def replies(
        self,
        body: Mapping[str, Any],
        agent: str,
        prompt_texts: list[str],
        n: int,
        *,
        basis: str | None = None,
    ) -> list[str]:
        """The ``n`` reply texts of one request (``prompt_texts``: its user messages;
        ``basis``: what its draws are seeded by, see ``_basis``)."""
        user_texts = prompt_texts or [""]
        basis = basis if basis is not None else self._basis(body, agent)
        out = []
        # a few-shot prompt ("Q: ...\nA:"): what is asked is its last "Q:" block and
        # the reply is the bare answer, as a base model continues the frame
        completion = "messages" not in body and _Q_LINE.search(user_texts[-1]) is not None
        last_user = user_texts[-1]
        question = next(
            (u for u in reversed(user_texts) if self._right_answer(u) is not None), last_user
        )
        if completion:
            question = last_user = last_block(user_texts[-1])
        for choice in range(n):
            scripted = self._scripted(agent, "\n".join(user_texts))
            if scripted is not None:
                out.append(scripted)
                continue
            rng = _seeded(f"{basis}|{choice}")
            if completion:
                answer = self._statistical_answer(rng, question, last_user)
                out.append(cut_at_stop(f" {answer}", body.get("stop")))
            else:
                out.append(self._statistical(rng, question, last_user, body))
        return out

    def _wrong(self, text: str, users: list[str]) -> bool:
        """Whether a reply's last boxed answer is not the right one, when a right one
        is known (only the confidence model asks)."""
        if self.config.statistical.confidence is None:
            return False
        right = next((r for u in reversed(users) if (r := self._right_answer(u)) is not None), None)
        boxed = _BOXED.findall(text)
        return right is not None and (not boxed or boxed[-1].strip() != right)

    def logprobs(
        self, text: str, top: int, rng: random.Random, *, wrong: bool = False
    ) -> wire.LogprobsBody:
        """Seeded log-probabilities for each word, with ``top`` alternatives; with a
        confidence model (``Statistical.confidence``), less confident when ``wrong``."""
        model = self.config.statistical.confidence
        if model is not None:
            return _confidence_logprobs(text, top, rng, model, wrong)
        content = []
        for word in words(text):
            lp = -abs(rng.gauss(0, 0.6))
            alternatives = [(word, lp)] + [
                (f"{word}~{k}", lp - 1.0 - k - rng.random()) for k in range(max(top - 1, 0))
            ]
            content.append(wire.token_logprob(word, lp, alternatives[: max(top, 0)]))
        return {"content": content}


def _confidence_logprobs(
    text: str, top: int, rng: random.Random, model: TokenConfidence, wrong: bool
) -> wire.LogprobsBody:
    """Logprobs whose DeepConf token confidence is drawn from ``model``: the top-k at
    ``-C * (2j + 1) / k`` for ``j < k``, which are in order and average ``-C``."""
    k = max(top, 1)
    mean = rng.gauss(model.right - (model.separation if wrong else 0.0), model.trace_spread)
    content = []
    for word in words(text):
        c = max(rng.gauss(mean, model.token_spread), 0.01)
        alternatives = [(word if j == 0 else f"{word}~{j}", -c * (2 * j + 1) / k) for j in range(k)]
        content.append(wire.token_logprob(word, alternatives[0][1], alternatives[:top]))
    return {"content": content}


def scripted_tool_calls(text: str, rid: str) -> list[wire.ToolCallBody]:
    """A scripted ``TOOL_CALLS: [...]`` reply as OpenAI tool calls (else ``[]``)."""
    if not text.startswith(TOOL_CALLS):
        return []
    calls = load_json(text.removeprefix(TOOL_CALLS))
    return [
        wire.tool_call(f"call-{rid}-{j}", c["name"], c.get("arguments", {}))
        for j, c in enumerate(calls)
    ]


def _json_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def _fill(
    schema: dict[str, Any], defs: dict[str, Any], rng: random.Random, answer: str, key: str
) -> Any:
    """A value of ``schema``: fields named ``answer`` get the statistical answer,
    numbers a seeded value within their bounds, strings a ``[simulated ...]`` text."""
    if "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    for union in ("anyOf", "oneOf", "allOf"):
        if union in schema:
            return _fill(schema[union][0], defs, rng, answer, key)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if kind == "object":
        return {
            k: _fill(v, defs, rng, answer, k) for k, v in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        count = max(int(schema.get("minItems", 2)), min(3, int(schema.get("maxItems", 3))))
        return [
            _fill(schema.get("items") or {}, defs, rng, answer, f"{key} {i + 1}")
            for i in range(count)
        ]
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 1 if kind == "number" else 10)
        return (
            rng.randint(int(low), int(high))
            if kind == "integer"
            else round(rng.uniform(max(low, high - 0.5), high), 2)
        )
    if kind == "boolean":
        return rng.random() < 0.5
    return answer if key == "answer" else f"[simulated {key or 'text'}]"
